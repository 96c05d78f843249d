"""Request-field conversions every service shares: GS1 keys, keyset pagination (AIP-158), timestamps."""

from __future__ import annotations

import base64
from datetime import datetime

from google.protobuf import timestamp_pb2

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
