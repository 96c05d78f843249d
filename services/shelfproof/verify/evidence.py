"""Ledger evidence for one scanned item: which keys prove what, how to check them, and their JSON.

Every key a verdict rests on comes proven, present or absent, against the app hash in a header the
validators signed: the signing key and its revocation (``keys``), the product (``products``), the
batch and its serials' Merkle root (``batches``, plus the serial's path to that root), the lot's
recall (``recalls``), a label void (``status``), the item's disposition and custody steps (``items``)
its scan history, claim and compromise (``scans``) and the brand's declared markets (``markets``). A present key carries a value proof, an absent one an
absence proof (merkle.verify_absence_proof); a value with neither is refused, so "not recalled" is a
fact, not a gap in what the server chose to send.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass

from tendermint.types import types_pb2, validator_pb2

from shelfproof.ledger.proofs import light
from shelfproof.ledger.proofs.merkle import Proof, ProofError, keypath_for, verify_store_proof
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.verify.verdict import key_revoked

# What each store's key says about the item, for people reading the evidence.
FACT_OF_STORE = {
    "keys": "the label's signing key is registered to the brand",
    "products": "the product is registered by its brand owner",
    "batches": "the batch was commissioned with this Merkle root of its serials",
    "recalls": "the lot is recalled",
    "status": "the brand voided this label",
    "items": "the item's current status and custody steps",
    "scans": "the item's consumer scan history",
    "markets": "the regions the brand sells the product in",
}
# What a proven absence of each store's key says, as the page and the verifier print it.
ABSENCE_OF_STORE = {
    "keys": "signing key not registered — proven",
    "products": "product not registered — proven",
    "batches": "batch not commissioned — proven",
    "recalls": "not recalled — proven",
    "status": "label not voided — proven",
    "items": "no custody events recorded — proven",
    "scans": "not scanned before — proven",
    "markets": "no markets declared — proven",
}
KEY_NOT_REVOKED = "key not revoked — proven"
RECORD_OF_STORE = {
    "keys": st.KeyRecord,
    "products": st.ProductRecord,
    "batches": st.BatchRecord,
    "recalls": st.StatusRecord,
    "status": st.StatusRecord,
    "items": st.ItemRecord,
    "scans": st.ScanRecord,
    "markets": st.MarketsRecord,
}


# A label's key id: the first 16 hex digits of its key's fingerprint; anything else reads no key.
KEY_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
# Bounds on what a verifier decodes: one item's evidence is seven values of two operations each.
MAX_EVIDENCE_VALUES = 32
MAX_PROOF_OPS = 4
# Header time may run this far ahead of the verifier's clock (skew between machines).
MAX_CLOCK_AHEAD_S = 30.0


class EvidenceError(ValueError):
    """The evidence does not check out: a signature, a validator set or a proof is wrong."""


@dataclass(frozen=True)
class ItemRef:
    """Where an item's facts live on the ledger."""

    gtin: str
    serial: str
    key_fingerprint: str
    batch_id: str
    lot: str

    @staticmethod
    def key_id_of(key_id: str | None) -> str:
        return key_id if key_id and KEY_FINGERPRINT.fullmatch(key_id) else ""

    def keys(self) -> list[tuple[str, bytes]]:
        """The keys to read; without a key id or a batch (an unknown item) those are left out."""
        item = f"{self.gtin}/{self.serial}".encode()
        keys = [("keys", self.key_fingerprint.encode())] if self.key_fingerprint else []
        keys += [("products", self.gtin.encode()), ("markets", self.gtin.encode())]
        if self.batch_id:
            keys += [("batches", self.batch_id.encode()), ("recalls", f"{self.gtin}/{self.lot}".encode())]
        return keys + [("status", item), ("items", item), ("scans", item)]


