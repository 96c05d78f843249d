"""The planner service: ``python -m shelfproof.planner`` (settings ``SHELFPROOF_PLANNER_*``).

It starts a local Ray with the planner's Serve applications (the model behind an OpenAI-compatible
HTTP endpoint, and the drafter), then serves ``shelfproof.planner.v1.PlannerService`` over gRPC.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from psycopg_pool import AsyncConnectionPool

from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_RETAILER_GLN, DEMO_RETAILER_STORE_GLN, service_account
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.runtime.client import service_channel
from shelfproof.runtime.metrics import MeteredDrafter, ProcessMetrics, watch_query_service
from shelfproof.runtime.server import GrpcServer, run_service_with_postgres, run_until_signalled
from shelfproof.runtime.settings import CommonSettings, GrpcServerSettings, TlsSettings

log = logging.getLogger("shelfproof.planner")


class PlannerSettings(GrpcServerSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_PLANNER_", extra="ignore")

    port: int = Field(default=50053, ge=0, le=65535)
    # /metrics and /ready (runtime/metrics.py) on their own loopback port.
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    ledger_address: str = "127.0.0.1:50051"
    # The agent that submits drafts (needs draft::submit); people approve with their own keys.
    signer_agent_id: str = f"{DEMO_RETAILER_GLN}/admin-1"
    genesis_file: Path | None = None
    # This service's own private key (hex Ed25519 seed): the variable wins over the file; neither set = the
    # development key file `shelfproof up`'s ledger wrote (refused outside development).
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    # The OpenAI-compatible endpoint of the model (Serve's HTTP proxy) listens here.
    openai_port: int = Field(default=8000, ge=0, le=65535)
    service_level: float = Field(default=0.95, ge=0.5, lt=1)
    review_period_days: int = Field(default=7, ge=0)
    history_days: int = Field(default=56, ge=7, le=730)
    urgent_lines: int = Field(default=50, ge=1, le=500)
    # The restock loop: stores (GLNs, comma-separated; empty turns it off) it drafts for by itself, once
    # per cadence period and when committed sales take a product to its reorder point (checked this often).
    restock_locations: str = f"{DEMO_RETAILER_STORE_GLN},4012345000023"
    restock_cadence_s: int = Field(default=86_400, ge=60)
    restock_check_interval_s: float = Field(default=60.0, ge=1.0)


async def serve(
    settings: PlannerSettings, state_dir: Path, dsn: str, tls: TlsSettings | None = None, environment: str = "development"
) -> None:
    from shelfproof.planner.app import start_drafter
    from shelfproof.planner.llm import LLMSettings, planner_ray_dir, start_local_llm, stop_local_llm
    from shelfproof.planner.projector import DraftProjector
    from shelfproof.planner.runner import RestockRunner
    from shelfproof.planner.service import PlannerService

    genesis, account = service_account(
        settings.genesis_file or state_dir / "ledger" / "genesis.json", settings.signer_agent_id,
        key_file=settings.signing_key_file, key=settings.signing_key, environment=environment, tls=tls or TlsSettings(),
    )
    channel = service_channel(settings.ledger_address, tls)
    ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await pool.open(wait=True)
    projector = DraftProjector(pool, ledger)
    # Ray and Serve start synchronously (about a minute on two cores, vLLM's engine included).
    ray_dir = planner_ray_dir(settings.port)
    local = await asyncio.to_thread(start_local_llm, LLMSettings().llm_config(), state_dir=ray_dir, http_port=settings.openai_port)
    # Ray and the engine run in processes of Ray's own: stopped whatever ends the service, a signal or
    # a start that fails after them (a port taken), so that no engine outlives its planner.
    try:
        drafter = await asyncio.to_thread(start_drafter, settings.urgent_lines)
        log.info("planner model served", extra={"openai_base_url": local.openai_base_url, "model": local.config.model_name})
        metrics = ProcessMetrics("planner")
        service = PlannerService(
            pool, LedgerClient(ledger, account.signer(genesis.chain_id)), MeteredDrafter(drafter, metrics), projector,
            service_level=settings.service_level, review_period_days=settings.review_period_days, history_days=settings.history_days,
        )
        server = GrpcServer(settings, [service.binding()], metrics, tls=tls, signing_organization=account.organization_gln)
        watch_query_service(metrics, server, pool, ledger, {"planner": projector})
        locations = [gln.strip() for gln in settings.restock_locations.split(",") if gln.strip()]
        runner = RestockRunner(
            service, pool, locations, cadence_s=settings.restock_cadence_s, check_interval_s=settings.restock_check_interval_s
        )

        async def start() -> None:
            await projector.start()
            await server.start()
            if locations:
                await runner.start()
            await metrics.start(settings.host, settings.metrics_port)

        async def stop() -> None:
            await runner.stop()
            await server.stop()
            await metrics.stop()
            await projector.stop()
            await pool.close()
            await channel.close()

        await run_until_signalled(start, stop)
    finally:
        await asyncio.to_thread(stop_local_llm)


def main() -> None:
    run_service_with_postgres(lambda state_dir, dsn: serve(PlannerSettings(), state_dir, dsn, TlsSettings(), CommonSettings().env))


if __name__ == "__main__":
    main()
