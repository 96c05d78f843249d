"""EPCIS 2.0 capture, queries, export/import and inventory positions over the real stack."""

from __future__ import annotations

import json

import grpc
import psycopg
import pytest

from shelfproof.gs1 import epcis
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.product.v1 import events_pb2 as pb
from shelfproof.runtime import errors
from tests.integration.harness import Registry

GTIN = "00614141123452"
PLANT, STORE = "0614141000029", "0614141000036"


def _item(serial: str) -> str:
    return f"https://id.gs1.org/01/{GTIN}/21/{serial}"


def _event(time: str, step: str, disposition: str, serials: list[str], *, action="OBSERVE", location=None, read_point=None) -> dict:
    event = {
        "type": "ObjectEvent",
        "eventTime": time,
        "eventTimeZoneOffset": "+01:00",
        "epcList": [_item(s) for s in serials],
        "action": action,
        "bizStep": step,
        "disposition": disposition,
    }
    if location:
        event["bizLocation"] = {"id": f"https://id.gs1.org/414/{location}"}
    if read_point:
        event["readPoint"] = {"id": f"https://id.gs1.org/414/{read_point}"}
    return event


def _document(events: list[dict]) -> bytes:
    return json.dumps(
        {
            "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],
            "type": "EPCISDocument",
            "schemaVersion": "2.0",
            "creationDate": "2026-11-25T10:00:00.000+01:00",
            "epcisBody": {"eventList": events},
        }
    ).encode()


JOURNEY = [
    _event("2026-11-20T08:00:00.000+01:00", "commissioning", "active", ["A1", "A2", "A3"], action="ADD", location=PLANT, read_point=PLANT),
    _event("2026-11-21T09:30:00.000+01:00", "shipping", "in_transit", ["A1", "A2"], read_point=PLANT),
    _event("2026-11-22T14:15:00.250+01:00", "receiving", "in_progress", ["A1", "A2"], location=STORE, read_point=STORE),
    _event("2026-11-23T17:45:10.000+01:00", "retail_selling", "retail_sold", ["A1"], location=STORE, read_point=STORE),
]


async def test_capture_query_inventory_export_and_reimport(tmp_path, database_dsn, postgres_cluster):
    async with Registry(tmp_path / "a", database_dsn) as registry:
        stub = registry.events
        captured = (await stub.CaptureEvents(pb.CaptureEventsRequest(epcis_document=_document(JOURNEY)), timeout=60)).events
        hashes = [c.event_hash for c in captured]
        assert hashes == [epcis.event_hash_id(e) for e in JOURNEY]
        assert all(h.startswith("ni:///sha-256;") and h.endswith("?ver=CBV2.0") for h in hashes)
        # Capturing the same events again changes nothing and answers the same.
        again = (await stub.CaptureEvents(pb.CaptureEventsRequest(epcis_document=_document(JOURNEY)), timeout=60)).events
        assert [(c.event_hash, c.ledger_ref.height) for c in again] == [(c.event_hash, c.ledger_ref.height) for c in captured]

        # The item's journey, in time order; the store's events; a time window; paging.
        journey = (await stub.ListEvents(pb.ListEventsRequest(filter=pb.EventFilter(gtin=GTIN, serial="A1")), timeout=5)).events
        assert [e.biz_step for e in journey] == ["commissioning", "shipping", "receiving", "retail_selling"]
        at_store = (await stub.ListEvents(pb.ListEventsRequest(filter=pb.EventFilter(location_gln=STORE)), timeout=5)).events
        assert [e.event_hash for e in at_store] == hashes[2:]
        only_a3 = (await stub.ListEvents(pb.ListEventsRequest(filter=pb.EventFilter(gtin=GTIN, serial="A3")), timeout=5)).events
        assert [e.event_hash for e in only_a3] == hashes[:1]
        page1 = await stub.ListEvents(pb.ListEventsRequest(page_size=3), timeout=5)
        page2 = await stub.ListEvents(pb.ListEventsRequest(page_size=3, page_token=page1.next_page_token), timeout=5)
        assert [e.event_hash for e in [*page1.events, *page2.events]] == hashes and not page2.next_page_token

        positions = (await stub.ListInventoryPositions(pb.ListInventoryPositionsRequest(gtin=GTIN), timeout=5)).positions
        assert {(p.location_gln, p.quantity) for p in positions} == {(PLANT, 1), (STORE, 1)}

        # Every event is on the ledger under its hash, provably.
        ledger = ledger_pb2_grpc.LedgerServiceStub(registry.ledger_channel)
        proof = await ledger.Query(lpb.QueryRequest(store="events", key=hashes[3].encode(), prove=True), timeout=10)
        assert proof.found and len(proof.proof_ops) == 2

        exported = (await stub.ExportEvents(pb.ExportEventsRequest(filter=pb.EventFilter(gtin=GTIN)), timeout=10)).epcis_document
        epcis.validate_document(json.loads(exported))

    # Import the export into a second, independent registry and ledger: the same events, the same hashes.
    second_db = "second_" + database_dsn.rsplit("/", 1)[1]
    with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{second_db}" TEMPLATE shelfproof_template')
    try:
        async with Registry(tmp_path / "b", postgres_cluster.dsn(second_db)) as other:
            imported = (await other.events.CaptureEvents(pb.CaptureEventsRequest(epcis_document=exported), timeout=60)).events
            assert [c.event_hash for c in imported] == hashes
    finally:
        with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{second_db}" WITH (FORCE)')


@pytest.mark.parametrize(
    "document",
    [
        b"{not json",
        _document([{**JOURNEY[0], "bizStep": "teleporting"}]),
        _document([{k: v for k, v in JOURNEY[0].items() if k != "eventTime"}]),
        _document([{**JOURNEY[0], "eventTime": "yesterday"}]),
        b"[]",
    ],
)
async def test_invalid_documents_are_refused_and_write_nothing(tmp_path, database_dsn, document):
    async with Registry(tmp_path, database_dsn) as registry:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.events.CaptureEvents(pb.CaptureEventsRequest(epcis_document=document), timeout=20)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert errors.error_from_rpc(caught.value).field_violations
        assert not registry.engine.mempool
        with psycopg.connect(database_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
