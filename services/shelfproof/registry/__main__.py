"""The registry service: ``python -m shelfproof.registry`` (settings ``SHELFPROOF_REGISTRY_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from psycopg_pool import AsyncConnectionPool

from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_BRAND_GLN, service_account
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.registry.alerts import AlertService
from shelfproof.registry.events import EventService
from shelfproof.registry.labels import LabelService
from shelfproof.registry.projector import RegistryProjector
from shelfproof.registry.rest import EpcisRestApi, EpcisRestServer
from shelfproof.registry.service import ProductService
from shelfproof.runtime.client import service_channel
from shelfproof.runtime.metrics import ProcessMetrics, watch_query_service
from shelfproof.runtime.server import GrpcServer, run_service_with_postgres, run_until_signalled
from shelfproof.runtime.settings import CommonSettings, GrpcServerSettings, TlsSettings


class RegistrySettings(GrpcServerSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_REGISTRY_", extra="ignore")

    port: int = Field(default=50052, ge=0, le=65535)
    # /metrics and /ready (runtime/metrics.py) on their own loopback port.
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    ledger_address: str = "127.0.0.1:50051"
    # The agent this registry signs as, and where its key is (the dev genesis holds the dev keys).
    signer_agent_id: str = f"{DEMO_BRAND_GLN}/admin-0"
    genesis_file: Path | None = None
    # This service's own private key (hex Ed25519 seed): the variable wins over the file; neither set = the
    # development key file `shelfproof up`'s ledger wrote (refused outside development).
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    # Host (and optional path stem) of the resolver the QR labels point at: the verify page.
    resolver: str = "http://127.0.0.1:8080"
    # The EPCIS 2.0 REST binding (registry/rest.py), on the same host as the gRPC server.
    epcis_port: int = Field(default=8090, ge=0, le=65535)


async def serve(
    settings: RegistrySettings, dsn: str, state_dir: Path, tls: TlsSettings | None = None, environment: str = "development"
) -> None:
    genesis, account = service_account(
        settings.genesis_file or state_dir / "ledger" / "genesis.json", settings.signer_agent_id,
        key_file=settings.signing_key_file, key=settings.signing_key, environment=environment, tls=tls or TlsSettings(),
    )
    channel = service_channel(settings.ledger_address, tls)
    ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
    pool = AsyncConnectionPool(dsn, min_size=2, max_size=10, open=False)
    await pool.open(wait=True)
    projector = RegistryProjector(pool, ledger)
    ledger_client = LedgerClient(ledger, account.signer(genesis.chain_id))
    products = ProductService(pool, ledger_client, projector, account.organization_gln)
    events = EventService(pool, ledger_client, projector)
    label_service = LabelService(pool, ledger_client, projector, settings.resolver)
    alerts = AlertService(ledger, ledger_client)
    metrics = ProcessMetrics("registry")
    server = GrpcServer(settings, [products.binding(), events.binding(), label_service.binding(), alerts.binding()], metrics,
                        tls=tls, signing_organization=account.organization_gln)
    watch_query_service(metrics, server, pool, ledger, {"registry": projector})
    rest_tls = None
    if tls is not None and tls.enabled and tls.key_file and tls.ca_file:
        from shelfproof.runtime.tls import server_ssl_context

        rest_tls = server_ssl_context(tls.cert_file, tls.key_file, tls.ca_file)
    epcis_rest = EpcisRestServer(EpcisRestApi(pool, events, server.authorization), settings.host, settings.epcis_port, rest_tls)

    async def start() -> None:
        await projector.start()
        await server.start()
        await epcis_rest.start()
        await metrics.start(settings.host, settings.metrics_port)

    async def stop() -> None:
        await epcis_rest.stop()
        await server.stop()
        await metrics.stop()
        await projector.stop()
        await pool.close()
        await channel.close()

    await run_until_signalled(start, stop)


def main() -> None:
    run_service_with_postgres(lambda state_dir, dsn: serve(RegistrySettings(), dsn, state_dir, TlsSettings(), CommonSettings().env))


if __name__ == "__main__":
    main()
