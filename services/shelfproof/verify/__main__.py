"""The consumer verification service: ``python -m shelfproof.verify`` (settings ``SHELFPROOF_VERIFY_*``).

With ``workers`` > 1 the first process starts the others; all listen on one port (SO_REUSEPORT, the
kernel spreads connections) and each records scans as its own agent, so their nonces never race.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from aiohttp import web
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from psycopg_pool import AsyncConnectionPool

from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import CONSORTIUM_GLN, service_account
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.runtime.client import call, service_channel
from shelfproof.runtime.metrics import ProcessMetrics, watch_ledger_dependency, watch_postgres, watch_verifier
from shelfproof.runtime.processes import die_with_parent
from shelfproof.runtime.server import run_service_with_postgres, run_until_signalled
from shelfproof.runtime.settings import CommonSettings, TlsSettings
from shelfproof.verify.ratelimit import RateLimiter
from shelfproof.verify.service import LedgerReader, QueryModel, ScanRecorder, Verifier
from shelfproof.verify.trust import local_trusted_hashes
from shelfproof.verify.verdict import CloneRules
from shelfproof.verify.web import build_app

log = logging.getLogger("shelfproof.verify")


class VerifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_VERIFY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # /metrics and /ready (runtime/metrics.py) on their own loopback port; worker i listens on this + i.
    metrics_port: int = Field(default=9180, ge=0, le=65535)
    # The origin the QR codes point at (the registry's resolver): parsed links are read against it.
    public_origin: str = "http://127.0.0.1:8080"
    ledger_address: str = "127.0.0.1:50051"
    # Validator set hashes (hex, comma-separated) to trust; empty = the sets named by the local
    # ledger's files under ledger_home (its validator key or CometBFT genesis).
    validators_hash: str = ""
    ledger_home: Path | None = None
    # The consortium verifier agent that signs RecordScans (scan::record), its key from the genesis file;
    # "{worker}" is replaced by the worker's index.
    signer_agent_id: str = f"{CONSORTIUM_GLN}/verifier-{{worker}}"
    # Processes serving the port; each takes one core at most (Python's GIL).
    workers: int = Field(default=1, ge=1, le=16)
    # Set by the first worker for the ones it starts.
    worker_index: int = Field(default=0, ge=0)
    genesis_file: Path | None = None
    # This service's own private key (hex Ed25519 seed): the variable wins over the file; neither set = the
    # development key file `shelfproof up`'s ledger wrote (refused outside development).
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None  # "{worker}" is replaced by the worker's index
    rate_per_s: float = Field(default=1.0, gt=0)
    burst: int = Field(default=10, ge=1)
    scan_flush_s: float = Field(default=1.0, gt=0)


async def serve(
    settings: VerifySettings, state_dir: Path, dsn: str, tls: TlsSettings | None = None, environment: str = "development"
) -> None:
    ledger_home = (settings.ledger_home or state_dir / "ledger").resolve()
    trusted = (
        {bytes.fromhex(h.strip()) for h in settings.validators_hash.split(",") if h.strip()}
        if settings.validators_hash
        else local_trusted_hashes(ledger_home)
    )
    agent_id = settings.signer_agent_id.replace("{worker}", str(settings.worker_index))
    key_file = Path(str(settings.signing_key_file).replace("{worker}", str(settings.worker_index))) if settings.signing_key_file else None
    genesis, account = service_account(
        settings.genesis_file or ledger_home / "genesis.json", agent_id, key_file=key_file, key=settings.signing_key,
        environment=environment, tls=tls or TlsSettings(),
    )
    channel = service_channel(settings.ledger_address, tls)
    stub = ledger_pb2_grpc.LedgerServiceStub(channel)
    status = await call(stub.GetLedgerStatus, pb.GetLedgerStatusRequest(), idempotent=True, deadline_s=30)
    if status.chain_id != genesis.chain_id:
        raise SystemExit(f"the ledger serves chain {status.chain_id!r}, the genesis file names {genesis.chain_id!r}")
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await pool.open(wait=True)
    scans = ScanRecorder(LedgerClient(stub, account.signer(genesis.chain_id)), settings.scan_flush_s)
    verifier = Verifier(
        # The ledger's own clone rules: the verdict agrees with the compromise the ledger records.
        QueryModel(pool), LedgerReader(stub, genesis.chain_id, trusted), scans, CloneRules(),
    )
    app = build_app(verifier, RateLimiter(settings.rate_per_s, settings.burst), settings.public_origin)
    metrics = ProcessMetrics("verify")
    watch_verifier(metrics, verifier)
    watch_postgres(metrics, pool)
    watch_ledger_dependency(metrics, stub)
    serving = asyncio.Event()
    metrics.ready_when("http", lambda: _is_set(serving))
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    others: list[subprocess.Popen] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, backlog=4096, reuse_address=True, reuse_port=True)
        await site.start()
        others.extend(_start_other_workers(settings) if settings.worker_index == 0 else [])
        scans.start()
        await metrics.start(settings.host, settings.metrics_port + settings.worker_index if settings.metrics_port else 0)
        serving.set()
        # Latency: what exists at start-up is never garbage (freeze it out of the collector's scans),
        # and the caches hold many small objects, so young collections run less often than by default.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        log.info("verify listening", extra={"address": f"http://{settings.host}:{settings.port}", "engine": status.engine})

    async def stop() -> None:
        serving.clear()
        for worker in others:
            worker.send_signal(signal.SIGTERM)
        await runner.cleanup()
        await metrics.stop()
        for worker in others:
            await asyncio.to_thread(worker.wait)
        await scans.stop()
        await pool.close()
        await channel.close()

    await run_until_signalled(start, stop)


async def _is_set(event: asyncio.Event) -> bool:
    return event.is_set()


def _start_other_workers(settings: VerifySettings) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "shelfproof.verify"],
            env={**os.environ, "SHELFPROOF_VERIFY_WORKER_INDEX": str(i), "SHELFPROOF_VERIFY_PORT": str(settings.port)},
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
        for i in range(1, settings.workers)
    ]


def main() -> None:
    run_service_with_postgres(lambda state_dir, dsn: serve(VerifySettings(), state_dir, dsn, TlsSettings(), CommonSettings().env))


if __name__ == "__main__":
    main()
