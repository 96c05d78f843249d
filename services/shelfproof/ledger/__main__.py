"""The ledger service: ``python -m shelfproof.ledger`` (settings ``SHELFPROOF_LEDGER_*``).

Engines: ``cometbft`` (a local network of real validators it starts itself, or an existing one named
by ``SHELFPROOF_LEDGER_COMETBFT_RPC``) or ``embedded`` (in-process, one key). ``auto`` picks
``cometbft`` when the pinned binary is installed and says which engine it started and why.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shelfproof.ledger.adapter.batching import BatchSettings
from shelfproof.ledger.adapter.service import LedgerAdapter
from shelfproof.ledger.core.tx import MAX_BATCH_BYTES, MAX_BATCH_TXS
from shelfproof.ledger.genesis import Genesis, development_genesis
from shelfproof.runtime.log import configure_logging
from shelfproof.runtime.metrics import ProcessMetrics, watch_grpc_server, watch_ledger_adapter
from shelfproof.runtime.server import GrpcServer, run_until_signalled
from shelfproof.runtime.identity import refuse_development_material
from shelfproof.runtime.settings import CommonSettings, GrpcServerSettings, TlsSettings

log = logging.getLogger("shelfproof.ledger")

DEFAULT_COMETBFT_BIN = Path(".tools/bin/cometbft")


class LedgerSettings(GrpcServerSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_LEDGER_", extra="ignore")

    port: int = Field(default=50051, ge=0, le=65535)
    # /metrics and /ready (runtime/metrics.py) on their own loopback port.
    metrics_port: int = Field(default=9101, ge=0, le=65535)
    engine: Literal["auto", "embedded", "cometbft"] = "auto"
    # Ledger state (engine homes, adapter index, genesis); empty = <state_dir>/ledger.
    home: Path | None = None
    chain_id: str = "shelfproof-dev"
    # Use an existing CometBFT network (comma-separated RPC URLs) instead of starting one.
    cometbft_rpc: str = ""
    validators: int = Field(default=1, ge=1, le=7)
    cometbft_bin: Path = DEFAULT_COMETBFT_BIN
    # First port of the local network (node i uses base + 10 i + {0: p2p, 1: rpc, 2: abci}).
    base_port: int = Field(default=26656, ge=1024, le=65000)
    # Batches of signed transactions sent to the engine: flushed at this many transactions, bytes,
    # or milliseconds after the first, whichever comes first.
    batch_max_txs: int = Field(default=BatchSettings.max_txs, ge=1, le=MAX_BATCH_TXS)
    batch_max_bytes: int = Field(default=BatchSettings.max_bytes, ge=1, le=MAX_BATCH_BYTES)
    batch_linger_ms: float = Field(default=BatchSettings.linger_s * 1000, ge=0, le=1000)


def choose_engine(settings: LedgerSettings) -> tuple[str, str]:
    if settings.engine != "auto":
        return settings.engine, f"SHELFPROOF_LEDGER_ENGINE={settings.engine}"
    if settings.cometbft_rpc:
        return "cometbft", "SHELFPROOF_LEDGER_COMETBFT_RPC names a network"
    if settings.cometbft_bin.exists():
        return "cometbft", f"the pinned CometBFT binary is installed at {settings.cometbft_bin}"
    return "embedded", f"no CometBFT binary at {settings.cometbft_bin} (run `make cometbft`)"


def load_or_create_genesis(home: Path, chain_id: str) -> Genesis:
    path = home / "genesis.json"
    if path.exists():
        genesis = Genesis.load(path)
        if not genesis.state.consortium_gln:
            # Written before the authorization model: no consortium, no company prefixes, no people.
            raise SystemExit(f"{path} names no consortium (an old development genesis): remove {home} to start a new ledger")
        return genesis
    genesis = development_genesis(chain_id)
    genesis.save(path)
    return genesis


async def serve(settings: LedgerSettings, state_dir: Path, tls: TlsSettings | None = None, environment: str = "development") -> None:
    home = (settings.home or state_dir / "ledger").resolve()
    home.mkdir(parents=True, exist_ok=True)
    refuse_development_material(environment, tls or TlsSettings())
    genesis = load_or_create_genesis(home, settings.chain_id)
    refuse_development_material(environment, tls or TlsSettings(), holds_private_keys=bool(genesis.accounts))
    engine_name, why = choose_engine(settings)
    network = None
    if engine_name == "embedded":
        from shelfproof.ledger.engines.embedded import EmbeddedEngine

        engine = EmbeddedEngine(home / "embedded", genesis.chain_id, genesis.state)
        await engine.start()
    else:
        from shelfproof.ledger.engines.comet_engine import CometEngine

        urls = [u.strip() for u in settings.cometbft_rpc.split(",") if u.strip()]
        if not urls:
            from shelfproof.ledger.network.local import start_local_network

            network = await start_local_network(
                home / "cometbft", genesis, settings.validators, settings.base_port, settings.cometbft_bin
            )
            urls = network.rpc_urls
        engine = CometEngine(urls)
        await engine.start()
    log.info(
        "ledger engine started",
        extra={"engine": engine_name, "why": why, "chain_id": genesis.chain_id, "home": str(home)},
    )
    batching = BatchSettings(settings.batch_max_txs, settings.batch_max_bytes, settings.batch_linger_ms / 1000)
    adapter = LedgerAdapter(engine, home / "adapter", why, batching)
    metrics = ProcessMetrics("ledger")
    server = GrpcServer(settings, [adapter.binding()], metrics, tls=tls)
    watch_grpc_server(metrics, server)
    watch_ledger_adapter(metrics, adapter)

    async def start() -> None:
        await adapter.start()
        await server.start()
        await metrics.start(settings.host, settings.metrics_port)

    async def stop() -> None:
        await server.stop()
        await metrics.stop()
        await adapter.stop()
        await engine.close()
        if network is not None:
            await asyncio.to_thread(network.stop)

    await run_until_signalled(start, stop)


def main() -> None:
    common = CommonSettings()
    configure_logging(common.log_level, common.log_format)
    asyncio.run(serve(LedgerSettings(), common.state_dir, TlsSettings(), common.env))


if __name__ == "__main__":
    main()
