"""Coarse location cells (geohash) from the consumer's side: encoding a position, normalising what a
page sends. Distances between cells are the ledger's (``shelfproof.ledger.core.cells``, integers, so
every validator and this verifier compute the same).

A cell is a geohash of at most ``MAX_CELL_PRECISION`` characters (4 = about 39 km x 20 km): coarse
enough that it says nothing about a person, fine enough to see one code scanned on two continents.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from shelfproof.ledger.core.cells import BASE32, DISTANCE_CHARS, MAX_REGION_CHARS, distance_km

__all__ = [
    "BASE32", "MAX_CELL_PRECISION", "InvalidCell", "distance_km", "encode", "normalize_cell", "region_of_time_zone",
]

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


# An IANA time zone name as a browser reports it (Intl.DateTimeFormat().resolvedOptions().timeZone).
_TIME_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,29}(?:/[A-Za-z0-9_+-]{1,30}){0,2}", re.ASCII)
# ISO 6709 as the tz database writes a zone's principal city: +DDMM+DDDMM or +DDMMSS+DDDMMSS.
_COORDINATES = re.compile(r"([+-])(\d{2})(\d{2})(\d{2})?([+-])(\d{3})(\d{2})(\d{2})?")


@cache
def _principal_cities() -> dict[str, tuple[float, float]]:
    """Zone name -> (latitude, longitude) of its principal city, from the tz database's zone tables
    (the pinned ``tzdata`` package: the same on every machine, whatever the system's tzdata)."""
    cities: dict[str, tuple[float, float]] = {}
    for table in ("zone1970.tab", "zone.tab"):  # zone.tab also names zones zone1970.tab merged
        text = resources.files("tzdata").joinpath("zoneinfo", table).read_text(encoding="utf-8")
        for line in text.splitlines():
            fields = line.split("\t")
            if line.startswith("#") or len(fields) < 3:
                continue
            m = _COORDINATES.fullmatch(fields[1])
            if m is None:
                continue
            lat = int(m[2]) + int(m[3]) / 60 + int(m[4] or 0) / 3600
            lon = int(m[6]) + int(m[7]) / 60 + int(m[8] or 0) / 3600
            cities.setdefault(fields[2], (lat if m[1] == "+" else -lat, lon if m[5] == "+" else -lon))
    return cities


def region_of_time_zone(name: str) -> str:
    """The coarse region (a geohash of ``MAX_REGION_CHARS`` characters) around a time zone's principal
    city; "" for a zone the tz database does not place (UTC, Etc/*, an old alias). Raises InvalidCell
    for text that is not a time zone name at all."""
    name = name.strip()
    if not _TIME_ZONE.fullmatch(name):
        raise InvalidCell("tz must be an IANA time zone name such as Europe/Paris")
    city = _principal_cities().get(name)
    return encode(*city, precision=MAX_REGION_CHARS) if city is not None else ""
