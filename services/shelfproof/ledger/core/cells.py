"""Coarse location cells (geohash) in integer arithmetic, so that every validator computes the same
distance: cell centres in microdegrees, sines by Bhaskara's rational approximation (a distance within
40 km of the exact chord), and the chord between two points (shorter than the great circle: 1% at
2,500 km, 9% at 9,000 km), so a travel check built on it under-reports speed rather than over.
"""

from __future__ import annotations

from math import isqrt

BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
_DECODE = {c: i for i, c in enumerate(BASE32)}
MAX_CELL_CHARS = 12
# A time zone's region (a scan without a shared cell): a geohash this coarse (about 1,250 x 625 km).
MAX_REGION_CHARS = 2
# Distances are computed at this precision (about 39 km x 20 km); finer cells add nothing.
DISTANCE_CHARS = 4
EARTH_RADIUS_KM = 6371
_MICRO = 1_000_000
_SCALE = 1 << 30


def is_cell(cell: str) -> bool:
    return 1 <= len(cell) <= MAX_CELL_CHARS and all(c in _DECODE for c in cell)


def center_microdegrees(cell: str) -> tuple[int, int]:
    """(latitude, longitude) of the cell's centre in microdegrees; ``cell`` must pass ``is_cell``."""
    lat_lo, lat_hi, lon_lo, lon_hi = -90 * _MICRO, 90 * _MICRO, -180 * _MICRO, 180 * _MICRO
    even = True
    for c in cell[:DISTANCE_CHARS]:
        value = _DECODE[c]
        for shift in range(4, -1, -1):
            bit = (value >> shift) & 1
            if even:
                mid = (lon_lo + lon_hi) // 2
                lon_lo, lon_hi = (mid, lon_hi) if bit else (lon_lo, mid)
            else:
                mid = (lat_lo + lat_hi) // 2
                lat_lo, lat_hi = (mid, lat_hi) if bit else (lat_lo, mid)
            even = not even
    return (lat_lo + lat_hi) // 2, (lon_lo + lon_hi) // 2


def _sin(micro: int) -> int:
    """sin of an angle in microdegrees, scaled by 2**30 (Bhaskara I's approximation on [0, 180])."""
    micro = (micro + 180 * _MICRO) % (360 * _MICRO) - 180 * _MICRO  # into [-180, 180)
    sign = -1 if micro < 0 else 1
    x = abs(micro)
    p = x * (180 * _MICRO - x)
    return sign * (4 * p * _SCALE // (40_500 * _MICRO * _MICRO - p))


def _unit_vector(cell: str) -> tuple[int, int, int]:
    lat, lon = center_microdegrees(cell)
    cos_lat, sin_lat = _sin(lat + 90 * _MICRO), _sin(lat)
    cos_lon, sin_lon = _sin(lon + 90 * _MICRO), _sin(lon)
    return cos_lat * cos_lon // _SCALE, cos_lat * sin_lon // _SCALE, sin_lat


def distance_km(a: str, b: str) -> int:
    """Whole kilometres between two cells' centres (the chord: at most the great-circle distance)."""
    if a[:DISTANCE_CHARS] == b[:DISTANCE_CHARS]:
        return 0
    (ax, ay, az), (bx, by, bz) = _unit_vector(a), _unit_vector(b)
    chord = isqrt((ax - bx) ** 2 + (ay - by) ** 2 + (az - bz) ** 2)
    return EARTH_RADIUS_KM * chord // _SCALE


def too_fast(km: int, seconds: int, max_speed_kmh: int) -> bool:
    """More than ``max_speed_kmh`` over ``km`` in ``seconds`` (a minute at least: clocks differ)."""
    return km * 3600 > max_speed_kmh * max(seconds, 60)


def in_markets(cell: str, markets) -> bool:
    return any(cell.startswith(prefix) for prefix in markets)


def overlaps_markets(region: str, markets) -> bool:
    """Whether a coarse region and the markets share any ground (a region can hold finer markets)."""
    return any(region.startswith(prefix) or prefix.startswith(region) for prefix in markets)
