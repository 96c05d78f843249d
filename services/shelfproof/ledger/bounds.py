"""Boundary checks of a decoded transaction: every integer, string and list bounded, nothing unknown.

Runs at parse time on the transaction's bytes alone (CheckTx, PrepareProposal, ProcessProposal and
FinalizeBlock), so every node gives the same verdict whatever its state. The walk is generic over the
protobuf descriptors, so a field added to ``transaction.proto`` is bounded without anyone remembering
to: integers to ±2^53 (no int64 overflow from one addition or product of them in the rules), with
tighter ranges where a field has a domain meaning (``FIELD_RANGES``); strings, lists and nesting to
fixed limits; enum values to the declared ones; floats refused (no rounding in consensus); unknown
fields refused (they would be stored verbatim in records and are outside what clients think they sign).
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from shelfproof.ledger.codes import ResultCode, TxRejected

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
    _V1 + "Scan.scan_unix_s": (0, LAST_UNIX_S),
}

_T = FieldDescriptor
_UNSIGNED = {_T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_FIXED32, _T.TYPE_FIXED64}
_SIGNED = {_T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_SINT32, _T.TYPE_SINT64, _T.TYPE_SFIXED32, _T.TYPE_SFIXED64}
_FLOATS = {_T.TYPE_FLOAT, _T.TYPE_DOUBLE}


def _range(field: FieldDescriptor) -> tuple[int, int]:
    found = FIELD_RANGES.get(field.full_name)
    if found is not None:
        return found
    return (0, SAFE_INTEGER) if field.type in _UNSIGNED else (-SAFE_INTEGER, SAFE_INTEGER)


def _malformed(message: str) -> TxRejected:
    return TxRejected(ResultCode.MALFORMED, message)


def _out_of_bounds(message: str) -> TxRejected:
    return TxRejected(ResultCode.INVALID_ARGUMENT, message)


def _check_value(field: FieldDescriptor, value: object, path: str, depth: int) -> None:
    kind = field.type
    if kind == _T.TYPE_MESSAGE:
        check_message(value, path, depth + 1)  # type: ignore[arg-type]
    elif kind in _SIGNED or kind in _UNSIGNED:
        low, high = _range(field)
        if not low <= value <= high:  # type: ignore[operator]
            raise _out_of_bounds(f"{path} = {value} is outside [{low}, {high}]")
    elif kind == _T.TYPE_STRING:
        if len(value) > MAX_STRING_CHARS:  # type: ignore[arg-type]
            raise _out_of_bounds(f"{path} is longer than {MAX_STRING_CHARS} characters")
    elif kind == _T.TYPE_ENUM:
        if value not in field.enum_type.values_by_number:
            raise _out_of_bounds(f"{path} = {value} is not a value of {field.enum_type.name}")
    elif kind in _FLOATS:
        raise _malformed(f"{path}: floating-point fields are not allowed in transactions")
    # bool and bytes: bounded by the decoder and the transaction's size.


def check_message(message: Message, path: str = "", depth: int = 0) -> None:
    """Raise TxRejected (MALFORMED or INVALID_ARGUMENT) unless every field of ``message`` is in bounds."""
    name = path or message.DESCRIPTOR.name
    if depth > MAX_DEPTH:
        raise _malformed(f"{name} is nested deeper than {MAX_DEPTH}")
    if len(UnknownFieldSet(message)):
        raise _malformed(f"{name} carries fields this ledger does not know")
    for field, value in message.ListFields():
        field_path = f"{name}.{field.name}"
        if field.is_repeated:
            if len(value) > MAX_REPEATED:
                raise _out_of_bounds(f"{field_path} has {len(value)} entries, at most {MAX_REPEATED}")
            for index, item in enumerate(value):
                _check_value(field, item, f"{field_path}[{index}]", depth)
        else:
            _check_value(field, value, field_path, depth)
