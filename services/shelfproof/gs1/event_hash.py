"""The CBV 2.0 Event Hash ID of an EPCIS 2.0 JSON event: a canonical pre-hash string, SHA-256, ``ni:`` URI.

Partners compute it with the reference generator (epcis-event-hash-generator 1.9.3), so this follows
what that tool actually produces (tested against it in tests/unit/test_event_hash.py):

- the event becomes a tree of (name, value, children); a JSON list becomes repeated children; a
  ``…List`` member is renamed to its element name (``epcList`` holds ``epc``s, ``quantityList``
  holds ``quantityElement``s, ``inputEPCList`` holds ``epc``s); ``bizTransactionList``,
  ``sourceList`` and ``destinationList`` elements are (type, id) pairs in the order written;
- the standard fields are written in the CBV order below, each as ``name=value`` (containers as the
  name and their children), equal names sorted by their rendering; extensions inside a standard
  container follow its standard fields; everything left (ILMD, business transactions, sources and
  destinations, user extensions) follows, each rendered generically and all sorted;
- eventID, recordTime, errorDeclaration, comments and the event ``type`` (written first as
  eventType) are ignored;
- values are trimmed; times in standard time fields to UTC with milliseconds (half-even); legacy CBV
  URNs and bare CBV words to ``https://ref.gs1.org/cbv/…``; anything that parses as a number to its
  shortest form; GS1 keys to the constrained canonical Digital Link (``gs1.canonical``);
- keys and values written as CURIEs are expanded with the prefixes the document's (or the event's)
  ``@context`` defines inline: keys as ``{namespace}local``, values as ``namespacelocal``.

Where the reference crashes (an untyped business transaction, a time ≥ …59.9995, ``inf``) this
answers a hash anyway; an event-level ``@context`` is context here, never data.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from shelfproof.gs1.canonical import canonical_key

_CBV_URNS = (
    ("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-"),
    ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"),
    ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-"),
    ("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-"),
    ("urn:epcglobal:cbv:er:", "https://ref.gs1.org/cbv/ER-"),
)
_IGNORED_TOP = frozenset(("recordTime", "eventID", "type", "errorDeclaration", "@context"))
_IGNORED_ANYWHERE = frozenset(("#text", "rdfs:comment", "comment"))
_PAIR_LISTS = frozenset(("bizTransactionList", "sourceList", "destinationList"))
_UNSORTED_MARKERS = frozenset(("bizTransaction", "source", "destination"))
_RENAMES = {"inputEPC": "epc", "outputEPC": "epc", "inputQuantity": "quantityElement",
            "outputQuantity": "quantityElement", "childQuantity": "quantityElement"}
MAX_TIME_TEXT = 64

_QUANTITY = (("quantityElement", (("epcClass", None), ("quantity", None), ("uom", None))),)
_EPCS = (("epc", None),)
# The CBV 2.0 canonical property order (standard fields only; the rest follows, sorted).
ORDER: tuple = (
    ("eventTime", None), ("eventTimeZoneOffset", None), ("certificationInfo", None), ("parentID", None),
    ("epcList", _EPCS), ("inputEPCList", _EPCS), ("childEPCs", _EPCS), ("quantityList", _QUANTITY),
    ("childQuantityList", _QUANTITY), ("inputQuantityList", _QUANTITY), ("outputEPCList", _EPCS),
    ("outputQuantityList", _QUANTITY), ("action", None), ("transformationID", None), ("bizStep", None),
    ("disposition", None), ("persistentDisposition", (("set", None), ("unset", None))),
    ("readPoint", (("id", None),)), ("bizLocation", (("id", None),)),
    ("sensorElementList", (("sensorElement", (
        ("sensorMetadata", tuple((n, None) for n in (
            "time", "startTime", "endTime", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod",
            "bizRules"))),
        ("sensorReport", tuple((n, None) for n in (
            "type", "exception", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod", "time",
            "microorganism", "chemicalSubstance", "value", "component", "stringValue", "booleanValue",
            "hexBinaryValue", "uriValue", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue",
            "uom", "coordinateReferenceSystem"))),
    )),)),
)


class _Node:
    __slots__ = ("name", "value", "children")

    def __init__(self, name: str, value: str, children: list) -> None:
        self.name, self.value, self.children = name, value, children


class _Pair:
    """A business transaction, source or destination: its first two members, in the order written."""

    __slots__ = ("items",)
    name = None

    def __init__(self, items: list[_Node]) -> None:
        self.items = items


# ----------------------------------------------------------------------------------------- vocabularies


def context_path() -> Path:
    from shelfproof.gs1.epcis import schema_dir

    return schema_dir() / "epcis-context.jsonld"


@lru_cache(maxsize=1)
def vocabularies() -> dict[tuple[str, str], dict[str, str]]:
    """Bare CBV/GS1 words per (container, field), read from GS1's EPCIS 2.0 JSON-LD context."""
    context = json.loads(context_path().read_text(encoding="utf-8"))["@context"]
    prefixes = {k: v for k, v in context.items() if isinstance(v, str) and v.startswith("http")}

    def iri(curie: str) -> str:
        prefix, _, local = curie.partition(":")
        return prefixes[prefix] + local if prefix in prefixes else curie

    def words(term: dict) -> dict[str, str]:
        scoped = term.get("@context", {})
        scoped = {k: v for part in (scoped if isinstance(scoped, list) else [scoped]) for k, v in part.items()}
        return {w: iri(c) for w, c in scoped.items() if isinstance(c, str) and not w.startswith("@") and ":" in c
                and w not in ("epcis",)}

    sensor = context["sensorElementList"]["@context"]["sensorReport"]["@context"]
    pd_words = words(context["persistentDisposition"])
    return {
        ("", "bizStep"): words(context["bizStep"]),
        ("", "disposition"): words(context["disposition"]),
        ("persistentDisposition", "set"): pd_words,
        ("persistentDisposition", "unset"): pd_words,
        ("bizTransactionList", "type"): words(context["bizTransactionList"]["@context"]["type"]),
        ("sourceList", "type"): words(context["sourceList"]["@context"]["type"]),
        ("destinationList", "type"): words(context["destinationList"]["@context"]["type"]),
        ("sensorReport", "type"): words(sensor["type"]),
        ("sensorReport", "exception"): words(sensor["exception"]),
        ("sensorReport", "component"): words(sensor["component"]),
        ("errorDeclaration", "reason"): words(context["errorDeclaration"]["@context"]["reason"]),
    }


