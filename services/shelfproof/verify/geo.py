"""Coarse location cells (geohash) and the travel speed between two of them.

A cell is a geohash of at most ``MAX_CELL_PRECISION`` characters (4 = about 39 km x 20 km): coarse
enough that it says nothing about a person, fine enough to see one code scanned on two continents.
"""

from __future__ import annotations

import math

BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
_DECODE = {c: i for i, c in enumerate(BASE32)}
MAX_CELL_PRECISION = 4
EARTH_RADIUS_KM = 6371.0


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


def center(cell: str) -> tuple[float, float]:
    lat_range, lon_range = [-90.0, 90.0], [-180.0, 180.0]
    even = True
    for c in cell:
        value = _DECODE[c]
        for shift in range(4, -1, -1):
            span = lon_range if even else lat_range
            mid = (span[0] + span[1]) / 2
            span[0 if (value >> shift) & 1 else 1] = mid
            even = not even
    return (lat_range[0] + lat_range[1]) / 2, (lon_range[0] + lon_range[1]) / 2


def distance_km(a: str, b: str) -> float:
    """Great-circle distance between two cells' centers (haversine)."""
    (lat1, lon1), (lat2, lon2) = center(a), center(b)
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def impossible_travel(
    cell_a: str, unix_a: int, cell_b: str, unix_b: int, *, max_speed_kmh: float, min_distance_km: float
) -> float | None:
    """The implied speed (km/h) when two scans are too far apart for the time between them, else None.

    Distances under ``min_distance_km`` never count: neighbouring cells are one trip across town.
    """
    if not cell_a or not cell_b:
        return None
    km = distance_km(cell_a, cell_b)
    if km < min_distance_km:
        return None
    hours = max(abs(unix_b - unix_a), 60) / 3600  # a minute at least: clocks are not that exact
    speed = km / hours
    return speed if speed > max_speed_kmh else None
