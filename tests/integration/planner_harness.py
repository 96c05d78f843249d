"""The planner's gRPC service over the real ledger (embedded engine behind its adapter), PostgreSQL and
the projections, with policies, products, prices, stock and sales set up as a retailer would.
The drafter is given: the real one on Ray Serve + vLLM, or a scripted model for fast tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import (
    DEMO_BRAND_GLN, DEMO_BRAND_PREFIX, DEMO_RETAILER_GLN, DEMO_RETAILER_PREFIX, DEMO_RETAILER_STORE_GLN, build_genesis,
)
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.projector import DraftProjector
from shelfproof.planner.service import PlannerService
from shelfproof.planner.v1 import planner_pb2_grpc
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings
from tests.integration.harness import CHAIN, Registry
STORE = DEMO_RETAILER_STORE_GLN
RETAILER, BRAND = DEMO_RETAILER_GLN, DEMO_BRAND_GLN


def policy(**overrides) -> txpb.GuardrailPolicy:
    fields = dict(
        organization_gln=RETAILER, currency_code="EUR", budget_minor=5_000_000, budget_period_s=30 * 86_400,
        quorum_threshold_minor=200_000, approval_quorum=2, auto_approve_below_minor=10_000,
        margin_floor_bps=1_000, max_discount_bps=3_000, max_price_change_bps_per_day=2_000, draft_ttl_s=3_600,
    )
    fields.update(overrides)
    return txpb.GuardrailPolicy(**fields)


def gtin(n: int) -> str:
    from shelfproof.gs1.keys import check_digit

    body = f"0061414{n:06d}"
    return body + str(check_digit(body))


class PlannerStack(Registry):
    """The registry's stack (ledger, adapter, PostgreSQL, projection) plus the planner's service."""

    def __init__(self, tmp_path, dsn: str, drafter, *, products: int = 8) -> None:
        super().__init__(tmp_path, dsn)
        self.genesis = build_genesis(
            CHAIN,
            # gtin() numbers the products under 0614140, a second prefix of the brand's.
            [(BRAND, "brand", [DEMO_BRAND_PREFIX, "0614140"]), (RETAILER, "retailer", [DEMO_RETAILER_PREFIX])],
            agents_per_org=2, people_per_org=2,
        )
        self.drafter, self.products = drafter, products
        self.gtins = [gtin(n) for n in range(1, products + 1)]

    def signer(self, org: str, n: int):
        return self.genesis.accounts[f"{org}/admin-{n}"].signer(CHAIN)

    def person(self, org: str, n: int):
        """A person's agent, signing with the person's approvals key."""
        return self.genesis.accounts[f"{org}/person-{n}"].signer(CHAIN)

    async def __aenter__(self):
        await super().__aenter__()
        self.draft_projector = DraftProjector(self.pool, self.ledger)
        await self.draft_projector.start()
        self.retailer = LedgerClient(self.ledger, self.signer(RETAILER, 0))
        self.service = PlannerService(self.pool, LedgerClient(self.ledger, self.signer(RETAILER, 1)), self.drafter, self.draft_projector)
        self.planner_server = GrpcServer(GrpcServerSettings(port=0), [self.service.binding()])
        self.planner_channel = insecure_channel(f"127.0.0.1:{await self.planner_server.start()}")
        self.stub = planner_pb2_grpc.PlannerServiceStub(self.planner_channel)
        return self

    async def __aexit__(self, *exc):
        await self.planner_channel.close()
        await self.planner_server.stop()
        await self.draft_projector.stop()
        await super().__aexit__(*exc)

    async def set_up_store(self, guardrails: txpb.GuardrailPolicy | None = None, *, case_pack: int = 6) -> None:
        """Products (by the brand), the retailer's guardrail and replenishment policies, prices, stock and
        eight weeks of sales."""
        brand = LedgerClient(self.ledger, self.signer(BRAND, 0))
        await brand.submit_many([
            txpb.TransactionBody(register_product=txpb.RegisterProduct(gtin=g, name=f"Product {n}", brand="Demo"))
            for n, g in enumerate(self.gtins)
        ])
        eur = lambda amount: txpb.Money(currency_code="EUR", amount_minor=amount)  # noqa: E731
        bounds = txpb.ReplenishmentPolicy(organization_gln=RETAILER, location_gln=STORE, items=[
            txpb.ItemBounds(gtin=g, min_order_quantity=12, max_order_quantity=600, case_pack=case_pack, unit_cost=eur(250 + 10 * n), lead_time_days=3)
            for n, g in enumerate(self.gtins)
        ])
        await self.retailer.submit_many([
            txpb.TransactionBody(register_location=txpb.RegisterLocation(gln=STORE, organization_gln=RETAILER, name="Store")),
            txpb.TransactionBody(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=guardrails or policy())),
            txpb.TransactionBody(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=bounds)),
            *(
                txpb.TransactionBody(change_price=txpb.ChangePrice(gtin=g, location_gln=STORE, price=eur(600 + 10 * n), unit_cost=eur(250 + 10 * n)))
                for n, g in enumerate(self.gtins)
            ),
        ])
        today = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
        async with self.pool.connection() as conn, conn.transaction():
            for n, g in enumerate(self.gtins):
                await conn.execute(
                    "INSERT INTO inventory_positions (gtin, location_gln, quantity, ledger_height) VALUES (%s, %s, %s, 1)",
                    (g, STORE, 5 + 40 * (n % 3)),
                )
                for day in range(56):
                    sold = (n + day) % 4  # 0-3 a day: intermittent
                    if not sold:
                        continue
                    event_hash = f"ni:///sha-256;{(n * 1000 + day):064x}?ver=CBV2.0"
                    when = today - timedelta(days=day + 1)
                    await conn.execute(
                        """INSERT INTO events (event_hash, event_type, event_time, action, biz_step, disposition,
                                               biz_location_gln, document, recorded_by, ledger_height, tx_index, tx_hash)
                           VALUES (%s, 'ObjectEvent', %s, 'OBSERVE', 'retail_selling', 'retail_sold', %s, %s, 'test', 1, 0, '\\x00')""",
                        (event_hash, when, STORE, '{"eventTimeZoneOffset": "+00:00"}'),
                    )
                    for k in range(sold):
                        await conn.execute(
                            "INSERT INTO event_items (event_hash, gtin, serial) VALUES (%s, %s, %s)", (event_hash, g, f"S{n}x{day}x{k}")
                        )