def namespaces(*contexts: Any) -> dict[str, str]:
    """Prefix -> namespace IRI from the inline objects of JSON-LD ``@context`` values (later ones win)."""
    found: dict[str, str] = {}
    for context in contexts:
        for part in context if isinstance(context, list) else [context]:
            if isinstance(part, dict):
                found.update((k, v) for k, v in part.items() if isinstance(k, str) and isinstance(v, str))
    return found


# ----------------------------------------------------------------------------------------- tree


def _expand_key(key: str, ns: Mapping[str, str]) -> str:
    prefix, sep, local = key.partition(":")
    return "{" + ns[prefix] + "}" + local if sep and prefix in ns else key


def _scalar(value: Any, ns: Mapping[str, str], words: Mapping[str, str] | None) -> str:
    if isinstance(value, str):
        if words is not None and value in words:
            return words[value]
        prefix, sep, local = value.partition(":")
        return ns[prefix] + local if sep and prefix in ns else value
    return str(value)  # as Python writes it: True, None, 1.5, 1e+20 (then canonicalised like any text)


def _content(value: Any, ns: Mapping[str, str], scope: str, key: str) -> tuple[str, list]:
    """(value text, children) of one JSON value under `key`."""
    if isinstance(value, dict):
        children: list = []
        for k, v in value.items():
            if k in _IGNORED_ANYWHERE or k.startswith("@xmlns"):
                continue
            children.extend(_members(k, v, ns, key))
        text = value.get("#text", "")
        return (text if isinstance(text, str) else str(text)), _regroup(children)
    if isinstance(value, list):  # a list inside a list: elements named by their own type, if any
        inner = []
        for element in value:
            name = element.get("type", "") if isinstance(element, dict) else ""
            text, children = _content(element, ns, scope, key)
            inner.append(_Node(name if isinstance(name, str) else str(name), text, children))
        return "", _regroup(inner)
    return _scalar(value, ns, vocabularies().get((scope, key))), []


def _members(key: str, value: Any, ns: Mapping[str, str], scope: str) -> list[_Node]:
    name = _expand_key(key, ns)
    if isinstance(value, list):
        out = []
        for element in value:
            text, children = _content(element, ns, scope, key)
            out.append(_Node(name, text, children))
        return out
    text, children = _content(value, ns, scope, key)
    return [_Node(name, text, children)]


def _renamed(node: _Node) -> _Node:
    name = _RENAMES.get(node.name)
    if name is None and node.name == "quantity" and node.children:
        name = "quantityElement"
    if name is not None:
        node.name = name
    return node


def _regroup(children: list) -> list:
    """The XML-shaped tree: `xList` members become one `xList` holding `x`s; childEPCs likewise."""
    rest: list = []
    lists: dict[str, list] = {}
    for node in children:
        if node.name.endswith("List"):
            lists.setdefault(node.name, []).append(_renamed(_Node(node.name[:-4], node.value, node.children)))
        else:
            rest.append(node)
    for name, elements in lists.items():
        if name in _PAIR_LISTS:
            rest.append(_Node(name, "", [_Pair(e.children[:2]) for e in elements]))
        else:
            rest.append(_Node(name, "", elements))
    epcs = [n for n in rest if n.name == "childEPCs"]
    if epcs:
        rest = [n for n in rest if n.name != "childEPCs"]
        rest.append(_Node("childEPCs", "", [_Node("epc", n.value, []) for n in epcs]))
    return [_renamed(n) if isinstance(n, _Node) else n for n in rest]


# ----------------------------------------------------------------------------------------- values


