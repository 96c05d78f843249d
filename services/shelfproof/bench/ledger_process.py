"""The ledger service as a benchmark (and test) runs it: its own process tree on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shelfproof.cli.health import grpc_health
from shelfproof.ledger.genesis import Genesis
from shelfproof.ledger.network.config import find_free_base_port
from shelfproof.runtime.processes import descendants, free_port, process_cpu_seconds


class LedgerProcess:
    def __init__(self, engine: str, validators: int, home: Path, genesis: Genesis) -> None:
        self.engine, self.validators, self.home, self.genesis = engine, validators, home, genesis
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    async def __aenter__(self) -> "LedgerProcess":
        ledger_home = self.home / "ledger"
        ledger_home.mkdir(parents=True, exist_ok=True)
        self.genesis.save(ledger_home / "genesis.json")
        env = {
            **os.environ,
            "SHELFPROOF_LEDGER_ENGINE": self.engine,
            "SHELFPROOF_LEDGER_VALIDATORS": str(self.validators),
            "SHELFPROOF_LEDGER_HOME": str(ledger_home),
            "SHELFPROOF_LEDGER_PORT": str(self.port),
            "SHELFPROOF_LEDGER_METRICS_PORT": "0",  # any free port: never a running stack's
            "SHELFPROOF_LEDGER_BASE_PORT": str(find_free_base_port(self.validators)),
            "SHELFPROOF_LEDGER_CHAIN_ID": self.genesis.chain_id,
            "SHELFPROOF_LOG_FORMAT": "json",
            "SHELFPROOF_LOG_LEVEL": "WARNING",
        }
        log = open(self.home / "ledger.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shelfproof.ledger"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while await grpc_health(self.address) != "SERVING":
            if self.process.poll() is not None:
                raise RuntimeError(f"ledger exited with {self.process.returncode}; see {self.home / 'ledger.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ledger not healthy after 120 s; see {self.home / 'ledger.log'}")
            await asyncio.sleep(0.2)
        return self

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of every process of the ledger's tree, and of this load generator."""
        usage: dict[str, float] = {}
        if self.process is not None:
            for pid in [self.process.pid, *descendants(self.process.pid)]:
                found = process_cpu_seconds(pid)
                if found:
                    name, seconds = found
                    key, n = name, 2
                    while key in usage:
                        key, n = f"{name} #{n}", n + 1
                    usage[key] = round(seconds, 2)
        own = process_cpu_seconds(os.getpid())
        if own:
            usage["load generator"] = round(own[1], 2)
        return usage

    async def __aexit__(self, *exc) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            await asyncio.to_thread(self.process.wait)
