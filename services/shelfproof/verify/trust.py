"""The verifier's trust root: the chain id and the validator sets it knows from local files, not from
any server.

A header is believed when validators of a known set signed it for the pinned chain. The sets come
from a CometBFT genesis file (``validators``) or a validator key file (``priv_validator_key.json``, the
embedded engine's one key), as CometBFT orders them (power descending, then address); the chain id
from the same CometBFT genesis, or from the ledger's genesis file beside the embedded key. Evidence
naming another chain is refused, whatever it says.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from tendermint.crypto import keys_pb2
from tendermint.types import validator_pb2

from shelfproof.ledger.proofs import light


class TrustError(ValueError):
    pass


@dataclass(frozen=True)
class TrustRoot:
    """What the verifier believes before it reads any evidence."""

    chain_id: str
    validator_hashes: frozenset[bytes]

    def __post_init__(self) -> None:
        if not self.chain_id:
            raise TrustError("no chain id to pin")
        if not self.validator_hashes:
            raise TrustError("no trusted validator set")


def _chain_id_of_file(path: Path) -> str:
    try:
        chain_id = json.loads(path.read_text())["chain_id"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TrustError(f"cannot read the chain id from {path}: {err}") from None
    if not isinstance(chain_id, str) or not chain_id:
        raise TrustError(f"{path} names no chain id")
    return chain_id


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
        validators = [_validator(data["pub_key"], light.EMBEDDED_VALIDATOR_POWER)]
    else:
        raise TrustError(f"{path} names no validators")
    if not validators:
        raise TrustError(f"{path} names no validators")
    validators.sort(key=lambda v: (-v.voting_power, v.address))
    return light.validator_set_hash(validators)


def local_trust_root(ledger_home: Path) -> TrustRoot:
    """The local ledger's chain id and validator sets, from its files (never from the ledger's answers)."""
    hashes = local_trusted_hashes(ledger_home)
    sources = [ledger_home / "cometbft" / "node0" / "config" / "genesis.json", ledger_home / "genesis.json"]
    chain_ids = {_chain_id_of_file(p) for p in sources if p.exists()}
    if len(chain_ids) != 1:
        raise TrustError(
            f"the files under {ledger_home} name {len(chain_ids)} chain ids ({', '.join(sorted(chain_ids)) or 'none'}); pass --chain-id"
        )
    return TrustRoot(chain_ids.pop(), frozenset(hashes))


def trust_root_from_options(chain_id: str, validators_hash: str, ledger_home: Path) -> TrustRoot:
    """``--chain-id``/``--validators-hash`` when given (both, or neither), else the local files."""
    if bool(chain_id) != bool(validators_hash):
        raise TrustError("pass --chain-id and --validators-hash together, or neither to use the local ledger's files")
    if chain_id:
        try:
            hashes = frozenset(bytes.fromhex(h.strip()) for h in validators_hash.split(",") if h.strip())
        except ValueError:
            raise TrustError("--validators-hash must be hex") from None
        return TrustRoot(chain_id, hashes)
    return local_trust_root(ledger_home)


def local_trusted_hashes(ledger_home: Path) -> set[bytes]:
    """Every validator set the local ledger's files name (the embedded key, the CometBFT genesis)."""
    candidates = [ledger_home / "embedded" / "priv_validator_key.json", ledger_home / "cometbft" / "node0" / "config" / "genesis.json"]
    found = {validators_hash_of_file(p) for p in candidates if p.exists()}
    if not found:
        raise TrustError(f"no validator key or genesis file under {ledger_home}; pass the validators hash instead")
    return found
