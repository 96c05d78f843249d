"""Boundary checks of a decoded transaction: every integer, string and list bounded, nothing unknown.

Runs at parse time on the transaction's bytes alone (CheckTx, PrepareProposal, ProcessProposal and
FinalizeBlock), so every node gives the same verdict whatever its state. The walk is generic over the
protobuf descriptors, so a field added to ``transaction.proto`` is bounded without anyone remembering
to: integers to ±2^53 (no int64 overflow from one addition or product of them in the rules), with
tighter ranges where a field has a domain meaning (``FIELD_RANGES``); strings, lists and nesting to
fixed limits; enum values to the declared ones; no float fields (no rounding in consensus). The walk
is planned once per message type and looks only at fields that can be out of bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from shelfproof.ledger.core.codes import ResultCode, TxRejected

SAFE_INTEGER = 2**53
MAX_STRING_CHARS = 4096
MAX_REPEATED = 1000
MAX_DEPTH = 8

DAY_S = 86_400
BPS = 10_000
# 31 Dec 9999 23:59:59 UTC: any real timestamp.
LAST_UNIX_S = 253_402_300_799
# One order line: quantity × unit cost summed over at most MAX_REPEATED lines stays below 2^63
# (10^6 × 10^9 × 10^3 = 10^18), so an order total always fits the int64 it is stored in.
MAX_QUANTITY = 1_000_000
MAX_AMOUNT_MINOR = 1_000_000_000

_V1 = "shelfproof.ledger.v1."
# Inclusive (low, high) per field, by full name; every other integer gets ±SAFE_INTEGER (0 upwards
# for unsigned types).
FIELD_RANGES: dict[str, tuple[int, int]] = {
    _V1 + "TransactionBody.created_unix_ms": (0, LAST_UNIX_S * 1000),
    _V1 + "Money.amount_minor": (0, MAX_AMOUNT_MINOR),
    _V1 + "GuardrailPolicy.budget_period_s": (0, 366 * DAY_S),
    _V1 + "GuardrailPolicy.draft_ttl_s": (0, 366 * DAY_S),
    _V1 + "GuardrailPolicy.max_discount_bps": (0, BPS),
    # A floor or a daily change above 100 % is a real policy (a 3× markup), so ten times that.
    _V1 + "GuardrailPolicy.margin_floor_bps": (0, 10 * BPS),
    _V1 + "GuardrailPolicy.max_price_change_bps_per_day": (0, 10 * BPS),
    _V1 + "GuardrailPolicy.approval_quorum": (0, MAX_REPEATED),
    _V1 + "CreatePromotion.discount_bps": (0, BPS),
    _V1 + "CreatePromotion.start_unix_s": (0, LAST_UNIX_S),
    _V1 + "CreatePromotion.end_unix_s": (0, LAST_UNIX_S),
    _V1 + "ItemBounds.min_order_quantity": (0, MAX_QUANTITY),
    _V1 + "ItemBounds.max_order_quantity": (0, MAX_QUANTITY),
    _V1 + "ItemBounds.case_pack": (0, MAX_QUANTITY),
    _V1 + "ItemBounds.lead_time_days": (0, 3650),
    _V1 + "DraftOrderLine.quantity": (0, MAX_QUANTITY),
    _V1 + "OrderLineResponse.confirmed_quantity": (0, MAX_QUANTITY),
    _V1 + "Scan.scan_unix_s": (0, LAST_UNIX_S),
    # Pricing: amounts like Money's, budgets up to a thousand times that, times like every other.
    _V1 + "ChangePrice.valid_until_unix_s": (0, LAST_UNIX_S),
    _V1 + "SchedulePriceChange.effective_unix_s": (0, LAST_UNIX_S),
    _V1 + "CreatePromotion.amount_off_minor": (0, MAX_AMOUNT_MINOR),
    _V1 + "CreatePromotion.fixed_price_minor": (0, MAX_AMOUNT_MINOR),
    _V1 + "CreatePromotion.buy_quantity": (0, MAX_REPEATED),
    _V1 + "CreatePromotion.pay_quantity": (0, MAX_REPEATED),
    _V1 + "CreatePromotion.priority": (-MAX_REPEATED, MAX_REPEATED),
    _V1 + "CreatePromotion.budget_units": (0, MAX_QUANTITY * MAX_REPEATED),
    _V1 + "CreatePromotion.budget_minor": (0, MAX_AMOUNT_MINOR * MAX_REPEATED),
    _V1 + "GuardrailPolicy.min_price_minor": (0, MAX_AMOUNT_MINOR),
    _V1 + "GuardrailPolicy.auto_apply_discount_below_bps": (0, BPS),
    _V1 + "GuardrailOverride.margin_floor_bps": (0, 10 * BPS),
    _V1 + "GuardrailOverride.max_discount_bps": (0, BPS),
    _V1 + "GuardrailOverride.max_price_change_bps_per_day": (0, 10 * BPS),
    _V1 + "GuardrailOverride.min_price_minor": (0, MAX_AMOUNT_MINOR),
    _V1 + "PromotionRedemption.units": (0, MAX_QUANTITY),
    _V1 + "PromotionRedemption.discount_minor": (0, MAX_AMOUNT_MINOR),
}

_T = FieldDescriptor
_UNSIGNED = {_T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_FIXED32, _T.TYPE_FIXED64}
_SIGNED = {_T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_SINT32, _T.TYPE_SINT64, _T.TYPE_SFIXED32, _T.TYPE_SFIXED64}
_FLOATS = {_T.TYPE_FLOAT, _T.TYPE_DOUBLE}
_TYPE_LIMITS = {
    **{t: (-(2**31), 2**31 - 1) for t in (_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32)},
    **{t: (0, 2**32 - 1) for t in (_T.TYPE_UINT32, _T.TYPE_FIXED32)},
}
_INTEGER, _STRING, _ENUM, _MESSAGE, _ONEOF = range(5)


@dataclass(frozen=True, slots=True)
class _Check:
    name: str
    kind: int
    repeated: bool
    low: int = 0
    high: int = 0
    enum_values: frozenset[int] = frozenset()
    message: "_Plan | None" = None
    # _ONEOF: the check of each member by name (only the member that is set is looked at).
    members: "dict[str, _Check] | None" = None


@dataclass(frozen=True)
class _Plan:
    """The fields of one message type that can be out of bounds (the rest need no look)."""

    name: str
    checks: tuple[_Check, ...]


_plans: dict[str, _Plan] = {}
_planning: set[str] = set()


def _range(field: FieldDescriptor) -> tuple[int, int]:
    found = FIELD_RANGES.get(field.full_name)
    if found is not None:
        return found
    return (0, SAFE_INTEGER) if field.type in _UNSIGNED else (-SAFE_INTEGER, SAFE_INTEGER)


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _plans.get(descriptor.full_name)
    if plan is not None:
        return plan
    if descriptor.full_name in _planning:
        raise TypeError(f"{descriptor.full_name} is recursive: plan its depth before allowing it in a transaction")
    _planning.add(descriptor.full_name)
    checks: list[_Check] = []
    oneofs: dict[str, dict[str, _Check]] = {}
    for field in descriptor.fields:
        oneof = field.containing_oneof
        target = checks if oneof is None else []
        _plan_field(field, target)
        if oneof is not None and target:
            oneofs.setdefault(oneof.name, {})[field.name] = target[0]
    checks += [_Check(name, _ONEOF, False, members=members) for name, members in oneofs.items()]
    plan = _Plan(descriptor.name, tuple(checks))
    _plans[descriptor.full_name] = plan
    return plan


def _plan_field(field: FieldDescriptor, checks: list[_Check]) -> None:
    repeated = field.is_repeated
    if field.type in _FLOATS:
        raise TypeError(f"{field.full_name}: floating-point fields have no place in a transaction")
    if field.type == _T.TYPE_MESSAGE:
        sub = _plan(field.message_type)
        if sub.checks or repeated:
            checks.append(_Check(field.name, _MESSAGE, repeated, message=sub))
    elif field.type in _SIGNED or field.type in _UNSIGNED:
        low, high = _range(field)
        type_low, type_high = _TYPE_LIMITS.get(field.type, (low - 1, high + 1))
        if repeated or low > type_low or high < type_high:  # a 32-bit type may need no look
            checks.append(_Check(field.name, _INTEGER, repeated, low, high))
    elif field.type == _T.TYPE_STRING:
        checks.append(_Check(field.name, _STRING, repeated))
    elif field.type == _T.TYPE_ENUM:
        checks.append(_Check(field.name, _ENUM, repeated, enum_values=frozenset(field.enum_type.values_by_number)))
    elif repeated:  # bytes and bool lists: only their length
        checks.append(_Check(field.name, -1, repeated))


def _refuse(plan: _Plan, check: _Check, problem: str) -> TxRejected:
    return TxRejected(ResultCode.INVALID_ARGUMENT, f"{plan.name}.{check.name} {problem}")


def _check_scalar(plan: _Plan, check: _Check, value) -> None:
    if check.kind == _INTEGER:
        if not check.low <= value <= check.high:
            raise _refuse(plan, check, f"= {value} is outside [{check.low}, {check.high}]")
    elif check.kind == _STRING:
        if len(value) > MAX_STRING_CHARS:
            raise _refuse(plan, check, f"is longer than {MAX_STRING_CHARS} characters")
    elif check.kind == _ENUM:
        if value not in check.enum_values:
            raise _refuse(plan, check, f"= {value} is not a declared value")


def _check(message: Message, plan: _Plan, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TxRejected(ResultCode.MALFORMED, f"{plan.name} is nested deeper than {MAX_DEPTH}")
    for check in plan.checks:
        if check.kind == _INTEGER and not check.repeated:  # the common case, inline
            value = getattr(message, check.name)
            if not check.low <= value <= check.high:
                raise _refuse(plan, check, f"= {value} is outside [{check.low}, {check.high}]")
        elif check.repeated:
            values = getattr(message, check.name)
            if len(values) > MAX_REPEATED:
                raise _refuse(plan, check, f"has {len(values)} entries, at most {MAX_REPEATED}")
            if check.kind == _MESSAGE:
                for item in values:
                    _check(item, check.message, depth + 1)
            elif check.kind >= 0:
                for item in values:
                    _check_scalar(plan, check, item)
        elif check.kind == _MESSAGE:
            if message.HasField(check.name):
                _check(getattr(message, check.name), check.message, depth + 1)
        elif check.kind == _ONEOF:
            member = message.WhichOneof(check.name)
            if member is not None and member in check.members:
                single = check.members[member]
                if single.kind == _MESSAGE:
                    _check(getattr(message, member), single.message, depth + 1)
                else:
                    _check_scalar(plan, single, getattr(message, member))
        else:
            _check_scalar(plan, check, getattr(message, check.name))


def check_message(message: Message) -> None:
    """Raise TxRejected (INVALID_ARGUMENT, or MALFORMED past MAX_DEPTH) unless every field of
    ``message`` is within bounds. Unknown fields are the parser's to refuse (``tx.parse``)."""
    _check(message, _plan(message.DESCRIPTOR), 0)
