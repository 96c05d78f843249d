"""What a barcode scanner types: GS1 element strings (with FNC1 as the ASCII group separator, or
bracketed AIs), GS1 Digital Link URLs, or a plain GTIN and serial. Scanners also send a symbology
prefix (``]d2``, ``]Q3``, ``]C1``) and, with CAPS LOCK on, upper-case URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shelfproof.gs1.digital_link import InvalidDigitalLink, parse_digital_link
from shelfproof.gs1.keys import InvalidGs1Key, normalize_gtin

GS = "\x1d"
MAX_INPUT = 512
# Fixed-length AIs (GS1 General Specifications, figure 5.10.1-2): no separator follows them.
FIXED_LENGTH = {"00": 18, "01": 14, "02": 14, "11": 6, "12": 6, "13": 6, "15": 6, "16": 6, "17": 6, "20": 2}
VARIABLE_MAX = {"10": 20, "21": 20, "22": 20, "240": 30, "241": 30, "250": 30, "30": 8, "37": 8, "400": 30, "8030": 90}
_SYMBOLOGY = re.compile(r"^\][A-Za-z][0-9]")
_BRACKETED = re.compile(r"\((\d{2,4})\)([^(]*)")


class InvalidScan(ValueError):
    pass


@dataclass(frozen=True)
class ScannedCode:
    gtin: str
    serial: str | None = None
    lot: str | None = None
    expiry: str | None = None
    uri: str | None = None  # the Digital Link as scanned (with its signature), when it was one


def _ai_at(text: str, i: int) -> str:
    for length in (2, 3, 4):
        ai = text[i:i + length]
        if ai in FIXED_LENGTH or ai in VARIABLE_MAX:
            return ai
    raise InvalidScan(f"unknown or unsupported application identifier at position {i + 1}: {text[i:i + 4]!r}")


def parse_element_string(text: str) -> dict[str, str]:
    """AI -> value from an unbracketed element string, FNC1 as GS; or from ``(01)…(21)…``."""
    if text.startswith("("):
        found = _BRACKETED.findall(text)
        if not found or "".join(f"({a}){v}" for a, v in found) != text:
            raise InvalidScan("bracketed element string is malformed")
        return {ai: value for ai, value in found}
    values, i = {}, 0
    while i < len(text):
        if text[i] == GS:
            i += 1
            continue
        ai = _ai_at(text, i)
        i += len(ai)
        if ai in FIXED_LENGTH:
            value = text[i:i + FIXED_LENGTH[ai]]
            if len(value) != FIXED_LENGTH[ai]:
                raise InvalidScan(f"AI ({ai}) needs {FIXED_LENGTH[ai]} digits")
            i += len(value)
        else:
            end = text.find(GS, i)
            end = len(text) if end < 0 else end
            value = text[i:end]
            if not 1 <= len(value) <= VARIABLE_MAX[ai]:
                raise InvalidScan(f"AI ({ai}) takes 1 to {VARIABLE_MAX[ai]} characters")
            i = end
        values[ai] = value
    return values


def parse_scan(raw: str) -> ScannedCode:
    text = raw.strip().replace("<GS>", GS).replace("\\x1d", GS)
    if not text:
        raise InvalidScan("nothing was scanned")
    if len(text) > MAX_INPUT:
        raise InvalidScan(f"a code is at most {MAX_INPUT} characters")
    text = _SYMBOLOGY.sub("", text)
    if text.lower().startswith(("http://", "https://")):
        if text.isupper():  # CAPS LOCK turns the URL upper-case; the scheme and path AIs survive lower-casing
            head, _, rest = text.partition("/01/")
            text = head.lower() + "/01/" + rest
        try:
            link = parse_digital_link(text)
        except InvalidDigitalLink as err:
            raise InvalidScan(f"not a GS1 Digital Link: {err}") from None
        return ScannedCode(link.gtin, link.serial, link.lot, link.expiry, uri=text)
    plain = re.fullmatch(r"(\d{8}|\d{12,14})[\s/,;]+([!-~]{1,20})", text)
    if plain:
        values = {"01": plain.group(1), "21": plain.group(2)}
    elif re.fullmatch(r"\d{8}|\d{12,14}", text):
        values = {"01": text}
    else:
        values = parse_element_string(text)
    if "01" not in values:
        raise InvalidScan("the code carries no GTIN (AI 01)")
    try:
        gtin = normalize_gtin(values["01"])
    except InvalidGs1Key as err:
        raise InvalidScan(str(err)) from None
    return ScannedCode(gtin, values.get("21"), values.get("10"), values.get("17"))
