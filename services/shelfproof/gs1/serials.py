"""Unguessable serial numbers (AI 21) in bulk.

12 characters of [A-Za-z0-9] carry 71 bits (62^12), above the 64 random bits we require; letters and
digits only, so they never need percent-encoding in a Digital Link and keep the QR code small. Bytes
from the OS's CSPRNG map to the alphabet without bias: only byte values below 248 (= 4 x 62) are used.
"""

from __future__ import annotations

import os

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
SERIAL_LENGTH = 12
_TABLE = bytes(ALPHABET[b % 62] if b < 248 else 0 for b in range(256))
_REJECTED = bytes(range(248, 256))


def generate_serials(count: int, length: int = SERIAL_LENGTH) -> list[str]:
    """``count`` distinct random serials."""
    if count < 0 or not 8 <= length <= 20:
        raise ValueError("count must be >= 0 and length 8-20")
    serials: set[str] = set()
    ordered: list[str] = []
    while len(ordered) < count:
        missing = count - len(ordered)
        # ~3 % of bytes are rejected; ask for a little more than needed.
        chars = os.urandom(int(missing * length * 1.05) + 64).translate(_TABLE, _REJECTED).decode("ascii")
        for start in range(0, len(chars) - length + 1, length):
            serial = chars[start:start + length]
            if serial not in serials:
                serials.add(serial)
                ordered.append(serial)
                if len(ordered) == count:
                    break
    return ordered
