"""The console in a real headless Chromium (selenium): a store manager logs in with the passphrase of
her key file, approves a pending AI draft, the approval is checked on the ledger to be signed by her
key, a code is typed into Scan, and every page is saved as a screenshot under test-artifacts/.

To stay fast this starts its own services (embedded ledger, registry, planner with the scripted model
of tests/integration/test_planner_service.py, PostgreSQL) seeded with a small demo, and the console as
`shelfproof up` starts it (``python -m shelfproof.console``), rather than the whole `shelfproof up`."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from nacl.signing import VerifyKey
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from shelfproof.console.people import PAGES_BY_ROLE, PEOPLE, key_file, unlock_key_file
from shelfproof.ledger.core.tx import sign_doc_bytes
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.drafter import Drafter
from shelfproof.runtime.processes import free_port
from tests.e2e.browser import CHROMEDRIVER, CHROMIUM
from tests.integration.test_console_pages import SeededStack, module_dsn  # noqa: F401 - the fixture
from tests.integration.test_planner_service import ScriptedModel

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
WIDTH, HEIGHT = 1400, 1700
# What each page must show before its screenshot (table cells are drawn on a canvas: labels, not cells).
SHOWS = {
    "today": ("Orders unacknowledged", "Counterfeit alerts", "Recent ledger activity"),
    "drafts": ("Purchase orders", "Waiting for acknowledgement", "not acknowledged yet"),
    "stock": ("Stock at the end of each day",),
    "prices": ("Scheduled changes", "Promotions", "Customer pays", "Propose a price change"),
    "authenticity": ("Scans by place", "Compromised codes", "Alert queue"),
    "ledger": ("Latest blocks",),
    "products": ("Register",),
}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory, module_dsn):  # noqa: F811
    async with SeededStack(tmp_path_factory.mktemp("console-e2e"), module_dsn, Drafter(ScriptedModel())) as seeded:
        yield seeded


@pytest.fixture(scope="module")
async def console(stack):
    port = free_port()
    env = {**os.environ, "SHELFPROOF_CONSOLE_PORT": str(port), "SHELFPROOF_STATE_DIR": str(stack.state_dir),
           "SHELFPROOF_CONSOLE_LEDGER_ADDRESS": stack.ledger_address, "SHELFPROOF_CONSOLE_REGISTRY_ADDRESS": stack.registry_address,
           "SHELFPROOF_CONSOLE_PLANNER_ADDRESS": stack.planner_address, "SHELFPROOF_CONSOLE_PRICING_ADDRESS": stack.pricing_address}
    child = subprocess.Popen([sys.executable, "-m", "shelfproof.console"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            for _ in range(150):
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/_stcore/health")).text == "ok":
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise TimeoutError("the console did not become healthy")
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _browser() -> tuple[webdriver.Chrome, str]:
    profile = tempfile.mkdtemp(prefix="shelfproof-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options), profile


class Console:
    """The page as a person uses it: typing, clicking, waiting for what Streamlit renders."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver
        self.wait = WebDriverWait(driver, 30)

    def idle(self) -> None:
        time.sleep(0.2)  # let a rerun start before waiting for it to end
        self.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'))

    def text_appears(self, text: str) -> None:
        self.wait.until(lambda d: text in d.find_element(By.TAG_NAME, "body").text)

    def type_into(self, label: str, text: str, enter: bool = True) -> None:
        box = self.wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f'input[aria-label="{label}"]')))
        box.clear()
        box.send_keys(text)
        if enter:
            box.send_keys(Keys.ENTER)

    def click_button(self, text: str) -> None:
        self.wait.until(ec.element_to_be_clickable((By.XPATH, f'//button[.//*[contains(text(), "{text}")]]'))).click()

    def open_page(self, path: str, title: str) -> None:
        self.wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f'[data-testid="stSidebarNavLink"][href$="/{path}"]'))).click()
        self.wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), title))
        self.idle()

    def screenshot(self, name: str) -> Path:
        """The whole page, not only the window: Streamlit scrolls inside its main block, so the window is
        grown to that block's height for the shot (orders, alerts and charts sit below the fold)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.idle()
        time.sleep(0.5)  # tables and charts paint after the script run ends
        height = self.driver.execute_script(
            "const main = document.querySelector('[data-testid=\"stMain\"]') || document.body; return main.scrollHeight;")
        self.driver.set_window_size(WIDTH, max(HEIGHT, min(int(height) + 120, 8_000)))
        time.sleep(0.5)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(WIDTH, HEIGHT)
        return path

    def no_error_shown(self, page: str) -> None:
        body = self.driver.find_element(By.TAG_NAME, "body").text
        assert "Could not" not in body and "Traceback" not in body, f"{page}: {body[:2000]}"

    def log_in(self, login: str, passphrase: str) -> None:
        self.type_into("Login", login, enter=False)
        self.type_into("Passphrase", passphrase, enter=False)
        self.click_button("Log in")
        self.wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Today"))
        self.idle()


TITLES = {"today": "Today", "scan": "Scan", "stock": "Stock", "drafts": "Drafts and orders", "products": "Products and labels",
          "prices": "Prices and promotions", "authenticity": "Authenticity", "ledger": "Ledger"}


async def test_store_manager_approves_a_draft_signed_by_her_key_and_scans_a_code(stack, console):
    maria = PEOPLE["maria"]
    draft_id = stack.seed.draft_ids[0]
    gtin, serial = stack.seed.sample_codes[0]
    shots: list[Path] = []

    def in_browser() -> None:
        driver, profile = _browser()
        try:
            ui = Console(driver)
            driver.get(console)
            ui.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'input[aria-label="Login"]')))
            shots.append(ui.screenshot("login"))
            ui.log_in("maria", stack.seed.passphrases["maria"])
            for text in SHOWS["today"]:
                ui.text_appears(text)
            ui.no_error_shown("today")
            shots.append(ui.screenshot("today"))

            ui.open_page("drafts", TITLES["drafts"])
            checkbox = ui.wait.until(ec.element_to_be_clickable((By.XPATH, f'//label[.//*[contains(text(), "{draft_id}")]]')))
            checkbox.click()
            ui.idle()
            ui.click_button("Approve selected (1)")
            ui.text_appears(f"{draft_id}: signed by you")
            for text in SHOWS["drafts"]:
                ui.text_appears(text)
            ui.no_error_shown("drafts")
            shots.append(ui.screenshot("drafts"))

            ui.open_page("scan", TITLES["scan"])
            ui.type_into("Scan or type a code", f"01{gtin}21{serial}")
            ui.text_appears("GENUINE")
            shots.append(ui.screenshot("scan"))
            for page in PAGES_BY_ROLE[maria.role]:
                if page not in {"today", "drafts", "scan"}:
                    ui.open_page(page, TITLES[page])
                    if page == "ledger":  # a draft's proof, checked in the console against the validators
                        ui.click_button("Verify proof")
                        ui.text_appears("Proven: drafts/")
                    for text in SHOWS.get(page, ()):
                        ui.text_appears(text)
                    ui.no_error_shown(page)
                    shots.append(ui.screenshot(page))

            ui.click_button("Log out")
            ui.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'input[aria-label="Login"]')))
            ui.log_in("bea", stack.seed.passphrases["bea"])  # the brand admin's menu has Products and labels
            ui.open_page("products", TITLES["products"])
            shots.append(ui.screenshot("products"))
            ui.open_page("drafts", TITLES["drafts"])  # the brand supplies the stores: the orders it is asked to fill
            ui.text_appears("Answer this order")
            ui.no_error_shown("supplier orders")
            shots.append(ui.screenshot("supplier-orders"))
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)

    await asyncio.to_thread(in_browser)  # the services run on this test's event loop

    # On the ledger: the draft names maria as an approver, and the approving transaction is signed
    # by the key of her key file (the public key her agent has on the ledger).
    record = st.DraftRecord.FromString((await stack.ledger.Query(lpb.QueryRequest(store="drafts", key=draft_id.encode()), timeout=5)).value)
    assert maria.agent_id in record.approvers
    agent = st.AgentRecord.FromString((await stack.ledger.Query(lpb.QueryRequest(store="agents", key=maria.agent_id.encode()), timeout=5)).value)
    approvals = []
    stream = stack.ledger.StreamCommittedTransactions(lpb.StreamCommittedTransactionsRequest(from_height=record.submitted_height), timeout=10)
    try:
        async for reply in stream:
            signed = txpb.SignedTransaction.FromString(reply.result.transaction)
            body = txpb.TransactionBody.FromString(signed.body)
            if body.WhichOneof("action") == "approve_draft" and body.approve_draft.draft_id == draft_id:
                approvals.append(signed)
                break
    finally:
        stream.cancel()
    assert [a.signer for a in approvals] == [maria.agent_id]
    signed = approvals[0]
    public_key = next(k.public_key for k in agent.keys if k.key_id == signed.key_id)
    key_of_her_file = unlock_key_file(key_file(stack.state_dir, "maria"), stack.seed.passphrases["maria"], maria.agent_id)
    assert public_key == bytes(key_of_her_file.verify_key)
    VerifyKey(public_key).verify(sign_doc_bytes(stack.genesis.chain_id, signed.signer, signed.key_id, signed.nonce, signed.body), signed.signature)
    assert {p.name for p in shots} == {f"{n}.png" for n in ("login", *PAGES_BY_ROLE[maria.role], "products", "supplier-orders")}
    assert all(p.stat().st_size > 10_000 for p in shots)

