"""The ledger and the planner's query model in one process, as the planner's benchmarks run them: a
PostgreSQL cluster of their own (migrated), the embedded engine behind the ledger adapter's gRPC server
on loopback, and the planner's projection following it; torn down afterwards."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from shelfproof.db.migrate import upgrade
from shelfproof.ledger.adapter.service import LedgerAdapter
from shelfproof.ledger.engines.embedded import EmbeddedEngine
from shelfproof.ledger.genesis import Genesis
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.postgres import LocalPostgres
from shelfproof.runtime.processes import free_port
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings


class PlannerLedgerStack:
    """``async with PlannerLedgerStack(genesis, "prefix") as stack``: ``stack.ledger`` (the adapter's stub),
    ``stack.pool``, ``stack.projector`` (the planner's ``DraftProjector``, started)."""

    def __init__(self, genesis: Genesis, prefix: str) -> None:
        self.genesis = genesis
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))

    async def __aenter__(self) -> "PlannerLedgerStack":
        from shelfproof.planner.projector import DraftProjector

        if os.geteuid() == 0:
            os.chmod(self.tmp, 0o755)
        (self.tmp / "pg").mkdir()
        self.postgres = LocalPostgres(self.tmp / "pg", free_port())
        await asyncio.to_thread(self.postgres.start)
        try:
            await asyncio.to_thread(self.postgres.ensure_database, "shelfproof")
            dsn = self.postgres.dsn("shelfproof")
            await asyncio.to_thread(upgrade, dsn)
            self.engine = EmbeddedEngine(self.tmp / "engine", self.genesis.chain_id, self.genesis.state, block_interval_s=0.01)
            await self.engine.start()
            self.adapter = LedgerAdapter(self.engine, self.tmp / "adapter")
            await self.adapter.start()
            self.ledger_server = GrpcServer(GrpcServerSettings(port=0), [self.adapter.binding()])
            self.channel = insecure_channel(f"127.0.0.1:{await self.ledger_server.start()}")
            self.ledger = ledger_pb2_grpc.LedgerServiceStub(self.channel)
            self.pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
            await self.pool.open(wait=True)
            self.projector = DraftProjector(self.pool, self.ledger)
            await self.projector.start()
        except BaseException:
            await self._destroy()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            await self.projector.stop()
            await self.pool.close()
            await self.channel.close()
            await self.ledger_server.stop()
            await self.adapter.stop()
            await self.engine.close()
        finally:
            await self._destroy()

    async def _destroy(self) -> None:
        await asyncio.to_thread(self.postgres.destroy)
        shutil.rmtree(self.tmp, ignore_errors=True)
