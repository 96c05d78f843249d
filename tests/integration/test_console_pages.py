"""The console against the real services (embedded ledger, registry, planner with the scripted model of
tests/integration/test_planner_service.py, PostgreSQL), seeded with a small demo: the seed itself, the
key files, and every page rendered by Streamlit's AppTest from the entry point."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from pathlib import Path

import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from shelfproof.console.people import PEOPLE, WrongPassphrase, key_file, unlock_key_file
from shelfproof.demo.seed import STORE_A_GLN, DemoSize, seed_demo
from shelfproof.ledger.genesis import development_genesis
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.planner.drafter import Drafter
from shelfproof.planner.v1 import planner_pb2 as ppb
from shelfproof.product.v1 import events_pb2 as epb
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
    """Ledger, registry and planner on loopback over the development genesis (every organisation of the
    demo, with its people), seeded with the small demo."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.genesis = development_genesis(CHAIN)

    async def __aenter__(self):
        await super().__aenter__()
        self.planner_address = f"127.0.0.1:{self.planner_server.port}"
        self.registry_address = f"127.0.0.1:{self.server.port}"
        self.state_dir = self.tmp_path / "state"
        self.seed = await seed_demo(self.ledger_address, self.registry_address, self.planner_address, self.genesis, self.state_dir, SMALL)
        return self


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
    from shelfproof.ledger.v1 import state_pb2 as st
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
    from shelfproof.ledger.v1 import state_pb2 as st
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
        from shelfproof.ledger.v1 import state_pb2 as st
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


async def test_prices_authenticity_and_ledger_pages(console_env):
    prices = await logged_in(console_env, "maria", "prices")
    assert len(prices.dataframe[0].value) == 8  # 4 products x 2 stores from the ledger
    assert "not available yet" in _text(prices)
    auth = await logged_in(console_env, "maria", "authenticity")
    assert auth.metric[0].label == "Scans" and "Alert queue" in _text(auth)
    ledger = await logged_in(console_env, "ada" if "ada" in console_env.seed.passphrases else "maria", "ledger")
    assert len(ledger.dataframe[0].value) >= 5
    ledger.button(key="verify_proof").click()
    await _run(ledger)
    assert "Proven: drafts/" in ledger.success[0].value, _text(ledger)
