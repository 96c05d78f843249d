"""Daily sales from the real PostgreSQL query model into the planner's demand matrix."""

from __future__ import annotations

import itertools
from datetime import date, datetime

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from shelfproof.planner.demand import load_daily_sales

GTIN_A = "09506000134352"
GTIN_B = "09506000134369"
GTIN_C = "09506000134376"
STORE_1 = "9520123456788"
STORE_2 = "9520123456795"
SOLD = "https://ref.gs1.org/cbv/Disp-retail_sold"
SELLING = "https://ref.gs1.org/cbv/BizStep-retail_selling"

_numbers = itertools.count(1)


def _insert_event(
    conn: psycopg.Connection,
    at: str,
    items: list[tuple[str, str]],
    *,
    offset: str = "+00:00",
    biz_step: str | None = SELLING,
    disposition: str | None = SOLD,
    location: str | None = STORE_1,
    read_point: str | None = None,
    action: str = "OBSERVE",
    event_type: str = "ObjectEvent",
) -> None:
    number = next(_numbers)
    event_hash = f"ni:///sha-256;{number:064x}?ver=CBV2.0"
    document = {"type": event_type, "eventTime": at, "eventTimeZoneOffset": offset, "action": action}
    if read_point:
        document["readPoint"] = {"id": f"https://id.gs1.org/414/{read_point}"}
    conn.execute(
        "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (event_hash, event_type, datetime.fromisoformat(at), action, biz_step, disposition, location,
         Jsonb(document), "agent-1", number, 0, bytes([number % 256])),
    )
    for gtin, serial in items:
        conn.execute("INSERT INTO event_items VALUES (%s, %s, %s)", (event_hash, gtin, serial))


def _items(gtin: str, *serials: str) -> list[tuple[str, str]]:
    return [(gtin, serial) for serial in serials]


@pytest.fixture
def sales_dsn(database_dsn: str) -> str:
    """Sales of three days (9, 10, 11 March 2025) and events that are not sales or not in the window."""
    with psycopg.connect(database_dsn) as conn:
        # GTIN A at store 1: 3 + 2 items on the 11th, one of them captured twice (counted once).
        _insert_event(conn, "2025-03-11T09:00:00+00:00", _items(GTIN_A, "a1", "a2", "a3"))
        _insert_event(conn, "2025-03-11T15:00:00+00:00", _items(GTIN_A, "a4", "a5", "a3"))
        # The other CBV spellings: URN business step without disposition; bare disposition only.
        _insert_event(conn, "2025-03-09T12:00:00+00:00", _items(GTIN_A, "a6"),
                      biz_step="urn:epcglobal:cbv:bizstep:retail_selling", disposition=None)
        _insert_event(conn, "2025-03-09T13:00:00+00:00", _items(GTIN_A, "a7"), biz_step=None,
                      disposition="retail_sold")
        # Local days: 23:30 UTC on the 9th is the 10th at +02:00, 02:00 UTC on the 11th is the 10th at
        # -05:00; at the window's edges, 23:00 UTC on the 8th is the 9th at +02:00, 03:00 UTC on the 12th
        # the 11th at -05:00.
        _insert_event(conn, "2025-03-09T23:30:00+00:00", _items(GTIN_A, "a8"), offset="+02:00")
        _insert_event(conn, "2025-03-11T02:00:00+00:00", _items(GTIN_A, "a9"), offset="-05:00")
        _insert_event(conn, "2025-03-08T23:00:00+00:00", _items(GTIN_A, "a10"), offset="+02:00")
        _insert_event(conn, "2025-03-12T03:00:00+00:00", _items(GTIN_A, "a11"), offset="-05:00")
        # GTIN B at store 2, located by its read point only, and mixed with an item of GTIN A.
        _insert_event(conn, "2025-03-10T10:00:00+00:00", _items(GTIN_B, "b1", "b2") + _items(GTIN_A, "x1"),
                      location=None, read_point=STORE_2)
        # Not sales: shipping, a deleted sale, a sale outside the window, a sale with no location,
        # and an aggregation event at the till.
        _insert_event(conn, "2025-03-11T10:00:00+00:00", _items(GTIN_A, "s1"),
                      biz_step="https://ref.gs1.org/cbv/BizStep-shipping", disposition=None)
        _insert_event(conn, "2025-03-11T11:00:00+00:00", _items(GTIN_A, "d1"), action="DELETE")
        _insert_event(conn, "2025-03-08T21:00:00+00:00", _items(GTIN_A, "o1"))
        _insert_event(conn, "2025-03-12T00:30:00+00:00", _items(GTIN_A, "o2"))
        _insert_event(conn, "2025-03-11T12:00:00+00:00", _items(GTIN_A, "n1"), location=None)
        _insert_event(conn, "2025-03-11T12:30:00+00:00", _items(GTIN_A, "g1"), event_type="AggregationEvent")
    return database_dsn


async def _load(dsn: str, **kwargs):
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
    await pool.open()
    try:
        return await load_daily_sales(pool, last_day=date(2025, 3, 11), days=3, **kwargs)
    finally:
        await pool.close()


async def test_daily_sales_matrix_from_sale_events(sales_dsn):
    matrix = await _load(sales_dsn)
    assert matrix.first_day == date(2025, 3, 9)
    assert matrix.last_day == date(2025, 3, 11)
    assert matrix.series == ((GTIN_A, STORE_1), (GTIN_A, STORE_2), (GTIN_B, STORE_2))
    assert matrix.units.dtype == np.int64
    assert matrix.units.tolist() == [
        [3, 2, 6],  # 9th: a6, a7, a10; 10th: a8, a9; 11th: a1-a5 (a3 once), a11
        [0, 1, 0],
        [0, 2, 0],
    ]


async def test_requested_series_fix_the_rows(sales_dsn):
    wanted = [(GTIN_C, STORE_1), (GTIN_B, STORE_2), (GTIN_A, STORE_1)]
    matrix = await _load(sales_dsn, series=wanted)
    assert matrix.series == tuple(wanted)
    assert matrix.units.tolist() == [[0, 0, 0], [0, 2, 0], [3, 2, 6]]


async def test_empty_query_model_and_bad_window(database_dsn):
    matrix = await _load(database_dsn)
    assert matrix.series == ()
    assert matrix.units.shape == (0, 3)
    with pytest.raises(ValueError):
        await load_daily_sales(None, last_day=date(2025, 3, 11), days=0)
