"""GS1 numeric keys: the mod-10 check digit, GTIN normalisation to 14 digits, GLN validation.

Keys are digit strings, never ints: leading zeros are significant.
"""

from __future__ import annotations

import re

GTIN_LENGTHS = (8, 12, 13, 14)
# AI 10 (lot) and AI 21 (serial) values: 1-20 characters of GS1's CSET 82. Anchored with \Z (``$`` would
# accept a trailing newline) so ``.match`` callers get whole-string semantics; use ``fullmatch``.
CSET82_VALUE = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}\Z", re.ASCII)


class InvalidGs1Key(ValueError):
    pass


def check_digit(body: str) -> int:
    """GS1 mod-10 check digit of ``body`` (every digit but the check digit): weights 3,1,3,… from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def _validate(key: str, lengths: tuple[int, ...], name: str) -> None:
    if not key.isascii() or not key.isdigit():
        raise InvalidGs1Key(f"{name} must be digits only, got {key!r}")
    if len(key) not in lengths:
        raise InvalidGs1Key(f"{name} must have {' or '.join(map(str, lengths))} digits, got {len(key)}")
    expected = check_digit(key[:-1])
    if int(key[-1]) != expected:
        raise InvalidGs1Key(f"{name} {key} has check digit {key[-1]}, expected {expected}")


def normalize_gtin(gtin: str) -> str:
    """Validate a GTIN-8/12/13/14 and return it as GTIN-14 (left-padded; the check digit is unchanged)."""
    _validate(gtin, GTIN_LENGTHS, "GTIN")
    return gtin.zfill(14)


def validate_gln(gln: str) -> str:
    """Validate a 13-digit GLN and return it."""
    _validate(gln, (13,), "GLN")
    return gln
