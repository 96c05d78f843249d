"""Every GS1 key an EPCIS event can carry, as the constrained canonical Digital Link the CBV 2.0 Event
Hash ID compares: EPC URNs (id, class and pattern), and Digital Links on any host, with alphabetic
short names, query strings, CPV and lot-below-serial removed.

The output follows the hash algorithm's "constrained canonical GS1 Digital Link": host id.gs1.org,
numeric AIs, GTIN-14, only the finest identification level, no data attributes. Values are left as
the URN escaped them, with ``! ( ) * + , :`` percent-encoded; a Digital Link whose values carry
percent-escapes or characters outside the hash's value set is not a canonical form and is compared
as given (that is what the reference generator, and therefore every partner, does).

Everything here is linear-time: inputs are bounded by ``MAX_KEY_URI`` first, and parsing is string
splitting plus character-set checks, never a backtracking regular expression. It runs inside consensus
(``item_of`` is called by the ledger rules).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import unquote

DL_HOST = "https://id.gs1.org"
# Longer than any GS1 key URI (the longest, a GIAI or GINC on a custom stem, stays well below).
MAX_KEY_URI = 1024

_DIGITS = frozenset("0123456789")
# GS1 key character set as EPC URNs write it (TDS GS3A3 component), escapes checked separately.
_URN_CHARS = frozenset("!')(*+,.0123456789:;=ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-")
# Escapes TDS allows in a GS3A3 component: %21-%7A minus the ones that must stay raw.
_URN_ESCAPES = frozenset(
    ["21", "22", "25", "26", "27", "28", "29", "2A", "2B", "2C", "2D", "2E", "2F"]
    + [f"3{c}" for c in "0123456789ABCDEF"]
    + [f"4{c}" for c in "123456789ABCDEF"]
    + [f"5{c}" for c in "0123456789AF"]
    + [f"6{c}" for c in "123456789ABCDEF"]
    + [f"7{c}" for c in "0123456789A"]
)
# CPI component parts: [0-9A-Z-] plus escapes of # - / digits and capitals.
_CPI_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
_CPI_ESCAPES = frozenset(
    ["23", "2D", "2F"] + [f"3{c}" for c in "0123456789"] + [f"4{c}" for c in "123456789ABCDEF"]
    + [f"5{c}" for c in "0123456789A"]
)
# Characters a value may have in the constrained canonical Digital Link (no escapes, no '/').
_DL_VALUE_CHARS = frozenset("\"'-.0123456789;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
_CPID_CHARS = frozenset("#-/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ENCODE = {"!": "%21", "(": "%28", ")": "%29", "*": "%2A", "+": "%2B", ",": "%2C", ":": "%3A"}

_ALPHA_AI = {
    "gtin": "01", "itip": "8006", "cpid": "8010", "gln": "414", "party": "417", "gsrnp": "8017", "gsrn": "8018",
    "gcn": "255", "sscc": "00", "gdti": "253", "ginc": "401", "gsin": "402", "grai": "8003", "giai": "8004",
    "cpv": "22", "lot": "10", "ser": "21",
}
PRIMARY_KEYS = ("00", "01", "253", "255", "401", "402", "414", "417", "8003", "8004", "8006", "8010", "8017", "8018")


def check_digit(body: str) -> str:
    """GS1 mod-10 check digit (weights 3,1,3,... from the right) of an ASCII digit string."""
    total = 3 * sum(map(int, body[-1::-2])) + sum(map(int, body[-2::-2]))
    return str((10 - total % 10) % 10)


def _digits(s: str, n: int | None = None) -> bool:
    return (n is None or len(s) == n) and s.isascii() and s.isdigit()


def _component_length(s: str, chars: frozenset[str], escapes: frozenset[str]) -> int:
    """Characters in an escaped URN component (an escape counts as one), or -1 if any is not allowed."""
    n, i = 0, 0
    while i < len(s):
        c = s[i]
        if c == "%":
            # Escapes are kept as written (hex case included); the hash compares them as text.
            if s[i + 1:i + 3].upper() not in escapes:
                return -1
            i += 3
        elif c in chars:
            i += 1
        else:
            return -1
        n += 1
    return n


def _plain_length(s: str, chars: frozenset[str]) -> int:
    """Length of a component without escapes (the common case, checked in C), else the escaped count."""
    return len(s) if chars.issuperset(s) else -1


def _ok(s: str, low: int, high: int, chars=_URN_CHARS, escapes=_URN_ESCAPES) -> bool:
    n = _plain_length(s, chars)
    return low <= (n if n >= 0 else _component_length(s, chars, escapes)) <= high


_ENCODED = frozenset(_ENCODE)


def _encode(s: str) -> str:
    return "".join(_ENCODE.get(c, c) for c in s) if not _ENCODED.isdisjoint(s) else s


def _company(cp: str) -> bool:
    return 6 <= len(cp) <= 12 and _digits(cp)


def _gtin(cp: str, ir: str) -> str | None:
    """GTIN-14 from company prefix and indicator+item reference (13 digits together)."""
    if not (_company(cp) and _digits(ir) and len(cp) + len(ir) == 13):
        return None
    body = ir[0] + cp + ir[1:]
    return body + check_digit(body)


def _fixed(cp: str, ref: str, total: int, *, ref_may_be_empty: bool = True) -> str | None:
    """Company prefix + reference of a fixed total length, both digits, plus check digit."""
    if not _company(cp) or len(cp) + len(ref) != total or (ref and not _digits(ref)) or (not ref and not ref_may_be_empty):
        return None
    return cp + ref + check_digit(cp + ref)


def _urn_id(scheme: str, body: str) -> str | None:
    parts = body.split(".")
    cp = parts[0]
    if scheme == "sgtin" and len(parts) >= 3:
        serial = body.split(".", 2)[2]
        gtin = _gtin(cp, parts[1])
        return f"{DL_HOST}/01/{gtin}/21/{_encode(serial)}" if gtin and _ok(serial, 1, 20) else None
    if scheme == "sscc" and len(parts) == 2:
        sr = parts[1]
        if _company(cp) and _digits(sr) and len(cp) + len(sr) == 17:
            key = sr[0] + cp + sr[1:]
            return f"{DL_HOST}/00/{key}{check_digit(key)}"
        return None
    if scheme == "sgln" and len(parts) >= 3:
        ext = body.split(".", 2)[2]
        gln = _fixed(cp, parts[1], 12)
        if not gln or not _ok(ext, 1, 20):
            return None
        return f"{DL_HOST}/414/{gln}" if ext == "0" else f"{DL_HOST}/414/{gln}/254/{_encode(ext)}"
    if scheme == "grai" and len(parts) >= 3:
        serial = body.split(".", 2)[2]
        key = _fixed(cp, parts[1], 12)
        # A leading zero does not change the check digit.
        return f"{DL_HOST}/8003/0{key}{_encode(serial)}" if key and _ok(serial, 1, 16) else None
    if scheme == "giai" and len(parts) >= 2:
        ref = body.split(".", 1)[1]
        return f"{DL_HOST}/8004/{cp}{_encode(ref)}" if _company(cp) and _ok(ref, 1, 30 - len(cp)) else None
    if scheme in ("gsrn", "gsrnp") and len(parts) == 2:
        key = _fixed(cp, parts[1], 17, ref_may_be_empty=False)
        return f"{DL_HOST}/{'8018' if scheme == 'gsrn' else '8017'}/{key}" if key else None
    if scheme == "gdti" and len(parts) >= 3:
        serial = body.split(".", 2)[2]
        key = _fixed(cp, parts[1], 12)
        return f"{DL_HOST}/253/{key}{_encode(serial)}" if key and _ok(serial, 0, 17) else None
    if scheme == "cpi" and len(parts) == 3:
        ref, serial = parts[1], parts[2]
        if _company(cp) and _ok(ref, 1, 30 - len(cp), _CPI_CHARS, _CPI_ESCAPES) and _digits(serial) and len(serial) <= 12:
            return f"{DL_HOST}/8010/{cp}{ref}/8011/{serial}"
        return None
    if scheme == "sgcn" and len(parts) == 3:
        key, serial = _fixed(cp, parts[1], 12), parts[2]
        return f"{DL_HOST}/255/{key}{serial}" if key and _digits(serial) and len(serial) <= 12 else None
    if scheme == "ginc" and len(parts) >= 2:
        ref = body.split(".", 1)[1]
        return f"{DL_HOST}/401/{cp}{_encode(ref)}" if _company(cp) and _ok(ref, 1, 30 - len(cp)) else None
    if scheme == "gsin" and len(parts) == 2:
        key = _fixed(cp, parts[1], 16, ref_may_be_empty=False)
        return f"{DL_HOST}/402/{key}" if key else None
    if scheme == "itip" and len(parts) >= 5:
        serial = body.split(".", 4)[4]
        gtin = _gtin(cp, parts[1])
        if gtin and _digits(parts[2], 2) and _digits(parts[3], 2) and _ok(serial, 1, 20):
            return f"{DL_HOST}/8006/{gtin}{parts[2]}{parts[3]}/21/{_encode(serial)}"
        return None
    if scheme == "upui" and len(parts) >= 3:
        tpx = body.split(".", 2)[2]
        gtin = _gtin(cp, parts[1])
        return f"{DL_HOST}/01/{gtin}/235/{_encode(tpx)}" if gtin and _ok(tpx, 1, 28) else None
    if scheme == "pgln" and len(parts) == 2:
        key = _fixed(cp, parts[1], 12)
        return f"{DL_HOST}/417/{key}" if key else None
    return None


def _urn_pattern(scheme: str, body: str) -> str | None:
    parts = body.split(".")
    if parts[-1] != "*":
        return None
    cp = parts[0]
    if scheme in ("sgtin", "upui") and len(parts) == 3:
        gtin = _gtin(cp, parts[1])
        return f"{DL_HOST}/01/{gtin}" if gtin else None
    if scheme in ("grai", "gdti", "sgcn") and len(parts) == 3:
        key = _fixed(cp, parts[1], 12)
        if not key:
            return None
        if scheme == "grai":
            return f"{DL_HOST}/8003/0{key}"
        return f"{DL_HOST}/{'253' if scheme == 'gdti' else '255'}/{key}"
    if scheme == "cpi" and len(parts) == 3:
        ok = _company(cp) and _ok(parts[1], 1, 30 - len(cp), _CPI_CHARS, _CPI_ESCAPES)
        return f"{DL_HOST}/8010/{cp}{parts[1]}" if ok else None
    if scheme == "itip" and len(parts) == 5:
        gtin = _gtin(cp, parts[1])
        if gtin and _digits(parts[2], 2) and _digits(parts[3], 2):
            return f"{DL_HOST}/8006/{gtin}{parts[2]}{parts[3]}"
    return None


def _dl_value(s: str, low: int, high: int, chars: frozenset[str] = _DL_VALUE_CHARS) -> bool:
    return low <= len(s) <= high and chars.issuperset(s)


def _dl_parts(uri: str) -> tuple[str, str, dict[str, str]] | None:
    """(primary key AI, its value, qualifier AI -> raw value) of a Digital Link on any host."""
    rest = uri.split("://", 1)[1]
    rest = rest.split("?", 1)[0]
    if "#" in rest or "/" not in rest:
        return None
    path = rest.split("/", 1)[1]
    segments = [_ALPHA_AI.get(s, s) for s in path.split("/")]
    # The primary key is the first segment naming one whose value starts with four digits (a company
    # prefix); everything before it is the host's own stem.
    for start, segment in enumerate(segments):
        if segment in PRIMARY_KEYS and start + 1 < len(segments):
            value = segments[start + 1]
            if len(value) >= 5 and _digits(value[:4]):
                break
    else:
        return None
    ai, key, tail = segments[start], segments[start + 1], segments[start + 2:]
    if len(tail) % 2:
        return None
    qualifiers = dict(zip(tail[::2], tail[1::2]))
    if len(qualifiers) != len(tail) // 2:
        return None
    return ai, key, qualifiers


def _digital_link(uri: str) -> str | None:
    parts = _dl_parts(uri)
    if parts is None:
        return None
    ai, key, qualifiers = parts
    if ai in ("01", "8006"):
        if ai == "01" and _digits(key) and len(key) in (8, 12, 13):
            key = key.zfill(14)
        if not _digits(key, 14 if ai == "01" else 18) or set(qualifiers) - {"22", "10", "21", "235"}:
            return None
        base = f"{DL_HOST}/{ai}/{key}"
        if "235" in qualifiers:  # TPX stands alone: it is the serial part of a UPUI
            ok = ai == "01" and len(qualifiers) == 1 and _dl_value(qualifiers["235"], 0, 28)
            return f"{base}/235/{qualifiers['235']}" if ok else None
        if "10" in qualifiers and not _dl_value(qualifiers["10"], 0, 20):
            return None
        for q in ("21", "10"):
            if q in qualifiers:
                return f"{base}/{q}/{qualifiers[q]}" if _dl_value(qualifiers[q], 0, 20) else None
        return base if not set(qualifiers) - {"22"} else None
    if ai == "414":
        if not _digits(key, 13) or set(qualifiers) - {"254"}:
            return None
        if "254" in qualifiers:
            return f"{DL_HOST}/414/{key}/254/{qualifiers['254']}" if _dl_value(qualifiers["254"], 0, 20) else None
        return f"{DL_HOST}/414/{key}"
    if ai == "8010":
        if set(qualifiers) - {"8011"} or not _dl_value(key, 0, 30, _CPID_CHARS):
            return None
        if "8011" in qualifiers:
            serial = qualifiers["8011"]
            return f"{DL_HOST}/8010/{key}/8011/{serial}" if len(serial) <= 12 and all(c in _DIGITS for c in serial) else None
        return f"{DL_HOST}/8010/{key}"
    if qualifiers:
        return None
    valid = {
        "00": lambda k: _digits(k, 18),
        "402": lambda k: _digits(k, 17),
        "417": lambda k: _digits(k, 13),
        "8017": lambda k: _digits(k, 18),
        "8018": lambda k: _digits(k, 18),
        "253": lambda k: _digits(k[:13], 13) and _dl_value(k[13:], 0, 17),
        "255": lambda k: _digits(k[:13], 13) and len(k) <= 25 and all(c in _DIGITS for c in k[13:]),
        "8003": lambda k: _digits(k[:14], 14) and _dl_value(k[14:], 0, 16),
        "8004": lambda k: _dl_value(k, 0, 30),
        "401": lambda k: _dl_value(k, 0, 30),
    }[ai]
    return f"{DL_HOST}/{ai}/{key}" if valid(key) else None


@lru_cache(maxsize=65536)
def canonical_key(value: str) -> str | None:
    """The constrained canonical Digital Link of a GS1 key URI, or None if `value` is not one."""
    if len(value) > MAX_KEY_URI or "." not in value or not value.isascii():
        return None
    if value.startswith("urn:epc:"):
        kind, _, rest = value[8:].partition(":")
        scheme, _, body = rest.partition(":")
        if not body:
            return None
        if kind == "id":
            return _urn_id(scheme, body)
        if kind == "class" and scheme == "lgtin":
            parts = body.split(".", 2)
            if len(parts) == 3 and (gtin := _gtin(parts[0], parts[1])) and _ok(parts[2], 1, 20):
                return f"{DL_HOST}/01/{gtin}/10/{_encode(parts[2])}"
            return None
        if kind == "idpat":
            return _urn_pattern(scheme, body)
        return None
    if value.startswith(("https://", "http://")):
        if value.startswith(_CANONICAL_ITEM_PREFIX) and _canonical_item(value):
            return value
        return _digital_link(value)
    return None


_CANONICAL_ITEM_PREFIX = DL_HOST + "/01/"


def _canonical_item(value: str) -> bool:
    """Already https://id.gs1.org/01/{GTIN-14}/21/{serial} in the constrained form (the usual EPC)."""
    rest = value[len(_CANONICAL_ITEM_PREFIX):]
    return (len(rest) > 18 and rest[14:18] == "/21/" and "?" not in rest and _digits(rest[:14])
            and _dl_value(rest[18:], 1, 20))


_SERIAL_CHARS = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")


def item_key(epc: str) -> tuple[str, str] | None:
    """(GTIN-14, serial) of a serialised item: an SGTIN URN or a Digital Link with AI 01 and 21 on any
    host (percent-escapes decoded); None for anything else, including a serial outside CSET 82 1-20."""
    if len(epc) > MAX_KEY_URI or not epc.isascii():
        return None
    if epc.startswith("urn:epc:id:sgtin:"):
        canonical = canonical_key(epc)
        if canonical is None:
            return None
        _, gtin, _, serial = canonical[len(DL_HOST) + 1:].split("/", 3)
    elif epc.startswith(("https://", "http://")) and "." in epc:
        parts = _dl_parts(epc)
        if parts is None or parts[0] != "01" or "21" not in parts[2] or "235" in parts[2]:
            return None
        gtin, serial = parts[1], parts[2]["21"]
        if len(gtin) in (8, 12, 13):
            gtin = gtin.zfill(14)
        if not _digits(gtin, 14):
            return None
    else:
        return None
    serial = unquote(serial) if "%" in serial else serial
    if not 1 <= len(serial) <= 20 or any(c not in _SERIAL_CHARS for c in serial):
        return None
    return gtin, serial