@dataclass
class CheckedHeader:
    chain_id: str
    height: int  # the state's height; the header is height + 1
    app_hash: bytes
    commit: light.CommitCheck
    signed_header: bytes
    validator_set: bytes
    # Header height + 1's BFT time, Unix seconds: how old the evidence is.
    time_unix_s: float = 0.0

    # Every report at this height carries the same header and validator set: encoded once.
    @functools.cached_property
    def signed_header_b64(self) -> str:
        return _b64(self.signed_header)

    @functools.cached_property
    def validator_set_b64(self) -> str:
        return _b64(self.validator_set)


def check_header(
    chain_id: str, height: int, signed_header: bytes, validator_set: bytes, trusted: set[bytes]
) -> CheckedHeader:
    """Header ``height + 1``: signed by more than 2/3 of a trusted validator set (cached per header)."""
    try:
        header = types_pb2.SignedHeader.FromString(signed_header)
        validators = validator_pb2.ValidatorSet.FromString(validator_set)
    except Exception as err:  # noqa: BLE001 - undecodable evidence is wrong evidence
        raise EvidenceError(f"undecodable header or validator set: {err}") from None
    if header.header.height != height + 1:
        raise EvidenceError(f"state at height {height} needs header {height + 1}, got {header.header.height}")
    if header.header.validators_hash not in trusted:
        raise EvidenceError("the header's validators are not a validator set this verifier trusts")
    try:
        commit = light.verify_commit(chain_id, header, validators)
    except light.LightVerificationError as err:
        raise EvidenceError(f"header {height + 1}: {err}") from None
    return CheckedHeader(
        chain_id, height, bytes(header.header.app_hash), commit, signed_header, validator_set,
        light.header_unix_s(header.header),
    )


def check_fresh(header: CheckedHeader, now_unix_s: float, max_age_s: float, max_ahead_s: float = MAX_CLOCK_AHEAD_S) -> None:
    """Refuse evidence whose header is older than ``max_age_s`` by the verifier's clock (an old height
    can predate a recall), or so far ahead of that clock that one of the two is wrong."""
    age = now_unix_s - header.time_unix_s
    if age > max_age_s:
        raise EvidenceError(
            f"the evidence is {age:,.0f} s old (header {header.height + 1}); this verifier accepts at most {max_age_s:,.0f} s"
        )
    if -age > max_ahead_s:
        raise EvidenceError(f"header {header.height + 1} is {-age:,.0f} s ahead of this verifier's clock")


def check_values(header: CheckedHeader, values: list[pb.StoreValue]) -> dict[str, object]:
    """Each value's proof against the header's app hash: a value proof when found, an absence proof
    when not (a value without its proof is refused). Returns the present records by store."""
    records: dict[str, object] = {}
    for value in values:
        name = f"{value.store}/{value.key.decode(errors='replace')}"
        if value.store not in RECORD_OF_STORE:
            raise EvidenceError(f"unexpected store {value.store!r} in the evidence")
        if not value.proof_ops:
            raise EvidenceError(f"{name} comes without a proof")
        if not value.found and value.value:
            raise EvidenceError(f"{name} is said absent but carries a value")
        try:
            verify_store_proof(
                value.proof_ops, header.app_hash, keypath_for(value.store, value.key), value.value if value.found else None
            )
        except ProofError as err:
            raise EvidenceError(f"{name}: {err}") from None
        if value.found:
            try:
                records[value.store] = RECORD_OF_STORE[value.store].FromString(value.value)
            except Exception:  # noqa: BLE001 - a proven value that does not decode is not ours to read
                raise EvidenceError(f"{name}: the proven value is not a {value.store} record") from None
    return records


def proven_facts(values: list[pb.StoreValue], records: dict[str, object]) -> list[str]:
    """What checked values establish, present and absent, in the words the page and CLI print."""
    facts = []
    for value in values:
        if value.found:
            facts.append(FACT_OF_STORE[value.store])
            key = records.get("keys") if value.store == "keys" else None
            if key is not None and not key_revoked(key):
                facts.append(KEY_NOT_REVOKED)
        else:
            facts.append(ABSENCE_OF_STORE[value.store])
    return facts


