"""The demo seed against the real services (embedded ledger, registry, planner with the scripted model
of tests/integration/test_planner_service.py): what it writes, and that a second run writes nothing."""

from __future__ import annotations

import asyncio
import stat
import uuid

import psycopg
import pytest

from shelfproof.console.people import PEOPLE, WrongPassphrase, key_file, unlock_key_file
from shelfproof.demo.seed import STORE_A_GLN, DemoSize, seed_demo
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.planner.drafter import Drafter
from shelfproof.planner.v1 import planner_pb2 as ppb
from shelfproof.product.v1 import events_pb2 as epb
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
    """Ledger, registry and planner on loopback, seeded with the small demo."""

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
