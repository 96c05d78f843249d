"""The pricing service as integration tests (and the benchmark) run it: embedded ledger + adapter + the
pricing service, each behind a real gRPC server on loopback, over a real PostgreSQL database, on a
genesis with a brand (products), a retailer (stores, prices) and a second retailer."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from shelfproof.ledger.adapter.service import LedgerAdapter
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.engines.embedded import EmbeddedEngine
from shelfproof.ledger.genesis import build_genesis
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.pricing.projector import PricingProjector
from shelfproof.pricing.service import PricingService
from shelfproof.pricing.v1 import pricing_pb2_grpc
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings

CHAIN = "pricing-test"
BRAND, RETAILER, OTHER = "0614141000005", "4012345000009", "4098765000003"
STORE, STORE_B = "4012345000016", "4012345000023"
GTINS = ["00614141123452", "00614141123469", "00614141123476"]
WINE = "00614141000173"  # category "wine"


def eur(amount: int) -> txpb.Money:
    return txpb.Money(currency_code="EUR", amount_minor=amount)


def body(**action) -> txpb.TransactionBody:
    return txpb.TransactionBody(created_unix_ms=1, **action)


def guardrails(**overrides) -> txpb.GuardrailPolicy:
    fields = dict(
        organization_gln=RETAILER, currency_code="EUR", budget_minor=1_000_000, budget_period_s=86_400,
        quorum_threshold_minor=50_000, approval_quorum=1, margin_floor_bps=1_000, max_discount_bps=3_000,
        max_price_change_bps_per_day=5_000, draft_ttl_s=3_600,
    )
    fields.update(overrides)
    return txpb.GuardrailPolicy(**fields)


class Pricing:
    def __init__(self, tmp_path, dsn: str, block_interval_s: float = 0.01) -> None:
        self.tmp_path, self.dsn, self.block_interval_s = tmp_path, dsn, block_interval_s
        self.genesis = build_genesis(
            CHAIN, [(BRAND, "brand", ["0614141"]), (RETAILER, "retailer", ["4012345"]), (OTHER, "other", ["4098765"])],
            agents_per_org=2, people_per_org=1,
        )

    async def __aenter__(self) -> "Pricing":
        self.engine = EmbeddedEngine(self.tmp_path / "engine", CHAIN, self.genesis.state, block_interval_s=self.block_interval_s)
        await self.engine.start()
        self.adapter = LedgerAdapter(self.engine, self.tmp_path / "adapter")
        await self.adapter.start()
        self.ledger_server = GrpcServer(GrpcServerSettings(port=0), [self.adapter.binding()])
        self.ledger_channel = insecure_channel(f"127.0.0.1:{await self.ledger_server.start()}")
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self.ledger_channel)
        self.pool = AsyncConnectionPool(self.dsn, min_size=1, max_size=8, open=False)
        await self.pool.open(wait=True)
        self.projector = PricingProjector(self.pool, self.ledger, poll_s=0.01)
        await self.projector.start()
        self.service = PricingService(self.pool, self.client(f"{RETAILER}/admin-0"), self.projector)
        self.server = GrpcServer(GrpcServerSettings(port=0), [self.service.binding()])
        self.address = f"127.0.0.1:{await self.server.start()}"
        self.channel = insecure_channel(self.address)
        self.stub = pricing_pb2_grpc.PricingServiceStub(self.channel)
        return self

    def client(self, agent_id: str) -> LedgerClient:
        return LedgerClient(self.ledger, self.genesis.accounts[agent_id].signer(CHAIN))

    async def set_up_store(self, policy: txpb.GuardrailPolicy | None = None) -> None:
        """The brand's products, the retailer's stores, its guardrail policy and base prices."""
        brand, retailer = self.client(f"{BRAND}/admin-0"), self.client(f"{RETAILER}/admin-1")
        await brand.submit_many([
            body(register_product=txpb.RegisterProduct(gtin=g, name=f"Product {n}", category="pantry")) for n, g in enumerate(GTINS)
        ] + [body(register_product=txpb.RegisterProduct(gtin=WINE, name="Rioja", category="wine"))])
        results = await retailer.submit_many([
            body(register_location=txpb.RegisterLocation(gln=STORE, organization_gln=RETAILER, name="Store 1")),
            body(register_location=txpb.RegisterLocation(gln=STORE_B, organization_gln=RETAILER, name="Store 2")),
            body(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=policy or guardrails())),
            *[body(change_price=txpb.ChangePrice(gtin=g, location_gln=STORE, price=eur(1_000 + 100 * n), unit_cost=eur(500)))
              for n, g in enumerate(GTINS)],
        ])
        assert all(not isinstance(r, Exception) for r in results), results
        assert await self.projector.wait_for_height(max(r.height for r in results))

    async def __aexit__(self, *exc) -> None:
        await self.channel.close()
        await self.server.stop()
        await self.projector.stop()
        await self.pool.close()
        await self.ledger_channel.close()
        await self.ledger_server.stop()
        await self.adapter.stop()
        await self.engine.close()
