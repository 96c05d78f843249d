"""The pricing service: ``python -m shelfproof.pricing`` (settings ``SHELFPROOF_PRICING_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from psycopg_pool import AsyncConnectionPool

from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_RETAILER_GLN, service_account
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.pricing.projector import PricingProjector
from shelfproof.pricing.service import PricingService
from shelfproof.runtime.client import service_channel
from shelfproof.runtime.metrics import ProcessMetrics, watch_query_service
from shelfproof.runtime.server import GrpcServer, run_service_with_postgres, run_until_signalled
from shelfproof.runtime.settings import CommonSettings, GrpcServerSettings, TlsSettings


class PricingSettings(GrpcServerSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_PRICING_", extra="ignore")

    port: int = Field(default=50054, ge=0, le=65535)
    # /metrics and /ready (runtime/metrics.py) on their own loopback port.
    metrics_port: int = Field(default=9104, ge=0, le=65535)
    ledger_address: str = "127.0.0.1:50051"
    # The retailer agent price changes are signed as (the dev genesis holds the dev keys). One process per
    # agent: the demo seed signs as admin-0 and the planner as admin-1, and two writers of one agent race
    # for its nonces.
    signer_agent_id: str = f"{DEMO_RETAILER_GLN}/admin-2"
    genesis_file: Path | None = None
    # This service's own private key (hex Ed25519 seed): the variable wins over the file; neither set = the
    # development key file `shelfproof up`'s ledger wrote (refused outside development).
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    # How often the projector asks the ledger for new heights of its price log.
    poll_s: float = Field(default=0.02, gt=0, le=5)


async def serve(
    settings: PricingSettings, dsn: str, state_dir: Path, tls: TlsSettings | None = None, environment: str = "development"
) -> None:
    genesis, account = service_account(
        settings.genesis_file or state_dir / "ledger" / "genesis.json", settings.signer_agent_id,
        key_file=settings.signing_key_file, key=settings.signing_key, environment=environment, tls=tls or TlsSettings(),
    )
    channel = service_channel(settings.ledger_address, tls)
    ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
    pool = AsyncConnectionPool(dsn, min_size=2, max_size=10, open=False)
    await pool.open(wait=True)
    projector = PricingProjector(pool, ledger, poll_s=settings.poll_s)
    service = PricingService(pool, LedgerClient(ledger, account.signer(genesis.chain_id)), projector)
    metrics = ProcessMetrics("pricing")
    server = GrpcServer(settings, [service.binding()], metrics, tls=tls, signing_organization=account.organization_gln)
    watch_query_service(metrics, server, pool, ledger, {"pricing": projector})

    async def start() -> None:
        await projector.start()
        await server.start()
        await metrics.start(settings.host, settings.metrics_port)

    async def stop() -> None:
        await server.stop()
        await metrics.stop()
        await projector.stop()
        await pool.close()
        await channel.close()

    await run_until_signalled(start, stop)


def main() -> None:
    run_service_with_postgres(lambda state_dir, dsn: serve(PricingSettings(), dsn, state_dir, TlsSettings(), CommonSettings().env))


if __name__ == "__main__":
    main()
