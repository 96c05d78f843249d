"""Request-field conversions every service shares: GS1 keys, keyset pagination (AIP-158), timestamps."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from shelfproof.gs1.keys import InvalidGs1Key, normalize_gtin, validate_gln
from shelfproof.runtime.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def gtin_field(value: str, field: str) -> str:
    try:
        return normalize_gtin(value)
    except InvalidGs1Key as err:
        raise InvalidArgument(str(err), field_violations=[FieldViolation(field, str(err))]) from None


def gln_field(value: str, field: str) -> str:
    try:
        return validate_gln(value)
    except InvalidGs1Key as err:
        raise InvalidArgument(str(err), field_violations=[FieldViolation(field, str(err))]) from None


def page_request(page_size: int, page_token: str, key_check) -> tuple[int, str]:
    """(page size, the key after which the page starts) for keyset pagination (AIP-158)."""
    if page_size < 0:
        raise InvalidArgument("page_size must be >= 0", field_violations=[FieldViolation("page_size", ">= 0")])
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return size, ""
    try:
        after = base64.urlsafe_b64decode(page_token.encode()).decode()
        key_check(after, "page_token")
    except (ValueError, InvalidArgument):
        raise InvalidArgument(
            "page_token is not one this service issued", field_violations=[FieldViolation("page_token", "invalid")]
        ) from None
    return size, after


def next_page_token(rows: list[dict], size: int, key: str) -> str:
    return base64.urlsafe_b64encode(rows[size - 1][key].encode()).decode() if len(rows) > size else ""


def timestamp_of(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def time_field(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    """A request's Timestamp as an aware UTC datetime; one outside 0001-01-01..9999-12-31 (or with nanos
    outside 0..999,999,999) is INVALID_ARGUMENT, not the ValueError protobuf raises."""
    try:
        return value.ToDatetime(tzinfo=timezone.utc)
    except (ValueError, OverflowError) as err:
        raise InvalidArgument(f"{field} is not a valid time", field_violations=[FieldViolation(field, str(err)[:200])]) from None


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)
    return flag if isinstance(flag, bool) else field.label == FieldDescriptor.LABEL_REPEATED


# Requests up to this size are first looked at as wire bytes (see nul_in_text).
_WIRE_CHECK_MAX_BYTES = 64 * 1024


def nul_in_text(message: Message, path: str = "") -> str | None:
    """The path of the first text field of ``message`` (nested, repeated and map fields included) that
    holds a NUL character, or None. No shelfproof API takes NUL in text (GS1 character sets exclude it,
    PostgreSQL's text cannot store it); documents travel as bytes.

    UTF-8 writes U+0000 as the byte 0x00 and nothing else as it, so a message whose serialization has no
    0x00 byte holds no NUL in any text: one C++ serialization instead of a Python walk of every field
    (a fifth of a 100-line GetPrices call). Zero bytes that are not text (a double, a fixed64, an empty
    message) send it down the walk, which finds the field."""
    if not path and message.ByteSize() <= _WIRE_CHECK_MAX_BYTES and b"\x00" not in message.SerializeToString():
        return None
    return _nul_in_fields(message, path)


def _nul_in_fields(message: Message, path: str) -> str | None:
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if key_field.type == FieldDescriptor.TYPE_STRING and "\x00" in key:
                    return f"{name}[{key[:40]!r}]"
                if value_field.type == FieldDescriptor.TYPE_STRING and "\x00" in item:
                    return f"{name}[{key!r}]"
                if value_field.type == FieldDescriptor.TYPE_MESSAGE and (found := _nul_in_fields(item, f"{name}[{key!r}].")):
                    return found
            continue
        items = value if _repeated(field) else [value]
        for index, item in enumerate(items):
            where = f"{name}[{index}]" if _repeated(field) else name
            if field.type == FieldDescriptor.TYPE_STRING and "\x00" in item:
                return where
            if field.type == FieldDescriptor.TYPE_MESSAGE and (found := _nul_in_fields(item, f"{where}.")):
                return found
    return None
