"""The console against the real services (embedded ledger, registry, planner with the scripted model of
tests/integration/test_planner_service.py, PostgreSQL), seeded with a small demo: the seed itself, the
key files, and every page rendered by Streamlit's AppTest from the entry point."""

from __future__ import annotations

import asyncio
import stat
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from shelfproof.console.people import PEOPLE, WrongPassphrase, key_file, unlock_key_file
from shelfproof.demo.seed import (
    AMSTERDAM_CELL, DEMO_PROMOTION_ID, MADRID_CELL, ORDER_APPROVER, STORE_A_GLN, DemoSize, seed_demo,
)
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import DEMO_BRAND_GLN, DEMO_RETAILER_GLN, development_genesis
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.planner.drafter import Drafter
from shelfproof.planner.v1 import planner_pb2 as ppb
from shelfproof.pricing.projector import PricingProjector
from shelfproof.pricing.service import PricingService
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings
from tests.integration.harness import CHAIN
from tests.integration.planner_harness import PlannerStack
from tests.integration.test_planner_service import ScriptedModel

pytestmark = pytest.mark.integration
SMALL = DemoSize(products=4, items_per_product=40, sales_days=90)


@pytest.fixture(scope="module")
def module_dsn(postgres_cluster, migrated_template):
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    yield postgres_cluster.dsn(name)
    with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class SeededStack(PlannerStack):
    """Ledger, registry (with its alert stream), planner and pricing on loopback over the development
    genesis (every organisation of the demo, with its people), seeded with the small demo."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.genesis = development_genesis(CHAIN)

    async def __aenter__(self):
        await super().__aenter__()
        self.planner_address = f"127.0.0.1:{self.planner_server.port}"
        self.registry_address = f"127.0.0.1:{self.server.port}"
        # the pricing service as `shelfproof up` runs it: its own retailer agent, its own projector
        self.pricing_projector = PricingProjector(self.pool, self.ledger, poll_s=0.02)
        await self.pricing_projector.start()
        pricing_signer = self.genesis.accounts[f"{DEMO_RETAILER_GLN}/admin-2"].signer(CHAIN)
        self.pricing_service = PricingService(self.pool, LedgerClient(self.ledger, pricing_signer), self.pricing_projector)
        self.pricing_server = GrpcServer(GrpcServerSettings(port=0), [self.pricing_service.binding()])
        self.pricing_address = f"127.0.0.1:{await self.pricing_server.start()}"
        self.state_dir = self.tmp_path / "state"
        try:
            self.seed = await seed_demo(self.ledger_address, self.registry_address, self.planner_address, self.genesis, self.state_dir, SMALL)
        except BaseException:
            await self.__aexit__(None, None, None)  # a failed seed stops the servers too (else the test run hangs)
            raise
        return self

    async def __aexit__(self, *exc):
        await self.pricing_server.stop()
        await self.pricing_projector.stop()
        await super().__aexit__(*exc)


@pytest.fixture(scope="module")
async def seeded(tmp_path_factory, module_dsn):
    async with SeededStack(tmp_path_factory.mktemp("console"), module_dsn, Drafter(ScriptedModel())) as stack:
        yield stack


async def test_seed_writes_the_demo_and_only_once(seeded):
    result = seeded.seed
    assert result.seeded_now and len(result.draft_ids) == 3 and result.sample_codes
    drafts = await seeded.stub.ListDrafts(ppb.ListDraftsRequest(approver_agent_id=PEOPLE["maria"].agent_id), timeout=10)
    assert {d.draft_id for d in drafts.drafts} == set(result.draft_ids)
    sales = await seeded.events.ListEvents(epb.ListEventsRequest(filter=epb.EventFilter(location_gln=STORE_A_GLN), page_size=500), timeout=10)
    days = {e.event_time.ToDatetime().date() for e in sales.events if e.biz_step.endswith("retail_selling")}
    assert len(days) >= 30  # daily sales, most recent days first
    recall = await seeded.ledger.Query(lpb.QueryRequest(store="recalls", key=f"{seeded.seed.sample_codes[-1][0]}/L004A".encode()), timeout=5)
    assert recall.found
    # an open purchase order, issued when a store manager approved its draft, waits for the brand
    order_id, = result.order_ids
    order = (await seeded.stub.GetPurchaseOrder(ppb.GetPurchaseOrderRequest(order_id=order_id), timeout=10)).purchase_order
    assert order.state == ppb.PURCHASE_ORDER_STATE_ISSUED and order.supplier_gln == DEMO_BRAND_GLN and order.lines
    record = await seeded.ledger.Query(lpb.QueryRequest(store="drafts", key=order.draft_id.encode()), timeout=5)
    assert st.DraftRecord.FromString(record.value).approvers == [PEOPLE[ORDER_APPROVER].agent_id]
    # the copied code: scanned in Amsterdam, then in Madrid: compromised on the ledger
    gtin, serial = result.copied_code
    scans = st.ScanRecord.FromString((await seeded.ledger.Query(lpb.QueryRequest(store="scans", key=f"{gtin}/{serial}".encode()), timeout=5)).value)
    assert scans.HasField("compromise") and {s.cell for s in scans.sightings} == {AMSTERDAM_CELL, MADRID_CELL}
    promotion = await seeded.ledger.Query(lpb.QueryRequest(store="promotions", key=DEMO_PROMOTION_ID.encode()), timeout=5)
    assert promotion.found
    height = (await seeded.ledger.GetLedgerStatus(lpb.GetLedgerStatusRequest(), timeout=5)).latest_height

    again = await seed_demo(seeded.ledger_address, seeded.registry_address, seeded.planner_address, seeded.genesis, seeded.state_dir, SMALL)
    assert not again.seeded_now and again.passphrases == result.passphrases
    await asyncio.sleep(0.2)
    assert (await seeded.ledger.GetLedgerStatus(lpb.GetLedgerStatusRequest(), timeout=5)).latest_height == height


async def test_key_files_are_sealed_and_private(seeded):
    maria = PEOPLE["maria"]
    path = key_file(seeded.state_dir, "maria")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert seeded.genesis.accounts[maria.agent_id].seed.hex() not in path.read_text()
    key = unlock_key_file(path, seeded.seed.passphrases["maria"], maria.agent_id)
    assert bytes(key) == seeded.genesis.accounts[maria.agent_id].seed
    with pytest.raises(WrongPassphrase):
        unlock_key_file(path, seeded.seed.passphrases["maria"] + "x", maria.agent_id)
    with pytest.raises(WrongPassphrase):  # a file sealed for one agent does not log in as another
        unlock_key_file(path, seeded.seed.passphrases["maria"], PEOPLE["sam"].agent_id)


ENTRY = str(Path(__file__).resolve().parents[2] / "ui" / "console.py")


@pytest.fixture
def console_env(seeded, monkeypatch):
    monkeypatch.setenv("SHELFPROOF_CONSOLE_LEDGER_ADDRESS", seeded.ledger_address)
    monkeypatch.setenv("SHELFPROOF_CONSOLE_REGISTRY_ADDRESS", seeded.registry_address)
    monkeypatch.setenv("SHELFPROOF_CONSOLE_PLANNER_ADDRESS", seeded.planner_address)
    monkeypatch.setenv("SHELFPROOF_CONSOLE_PRICING_ADDRESS", seeded.pricing_address)
    monkeypatch.setenv("SHELFPROOF_STATE_DIR", str(seeded.state_dir))
    return seeded


async def _run(at: AppTest) -> AppTest:
    await asyncio.to_thread(at.run, timeout=60)  # the servers live on this test's event loop
    assert not at.exception, [e.message for e in at.exception]
    return at


async def logged_in(stack, login: str, page: str | None = None) -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=60)
    at.session_state["person_login"] = login
    at.session_state["signing_key"] = unlock_key_file(key_file(stack.state_dir, login), stack.seed.passphrases[login], PEOPLE[login].agent_id)
    await _run(at)
    if page:
        at.switch_page(f"pages/{page}.py")
        await _run(at)
    return at


def _text(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "success", "info", "warning", "error", "caption", "title", "subheader") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


async def test_login_unlocks_the_key_and_the_menu_follows_the_role(console_env):
    at = await _run(AppTest.from_file(ENTRY, default_timeout=60))
    at.text_input(key="login_name").input("maria")
    at.text_input(key="login_passphrase").input("wrong")
    at.button[0].click()
    await _run(at)
    assert "does not open this key file" in _text(at) and "person_login" not in at.session_state
    at.text_input(key="login_name").input("maria")  # the form cleared itself after the failed attempt
    at.text_input(key="login_passphrase").input(console_env.seed.passphrases["maria"])
    at.button[0].click()
    await _run(at)
    assert at.session_state["person_login"] == "maria"
    at.switch_page("pages/today.py")  # AppTest stays on the page it ran; a browser lands on the default page
    await _run(at)
    # the passphrase does not outlive the login form; only the unlocked key stays in the session
    assert "login_passphrase" not in at.session_state and "signing_key" in at.session_state
    assert at.session_state["person_login"] == "maria" and at.title[0].value == "Today"
    assert "Drafts waiting for you" in [m.label for m in at.metric]
    waiting = next(m for m in at.metric if m.label == "Drafts waiting for you")
    assert int(waiting.value) == 3
    brand = await logged_in(console_env, "bea", "products")
    assert brand.title[0].value == "Products and labels" and len(brand.dataframe[0].value) == 4
    wes = await logged_in(console_env, "wes")
    with pytest.raises(ValueError, match="Could not find a navigation page") as hidden:  # not in a warehouse worker's menu
        wes.switch_page("pages/drafts.py")
    assert "stock.py" in str(hidden.value) and "products.py" not in str(hidden.value)


async def test_the_ledger_refuses_what_the_menu_hides(console_env):
    """The console is not the guard: a brand admin's own signed approval of the retailer's draft, sent
    straight to the planner, is refused by the ledger and shown as a sentence."""
    from shelfproof.console.clients import Addresses, Clients
    from shelfproof.console.errors import problem_of

    api = Clients(Addresses(console_env.ledger_address, console_env.registry_address, console_env.planner_address))
    bea = PEOPLE["bea"]
    key = unlock_key_file(key_file(console_env.state_dir, "bea"), console_env.seed.passphrases["bea"], bea.agent_id)
    try:
        outcome, = await asyncio.to_thread(api.decide, bea.agent_id, key, [console_env.seed.draft_ids[2]], approve=True)
    finally:
        api.close()
    assert isinstance(outcome, Exception)
    sentence = problem_of(outcome).sentence()
    assert "Traceback" not in sentence and sentence.endswith(".") and len(sentence) < 400, sentence
    record = await console_env.ledger.Query(lpb.QueryRequest(store="drafts", key=console_env.seed.draft_ids[2].encode()), timeout=5)
    assert bea.agent_id not in st.DraftRecord.FromString(record.value).approvers


async def test_scan_reads_element_strings_links_and_plain_codes(console_env):
    gtin, serial = console_env.seed.sample_codes[0]
    at = await logged_in(console_env, "maria", "scan")
    for typed in (f"]d201{gtin}21{serial}\x1d", f"https://id.gs1.org/01/{gtin}/21/{serial}", f"{gtin} {serial}"):
        at.text_input(key="scan_input").input(typed.replace("\\x1d", "\x1d"))
        await _run(at)
        assert "GENUINE" in at.success[0].value and serial in at.success[0].value, typed
        assert len(at.dataframe[0].value) >= 5  # commissioned, shipped, received, shipped, received
    recalled_gtin, recalled_serial = console_env.seed.sample_codes[-1]
    at.text_input(key="scan_input").input(f"(01){recalled_gtin}(21){recalled_serial}")
    await _run(at)
    assert "RECALLED" in at.warning[0].value
    at.text_input(key="scan_input").input(f"01{gtin}21NOSUCHSERIAL")
    await _run(at)
    assert "UNKNOWN CODE" in at.error[0].value
    at.text_input(key="scan_input").input("0100614141000419")  # wrong check digit
    await _run(at)
    assert "not a code this console reads" in at.error[0].value and "Traceback" not in _text(at)
    # a sale recorded from the Scan page goes through the registry onto the ledger
    at.text_input(key="scan_input").input(f"{gtin} {serial}")
    await _run(at)
    at.selectbox(key="scan_place").set_value(STORE_A_GLN)
    at.button(key="act_sell").click()
    await _run(at)
    assert "Recorded 'sell'" in at.success[-1].value
    record = await console_env.ledger.Query(lpb.QueryRequest(store="items", key=f"{gtin}/{serial}".encode()), timeout=5)
    assert st.ItemRecord.FromString(record.value).disposition == "retail_sold"


async def test_stock_drills_down_to_lots_and_serials(console_env):
    at = await logged_in(console_env, "maria", "stock")
    at.selectbox(key="stock_location").set_value(STORE_A_GLN)
    await _run(at)
    positions = at.dataframe[0].value
    assert len(positions) == 4 and (positions["on hand"] > 0).all()
    assert len(at.get("vega_lite_chart")) == 2
    serials = at.dataframe[1].value
    assert len(serials) == positions.iloc[0]["on hand"] and serials["lot"].str.startswith("L").all()


async def test_drafts_are_approved_with_the_persons_own_signature(console_env):
    at = await logged_in(console_env, "sam", "drafts")
    draft_ids = console_env.seed.draft_ids
    assert any("sha256:" in m.value for m in at.markdown)
    at.checkbox(key=f"pick_{draft_ids[0]}").check()
    at.checkbox(key=f"pick_{draft_ids[1]}").check()
    await _run(at)
    at.button(key="approve").click()
    await _run(at)
    assert sum("signed by you" in s.value for s in at.success) == 2, _text(at)
    for draft_id in draft_ids[:2]:
        reply = await console_env.ledger.Query(lpb.QueryRequest(store="drafts", key=draft_id.encode()), timeout=5)
        assert PEOPLE["sam"].agent_id in st.DraftRecord.FromString(reply.value).approvers
    at = await logged_in(console_env, "sam", "drafts")  # what sam approved no longer waits for sam
    assert all(f"pick_{d}" not in [c.key for c in at.checkbox] for d in draft_ids[:2])


async def test_products_page_commissions_with_progress_and_offers_the_label_pdf(console_env):
    at = await logged_in(console_env, "bea", "products")
    at.text_input(key="commission_lot").input("CONSOLE1")
    at.number_input(key="commission_count").set_value(25)
    at.button[1].click()  # the commission form's submit button (register's is first)
    await _run(at)
    assert any("25 items of lot CONSOLE1" in s.value for s in at.success), _text(at)
    assert at.session_state["last_batch"] and at.get("download_button")
    at.text_input(key="recall_gtin").input("00614141999999")
    at.text_input(key="recall_lot").input("X")
    at.text_input(key="recall_reason").input("test")
    at.button[-1].click()
    await _run(at)
    assert at.error and "Could not recall the lot" in at.error[0].value and "Traceback" not in at.error[0].value


def _table(at: AppTest, *columns: str):
    """The first table with these columns (AppTest does not keep a dataframe's key)."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


async def _issued_orders(stack) -> int:
    reply = await stack.stub.ListPurchaseOrders(ppb.ListPurchaseOrdersRequest(buyer_gln=DEMO_RETAILER_GLN, page_size=200), timeout=10)
    return sum(o.state == ppb.PURCHASE_ORDER_STATE_ISSUED for o in reply.purchase_orders)


async def test_prices_page_reads_the_pricing_service_and_says_what_a_guardrail_refused(console_env):
    from shelfproof.demo.seed import DEMO_SCHEDULED_CHANGE_ID, demo_gtin

    at = await logged_in(console_env, "maria", "prices")
    book = _table(at, "since")
    assert len(book) == 8 and set(book["gtin"]) == {demo_gtin(n) for n in range(4)}  # 4 products x 2 stores, from ListPrices
    scheduled = _table(at, "change", "event")
    assert list(scheduled["change"]) == [DEMO_SCHEDULED_CHANGE_ID] and scheduled["new"].iloc[0] == "EUR 6.59"
    promotions = _table(at, "terms")
    assert list(promotions["promotion"]) == [DEMO_PROMOTION_ID] and promotions["status"].iloc[0] == "active"
    assert promotions["terms"].iloc[0] == "15 % off"
    # GetPrice's breakdown of a promoted product at store A: base, the promotion's share, the line
    at.selectbox(key="price_gtin").set_value(demo_gtin(0))
    at.selectbox(key="price_location").set_value(STORE_A_GLN)
    await _run(at)
    steps = _table(at, "step")
    assert any(DEMO_PROMOTION_ID in step for step in steps["step"]), steps
    assert _metric(at, "Base") == "EUR 5.99" and _metric(at, "Customer pays") == "EUR 5.09"  # 15 % off, rounded half up
    history = [d.value for d in at.dataframe if "event" in d.value.columns][-1]  # after the scheduled changes
    assert "price set" in set(history["event"]) and set(history["location"]) == {"Store Amsterdam Centraal"}

    # A price under the margin floor: the ledger refuses it; the page names the rule and its limit, and nothing changes.
    async def price_now() -> int:
        reply = await console_env.ledger.Query(lpb.QueryRequest(store="prices", key=f"{demo_gtin(0)}/{STORE_A_GLN}".encode()), timeout=5)
        return st.PriceRecord.FromString(reply.value).price.amount_minor

    at.number_input(key="propose_amount").set_value(260)
    at.text_input(key="propose_reason").input("clearance")
    _button(at, "Propose the change").click()
    await _run(at)
    assert at.error, _text(at)
    sentence = at.error[0].value
    assert sentence.startswith("Could not change the price: A guardrail refused this: the margin floor"), sentence
    assert "cost 2.50 plus 10 %" in sentence and "Traceback" not in sentence and "bps" not in sentence
    assert await price_now() == 599
    # Within every guardrail: committed through the pricing service, on the ledger.
    at.number_input(key="propose_amount").set_value(629)
    _button(at, "Propose the change").click()
    await _run(at)
    assert any("the price is now EUR 6.29" in s.value for s in at.success), _text(at)
    assert await price_now() == 629


async def test_drafts_page_shows_purchase_orders_with_their_lines(console_env):
    at = await logged_in(console_env, "maria", "drafts")
    order_id, = console_env.seed.order_ids
    orders = _table(at, "order", "supplier")
    assert order_id in set(orders["order"])
    assert int(_metric(at, "Waiting for acknowledgement")) == await _issued_orders(console_env) >= 1
    at.selectbox(key="order_id").set_value(order_id)
    await _run(at)
    order = (await console_env.stub.GetPurchaseOrder(ppb.GetPurchaseOrderRequest(order_id=order_id), timeout=10)).purchase_order
    lines = _table(at, "ordered")
    assert list(lines["gtin"]) == [line.gtin for line in order.lines]
    assert list(lines["ordered"]) == [line.ordered_quantity for line in order.lines] and (lines["received"] == 0).all()
    assert any("not acknowledged yet" in m.value and order.draft_id in m.value for m in at.markdown), _text(at)
    # the supplier's side: the brand's admin sees the order the brand is asked to deliver
    brand = await logged_in(console_env, "bea", "drafts")
    assert order_id in set(_table(brand, "order", "supplier")["order"])


async def test_authenticity_page_shows_the_copied_code_its_alert_and_where_it_was_scanned(console_env):
    gtin, serial = console_env.seed.copied_code
    at = await logged_in(console_env, "maria", "authenticity")
    assert int(_metric(at, "Compromised codes")) == 1 and int(_metric(at, "Counterfeit alerts")) >= 1
    compromised = _table(at, "why")
    assert list(compromised["serial"]) == [serial] and "km away" in compromised["why"].iloc[0]
    alerts = _table(at, "alert")
    assert ((alerts["alert"] == "clone suspected") & (alerts["serial"] == serial)).any()
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2
    spec = charts[0].proto.spec
    # offline: plain axes, no map projection, no tiles or data fetched from a URL
    assert '"url"' not in spec and "geoshape" not in spec and "projection" not in spec
    assert int(_metric(at, "Areas")) == 2 and int(_metric(at, "Scans")) == 3


async def test_the_brand_clears_a_false_alarm_with_a_reason_and_an_empty_reason_is_a_sentence(console_env):
    gtin, serial = console_env.seed.copied_code
    store = await logged_in(console_env, "maria", "authenticity")
    assert not [b for b in store.button if b.label == "Clear the alarm"]  # only the brand judges its codes
    at = await logged_in(console_env, "bea", "authenticity")
    _button(at, "Clear the alarm").click()  # no reason: the registry refuses it, the page says why
    await _run(at)
    assert at.error and at.error[0].value.startswith("Could not clear the alarm: Clearing is invalid (reason: required"), _text(at)

    async def record() -> st.ScanRecord:
        reply = await console_env.ledger.Query(lpb.QueryRequest(store="scans", key=f"{gtin}/{serial}".encode()), timeout=5)
        return st.ScanRecord.FromString(reply.value)

    assert (await record()).HasField("compromise")
    at.text_input(key="clear_reason").input("the same shopper, a flight we did not expect")
    _button(at, "Clear the alarm").click()
    await _run(at)
    assert any(f"{serial} is no longer held compromised" in s.value for s in at.success), _text(at)
    cleared = await record()
    assert not cleared.HasField("compromise") and cleared.cleared.reason.startswith("the same shopper")
    at = await logged_in(console_env, "bea", "authenticity")
    assert int(_metric(at, "Compromised codes")) == 0 and "Cleared by the brand as false alarms" in _text(at)


async def test_today_counts_orders_waiting_late_deliveries_and_alerts(console_env):
    at = await logged_in(console_env, "maria", "today")
    assert int(_metric(at, "Orders unacknowledged")) == await _issued_orders(console_env) >= 1
    assert int(_metric(at, "Late deliveries")) == 0
    assert int(_metric(at, "Counterfeit alerts")) >= 1


async def test_the_supplier_answers_an_order_with_her_own_key_and_the_buyer_cannot(console_env):
    from shelfproof.console.clients import Addresses, Clients
    from shelfproof.console.errors import problem_of

    order_id, = console_env.seed.order_ids

    async def order() -> st.PurchaseOrderRecord:
        reply = await console_env.ledger.Query(lpb.QueryRequest(store="orders", key=order_id.encode()), timeout=5)
        return st.PurchaseOrderRecord.FromString(reply.value)

    # The buyer's store manager signs an acceptance of the order herself: the ledger refuses it (the menu is not the guard).
    api = Clients(Addresses(console_env.ledger_address, console_env.registry_address, console_env.planner_address, console_env.pricing_address))
    maria = PEOPLE["maria"]
    key = unlock_key_file(key_file(console_env.state_dir, "maria"), console_env.seed.passphrases["maria"], maria.agent_id)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            await asyncio.to_thread(api.acknowledge, maria.agent_id, key, order_id, accept=True)
    finally:
        api.close()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    sentence = problem_of(refused.value).sentence()
    assert "Traceback" not in sentence and sentence.endswith("ask someone who may."), sentence
    assert (await order()).status == st.PURCHASE_ORDER_STATUS_ISSUED and not (await order()).acknowledged_by
    # maria has no answer buttons; the brand's admin (the supplier's person) accepts it on the page
    assert not [b for b in (await logged_in(console_env, "maria", "drafts")).button if b.label == "Accept the order"]
    at = await logged_in(console_env, "bea", "drafts")
    at.selectbox(key="order_id").set_value(order_id)
    await _run(at)
    _button(at, "Accept the order").click()
    await _run(at)
    assert any(f"{order_id}: signed by you; the order is now accepted" in s.value for s in at.success), _text(at)
    record = await order()
    assert record.status == st.PURCHASE_ORDER_STATUS_ACCEPTED and record.acknowledged_by == PEOPLE["bea"].agent_id


async def test_a_service_that_is_down_is_a_sentence_on_every_page(console_env, monkeypatch):
    from shelfproof.runtime.processes import free_port

    monkeypatch.setenv("SHELFPROOF_CONSOLE_PRICING_ADDRESS", f"127.0.0.1:{free_port()}")
    at = await logged_in(console_env, "maria", "prices")
    assert any(e.value.startswith("Could not read the price book: A service is not reachable") for e in at.error), _text(at)
    assert "Traceback" not in _text(at)
    monkeypatch.setenv("SHELFPROOF_CONSOLE_PLANNER_ADDRESS", f"127.0.0.1:{free_port()}")
    drafts = await logged_in(console_env, "maria", "drafts")
    assert any(e.value.startswith("Could not read the purchase orders: A service is not reachable") for e in drafts.error), _text(drafts)


async def test_ledger_page_proves_a_record(console_env):
    ledger = await logged_in(console_env, "ada", "ledger")
    assert len(ledger.dataframe[0].value) >= 5
    ledger.button(key="verify_proof").click()
    await _run(ledger)
    assert "Proven: drafts/" in ledger.success[0].value, _text(ledger)
