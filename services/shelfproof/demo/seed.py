"""Seed the demo supply chain once, through the gRPC services only (development only).

Each organisation writes only in its own scope (README, "Trust model"): the brand registers its plant
and a few dozen products under its company prefix, commissions and labels them (the registry signs as
the brand); the distributor registers its distribution centre, the retailer its two stores and the
corner-store organisation its shop, each under its own prefix (signed transactions through
LedgerService). Custody events plant -> DC -> stores and three months of daily sales are EPCIS through
the registry's EventService: the brand may record its own items anywhere. Then a recall and voided
labels (brand), the retailer's guardrail and replenishment policies and prices at its own stores,
pending AI drafts (PlannerService.DraftRestock / DraftPromotion), one more restock draft that a store
manager approves with her own key so the ledger issues an open purchase order (waiting for the brand's
acknowledgement), a running promotion and a scheduled price change (the retailer), a copied code scanned
in Amsterdam and minutes later in Madrid (recorded by the consortium's verifier agent, as the verify page
does, so the ledger raises its clone alert), and the people's encrypted key files (their approvals
keys) with development passphrases.

Idempotent: every write carries a request id or is a no-op when repeated, and the last step registers
the marker location ``SEEDED_MARKER_GLN``; when the ledger has it, seeding is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from shelfproof.console.people import PEOPLE, key_file, write_key_file
from shelfproof.gs1 import epcis
from shelfproof.gs1.digital_link import canonical_item_uri
from shelfproof.gs1.keys import check_digit
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import (
    CONSORTIUM_GLN, DEMO_BRAND_GLN, DEMO_DISTRIBUTOR_GLN, DEMO_RETAILER_GLN, DEMO_RETAILER_STORE_GLN, DEMO_SECOND_STORE_GLN, Genesis,
)
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as stpb
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.v1 import planner_pb2 as ppb
from shelfproof.planner.v1 import planner_pb2_grpc
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.product.v1 import events_pb2_grpc, labels_pb2_grpc, product_pb2_grpc
from shelfproof.product.v1 import labels_pb2 as lapb
from shelfproof.product.v1 import product_pb2 as prpb
from shelfproof.runtime.client import call, service_channel
from shelfproof.runtime.settings import TlsSettings
from shelfproof.runtime.errors import DomainError

log = logging.getLogger(__name__)


def _gln(body: str) -> str:
    return body + str(check_digit(body))


# Every GLN carries the company prefix of the organisation whose site it is.
PLANT_GLN = _gln("061414100007")  # the brand's (0614141)
DC_GLN = _gln("541234500001")  # the distributor's (5412345)
STORE_A_GLN = DEMO_RETAILER_STORE_GLN  # the retailer's (4012345)
STORE_B_GLN = _gln("401234500002")
CORNER_STORE_GLN = _gln("409876500001")  # the corner-store organisation's (4098765)
SEEDED_MARKER_GLN = _gln("401234500009")
STORES = (STORE_A_GLN, STORE_B_GLN)  # the retailer's: its prices, policies and the planner's drafts
CATEGORIES = ("Coffee", "Tea", "Chocolate", "Olive oil", "Honey", "Pasta")
PASSPHRASE_FILE = "dev-passphrases.json"
# The copied code's two sightings: Amsterdam, then Madrid ten minutes later (4-character cells).
AMSTERDAM_CELL, MADRID_CELL = "u173", "ezjm"
DEMO_PROMOTION_ID = "demo-promotion-coffee-week"
DEMO_SCHEDULED_CHANGE_ID = "demo-scheduled-change-1"
ORDER_APPROVER = "maria"  # the store manager whose approval issues the demo's open purchase order


@dataclass(frozen=True)
class DemoSize:
    products: int = 24
    items_per_product: int = 60
    sales_days: int = 90


@dataclass
class DemoResult:
    seeded_now: bool
    passphrases: dict[str, str] = field(default_factory=dict)
    draft_ids: list[str] = field(default_factory=list)
    sample_codes: list[tuple[str, str]] = field(default_factory=list)  # (gtin, serial) still in store A
    order_ids: list[str] = field(default_factory=list)  # the open purchase order(s)
    copied_code: tuple[str, str] | None = None  # (gtin, serial) scanned in two cities


def demo_gtin(n: int) -> str:
    body = f"00614141{200 + n:05d}"  # indicator 0, the brand's prefix 0614141
    return body + str(check_digit(body))


def ensure_key_files(state_dir: Path, genesis: Genesis) -> dict[str, str]:
    """Each person's key file (their genesis agent's seed under a development passphrase), once; the
    passphrases are kept beside them (mode 0600) so `shelfproof up` can print them."""
    console_dir = state_dir / "console"
    console_dir.mkdir(parents=True, exist_ok=True)
    known_path = console_dir / PASSPHRASE_FILE
    known = json.loads(known_path.read_text()) if known_path.exists() else {}
    for login, person in PEOPLE.items():
        account = genesis.accounts.get(person.agent_id)
        path = key_file(state_dir, login)
        if account is None:
            continue  # this genesis has no such agent (e.g. a test ledger without the consortium)
        if login not in known or not path.exists():
            known[login] = f"{login}-{secrets.token_hex(4)}"
            write_key_file(path, person, account.seed, known[login])
    fd = os.open(known_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(known, out, indent=2)
    return known


class DemoSeeder:
    def __init__(
        self, ledger_address: str, registry_address: str, planner_address: str, genesis: Genesis, size: DemoSize,
        tls: TlsSettings | None = None,
    ) -> None:
        self.channels = [service_channel(a, tls) for a in (ledger_address, registry_address, planner_address)]
        ledger, registry, planner = self.channels
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(ledger)
        self.products = product_pb2_grpc.ProductServiceStub(registry)
        self.events = events_pb2_grpc.EventServiceStub(registry)
        self.labels = labels_pb2_grpc.LabelServiceStub(registry)
        self.planner = planner_pb2_grpc.PlannerServiceStub(planner)
        self.genesis = genesis
        # One client per signing agent: each keeps its own next nonce. (A second client for the same agent
        # reads the nonce from the last provable height, one block behind, and reuses a nonce.)
        self._clients: dict[str, LedgerClient | None] = {}
        self.retailer = self._client(DEMO_RETAILER_GLN)
        self.size = size
        self.gtins = [demo_gtin(n) for n in range(size.products)]
        self.now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def seeded(self) -> bool:
        reply = await call(self.ledger.Query, lpb.QueryRequest(store="locations", key=SEEDED_MARKER_GLN.encode()), idempotent=True)
        return reply.found

    def _client(self, org_gln: str) -> LedgerClient | None:
        """The ledger client signing as the organisation's admin-0, or None when this genesis lacks it."""
        if org_gln not in self._clients:
            account = self.genesis.accounts.get(f"{org_gln}/admin-0")
            self._clients[org_gln] = LedgerClient(self.ledger, account.signer(self.genesis.chain_id)) if account else None
        return self._clients[org_gln]

    async def _retailer_submit(self, bodies: list[txpb.TransactionBody]) -> None:
        await self._submit(self.retailer, bodies)

    @staticmethod
    async def _submit(client: LedgerClient, bodies: list[txpb.TransactionBody]) -> None:
        for outcome in await client.submit_many(bodies):
            if isinstance(outcome, DomainError) and "already" not in outcome.message:
                raise outcome

    async def locations(self) -> None:
        await call(self.products.CreateLocation, prpb.CreateLocationRequest(
            location=prpb.Location(gln=PLANT_GLN, organization_gln=DEMO_BRAND_GLN, name="Demo Brand plant", city="Lyon", country_code="FR"),
            request_id="demo-location-plant"), idempotent=True, deadline_s=30)
        places = [(DEMO_DISTRIBUTOR_GLN, DC_GLN, "Distribution centre North", "Utrecht", "NL"),
                  (DEMO_RETAILER_GLN, STORE_A_GLN, "Store Amsterdam Centraal", "Amsterdam", "NL"),
                  (DEMO_RETAILER_GLN, STORE_B_GLN, "Store Rotterdam Zuid", "Rotterdam", "NL"),
                  (DEMO_SECOND_STORE_GLN, CORNER_STORE_GLN, "Corner store Delft", "Delft", "NL")]
        for org, gln, name, city, country in places:
            client = self._client(org)
            if client is None:
                continue  # this genesis has no such organisation (a test ledger): its site stays unregistered
            found = await call(self.ledger.Query, lpb.QueryRequest(store="locations", key=gln.encode()), idempotent=True)
            if not found.found:
                await self._submit(client, [txpb.TransactionBody(register_location=txpb.RegisterLocation(
                    gln=gln, organization_gln=org, name=name, city=city, country_code=country))])

    async def products_and_policies(self) -> None:
        for n, gtin in enumerate(self.gtins):
            category = CATEGORIES[n % len(CATEGORIES)]
            await call(self.products.CreateProduct, prpb.CreateProductRequest(
                product=prpb.Product(gtin=gtin, name=f"{category} no. {n + 1}", brand="Demo Brand", category=category, net_content="500 g"),
                request_id=f"demo-product-{gtin}"), idempotent=True, deadline_s=30)
        eur = lambda amount: txpb.Money(currency_code="EUR", amount_minor=amount)  # noqa: E731
        policy = txpb.GuardrailPolicy(
            organization_gln=DEMO_RETAILER_GLN, currency_code="EUR", budget_minor=50_000_000, budget_period_s=30 * 86_400,
            quorum_threshold_minor=20_000_000, approval_quorum=2, auto_approve_below_minor=0, margin_floor_bps=1_000,
            max_discount_bps=3_000, max_price_change_bps_per_day=2_000, draft_ttl_s=14 * 86_400,
        )
        bodies = [txpb.TransactionBody(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=policy))]
        for store in STORES:
            bodies.append(txpb.TransactionBody(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=txpb.ReplenishmentPolicy(
                organization_gln=DEMO_RETAILER_GLN, location_gln=store, items=[
                    txpb.ItemBounds(gtin=g, min_order_quantity=6, max_order_quantity=240, case_pack=6, unit_cost=eur(250 + 15 * n), lead_time_days=3,
                                    supplier_gln=DEMO_BRAND_GLN)  # approved drafts become the brand's purchase orders
                    for n, g in enumerate(self.gtins)
                ]))))
            bodies += [
                txpb.TransactionBody(change_price=txpb.ChangePrice(gtin=g, location_gln=store, price=eur(599 + 30 * n), unit_cost=eur(250 + 15 * n), reason="demo price book"))
                for n, g in enumerate(self.gtins)
            ]
        await self._retailer_submit(bodies)

    async def commission(self) -> dict[str, tuple[str, str, list[str]]]:
        """gtin -> (batch id, lot, serials)."""
        batches = {}
        expiry = (self.now + timedelta(days=365)).strftime("%Y-%m-%d")
        for n, gtin in enumerate(self.gtins):
            lot = f"L{n + 1:03d}A"
            stream = self.products.CommissionItems(prpb.CommissionItemsRequest(
                gtin=gtin, lot=lot, expiry=expiry, count=self.size.items_per_product, request_id=f"demo-batch-{gtin}"), timeout=120)
            batch = None
            async for reply in stream:
                if reply.HasField("batch"):
                    batch = reply.batch
            assert batch is not None
            serials = (await call(self.ledger.GetContent, lpb.GetContentRequest(sha256=batch.serials_sha256), idempotent=True, deadline_s=30)).content
            batches[gtin] = (batch.batch_id, lot, serials.decode("ascii").split("\n"))
        return batches

    def custody_and_sales(self, batches: dict[str, tuple[str, str, list[str]]]) -> tuple[list[dict], list[tuple[str, str]]]:
        """EPCIS events: commissioning at the plant, plant -> DC -> stores, then daily sales."""
        start = self.now - timedelta(days=self.size.sales_days + 5)
        events, left_in_a = [], []
        sold_by_day: dict[tuple[str, int], list[str]] = {}
        for n, (gtin, (_, lot, serials)) in enumerate(batches.items()):
            epcs = [canonical_item_uri(gtin, s) for s in serials]
            at = lambda hours: start + timedelta(hours=hours + n % 6)  # noqa: E731
            events.append(epcis.object_event(event_time=at(0), epcs=epcs, action="ADD", biz_step="commissioning", disposition="active",
                                             read_point_gln=PLANT_GLN, biz_location_gln=PLANT_GLN, ilmd={"cbvmda:lotNumber": lot}))
            events.append(epcis.object_event(event_time=at(8), epcs=epcs, action="OBSERVE", biz_step="shipping", disposition="in_transit", read_point_gln=PLANT_GLN))
            events.append(epcis.object_event(event_time=at(30), epcs=epcs, action="OBSERVE", biz_step="receiving", disposition="in_progress",
                                             read_point_gln=DC_GLN, biz_location_gln=DC_GLN))
            cut = len(epcs) * 6 // 10
            keep = max(2, len(epcs) // 10)  # some stay at the DC
            for store, share in ((STORE_A_GLN, epcs[:cut]), (STORE_B_GLN, epcs[cut:len(epcs) - keep])):
                events.append(epcis.object_event(event_time=at(50), epcs=share, action="OBSERVE", biz_step="shipping", disposition="in_transit", read_point_gln=DC_GLN))
                events.append(epcis.object_event(event_time=at(74), epcs=share, action="OBSERVE", biz_step="receiving", disposition="sellable_accessible",
                                                 read_point_gln=store, biz_location_gln=store))
                stock = list(share)
                for day in reversed(range(self.size.sales_days)):  # recent days first: the forecast window has sales
                    demand = 1 if (day * (n + 2) + (store == STORE_B_GLN)) % 3 == 0 else 0
                    demand += 1 if (day + n) % 11 == 0 else 0
                    for _ in range(demand):
                        if len(stock) > 3:  # never quite sold out: the planner has low stock to restock
                            sold_by_day.setdefault((store, day), []).append(stock.pop())
                if store == STORE_A_GLN:
                    left_in_a.append(epcis.item_of(stock[0]))
        first_sale = self.now - timedelta(days=self.size.sales_days)
        for (store, day), epcs in sorted(sold_by_day.items()):
            events.append(epcis.object_event(event_time=first_sale + timedelta(days=day, hours=10), epcs=epcs, action="OBSERVE",
                                             biz_step="retail_selling", disposition="retail_sold", read_point_gln=store, biz_location_gln=store))
        return events, left_in_a

    async def capture(self, events: list[dict]) -> None:
        for start in range(0, len(events), 200):
            chunk = events[start:start + 200]
            document = epcis.epcis_document(chunk, creation_date=self.now)
            await call(self.events.CaptureEvents, epb.CaptureEventsRequest(epcis_document=json.dumps(document).encode(),
                                                                           request_id=f"demo-events-{start}"), idempotent=True, deadline_s=300)

    async def recall_and_void(self, batches: dict[str, tuple[str, str, list[str]]]) -> None:
        gtin = self.gtins[-1]
        _, lot, serials = batches[gtin]
        found = await call(self.ledger.Query, lpb.QueryRequest(store="recalls", key=f"{gtin}/{lot}".encode()), idempotent=True)
        if not found.found:
            await call(self.products.RecallLot, prpb.RecallLotRequest(gtin=gtin, lot=lot, reason="demo: possible allergen cross-contact",
                                                                      request_id=f"demo-recall-{gtin}"), idempotent=True, deadline_s=30)
        voided_gtin = self.gtins[0]
        await call(self.labels.VoidLabels, lapb.VoidLabelsRequest(gtin=voided_gtin, serials=batches[voided_gtin][2][-2:],
                                                                  reason="demo: misprinted labels", request_id=f"demo-void-{voided_gtin}"),
                   idempotent=True, deadline_s=30)

    async def drafts(self) -> list[str]:
        ids = []
        for n, store in enumerate(STORES):
            reply = await call(self.planner.DraftRestock, ppb.DraftRestockRequest(location_gln=store, request_id=f"demo-restock-{n}"),
                               idempotent=True, deadline_s=600)
            ids.append(reply.draft.draft_id)
        reply = await call(self.planner.DraftPromotion, ppb.DraftPromotionRequest(location_gln=STORE_A_GLN, request_id="demo-promotion-0"),
                           idempotent=True, deadline_s=600)
        ids.append(reply.draft.draft_id)
        return ids

    async def open_order(self) -> list[str]:
        """A restock draft approved by a store manager's own key: the ledger issues its purchase order to
        the brand (the supplier the replenishment policy names), open until the brand acknowledges it."""
        reply = await call(self.planner.DraftRestock, ppb.DraftRestockRequest(location_gln=STORE_B_GLN, request_id="demo-restock-order"),
                           idempotent=True, deadline_s=600)
        draft = reply.draft
        if draft.state == ppb.DRAFT_STATE_PENDING_APPROVAL:
            person = PEOPLE[ORDER_APPROVER]
            signer = self.genesis.accounts[person.agent_id].signer(self.genesis.chain_id)
            agent = await call(self.ledger.Query, lpb.QueryRequest(store="agents", key=person.agent_id.encode()), idempotent=True)
            signer.next_nonce = stpb.AgentRecord.FromString(agent.value).nonce + 1
            signed = signer.sign(txpb.TransactionBody(approve_draft=txpb.ApproveDraft(draft_id=draft.draft_id)))
            await call(self.planner.ApproveDraft, ppb.ApproveDraftRequest(draft_id=draft.draft_id, signed_transaction=signed),
                       idempotent=False, deadline_s=60)
        orders = await call(self.planner.ListPurchaseOrders, ppb.ListPurchaseOrdersRequest(buyer_gln=DEMO_RETAILER_GLN, page_size=50),
                            idempotent=True)
        return [o.order_id for o in orders.purchase_orders if o.draft_id == draft.draft_id]

    async def prices_and_promotions(self) -> None:
        """A promotion running at store A for two weeks and a price change scheduled at store B."""
        found = await call(self.ledger.Query, lpb.QueryRequest(store="promotions", key=DEMO_PROMOTION_ID.encode()), idempotent=True)
        if found.found:
            return
        now = int(time.time())
        promotion = txpb.CreatePromotion(
            promotion_id=DEMO_PROMOTION_ID, location_gln=STORE_A_GLN, gtins=self.gtins[:2], discount_bps=1_500, start_unix_s=now - 60,
            end_unix_s=now + 14 * 86_400, customer_copy="Coffee week: 15 % off")
        change = txpb.ChangePrice(gtin=self.gtins[1], location_gln=STORE_B_GLN, price=txpb.Money(currency_code="EUR", amount_minor=659),
                                  unit_cost=txpb.Money(currency_code="EUR", amount_minor=265), reason="demo: supplier price rise")
        await self._retailer_submit([
            txpb.TransactionBody(create_promotion=promotion),
            txpb.TransactionBody(schedule_price_change=txpb.SchedulePriceChange(
                change_id=DEMO_SCHEDULED_CHANGE_ID, change=change, effective_unix_s=now + 7 * 86_400)),
        ])

    def _verifier(self) -> LedgerClient | None:
        """The consortium's last verifier agent (the verify page's workers sign as the first ones)."""
        agents = sorted((a for a in self.genesis.accounts if a.startswith(f"{CONSORTIUM_GLN}/verifier-")), key=lambda a: int(a.rsplit("-", 1)[1]))
        if not agents:
            return None
        return LedgerClient(self.ledger, self.genesis.accounts[agents[-1]].signer(self.genesis.chain_id))

    async def copied_code(self, batches: dict[str, tuple[str, str, list[str]]], left_in_a: list[tuple[str, str]]) -> tuple[str, str] | None:
        """One code still in store A scanned by consumers in Amsterdam and, ten minutes later, in Madrid:
        the ledger judges it copied and raises the clone alert. Another code is scanned once, genuinely."""
        verifier = self._verifier()
        if verifier is None or len(left_in_a) < 2:
            return None
        copied, genuine = left_in_a[1], left_in_a[0]
        found = await call(self.ledger.Query, lpb.QueryRequest(store="scans", key=f"{copied[0]}/{copied[1]}".encode()), idempotent=True)
        if not found.found:
            now = int(time.time())
            scan = lambda code, cell, at: txpb.Scan(gtin=code[0], serial=code[1], cell=cell, scan_unix_s=at, batch_id=batches[code[0]][0])  # noqa: E731
            await self._submit(verifier, [txpb.TransactionBody(record_scans=txpb.RecordScans(scans=[
                scan(genuine, AMSTERDAM_CELL, now - 1_800), scan(copied, AMSTERDAM_CELL, now - 1_200), scan(copied, MADRID_CELL, now - 600),
            ]))])
        return copied

    async def mark_seeded(self) -> None:
        await self._retailer_submit([txpb.TransactionBody(register_location=txpb.RegisterLocation(
            gln=SEEDED_MARKER_GLN, organization_gln=DEMO_RETAILER_GLN, name="shelfproof demo (seeded)"))])


async def seed_demo(
    ledger_address: str, registry_address: str, planner_address: str, genesis: Genesis, state_dir: Path,
    size: DemoSize = DemoSize(), *, progress=lambda text: log.info(text), tls: TlsSettings | None = None,
) -> DemoResult:
    passphrases = ensure_key_files(state_dir, genesis)
    seeder = DemoSeeder(ledger_address, registry_address, planner_address, genesis, size, tls)
    try:
        if await seeder.seeded():
            return DemoResult(False, passphrases)
        progress("demo: locations, products, policies and prices")
        await seeder.locations()
        await seeder.products_and_policies()
        progress(f"demo: commissioning {size.products} batches of {size.items_per_product} items")
        batches = await seeder.commission()
        events, left = seeder.custody_and_sales(batches)
        progress(f"demo: {len(events)} custody and sales events")
        await seeder.capture(events)
        await seeder.recall_and_void(batches)
        progress("demo: AI drafts from the planner")
        draft_ids = await seeder.drafts()
        progress("demo: an open purchase order, a promotion, a scheduled price change and a copied code")
        order_ids = await seeder.open_order()
        await seeder.prices_and_promotions()
        codes = [item for item in left if item]
        copied = await seeder.copied_code(batches, codes)
        await seeder.mark_seeded()
        return DemoResult(True, passphrases, draft_ids, codes, order_ids, copied)
    finally:
        await seeder.close()
