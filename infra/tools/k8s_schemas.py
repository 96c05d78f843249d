"""Kubernetes' OpenAPI (swagger 2.0) and CRD YAMLs → kubeconform's JSON schemas, offline.

kubeconform fetches its schemas from GitHub by default, which this machine cannot reach; this writes
one standalone file per kind and version, named the way ``-schema-location
<dir>/{{ .ResourceKind }}{{ .KindSuffix }}.json`` asks for (``deployment-apps-v1.json``,
``service-v1.json``, ``rayservice-ray-v1.json``: kind in lower case, the first label of the API group,
the version).

Strict: every object schema that lists its ``properties`` and says nothing of others gets
``additionalProperties: false``, so a misspelt field (``imagePullPolice``) fails validation, as
kubeconform's ``-strict`` intends. Kubernetes' extensions are turned into plain JSON Schema: an
int-or-string is a string or an integer, a Quantity a string or a number, ``nullable`` admits null,
and ``x-kubernetes-preserve-unknown-fields`` keeps an object open.

    python infra/tools/k8s_schemas.py --out DIR --swagger swagger.json --crd a.yaml --crd crd/bases/
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml

REF = re.compile(r"^#/definitions/(.+)$")
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
STRING_OR_NUMBER = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def schema_file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's ``{{ .ResourceKind }}{{ .KindSuffix }}.json`` for one kind (core group: "")."""
    suffix = f"-{group.split('.')[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"
    return f"{kind.lower()}{suffix}.json"


def to_json_schema(node: Any, *, strict: bool) -> Any:
    """One OpenAPI schema node (and everything under it) as JSON Schema draft 4."""
    if isinstance(node, list):
        return [to_json_schema(item, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_json_schema(value, strict=strict) for key, value in node.items()}
    if out.pop("x-kubernetes-int-or-string", False) or out.get("format") == "int-or-string":
        out = {k: v for k, v in out.items() if k not in ("type", "format")} | INT_OR_STRING
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    open_object = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if strict and not open_object and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        match = REF.match(node.get("$ref", "")) if isinstance(node.get("$ref"), str) else None
        if match:
            yield match.group(1)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _reachable(definitions: dict[str, Any], root: str) -> list[str]:
    seen, todo = {root}, [root]
    while todo:
        for name in _refs(definitions[todo.pop()]):
            if name not in seen and name in definitions:
                seen.add(name)
                todo.append(name)
    return sorted(seen)


def swagger_schemas(swagger: dict[str, Any], *, strict: bool = True) -> dict[str, dict[str, Any]]:
    """File name → standalone schema for every kind in a Kubernetes swagger.json (each file carries the
    definitions its kind reaches, so it resolves with no other file)."""
    definitions = {}
    for name, definition in swagger["definitions"].items():
        if name == QUANTITY:
            definitions[name] = {"description": definition.get("description", "")} | STRING_OR_NUMBER
        else:
            definitions[name] = to_json_schema(definition, strict=strict)
    files: dict[str, dict[str, Any]] = {}
    for name, definition in swagger["definitions"].items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            file_name = schema_file_name(gvk["kind"], gvk.get("group", ""), gvk["version"])
            if file_name in files:
                continue  # the same kind served under an older name (io.k8s.api vs apimachinery aliases)
            reached = _reachable(definitions, name)
            files[file_name] = {
                "$schema": "http://json-schema.org/draft-04/schema#",
                "$ref": f"#/definitions/{name}",
                "definitions": {n: definitions[n] for n in reached},
            }
    return files


def crd_schemas(crd: dict[str, Any], *, strict: bool = True) -> dict[str, dict[str, Any]]:
    """File name → schema for every served version of one CustomResourceDefinition."""
    if crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"not a CustomResourceDefinition: {crd.get('kind')!r}")
    spec = crd["spec"]
    files = {}
    for version in spec["versions"]:
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if schema is None:
            continue
        converted = to_json_schema(copy.deepcopy(schema), strict=strict)
        converted["$schema"] = "http://json-schema.org/draft-04/schema#"
        files[schema_file_name(spec["names"]["kind"], spec["group"], version["name"])] = converted
    return files


def write_schemas(out: Path, swagger: Path | None, crds: list[Path], *, strict: bool = True) -> int:
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    if swagger is not None:
        files |= swagger_schemas(json.loads(swagger.read_text()), strict=strict)
    for path in [f for c in crds for f in (sorted(c.glob("*.yaml")) if c.is_dir() else [c])]:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                files |= crd_schemas(document, strict=strict)
    for name, schema in files.items():
        (out / name).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True))
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--swagger", type=Path, help="Kubernetes api/openapi-spec/swagger.json")
    parser.add_argument("--crd", type=Path, action="append", default=[], help="a CRD YAML file, or a folder of them (repeatable)")
    parser.add_argument("--no-strict", dest="strict", action="store_false", help="leave objects open")
    args = parser.parse_args(argv)
    count = write_schemas(args.out, args.swagger, args.crd, strict=args.strict)
    print(f"wrote {count} schemas to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
