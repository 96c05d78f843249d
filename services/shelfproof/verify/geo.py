"""Coarse location cells (geohash) from the consumer's side: encoding a position, normalising what a
page sends. Distances between cells are the ledger's (``shelfproof.ledger.core.cells``, integers, so
every validator and this verifier compute the same).

A cell is a geohash of at most ``MAX_CELL_PRECISION`` characters (4 = about 39 km x 20 km): coarse
enough that it says nothing about a person, fine enough to see one code scanned on two continents.
"""

from __future__ import annotations

from shelfproof.ledger.core.cells import BASE32, DISTANCE_CHARS, distance_km

__all__ = ["BASE32", "MAX_CELL_PRECISION", "InvalidCell", "distance_km", "encode", "normalize_cell"]

_DECODE = {c: i for i, c in enumerate(BASE32)}
MAX_CELL_PRECISION = DISTANCE_CHARS


class InvalidCell(ValueError):
    pass


def encode(lat: float, lon: float, precision: int = MAX_CELL_PRECISION) -> str:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InvalidCell("latitude must be within ±90 and longitude within ±180")
    lat_range, lon_range = [-90.0, 90.0], [-180.0, 180.0]
    out, bits, value, even = [], 0, 0, True
    while len(out) < precision:
        span = lon_range if even else lat_range
        coord = lon if even else lat
        mid = (span[0] + span[1]) / 2
        value = value * 2 + (coord >= mid)
        span[0 if coord >= mid else 1] = mid
        even = not even
        bits += 1
        if bits == 5:
            out.append(BASE32[value])
            bits = value = 0
    return "".join(out)


def normalize_cell(cell: str) -> str:
    """A consumer-supplied cell, lower-cased and cut to the coarse precision; raises InvalidCell."""
    cell = cell.strip().lower()
    if not 1 <= len(cell) <= 12 or any(c not in _DECODE for c in cell):
        raise InvalidCell("cell must be a geohash (1-12 characters of 0-9, b-z without a, i, l, o)")
    return cell[:MAX_CELL_PRECISION]
