"""The projection applies what the ledger's stream delivered in groups (one PostgreSQL transaction for
many ledger transactions, db/projection.py), and a group that fails still lands everything before the
failing transaction. Real embedded ledger, adapter and PostgreSQL."""

from __future__ import annotations

import json

import psycopg

from shelfproof.bench.epcis_bench import build_document
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_BRAND_GLN
from shelfproof.registry.events import plan_capture
from shelfproof.registry.projector import RegistryProjector
from tests.integration.harness import CHAIN, Registry

EVENTS = 120


class CountingProjector(RegistryProjector):
    """The registry's projector, counting the ledger transactions of each PostgreSQL transaction; any
    PostgreSQL transaction holding the one at ``fail_at`` (a ledger position) fails, ``failures`` times."""

    def __init__(self, *args, fail_at: tuple[int, int] | None = None, failures: int = 0) -> None:
        super().__init__(*args)
        self.groups: list[int] = []
        self.fail_at, self.failures = fail_at, failures
        self.positions_at_failure: list[tuple[int, int]] = []

    async def _apply(self, results):
        self.groups.append(len(results))
        await super()._apply(results)

    async def apply_group(self, cur, parsed) -> None:
        await super().apply_group(cur, parsed)
        if self.failures and any((result.height, result.index) == self.fail_at for result, *_ in parsed):
            self.failures -= 1
            self.positions_at_failure.append(self.position)
            raise RuntimeError("a projection bug")  # after the writes: they must roll back


async def _backlog(registry: Registry) -> list[tuple[int, int]]:
    """EVENTS events committed while no projector runs: the stream then delivers them at once."""
    await registry.projector.stop()
    client = LedgerClient(registry.ledger, registry.genesis.accounts[f"{DEMO_BRAND_GLN}/admin-0"].signer(CHAIN))
    planned = plan_capture(json.dumps(build_document(EVENTS, 7)).encode())
    outcomes = await client.submit_many([p.body for p in planned])
    return [(o.height, o.index) for o in outcomes]


def _projected(dsn: str) -> tuple[int, tuple[int, int]]:
    with psycopg.connect(dsn) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        cursor = conn.execute("SELECT height, tx_index FROM projection_cursors WHERE projector = 'registry'").fetchone()
    return events, tuple(cursor)


async def test_a_backlog_is_applied_in_groups_each_in_one_postgres_transaction(tmp_path, database_dsn):
    async with Registry(tmp_path, database_dsn) as registry:
        positions = await _backlog(registry)
        projector = CountingProjector(registry.pool, registry.ledger)
        await projector.start()
        try:
            assert await projector.wait_for(*positions[-1], 60)
        finally:
            await projector.stop()
    assert _projected(database_dsn) == (EVENTS, positions[-1])
    # every record_event once, and far fewer PostgreSQL transactions than ledger transactions
    assert sum(projector.groups) >= EVENTS and max(projector.groups) > 1 and len(projector.groups) < EVENTS / 4


async def test_a_group_that_fails_lands_what_comes_before_the_failing_transaction(tmp_path, database_dsn):
    async with Registry(tmp_path, database_dsn) as registry:
        positions = await _backlog(registry)
        bad = positions[EVENTS // 2]
        # twice: the group fails, then the same transaction applied alone fails; the third try succeeds
        projector = CountingProjector(registry.pool, registry.ledger, fail_at=bad, failures=2)
        await projector.start()
        try:
            assert await projector.wait_for(*positions[-1], 60)
        finally:
            await projector.stop()
    first, alone = projector.positions_at_failure
    assert first <= positions[EVENTS // 2 - 1]  # the failing group had not landed...
    assert alone == positions[EVENTS // 2 - 1]  # ...but applied one by one, all before the bad one did
    assert _projected(database_dsn) == (EVENTS, positions[-1])  # and then the rest, each once
