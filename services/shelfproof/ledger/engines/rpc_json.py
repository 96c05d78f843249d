"""CometBFT v0.38 JSON-RPC results to protobuf messages.

CometBFT's JSON (libs/json) is not protobuf JSON: int64/uint64 are strings, int32/uint32 and enums are
numbers, ``[]byte`` is base64, HexBytes (hashes, addresses) is upper-case hex, times are RFC3339Nano
in UTC with up to 9 fractional digits, zero values may be omitted or null, and a BlockID's part set
header is the key ``parts``. So we convert field by field instead of using ``json_format``.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any, Iterable, Mapping

from google.protobuf import timestamp_pb2
from tendermint.crypto import keys_pb2
from tendermint.types import types_pb2, validator_pb2
from tendermint.version import types_pb2 as version_pb2

from shelfproof.ledger.v1.ledger_pb2 import ProofOp

_PUB_KEY_FIELDS = {
    "tendermint/PubKeyEd25519": "ed25519",
    "tendermint/PubKeySecp256k1": "secp256k1",
}
_TIME = re.compile(
    r"(\d{4,})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d\d):(\d\d))\Z"
)
_UNIX_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
# Go's zero time.Time, which an absent vote carries ("0001-01-01T00:00:00Z").
_GO_ZERO_TIME_SECONDS = -62135596800


def _int(value: Any) -> int:
    """int64 arrives as a string, int32 as a number, an omitted zero as nothing."""
    if value is None or value == "":
        return 0
    return int(value)


def _hex(value: str | None) -> bytes:
    return bytes.fromhex(value) if value else b""


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value, validate=True) if value else b""


def parse_time(value: str) -> timestamp_pb2.Timestamp:
    """RFC 3339 with up to 9 fractional digits, kept to the nanosecond (datetime keeps only 6)."""
    m = _TIME.match(value)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"time of day out of range: {value!r}")
    days = dt.date(year, month, day).toordinal() - _UNIX_EPOCH_ORDINAL
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    frac = m.group(7) or ""
    nanos = int(frac.ljust(9, "0")) if frac else 0
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def format_time(ts: timestamp_pb2.Timestamp) -> str:
    """RFC3339Nano in UTC as Go prints it: trailing zeros of the fraction cut."""
    day, second = divmod(ts.seconds, 86400)
    date = dt.date.fromordinal(day + _UNIX_EPOCH_ORDINAL)
    hh, rem = divmod(second, 3600)
    mm, ss = divmod(rem, 60)
    frac = f".{ts.nanos:09d}".rstrip("0") if ts.nanos else ""
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}T{hh:02d}:{mm:02d}:{ss:02d}{frac}Z"


def _block_id(obj: Mapping[str, Any] | None, out: types_pb2.BlockID) -> None:
    out.SetInParent()  # gogoproto non-nullable: present even when empty
    obj = obj or {}
    out.hash = _hex(obj.get("hash"))
    parts = obj.get("parts") or obj.get("part_set_header") or {}
    out.part_set_header.SetInParent()
    out.part_set_header.total = _int(parts.get("total"))
    out.part_set_header.hash = _hex(parts.get("hash"))


def header_from_json(obj: Mapping[str, Any]) -> types_pb2.Header:
    version = obj.get("version") or {}
    header = types_pb2.Header(
        version=version_pb2.Consensus(block=_int(version.get("block")), app=_int(version.get("app"))),
        chain_id=obj.get("chain_id") or "",
        height=_int(obj.get("height")),
        time=parse_time(obj["time"]),
        last_commit_hash=_hex(obj.get("last_commit_hash")),
        data_hash=_hex(obj.get("data_hash")),
        validators_hash=_hex(obj.get("validators_hash")),
        next_validators_hash=_hex(obj.get("next_validators_hash")),
        consensus_hash=_hex(obj.get("consensus_hash")),
        app_hash=_hex(obj.get("app_hash")),
        last_results_hash=_hex(obj.get("last_results_hash")),
        evidence_hash=_hex(obj.get("evidence_hash")),
        proposer_address=_hex(obj.get("proposer_address")),
    )
    _block_id(obj.get("last_block_id"), header.last_block_id)
    return header


def commit_from_json(obj: Mapping[str, Any]) -> types_pb2.Commit:
    commit = types_pb2.Commit(height=_int(obj.get("height")), round=_int(obj.get("round")))
    _block_id(obj.get("block_id"), commit.block_id)
    for sig in obj.get("signatures") or ():
        ts = sig.get("timestamp")
        commit.signatures.add(
            block_id_flag=_int(sig.get("block_id_flag")),
            validator_address=_hex(sig.get("validator_address")),
            timestamp=parse_time(ts) if ts else timestamp_pb2.Timestamp(seconds=_GO_ZERO_TIME_SECONDS),
            signature=_b64(sig.get("signature")),
        )
    return commit


def signed_header_from_json(obj: Mapping[str, Any]) -> types_pb2.SignedHeader:
    """Accepts the /commit result or its ``signed_header`` member."""
    signed = obj.get("signed_header", obj)
    return types_pb2.SignedHeader(
        header=header_from_json(signed["header"]), commit=commit_from_json(signed["commit"])
    )


def validator_from_json(obj: Mapping[str, Any]) -> validator_pb2.Validator:
    pub_key = obj.get("pub_key") or {}
    field = _PUB_KEY_FIELDS.get(pub_key.get("type", ""))
    if field is None:
        raise ValueError(f"unsupported validator key type {pub_key.get('type')!r}")
    return validator_pb2.Validator(
        address=_hex(obj.get("address")),
        pub_key=keys_pb2.PublicKey(**{field: _b64(pub_key.get("value"))}),
        voting_power=_int(obj.get("voting_power")),
        proposer_priority=_int(obj.get("proposer_priority")),
    )


def validator_set_from_json(
    validators: Iterable[Mapping[str, Any]] | Mapping[str, Any],
    proposer: Mapping[str, Any] | None = None,
) -> validator_pb2.ValidatorSet:
    """From the ``validators`` list of /validators (every page, in order) or that result itself."""
    if isinstance(validators, Mapping):
        validators = validators["validators"]
    vals = [validator_from_json(v) for v in validators]
    vset = validator_pb2.ValidatorSet(validators=vals, total_voting_power=sum(v.voting_power for v in vals))
    if proposer is not None:
        vset.proposer.CopyFrom(validator_from_json(proposer))
    return vset


def proof_ops_from_json(obj: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None) -> list[ProofOp]:
    """From an abci_query ``response`` (key ``proofOps`` there), a ``{ops: [...]}`` object or the list."""
    if obj is None:
        return []
    if isinstance(obj, Mapping):
        if "ops" in obj:
            obj = obj["ops"]
        else:
            obj = obj.get("proofOps", obj.get("proof_ops")) or {}
            obj = obj.get("ops") if isinstance(obj, Mapping) else obj
    return [
        ProofOp(type=op.get("type", ""), key=_b64(op.get("key")), data=_b64(op.get("data")))
        for op in obj or ()
    ]