def utc_milliseconds(text: str) -> str | None:
    """An RFC 3339 time as UTC with exactly three fractional digits (half-even on microseconds)."""
    if len(text) > MAX_TIME_TEXT or len(text) < 20 or not text.isascii():
        return None
    try:
        if text[4] != "-" or text[7] != "-" or text[10] not in "Tt " or text[13] != ":" or text[16] != ":":
            return None
        fields = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19])
        if not all(f.isdigit() for f in fields):
            return None
        rest = text[19:]
        micro = 0
        if rest.startswith("."):
            digits = rest[1:]
            n = len(digits) - len(digits.lstrip("0123456789"))
            if n == 0:
                return None
            micro = int(digits[:min(n, 6)].ljust(6, "0"))
            rest = digits[n:]
        if rest in ("Z", "z"):
            offset = timedelta(0)
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":" and rest[1:3].isdigit() and rest[4:6].isdigit():
            offset = timedelta(hours=int(rest[1:3]), minutes=int(rest[4:6])) * (1 if rest[0] == "+" else -1)
        else:
            return None
        y, mo, d, h, mi, s = map(int, fields)
        moment = datetime(y, mo, d, h, mi, s, tzinfo=timezone(offset)).astimezone(timezone.utc)
        moment += timedelta(microseconds=round(micro, -3))
    except (ValueError, OverflowError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def canonical_value(text: str) -> str:
    """CBV URNs to web vocabulary, numbers to their shortest form, GS1 keys to canonical Digital Links."""
    if "urn:epcglobal:cbv:" in text:
        for urn, iri in _CBV_URNS:
            text = text.replace(urn, iri)
    if not text.startswith(("http", "urn:")):
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                text = str(int(number)) if number == int(number) else str(number)
    return canonical_key(text) or text


# ----------------------------------------------------------------------------------------- rendering


def _generic(nodes: list) -> str:
    rendered = []
    for node in nodes:
        if isinstance(node, _Pair):
            rendered.append(_generic(node.items))
            continue
        text = node.value.strip()
        rendered.append(node.name + ("=" + canonical_value(text) if text else "") + _generic(node.children))
    if len(nodes) > 1 and not any(n.name in _UNSORTED_MARKERS for n in nodes if isinstance(n, _Node)):
        rendered.sort()
    return "".join(rendered)


def _element(node: _Node, order: tuple | None) -> str:
    below = _ordered(node.children, order) if order else ""
    text = ""
    if node.value:
        text = node.value.strip()
        lower = node.name.lower()
        if "time" in lower and "offset" not in lower:
            text = utc_milliseconds(text) or text
        else:
            text = canonical_value(text)
        if text:
            text = "=" + text
    return node.name + text + below if text or below else ""


def _ordered(nodes: list, order: tuple) -> str:
    """Render `order`'s fields of `nodes`, consuming what it rendered; a container's own extensions follow."""
    extensions: list = []
    if len(nodes) > 1 and not any(isinstance(n, _Node) and ("eventTime" in n.name or "action" in n.name) for n in nodes):
        extensions = [n for n in nodes if isinstance(n, _Node) and "{" in n.name and "/}" in n.name]
        if extensions:
            nodes[:] = [n for n in nodes if not (isinstance(n, _Node) and "{" in n.name and "/}" in n.name)]
    out = []
    for name, sub in order:
        same = [n for n in nodes if isinstance(n, _Node) and n.name == name]
        if not same:
            continue
        rendered = []
        for node in same:
            if text := _element(node, sub):
                rendered.append(text)
            if not node.children:
                nodes.remove(node)
        rendered.sort()
        out.extend(rendered)
    if extensions:
        out.append(_generic(extensions))
    return "".join(out)


def prehash_string(event: Mapping[str, Any], context: Any = None) -> str:
    """The CBV 2.0 pre-hash string of one event; `context` is its document's ``@context``."""
    ns = namespaces(context, event.get("@context"))
    children: list = []
    for key, value in event.items():
        if key in _IGNORED_ANYWHERE or key == "@context" or key.startswith("@xmlns"):
            continue
        children.extend(_members(key, value, ns, ""))
    nodes = _regroup(children)
    head = _ordered(nodes, ORDER)
    rest = [n for n in nodes if not (isinstance(n, _Node) and n.name in _IGNORED_TOP)]
    event_type = event.get("type", "")
    return "eventType=" + (event_type if isinstance(event_type, str) else str(event_type)) + head + (
        _generic(rest) if rest else "")


def hash_of_prehash(prehash: str) -> str:
    return "ni:///sha-256;" + hashlib.sha256(prehash.encode("utf-8")).hexdigest() + "?ver=CBV2.0"


def event_hash_id(event: Mapping[str, Any], context: Any = None) -> str:
    """CBV 2.0 Event Hash ID: ``ni:///sha-256;<lowercase hex>?ver=CBV2.0``."""
    return hash_of_prehash(prehash_string(event, context))


def event_hash_ids(events: Iterable[Mapping[str, Any]], context: Any = None) -> list[str]:
    return [event_hash_id(e, context) for e in events]
