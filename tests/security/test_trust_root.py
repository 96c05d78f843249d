"""The verifier's trust root comes from its own files or options, never from the evidence."""

from __future__ import annotations

import base64
import json

import pytest
from nacl.signing import SigningKey

from shelfproof.verify import evidence as ev
from shelfproof.verify.trust import TrustError, TrustRoot, local_trust_root, trust_root_from_options

pytestmark = pytest.mark.security


def _validator_key(path, key: SigningKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pub_key": {"type": "tendermint/PubKeyEd25519", "value": base64.b64encode(bytes(key.verify_key)).decode()}}))


def test_chain_id_and_validators_come_from_local_files(tmp_path) -> None:
    _validator_key(tmp_path / "embedded" / "priv_validator_key.json", SigningKey.generate())
    with pytest.raises(TrustError, match="0 chain ids"):
        local_trust_root(tmp_path)  # a key alone pins no chain
    (tmp_path / "genesis.json").write_text(json.dumps({"chain_id": "shelfproof-dev", "app_state": {}}))
    root = local_trust_root(tmp_path)
    assert root.chain_id == "shelfproof-dev" and len(root.validator_hashes) == 1
    node = tmp_path / "cometbft" / "node0" / "config" / "genesis.json"
    node.parent.mkdir(parents=True)
    other = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
    node.write_text(json.dumps({
        "chain_id": "another-chain", "validators": [{"pub_key": {"type": "tendermint/PubKeyEd25519", "value": other}, "power": "10"}],
    }))
    with pytest.raises(TrustError, match="2 chain ids"):
        local_trust_root(tmp_path)  # two files that disagree: refuse rather than pick one


def test_options_pin_both_or_neither(tmp_path) -> None:
    root = trust_root_from_options("c1", "AB" * 32, tmp_path)
    assert root == TrustRoot("c1", frozenset({bytes.fromhex("AB" * 32)}))
    for chain_id, hashes in (("c1", ""), ("", "AB" * 32)):
        with pytest.raises(TrustError, match="together"):
            trust_root_from_options(chain_id, hashes, tmp_path)
    with pytest.raises(TrustError, match="hex"):
        trust_root_from_options("c1", "not-hex", tmp_path)
    with pytest.raises(TrustError):
        TrustRoot("", frozenset({b"\x00" * 32}))


def test_oversized_evidence_is_refused_before_decoding() -> None:
    base = {"chain_id": "c", "height": 1, "signed_header": "", "validator_set": ""}
    with pytest.raises(ev.EvidenceError, match="at most 32"):
        ev.parse_evidence_json({**base, "proofs": [{}] * 33})
    op = {"type": "simple:v", "key": "", "data": ""}
    with pytest.raises(ev.EvidenceError, match="at most 4"):
        ev.parse_evidence_json({**base, "proofs": [{"store": "keys", "key": "k", "found": True, "value": "", "proof_ops": [op] * 5}]})
