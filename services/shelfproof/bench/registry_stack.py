"""A service as benchmarks run it: PostgreSQL (durable defaults), the ledger and the service, each its
own process on free loopback ports, torn down afterwards (``RegistryStack``: the registry)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shelfproof.bench.ledger_process import LedgerProcess
from shelfproof.cli.health import grpc_health
from shelfproof.db.migrate import upgrade
from shelfproof.ledger.genesis import development_genesis
from shelfproof.runtime.postgres import LocalPostgres
from shelfproof.runtime.processes import free_port


class ServiceStack:
    """``python -m <module>`` with settings under ``env_prefix`` (PORT, LEDGER_ADDRESS, GENESIS_FILE)."""

    def __init__(self, engine: str, name: str, module: str, env_prefix: str) -> None:
        self.engine, self.name, self.module, self.env_prefix = engine, name, module, env_prefix
        self.tmp = Path(tempfile.mkdtemp(prefix=f"shelfproof-bench-{name}-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.epcis_port = free_port()  # the EPCIS REST binding

    async def __aenter__(self) -> "ServiceStack":
        cluster_dir = self.tmp / "pg"
        cluster_dir.mkdir()
        if os.geteuid() == 0:
            os.chmod(self.tmp, 0o755)
        self.postgres = LocalPostgres(cluster_dir, free_port())
        await asyncio.to_thread(self.postgres.start)
        await asyncio.to_thread(self.postgres.ensure_database, "shelfproof")
        self.dsn = self.postgres.dsn("shelfproof")
        await asyncio.to_thread(upgrade, self.dsn)
        self.genesis = development_genesis("shelfproof-bench")
        self.ledger = LedgerProcess(self.engine, 1, self.tmp, self.genesis)
        await self.ledger.__aenter__()
        env = {
            **os.environ,
            "SHELFPROOF_PG_DSN": self.dsn,
            f"{self.env_prefix}PORT": str(self.port),
            f"{self.env_prefix}METRICS_PORT": "0",  # any free port: never a running stack's
            f"{self.env_prefix}LEDGER_ADDRESS": self.ledger.address,
            f"{self.env_prefix}GENESIS_FILE": str(self.tmp / "ledger" / "genesis.json"),
            "SHELFPROOF_REGISTRY_EPCIS_PORT": str(self.epcis_port),
            "SHELFPROOF_LOG_LEVEL": "WARNING",
            "SHELFPROOF_LOG_FORMAT": "json",
        }
        with open(self.tmp / f"{self.name}.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while await grpc_health(self.address) != "SERVING":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.tmp / f'{self.name}.log'}")
            await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        await self.ledger.__aexit__(*exc)
        await asyncio.to_thread(self.postgres.destroy)
        shutil.rmtree(self.tmp, ignore_errors=True)


class RegistryStack(ServiceStack):
    def __init__(self, engine: str) -> None:
        super().__init__(engine, "registry", "shelfproof.registry", "SHELFPROOF_REGISTRY_")
