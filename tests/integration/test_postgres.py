"""The PostgreSQL fixture: a real server, migrated, and a database of its own per test."""

from __future__ import annotations

import psycopg
import pytest
from sqlmodel import Session, select

from shelfproof.db.engine import make_engine
from shelfproof.db.models import ProjectionCursor

MARK = "isolation-probe"


def _cursor_rows(dsn: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT projector, height FROM projection_cursors ORDER BY 1").fetchall()


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_an_empty_migrated_database(database_dsn, round_):
    # Run twice: the second run would see the first run's row if databases were shared.
    assert _cursor_rows(database_dsn) == []
    with psycopg.connect(database_dsn) as conn:
        conn.execute("INSERT INTO projection_cursors VALUES (%s, %s)", (MARK, round_))
    assert _cursor_rows(database_dsn) == [(MARK, round_)]


def test_sqlmodel_round_trip_and_constraints(database_dsn):
    engine = make_engine(database_dsn)
    try:
        with Session(engine) as session:
            session.add(ProjectionCursor(projector="registry", height=41))
            session.commit()
        with Session(engine) as session:
            row = session.exec(select(ProjectionCursor)).one()
            assert (row.projector, row.height) == ("registry", 41)
        with pytest.raises(Exception, match="projection_cursors_height_nonnegative"):
            with psycopg.connect(database_dsn) as conn:
                conn.execute("INSERT INTO projection_cursors VALUES ('bad', -1)")
        # The failed insert left nothing behind.
        assert _cursor_rows(database_dsn) == [("registry", 41)]
    finally:
        engine.dispose()


def test_server_is_real_postgresql(postgres_cluster):
    with psycopg.connect(postgres_cluster.dsn()) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
    assert int(version) >= 150000
