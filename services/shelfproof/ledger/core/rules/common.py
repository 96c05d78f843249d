"""Shared by every rule: constants, the transaction's context, state access, validation, and who owns
a GTIN or GLN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from shelfproof.gs1.keys import InvalidGs1Key, normalize_gtin, validate_gln
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

R = TypeVar("R", bound=Message)

BPS = 10_000
MAX_EPCS_PER_EVENT = 1_000
MAX_SCANS_PER_TX = 1_000
MAX_SERIALS_PER_VOID = 1_000
MAX_CUSTODY_STEPS = 16
MAX_PREFIXES_PER_ORG = 16
# Consensus-path patterns: ASCII only and used with fullmatch ("$" would also accept a trailing
# newline, "\d" other scripts' digits); none backtracks (no nested or adjacent overlapping repeats).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", re.ASCII)
_EVENT_HASH = re.compile(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_COUNTRY_CODE = re.compile(r"[A-Z]{2}", re.ASCII)
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}", re.ASCII)



@dataclass(frozen=True)
class TxContext:
    height: int
    time_unix_s: int
    tx_hash: bytes
    signer: st.AgentRecord
    permissions: frozenset[str]
    # The key that signed (one of signer.keys) and the chain, for proofs of possession.
    key_id: str = ""
    chain_id: str = ""

    @property
    def key(self) -> st.AgentKey | None:
        return next((k for k in self.signer.keys if k.key_id == self.key_id), None)


def _denied(message: str) -> TxRejected:
    return TxRejected(ResultCode.PERMISSION_DENIED, message)


# --- state access ------------------------------------------------------------------------------


def encode(record: Message) -> bytes:
    return record.SerializeToString(deterministic=True)


def read(state: Overlay, store: str, key: str, record_type: type[R]) -> R | None:
    raw = state.get(store, key.encode())
    if raw is None:
        return None
    record = record_type()
    record.ParseFromString(raw)
    return record


def write(state: Overlay, store: str, key: str, record: Message) -> None:
    state.set(store, key.encode(), encode(record))


def permissions_of(state: Overlay, agent: st.AgentRecord) -> frozenset[str]:
    granted: set[str] = set()
    for role in agent.roles:
        record = read(state, "roles", f"{agent.organization_gln}/{role}", st.RoleRecord)
        if record is not None:
            granted.update(record.permissions)
    return frozenset(granted)


# --- validation helpers ------------------------------------------------------------------------


def _invalid(message: str) -> TxRejected:
    return TxRejected(ResultCode.INVALID_ARGUMENT, message)


def _gtin(value: str) -> str:
    try:
        gtin = normalize_gtin(value)
    except InvalidGs1Key as err:
        raise _invalid(str(err)) from None
    if gtin != value:
        raise _invalid(f"GTIN must be sent as GTIN-14 ({gtin}), got {value}")
    return gtin


def _gln(value: str) -> str:
    try:
        return validate_gln(value)
    except InvalidGs1Key as err:
        raise _invalid(str(err)) from None


def _identifier(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise _invalid(f"{what} must be 1-128 of [A-Za-z0-9._:/-], got {value!r}")
    return value


def _text(value: str, what: str, limit: int = 256, required: bool = True) -> str:
    if required and not value.strip():
        raise _invalid(f"{what} is required")
    if len(value) > limit:
        raise _invalid(f"{what} is longer than {limit} characters")
    return value


def _policy(state: Overlay, org_gln: str) -> st.GuardrailPolicy | None:
    return read(state, "policies", org_gln, txpb.GuardrailPolicy)


def _guardrail(message: str) -> TxRejected:
    return TxRejected(ResultCode.GUARDRAIL_VIOLATED, message)


def _same_org(ctx: TxContext, org_gln: str) -> None:
    """Every write is scoped to the signer's organisation (the consortium included: it has no
    powers over members' records)."""
    if org_gln != ctx.signer.organization_gln:
        raise _denied(f"{ctx.signer.agent_id} belongs to {ctx.signer.organization_gln}, not {org_gln}")


def _require_org(state: Overlay, gln: str) -> st.OrganizationRecord:
    org = read(state, "orgs", gln, st.OrganizationRecord)
    if org is None or org.status != st.ORGANIZATION_STATUS_ACTIVE:
        raise TxRejected(ResultCode.NOT_FOUND, f"organization {gln} is not an active member")
    return org


def _owned_product(state: Overlay, ctx: TxContext, gtin: str) -> st.ProductRecord:
    product = read(state, "products", _gtin(gtin), st.ProductRecord)
    if product is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"product {gtin} is not registered")
    _same_org(ctx, product.brand_owner_gln)
    return product


# --- GS1 company prefixes: who owns a GTIN or a GLN ----------------------------------------------

_PREFIX = re.compile(r"[0-9]{6,12}", re.ASCII)
MIN_PREFIX_DIGITS, MAX_PREFIX_DIGITS = 6, 12


def _prefix_key(digits: str) -> str:
    return f"prefix/{digits}"


def _prefixes(values) -> list[str]:
    if len(values) > MAX_PREFIXES_PER_ORG:
        raise _invalid(f"at most {MAX_PREFIXES_PER_ORG} company prefixes")
    for value in values:
        if not _PREFIX.fullmatch(value):
            raise _invalid(f"company prefix {value!r} must be 6-12 digits")
    return sorted(set(values))


def _claim_prefix(state: Overlay, prefix: str, org_gln: str) -> None:
    """Claim ``prefix`` for ``org_gln``; refused when it or any of its heads is claimed, or it is the
    head of a claim (no organisation's keys may fall inside another's prefix)."""
    if read(state, "consortium", _prefix_key(prefix), st.PrefixRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"company prefix {prefix} overlaps a claimed prefix")
    for length in range(MIN_PREFIX_DIGITS, len(prefix)):
        head = read(state, "consortium", _prefix_key(prefix[:length]), st.PrefixRecord)
        if head is not None and head.organization_gln:
            raise TxRejected(ResultCode.ALREADY_EXISTS, f"company prefix {prefix} lies inside claimed prefix {head.prefix}")
    write(state, "consortium", _prefix_key(prefix), st.PrefixRecord(prefix=prefix, organization_gln=org_gln))
    for length in range(MIN_PREFIX_DIGITS, len(prefix)):
        if read(state, "consortium", _prefix_key(prefix[:length]), st.PrefixRecord) is None:
            write(state, "consortium", _prefix_key(prefix[:length]), st.PrefixRecord(prefix=prefix[:length]))


def _prefix_owner(state: Overlay, digits: str) -> str | None:
    for length in range(MIN_PREFIX_DIGITS, min(len(digits), MAX_PREFIX_DIGITS) + 1):
        claim = read(state, "consortium", _prefix_key(digits[:length]), st.PrefixRecord)
        if claim is not None and claim.organization_gln:
            return claim.organization_gln
    return None


def gtin_owner(state: Overlay, gtin14: str) -> str | None:
    """The organisation whose company prefix the GTIN-14 carries (after the indicator digit)."""
    return _prefix_owner(state, gtin14[1:13])


def gln_owner(state: Overlay, gln: str) -> str | None:
    return _prefix_owner(state, gln[:12])


def _own_gln(state: Overlay, ctx: TxContext, gln: str, what: str) -> str:
    gln = _gln(gln)
    if gln_owner(state, gln) != ctx.signer.organization_gln:
        raise _denied(f"{what} {gln} does not carry a company prefix of {ctx.signer.organization_gln}")
    return gln
