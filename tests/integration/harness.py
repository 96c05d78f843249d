"""The registry as integration tests run it: embedded ledger + adapter + registry services, each behind
a real gRPC server on loopback, over a real PostgreSQL database."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from shelfproof.ledger.adapter.service import LedgerAdapter
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.engines.embedded import EmbeddedEngine
from shelfproof.ledger.genesis import DEMO_BRAND_GLN, DEMO_BRAND_PREFIX, build_genesis
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.product.v1 import events_pb2_grpc, labels_pb2_grpc, product_pb2_grpc
from shelfproof.registry.alerts import AlertService
from shelfproof.registry.events import EventService
from shelfproof.registry.labels import LabelService
from shelfproof.registry.projector import RegistryProjector
from shelfproof.registry.service import ProductService
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings

CHAIN = "registry-test"
RESOLVER = "https://verify.shelfproof.example"


class Registry:
    """Ledger (embedded) + adapter + registry, each behind a real gRPC server on loopback."""

    def __init__(self, tmp_path, dsn: str) -> None:
        self.tmp_path, self.dsn = tmp_path, dsn
        self.genesis = build_genesis(CHAIN, [(DEMO_BRAND_GLN, "brand", [DEMO_BRAND_PREFIX])], agents_per_org=1)
        # Each server's ProcessMetrics (runtime/metrics.py), when a test sets them before entering.
        self.ledger_metrics = self.registry_metrics = None

    async def __aenter__(self):
        self.engine = EmbeddedEngine(self.tmp_path / "engine", CHAIN, self.genesis.state, block_interval_s=0.01)
        await self.engine.start()
        self.adapter = LedgerAdapter(self.engine, self.tmp_path / "adapter")
        await self.adapter.start()
        self.ledger_server = GrpcServer(GrpcServerSettings(port=0), [self.adapter.binding()], self.ledger_metrics)
        self.ledger_address = f"127.0.0.1:{await self.ledger_server.start()}"
        self.ledger_channel = insecure_channel(self.ledger_address)
        self.ledger = ledger = ledger_pb2_grpc.LedgerServiceStub(self.ledger_channel)
        self.pool = AsyncConnectionPool(self.dsn, min_size=1, max_size=4, open=False)
        await self.pool.open(wait=True)
        self.projector = RegistryProjector(self.pool, ledger)
        await self.projector.start()
        account = self.genesis.accounts[f"{DEMO_BRAND_GLN}/admin-0"]
        ledger_client = LedgerClient(ledger, account.signer(CHAIN))
        services = [ProductService(self.pool, ledger_client, self.projector, DEMO_BRAND_GLN)]
        services += self.extra_services(ledger_client)
        self.server = GrpcServer(GrpcServerSettings(port=0), [service.binding() for service in services], self.registry_metrics)
        self.channel = insecure_channel(f"127.0.0.1:{await self.server.start()}")
        self.stub = product_pb2_grpc.ProductServiceStub(self.channel)
        self.events = events_pb2_grpc.EventServiceStub(self.channel)
        self.labels = labels_pb2_grpc.LabelServiceStub(self.channel)
        return self

    def extra_services(self, ledger_client: LedgerClient) -> list:
        """The registry's other services, on the same server as in production."""
        return [
            EventService(self.pool, ledger_client, self.projector),
            LabelService(self.pool, ledger_client, self.projector, RESOLVER),
            AlertService(self.ledger, ledger_client),
        ]

    async def __aexit__(self, *exc):
        await self.channel.close()
        await self.server.stop()
        await self.projector.stop()
        await self.pool.close()
        await self.ledger_channel.close()
        await self.ledger_server.stop()
        await self.adapter.stop()
        await self.engine.close()
