"""Daily unit sales per (GTIN, location) from the PostgreSQL query model, as a demand matrix.

A sale is an EPCIS ObjectEvent whose business step is ``retail_selling`` or whose disposition is
``retail_sold`` (either CBV form: the bare word, ``https://ref.gs1.org/cbv/BizStep-retail_selling`` or
``urn:epcglobal:cbv:bizstep:retail_selling``), not a ``DELETE``. Units are the distinct serialized items
the sale events name (``event_items``), counted per day: an item captured twice on one day counts once.
Returns are not netted out: the matrix is gross sales, which is what demand forecasting wants.

The location is the event's business location or, as the registry's inventory projection does for goods
leaving a site, the GLN of its read point. The day is the calendar day where the sale happened: the event
time shifted by the event's own ``eventTimeZoneOffset``, so a sale at 23:30 in a store at UTC+02:00 is on
that store's day, not the next UTC one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
from psycopg_pool import AsyncConnectionPool

# Offsets in EPCIS are within -14:00..+14:00: this margin around the window's UTC bounds catches every
# event whose local day is inside it (the exact local day is then filtered in SQL).
_OFFSET_MARGIN = timedelta(hours=14)

_DAILY_SALES = """
WITH sales AS (
    SELECT ei.gtin,
           COALESCE(e.biz_location_gln,
                    substring(e.document -> 'readPoint' ->> 'id' FROM '/414/([0-9]{13})')) AS location_gln,
           ((e.event_time AT TIME ZONE 'UTC')
            + CASE WHEN e.document ->> 'eventTimeZoneOffset' ~ '^[+-][0-9]{2}:[0-9]{2}$'
                   THEN (e.document ->> 'eventTimeZoneOffset')::interval
                   ELSE interval '0' END)::date AS day,
           ei.serial
    FROM events e
    JOIN event_items ei ON ei.event_hash = e.event_hash
    WHERE e.event_type = 'ObjectEvent'
      AND e.action IS DISTINCT FROM 'DELETE'
      AND (regexp_replace(e.biz_step, '^(.*[/:])?(BizStep-)?', '') = 'retail_selling'
           OR regexp_replace(e.disposition, '^(.*[/:])?(Disp-)?', '') = 'retail_sold')
      AND e.event_time >= %(from_utc)s AND e.event_time < %(until_utc)s
)
SELECT gtin, location_gln, day, count(DISTINCT serial) AS units
FROM sales
WHERE day BETWEEN %(first_day)s AND %(last_day)s
  AND location_gln IS NOT NULL
  AND (%(all_series)s OR (gtin, location_gln) IN (SELECT * FROM unnest(%(gtins)s::text[], %(glns)s::text[])))
GROUP BY gtin, location_gln, day
"""


@dataclass(frozen=True)
class DemandMatrix:
    """Units sold: one row per (GTIN, location GLN) in ``series``, one column per day from ``first_day``."""

    series: tuple[tuple[str, str], ...]
    first_day: date
    units: np.ndarray  # int64, shape (len(series), days), oldest day first

    @property
    def last_day(self) -> date:
        return self.first_day + timedelta(days=self.units.shape[1] - 1)


async def load_daily_sales(
    pool: AsyncConnectionPool,
    *,
    last_day: date,
    days: int,
    series: Sequence[tuple[str, str]] | None = None,
) -> DemandMatrix:
    """Daily sales for the ``days`` days ending with ``last_day`` (inclusive, local days of the stores).

    With ``series`` the matrix has exactly those (GTIN, GLN) rows in that order, zeros where nothing sold;
    without it, every series with a sale in the window, sorted by GTIN then GLN.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    first_day = last_day - timedelta(days=days - 1)
    wanted = list(dict.fromkeys(series)) if series is not None else []
    params = {
        "from_utc": datetime.combine(first_day, time(), timezone.utc) - _OFFSET_MARGIN,
        "until_utc": datetime.combine(last_day + timedelta(days=1), time(), timezone.utc) + _OFFSET_MARGIN,
        "first_day": first_day,
        "last_day": last_day,
        "all_series": series is None,
        "gtins": [gtin for gtin, _ in wanted],
        "glns": [gln for _, gln in wanted],
    }
    async with pool.connection() as conn:
        rows = await (await conn.execute(_DAILY_SALES, params)).fetchall()

    keys = tuple(wanted) if series is not None else tuple(sorted({(gtin, gln) for gtin, gln, _, _ in rows}))
    row_of = {key: index for index, key in enumerate(keys)}
    units = np.zeros((len(keys), days), dtype=np.int64)
    if rows:
        index = np.array([row_of[(gtin, gln)] for gtin, gln, _, _ in rows])
        column = np.array([(day - first_day).days for _, _, day, _ in rows])
        units[index, column] = [count for *_, count in rows]
    return DemandMatrix(series=keys, first_day=first_day, units=units)
