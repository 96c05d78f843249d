"""GS1 Digital Link URIs for serialized items, with our label signature in non-GS1 parameters.

Shape: ``{resolver}/01/{GTIN-14}[/10/{lot}][/21/{serial}][?17={YYMMDD}][&sig=…&kid=…]``. Key qualifiers sit
in the path in GS1's order (22, 10, 21; we emit 10 and 21), data attributes in the query. GS1's slot for
signatures (AI 8030) expects an ISO/IEC 20248 DigSig, so our Ed25519 signature travels in ``sig``
(base64url, unpadded) with the signing key's id in ``kid``: non-numeric keys that GS1 parsers skip.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from shelfproof.gs1.keys import CSET82_VALUE, InvalidGs1Key, normalize_gtin

MAX_URI_LENGTH = 512
# Query keys GS1 defines as data attributes that we accept on an item URI.
DATA_ATTRIBUTES = {"17", "15", "11", "13", "16", "7003"}
OUR_PARAMETERS = {"sig", "kid"}


class InvalidDigitalLink(ValueError):
    pass


def _segment(value: str) -> str:
    """Percent-encode everything outside RFC 3986 unreserved characters, upper-case hex."""
    return quote(value, safe="-._~")


@dataclass(frozen=True)
class DigitalLink:
    gtin: str
    serial: str | None = None
    lot: str | None = None
    expiry: str | None = None  # YYMMDD (AI 17)
    resolver: str = "https://id.gs1.org"
    signature: bytes | None = None
    key_id: str | None = None

    def to_uri(self) -> str:
        path = f"/01/{self.gtin}"
        if self.lot:
            path += f"/10/{_segment(self.lot)}"
        if self.serial:
            path += f"/21/{_segment(self.serial)}"
        query = []
        if self.expiry:
            query.append(f"17={self.expiry}")
        if self.signature is not None:
            query.append("sig=" + base64.urlsafe_b64encode(self.signature).decode().rstrip("="))
        if self.key_id:
            query.append(f"kid={_segment(self.key_id)}")
        return self.resolver.rstrip("/") + path + ("?" + "&".join(query) if query else "")


def canonical_item_uri(gtin: str, serial: str) -> str:
    return DigitalLink(normalize_gtin(gtin), serial).to_uri()


def _decode_b64url(value: str) -> bytes:
    if not value or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in value):
        raise InvalidDigitalLink("sig must be base64url without padding")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidDigitalLink("sig is not valid base64url") from None


def _primary_key_and_qualifiers(rest: list[str]) -> tuple[str, dict[str, str]]:
    try:
        gtin = normalize_gtin(rest[0])
    except InvalidGs1Key as err:
        raise InvalidDigitalLink(str(err)) from None
    qualifiers = rest[1:]
    if len(qualifiers) % 2:
        raise InvalidDigitalLink("path qualifiers come in AI/value pairs")
    values: dict[str, str] = {}
    order = ["22", "10", "21"]
    last = -1
    for ai, raw in zip(qualifiers[::2], qualifiers[1::2]):
        if ai not in order:
            raise InvalidDigitalLink(f"AI ({ai}) is not a qualifier of GTIN")
        if order.index(ai) <= last:
            raise InvalidDigitalLink("qualifiers must be in the order 22, 10, 21")
        last = order.index(ai)
        value = unquote(raw)
        if not CSET82_VALUE.fullmatch(value):
            raise InvalidDigitalLink(f"AI ({ai}) value must be 1-20 GS1 CSET 82 characters")
        values[ai] = value
    return gtin, values


def parse_digital_link(uri: str, *, max_length: int = MAX_URI_LENGTH) -> DigitalLink:
    """Parse an item's Digital Link strictly; raises InvalidDigitalLink naming the problem."""
    if len(uri) > max_length:
        raise InvalidDigitalLink(f"URI longer than {max_length} characters")
    raw_scheme = uri.split(":", 1)[0]
    if raw_scheme not in ("http", "https", "HTTP", "HTTPS"):
        raise InvalidDigitalLink("scheme must be http or https (all lower or all upper case)")
    parts = urlsplit(uri)
    if not parts.netloc:
        raise InvalidDigitalLink("URI has no host")
    if parts.path.endswith("/"):
        raise InvalidDigitalLink("a Digital Link URI may not end in /")
    segments = parts.path.split("/")
    candidates = [i for i, s in enumerate(segments) if s == "01" and i + 1 < len(segments)]
    if not candidates:
        raise InvalidDigitalLink("no /01/{GTIN} primary key in the path")
    # "01" can also be a stem segment or a qualifier's value (a lot "01"): the primary key is the
    # first candidate from which the rest of the path parses.
    problem: InvalidDigitalLink | None = None
    for start in candidates:
        try:
            gtin, values = _primary_key_and_qualifiers(segments[start + 1:])
            break
        except InvalidDigitalLink as err:
            problem = problem or err
    else:
        raise problem
    stem = "/".join(segments[:start])
    seen: set[str] = set()
    expiry = signature = key_id = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key in seen:
            raise InvalidDigitalLink(f"query parameter {key} appears twice")
        seen.add(key)
        if key in ("10", "21", "22"):
            raise InvalidDigitalLink(f"AI ({key}) belongs in the path, not the query")
        if key.isdigit():
            if key not in DATA_ATTRIBUTES:
                raise InvalidDigitalLink(f"AI ({key}) is not a data attribute we accept")
            if key == "17":
                if len(value) != 6 or not value.isdigit():
                    raise InvalidDigitalLink("AI (17) must be YYMMDD")
                expiry = value
        elif key == "sig":
            signature = _decode_b64url(value)
        elif key == "kid":
            key_id = value
    return DigitalLink(
        gtin=gtin,
        serial=values.get("21"),
        lot=values.get("10"),
        expiry=expiry,
        resolver=f"{parts.scheme}://{parts.netloc}{stem}",
        signature=signature,
        key_id=key_id,
    )