def check_membership(serial: str, proof: Proof, batch: st.BatchRecord) -> None:
    try:
        proof.verify(batch.batch.serials_merkle_root, serial.encode())
    except ProofError as err:
        raise EvidenceError(f"serial {serial} is not in batch {batch.batch.batch_id}: {err}") from None
    if proof.total != batch.batch.count:
        raise EvidenceError(f"the path is for a tree of {proof.total} serials, the batch has {batch.batch.count}")


# --- JSON, for the API and the command-line verifier --------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise EvidenceError("evidence has a field that is not base64") from None


def value_json(v: pb.StoreValue) -> dict:
    """One proven value as the evidence JSON carries it (its store, key, value and proof operations)."""
    return {
        "store": v.store,
        "key": v.key.decode(),
        "fact": FACT_OF_STORE.get(v.store, v.store),
        "found": v.found,
        "value": _b64(v.value),
        "proof_ops": [{"type": op.type, "key": _b64(op.key), "data": _b64(op.data)} for op in v.proof_ops],
    }


def evidence_json(
    header: CheckedHeader, values: list[pb.StoreValue], membership: Proof | None, proofs: list[dict] | None = None
) -> dict:
    """``proofs``: ``value_json`` of each of ``values``, when the caller keeps them (most repeat from scan to scan)."""
    return {
        "chain_id": header.chain_id,
        "height": header.height,
        "header_height": header.height + 1,
        "app_hash": header.app_hash.hex().upper(),
        "validators": {
            "signed": header.commit.signers,
            "signed_power": header.commit.signed_power,
            "total_power": header.commit.total_power,
        },
        "signed_header": header.signed_header_b64,
        "validator_set": header.validator_set_b64,
        "proofs": proofs if proofs is not None else [value_json(v) for v in values],
        "batch_membership": None
        if membership is None
        else {
            "leaf_index": membership.index,
            "total": membership.total,
            "leaf_hash": membership.leaf_hash.hex(),
            "aunts": [a.hex() for a in membership.aunts],
        },
    }


def parse_evidence_json(data: dict) -> tuple[str, int, bytes, bytes, list[pb.StoreValue], Proof | None]:
    """(chain id, height, signed header, validator set, values, membership path) from evidence_json."""
    if not isinstance(data, dict) or not isinstance(data.get("proofs"), list) or len(data["proofs"]) > MAX_EVIDENCE_VALUES:
        raise EvidenceError(f"malformed evidence: expected at most {MAX_EVIDENCE_VALUES} proven values")
    if any(not isinstance(p, dict) or len(p.get("proof_ops") or ()) > MAX_PROOF_OPS for p in data["proofs"]):
        raise EvidenceError(f"malformed evidence: at most {MAX_PROOF_OPS} proof operations per value")
    try:
        values = [
            pb.StoreValue(
                store=p["store"], key=p["key"].encode(), found=bool(p["found"]), value=_unb64(p["value"]),
                proof_ops=[pb.ProofOp(type=o["type"], key=_unb64(o["key"]), data=_unb64(o["data"])) for o in p["proof_ops"]],
            )
            for p in data["proofs"]
        ]
        for v in values:
            if v.store not in RECORD_OF_STORE:
                raise EvidenceError(f"unexpected store {v.store!r} in the evidence")
        m = data.get("batch_membership")
        membership = (
            Proof(int(m["total"]), int(m["leaf_index"]), bytes.fromhex(m["leaf_hash"]), tuple(bytes.fromhex(a) for a in m["aunts"]))
            if m
            else None
        )
        return (
            str(data["chain_id"]), int(data["height"]), _unb64(data["signed_header"]), _unb64(data["validator_set"]),
            values, membership,
        )
    except (KeyError, TypeError, ValueError, ProofError) as err:
        if isinstance(err, EvidenceError):
            raise
        raise EvidenceError(f"malformed evidence: {err}") from None
