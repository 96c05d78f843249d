"""The verifier's trust root: the validator sets it knows from local files, not from any server.

A header is believed when validators of a known set signed it. The sets come from a CometBFT
genesis file (``validators``) or a validator key file (``priv_validator_key.json``, the embedded
engine's one key), as CometBFT orders them (power descending, then address).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tendermint.crypto import keys_pb2
from tendermint.types import validator_pb2

from shelfproof.ledger import light


class TrustError(ValueError):
    pass


def _validator(pub_key: dict, power: int) -> validator_pb2.Validator:
    if pub_key.get("type") != "tendermint/PubKeyEd25519":
        raise TrustError(f"unsupported validator key type {pub_key.get('type')!r}")
    public_key = base64.b64decode(pub_key["value"])
    address = light._sha256(public_key).digest()[:20]
    return validator_pb2.Validator(address=address, pub_key=keys_pb2.PublicKey(ed25519=public_key), voting_power=power)


def validators_hash_of_file(path: Path) -> bytes:
    """The validator set hash named by a CometBFT genesis.json or a priv_validator_key.json."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrustError(f"cannot read {path}: {err}") from None
    if "validators" in data:
        validators = [_validator(v["pub_key"], int(v["power"])) for v in data["validators"]]
    elif "pub_key" in data:
        from shelfproof.ledger.embedded import VALIDATOR_POWER

        validators = [_validator(data["pub_key"], VALIDATOR_POWER)]
    else:
        raise TrustError(f"{path} names no validators")
    if not validators:
        raise TrustError(f"{path} names no validators")
    validators.sort(key=lambda v: (-v.voting_power, v.address))
    return light.validator_set_hash(validators)


def local_trusted_hashes(ledger_home: Path) -> set[bytes]:
    """Every validator set the local ledger's files name (the embedded key, the CometBFT genesis)."""
    candidates = [ledger_home / "embedded" / "priv_validator_key.json", ledger_home / "cometbft" / "node0" / "config" / "genesis.json"]
    found = {validators_hash_of_file(p) for p in candidates if p.exists()}
    if not found:
        raise TrustError(f"no validator key or genesis file under {ledger_home}; pass the validators hash instead")
    return found
