"""The EPCIS 2.0 REST binding over the real stack: embedded ledger, adapter, registry, PostgreSQL, and the
binding's aiohttp server on loopback, spoken to over HTTP. Every standard query parameter it evaluates
is asked once with a value some events match and once with one they do not; paging is followed through
Link headers while events are being captured; answers are checked against GS1's EPCIS 2.0 schema."""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import quote

import aiohttp
import psycopg
import pytest

from shelfproof.gs1 import epcis
from shelfproof.gs1.canonical import check_digit
from shelfproof.registry.events import EventService
from shelfproof.registry.labels import LabelService
from shelfproof.registry.rest import EpcisRestApi, EpcisRestServer
from tests.integration.harness import RESOLVER, Registry

GTIN = "00614141123452"  # the demo brand's (company prefix 0614141)
PLANT, STORE = "0614141000029", "0614141000036"
OTHER_BRAND_GTIN = "0400000" + "000012"
OTHER_BRAND_GTIN += check_digit(OTHER_BRAND_GTIN)
OTHER_PLACE = "4000000000006"
CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld", {"example": "https://ns.example.com/epcis/"}]


def dl(serial: str) -> str:
    return f"https://id.gs1.org/01/{GTIN}/21/{serial}"


def urn(serial: str) -> str:
    return f"urn:epc:id:sgtin:0614141.012345.{serial}"


def place(gln: str) -> dict:
    return {"id": f"https://id.gs1.org/414/{gln}"}


SSCC = "106141410000000014"[:17]
SSCC = f"https://id.gs1.org/00/{SSCC}{check_digit(SSCC)}"
LOT_CLASS = "urn:epc:class:lgtin:0614141.012345.LOT7"
TRANSFORMATION_ID = "urn:uuid:0b0b6b2c-7d2e-4c38-9f1f-6a1d5e6f0001"
FIXED_ID = "urn:uuid:1c4e0d1c-3f2a-4d8b-b1b0-000000000001"

# The corpus: names -> events; each query below must answer exactly the names it lists.
CORPUS = {
    "commission": {"type": "ObjectEvent", "action": "ADD", "eventTime": "2026-11-20T08:00:00.000+01:00",
                   "eventTimeZoneOffset": "+01:00", "epcList": [dl("A1"), dl("A2"), dl("A3")],
                   "bizStep": "commissioning", "disposition": "active", "readPoint": place(PLANT),
                   "bizLocation": place(PLANT), "ilmd": {"example:lot": "LOT7"}},
    # The same item as an EPC URN, and the read point as an SGLN URN: both match their Digital Links.
    "ship": {"type": "ObjectEvent", "action": "OBSERVE", "eventTime": "2026-11-21T09:30:00.000+01:00",
             "eventTimeZoneOffset": "+01:00", "epcList": [urn("A1")], "bizStep": "shipping",
             "disposition": "in_transit", "readPoint": {"id": "urn:epc:id:sgln:0614141.00002.0"}},
    "pack": {"type": "AggregationEvent", "action": "ADD", "eventTime": "2026-11-21T10:00:00.000+01:00",
             "eventTimeZoneOffset": "+01:00", "parentID": SSCC, "childEPCs": [dl("A2")],
             "childQuantityList": [{"epcClass": LOT_CLASS, "quantity": 4}], "bizStep": "packing",
             "bizLocation": {"id": f"https://id.gs1.org/414/{PLANT}/254/dock1"}},
    "sell": {"type": "TransactionEvent", "action": "ADD", "eventTime": "2026-11-22T14:15:00.250+01:00",
             "eventTimeZoneOffset": "+01:00", "epcList": [dl("A3")],
             "quantityList": [{"epcClass": f"https://id.gs1.org/01/{GTIN}/10/LOT9", "quantity": 2}],
             "bizTransactionList": [{"type": "po", "bizTransaction": "https://po.example.com/PO1"}],
             "bizStep": "retail_selling", "disposition": "retail_sold", "bizLocation": place(STORE),
             "readPoint": place(STORE)},
    "transform": {"type": "TransformationEvent", "eventTime": "2026-11-23T07:00:00.000+01:00",
                  "eventTimeZoneOffset": "+01:00", "inputEPCList": [dl("B1")], "outputEPCList": [dl("C1")],
                  "inputQuantityList": [{"epcClass": LOT_CLASS, "quantity": 1.5, "uom": "KGM"}],
                  "outputQuantityList": [{"epcClass": "urn:epc:class:lgtin:0614141.012345.OUT1", "quantity": 1}],
                  "transformationID": TRANSFORMATION_ID, "bizLocation": place(STORE)},
    "associate": {"type": "AssociationEvent", "action": "ADD", "eventTime": "2026-11-23T08:00:00.000+01:00",
                  "eventTimeZoneOffset": "+01:00", "parentID": "https://id.gs1.org/8004/0614141SENSOR1",
                  "childEPCs": [dl("D1")], "bizStep": "assembling"},
    "recall": {"type": "ObjectEvent", "action": "OBSERVE", "eventID": FIXED_ID,
               "eventTime": "2026-11-24T12:00:00.000Z", "eventTimeZoneOffset": "+00:00", "epcList": [dl("A2")],
               "bizStep": "https://ref.gs1.org/cbv/BizStep-holding", "disposition": "recalled",
               "persistentDisposition": {"set": ["recalled"], "unset": ["active"]}, "bizLocation": place(STORE)},
}
NAMES = list(CORPUS)
DECLARATION = {"declarationTime": "2026-11-25T09:00:00.000Z", "reason": "incorrect_data", "correctiveEventIDs": [FIXED_ID]}


def document(events: list[dict]) -> dict:
    return {"@context": CONTEXT, "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": "2026-11-25T10:00:00.000Z", "epcisBody": {"eventList": events}}


class RestRegistry(Registry):
    """The test registry with the binding's HTTP server beside its gRPC server, sharing its EventService."""

    def extra_services(self, ledger_client):
        self.event_service = EventService(self.pool, ledger_client, self.projector)
        return [self.event_service, LabelService(self.pool, ledger_client, self.projector, RESOLVER)]

    async def __aenter__(self):
        await super().__aenter__()
        self.rest = EpcisRestServer(EpcisRestApi(self.pool, self.event_service), "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{await self.rest.start()}"
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        return self

    async def __aexit__(self, *exc):
        await self.http.close()
        await self.rest.stop()
        await super().__aexit__(*exc)

    async def get(self, path: str, params: dict | None = None) -> tuple[int, dict, dict]:
        async with self.http.get(self.base + path, params=params) as reply:
            return reply.status, dict(reply.headers), json.loads(await reply.read())

    async def capture(self, doc: dict, wait: bool = True) -> dict:
        async with self.http.post(self.base + "/capture", json=doc) as reply:
            assert reply.status == 202, await reply.text()
            location = reply.headers["Location"]
        assert location.startswith("/capture/")
        while True:
            status, _, job = await self.get(location)
            assert status == 200
            if not job["running"] or not wait:
                return job
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def rest(postgres_cluster, migrated_template, tmp_path_factory):
    """One registry holding the corpus (captured through POST /capture) for the query tests."""
    name = f"rest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    try:
        async with RestRegistry(tmp_path_factory.mktemp("rest"), postgres_cluster.dsn(name)) as registry:
            job = await registry.capture(document(list(CORPUS.values())))
            assert job["success"] and job["errors"] == [], job
            registry.hashes = dict(zip(NAMES, job["eventIDs"], strict=True))
            # A later copy of "ship" declares it erroneous, pointing at "recall" as its correction.
            declared = await registry.capture(document([{**CORPUS["ship"], "errorDeclaration": DECLARATION}]))
            assert declared["success"], declared
            yield registry
    finally:
        with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def names_of(registry, body: dict) -> list[str]:
    by_hash = {h: n for n, h in registry.hashes.items()}
    events = body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    return [by_hash.get(e["eventID"]) or by_hash[epcis.event_hash_id(e, body["@context"])] for e in events]


PATTERN = "urn:epc:idpat:sgtin:0614141.012345.*"
# (query parameters, the events that answer, in record order). Each parameter appears with a value
# that matches and with one that does not.
QUERIES = [
    ({}, NAMES),
    ({"eventType": "AggregationEvent|TransformationEvent"}, ["pack", "transform"]),
    ({"eventType": "AssociationEvent"}, ["associate"]),
    ({"eventType": "example:CustomEvent"}, []),
    ({"GE_eventTime": "2026-11-23T07:00:00.000+01:00"}, ["transform", "associate", "recall"]),
    ({"GE_eventTime": "2027-01-01T00:00:00Z"}, []),
    ({"LT_eventTime": "2026-11-21T10:00:00.000+01:00"}, ["commission", "ship"]),
    ({"LT_eventTime": "2026-11-20T07:00:00Z"}, []),
    ({"GE_eventTime": "2026-11-21T09:00:00.000+01:00", "LT_eventTime": "2026-11-22T00:00:00+01:00"}, ["ship", "pack"]),
    ({"GE_recordTime": "2000-01-01T00:00:00Z"}, NAMES),
    ({"GE_recordTime": "2999-01-01T00:00:00Z"}, []),
    ({"LT_recordTime": "2999-01-01T00:00:00Z"}, NAMES),
    ({"LT_recordTime": "2000-01-01T00:00:00Z"}, []),
    ({"EQ_action": "ADD"}, ["commission", "pack", "sell", "associate"]),
    ({"EQ_action": "DELETE"}, []),
    ({"EQ_bizStep": "shipping|packing"}, ["ship", "pack"]),
    ({"EQ_bizStep": "holding"}, ["recall"]),  # stored as its web URI
    ({"EQ_bizStep": "receiving"}, []),
    ({"EQ_disposition": "recalled"}, ["recall"]),
    ({"EQ_disposition": "urn:epcglobal:cbv:disp:active"}, ["commission"]),
    ({"EQ_disposition": "damaged"}, []),
    ({"EQ_persistentDisposition_set": "recalled"}, ["recall"]),
    ({"EQ_persistentDisposition_set": "active"}, []),
    ({"EQ_persistentDisposition_unset": "active"}, ["recall"]),
    ({"EQ_persistentDisposition_unset": "recalled"}, []),
    ({"EQ_readPoint": f"https://id.gs1.org/414/{PLANT}"}, ["commission", "ship"]),
    ({"EQ_readPoint": "urn:epc:id:sgln:0614141.00003.0"}, ["sell"]),  # STORE as an SGLN URN
    ({"EQ_readPoint": f"https://id.gs1.org/414/{OTHER_PLACE}"}, []),
    ({"WD_readPoint": f"https://id.gs1.org/414/{STORE}"}, ["sell"]),
    ({"EQ_bizLocation": f"https://id.gs1.org/414/{STORE}"}, ["sell", "transform", "recall"]),
    ({"EQ_bizLocation": "urn:epc:id:sgln:0614141.00002.dock1"}, ["pack"]),  # the /254/ extension kept
    ({"EQ_bizLocation": f"https://id.gs1.org/414/{OTHER_PLACE}"}, []),
    ({"WD_bizLocation": f"https://id.gs1.org/414/{PLANT}"}, ["commission"]),
    ({"EQ_transformationID": TRANSFORMATION_ID}, ["transform"]),
    ({"EQ_transformationID": "urn:uuid:00000000-0000-0000-0000-000000000000"}, []),
    ({"MATCH_epc": dl("A1")}, ["commission", "ship"]),
    ({"MATCH_epc": urn("A2")}, ["commission", "pack", "recall"]),  # childEPCs too
    ({"MATCH_epc": f"https://brand.example.com/01/{GTIN}/21/A3"}, ["commission", "sell"]),  # any host
    ({"MATCH_epc": PATTERN}, ["commission", "ship", "pack", "sell", "associate", "recall"]),
    ({"MATCH_epc": dl("B1")}, []),  # an input, not an epcList/childEPCs entry
    ({"MATCH_epc": "urn:epc:idpat:sgtin:0614141.099999.*"}, []),
    ({"MATCH_parentID": SSCC}, ["pack"]),
    ({"MATCH_parentID": "https://id.gs1.org/8004/0614141SENSOR1"}, ["associate"]),
    ({"MATCH_parentID": dl("A1")}, []),
    ({"MATCH_inputEPC": urn("B1")}, ["transform"]),
    ({"MATCH_inputEPC": dl("C1")}, []),
    ({"MATCH_outputEPC": dl("C1")}, ["transform"]),
    ({"MATCH_outputEPC": dl("B1")}, []),
    ({"MATCH_anyEPC": f"{dl('B1')}|{SSCC}"}, ["pack", "transform"]),
    ({"MATCH_anyEPC": dl("Z9")}, []),
    ({"MATCH_epcClass": LOT_CLASS}, ["pack"]),
    ({"MATCH_epcClass": PATTERN}, ["pack", "sell"]),
    ({"MATCH_epcClass": "urn:epc:class:lgtin:0614141.012345.OUT1"}, []),
    ({"MATCH_inputEPCClass": f"https://id.gs1.org/01/{GTIN}/10/LOT7"}, ["transform"]),
    ({"MATCH_inputEPCClass": "urn:epc:class:lgtin:0614141.012345.OUT1"}, []),
    ({"MATCH_outputEPCClass": "urn:epc:class:lgtin:0614141.012345.OUT1"}, ["transform"]),
    ({"MATCH_outputEPCClass": LOT_CLASS}, []),
    ({"MATCH_anyEPCClass": LOT_CLASS}, ["pack", "transform"]),
    ({"MATCH_anyEPCClass": "urn:epc:class:lgtin:0614141.012345.NONE"}, []),
    ({"EQ_eventID": FIXED_ID}, ["recall"]),
    ({"EQ_eventID": "urn:uuid:00000000-0000-0000-0000-000000000000"}, []),
    ({"EXISTS_errorDeclaration": "true"}, ["ship"]),
    ({"EXISTS_errorDeclaration": "false"}, NAMES),
    ({"EQ_errorReason": "incorrect_data"}, ["ship"]),
    ({"EQ_errorReason": "did_not_occur"}, []),
    ({"EQ_correctiveEventID": FIXED_ID}, ["ship"]),
    ({"EQ_correctiveEventID": "urn:uuid:00000000-0000-0000-0000-000000000000"}, []),
    ({"EQ_bizStep": "shipping", "EQ_readPoint": f"https://id.gs1.org/414/{STORE}"}, []),  # AND across parameters
    ({"orderBy": "eventTime", "orderDirection": "DESC", "eventCountLimit": "2"}, ["recall", "associate"]),
    ({"orderBy": "eventTime", "orderDirection": "ASC", "EQ_bizLocation": f"https://id.gs1.org/414/{STORE}"},
     ["sell", "transform", "recall"]),
    ({"maxEventCount": "7"}, NAMES),
]


@pytest.mark.parametrize(("params", "expected"), QUERIES, ids=[json.dumps(p)[:90] for p, _ in QUERIES])
async def test_every_query_parameter(rest, params, expected):
    status, headers, body = await rest.get("/events", params)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json") and headers["GS1-EPCIS-Version"] == "2.0.0"
    assert body["type"] == "EPCISQueryDocument"
    epcis.validate_document(body)
    assert names_of(rest, body) == expected


async def test_answers_carry_record_time_event_id_declaration_and_extensions(rest):
    _, _, body = await rest.get("/events", {"EQ_eventID": rest.hashes["ship"]})
    (ship,) = body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert ship["eventID"] == rest.hashes["ship"] and ship["recordTime"].endswith("Z")
    assert ship["errorDeclaration"] == DECLARATION
    _, _, body = await rest.get("/events", {"EQ_bizStep": "commissioning"})
    (commission,) = body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert commission["ilmd"] == {"example:lot": "LOT7"} and {"example": CONTEXT[1]["example"]} in body["@context"]
    status, _, one = await rest.get("/events/" + quote(FIXED_ID, safe=""))
    assert status == 200 and names_of(rest, one) == ["recall"]
    epcis.validate_document(one)


@pytest.mark.parametrize(("path", "expected"), [
    (f"/epcs/{quote(urn('A2'), safe='')}/events", ["commission", "pack", "recall"]),
    (f"/epcs/{quote(dl('B1'), safe='')}/events", ["transform"]),
    (f"/epcs/{quote(dl('Z9'), safe='')}/events", []),
    (f"/bizLocations/{STORE}/events", ["sell", "transform", "recall"]),
    (f"/bizLocations/{quote('urn:epc:id:sgln:0614141.00002.0', safe='')}/events", ["commission"]),
    (f"/bizLocations/{OTHER_PLACE}/events", []),
    (f"/readPoints/{PLANT}/events", ["commission", "ship"]),
    ("/eventTypes/TransformationEvent/events", ["transform"]),
    ("/eventTypes/TransactionEvent/events", ["sell"]),
    ("/bizSteps/packing/events", ["pack"]),
    ("/dispositions/in_transit/events", ["ship"]),
])
async def test_top_level_resources(rest, path, expected):
    status, _, body = await rest.get(path)
    assert status == 200, body
    epcis.validate_document(body)
    assert names_of(rest, body) == expected
    # A resource and a query parameter combine (both must hold).
    status, _, body = await rest.get(path, {"LT_eventTime": "2000-01-01T00:00:00Z"})
    assert status == 200 and names_of(rest, body) == []


def _link(headers: dict) -> str | None:
    link = headers.get("Link")
    if link is None:
        return None
    target, rel = link.split(";", 1)
    assert rel.strip() == 'rel="next"' and target.startswith("<") and target.endswith(">")
    return target[1:-1]


def _batch(tag: str, n: int, day: int) -> list[dict]:
    return [{"type": "ObjectEvent", "action": "OBSERVE", "eventTime": f"2026-10-{day:02d}T{i // 60:02d}:{i % 60:02d}:00.000Z",
             "eventTimeZoneOffset": "+00:00", "epcList": [dl(f"{tag}{i}")], "bizStep": "storing",
             "readPoint": place(PLANT)} for i in range(n)]


async def _pages(registry, first: str, params: dict | None = None) -> tuple[list[str], int]:
    ids, pages, url, query = [], 0, first, params
    while url is not None:
        status, headers, body = await registry.get(url, query)
        assert status == 200, body
        epcis.validate_document(body)
        ids += [e["eventID"] for e in body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]]
        url, query, pages = _link(headers), None, pages + 1
        if pages == 2 and registry.capture_while_paging:
            registry.capture_while_paging = False
            job = await registry.capture(document(_batch("late", 7, 1)))  # earlier eventTimes, recorded later
            assert job["success"]
    return ids, pages


async def test_paging_has_no_gap_or_duplicate_while_events_arrive(tmp_path, database_dsn):
    async with RestRegistry(tmp_path, database_dsn) as registry:
        job = await registry.capture(document(_batch("p", 53, 10)))
        assert job["success"] and len(job["eventIDs"]) == 53
        registry.capture_while_paging = True
        ids, pages = await _pages(registry, "/events", {"perPage": "10", "EQ_bizStep": "storing"})
        late = (await registry.capture(document(_batch("late", 7, 1))))["eventIDs"]  # already captured: a no-op
        assert ids == job["eventIDs"] + late and len(set(ids)) == 60 and pages == 6
        # By eventTime, descending, across pages: the same events, newest first, each once.
        registry.capture_while_paging = False
        by_time, _ = await _pages(registry, "/events", {"perPage": "7", "orderBy": "eventTime", "orderDirection": "DESC"})
        assert sorted(by_time) == sorted(ids) and len(by_time) == 60
        times = await registry.get("/events", {"perPage": "60", "orderBy": "eventTime"})
        listed = times[2]["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        assert [e["eventID"] for e in listed] == by_time
        assert [e["eventTime"] for e in listed] == sorted((e["eventTime"] for e in listed), reverse=True)
        # eventCountLimit holds across pages; a page token is bound to its query.
        limited, _ = await _pages(registry, "/events", {"perPage": "4", "orderBy": "recordTime", "eventCountLimit": "9"})
        assert len(limited) == 9
        _, headers, _ = await registry.get("/events", {"perPage": "5"})
        token = _link(headers).split("nextPageToken=")[1]
        status, _, problem = await registry.get("/events", {"perPage": "5", "nextPageToken": token, "EQ_action": "ADD"})
        assert status == 400 and problem["type"] == "epcisException:QueryParameterException"


async def test_capture_job_through_to_queryable_events_and_its_failures(tmp_path, database_dsn):
    async with RestRegistry(tmp_path, database_dsn) as registry:
        events = _batch("job", 3, 5)
        job = await registry.capture(document(events))
        assert job["success"] and not job["running"] and job["captureErrorBehaviour"] == "rollback"
        assert job["errors"] == [] and job["finishedAt"] >= job["createdAt"]
        assert job["eventIDs"] == [epcis.event_hash_id(e) for e in events]
        _, _, body = await registry.get("/events", {"MATCH_epc": dl("job1")})
        assert [e["eventID"] for e in body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]] == job["eventIDs"][1:2]
        # The same document through gRPC CaptureEvents answers the same hashes: one capture path.
        from shelfproof.product.v1 import events_pb2 as pb
        reply = await registry.events.CaptureEvents(pb.CaptureEventsRequest(epcis_document=json.dumps(document(events)).encode()), timeout=30)
        assert [c.event_hash for c in reply.events] == job["eventIDs"]
        # Another brand's item at another organisation's place: the ledger refuses it, the job says so.
        foreign = {**events[0], "epcList": [f"https://id.gs1.org/01/{OTHER_BRAND_GTIN}/21/X1"], "readPoint": place(OTHER_PLACE)}
        failed = await registry.capture(document([foreign]))
        assert not failed["running"] and not failed["success"]
        (problem,) = failed["errors"]
        assert problem["status"] == 403 and problem["type"] == "epcisException:SecurityException", problem
        status, _, body = await registry.get("/events", {"MATCH_epc": f"https://id.gs1.org/01/{OTHER_BRAND_GTIN}/21/X1"})
        assert status == 200 and body["epcisBody"]["queryResults"]["resultsBody"]["eventList"] == []
        # Schema-invalid documents are refused at once, and record nothing.
        async with registry.http.post(registry.base + "/capture", json=document([{**events[0], "bizStep": "teleporting"}])) as reply:
            assert reply.status == 400
            problem = await reply.json(content_type=None)
            assert problem["type"] == "epcisException:ValidationException" and "/epcisBody/eventList/0" in problem["detail"]
        status, _, missing = await registry.get("/capture/" + "0" * 32)
        assert status == 404 and missing["type"] == "epcisException:NoSuchNameException"
        # A job whose process died mid-way is not reported running for ever.
        async with registry.pool.connection() as conn:
            await conn.execute("INSERT INTO capture_jobs VALUES (%s, now() - interval '1 day', NULL, true, true,"
                               " 'rollback', 1, '[]', '[]')", ("f" * 32,))
        status, _, stale = await registry.get("/capture/" + "f" * 32)
        assert status == 200 and not stale["running"] and not stale["success"] and stale["errors"][0]["status"] == 503


BAD_QUERIES = [
    ({"GE_eventTime": "yesterday"}, 400),
    ({"GE_eventTime": "2026-11-20T08:00:00"}, 400),  # no offset
    ({"LT_recordTime": "2026-13-40T08:00:00Z"}, 400),
    ({"EQ_colour": "red"}, 400),
    ({"EQ_quantity": "3"}, 400),  # standard, not evaluated here: refused, not ignored
    ({"perPage": "0"}, 400),
    ({"perPage": "1000000"}, 400),
    ({"perPage": "ten"}, 400),
    ({"perPage": "-1"}, 400),
    ({"EQ_action": "MOVE"}, 400),
    ({"EQ_bizStep": "teleporting"}, 400),
    ({"EQ_disposition": ""}, 400),
    ({"EQ_bizStep": "shipping|"}, 400),
    ({"MATCH_epc": "urn:epc:idpat:sgtin:0614141.*.*"}, 400),
    ({"MATCH_epc": "not a uri"}, 400),
    ({"EQ_readPoint": "0614141000029"}, 400),
    ({"nextPageToken": "garbage"}, 400),
    ({"nextPageToken": "W10"}, 400),
    ({"orderBy": "bizStep"}, 400),
    ({"orderDirection": "UP", "orderBy": "eventTime"}, 400),
    ({"orderDirection": "ASC"}, 400),
    ({"eventCountLimit": "3"}, 400),
    ({"eventCountLimit": "3", "maxEventCount": "3", "orderBy": "eventTime"}, 400),
    ({"maxEventCount": "2"}, 413),
    ({"EXISTS_errorDeclaration": "maybe"}, 400),
    ({"MATCH_anyEPC": "|".join(f"urn:x:{i}" for i in range(101))}, 400),
    ({"EQ_eventID": "x" * 2100}, 414),
]


@pytest.mark.parametrize(("params", "status"), BAD_QUERIES, ids=[json.dumps(p)[:60] for p, _ in BAD_QUERIES])
async def test_bad_queries_answer_the_binding_problem(rest, params, status):
    got, headers, problem = await rest.get("/events", params)
    assert got == status, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert problem["status"] == status and problem["type"].startswith("epcisException:") and problem["title"]
    if status == 400:
        assert problem["type"] == "epcisException:QueryParameterException" and problem["detail"]


async def test_repeated_parameter_and_bad_paths_are_4xx(rest):
    async with rest.http.get(rest.base + "/events?EQ_action=ADD&EQ_action=OBSERVE") as reply:
        assert reply.status == 400
    for path, status in [("/eventTypes/QuantityEvent/events", 404), ("/bizLocations/0614141000028/events", 400),
                         ("/nowhere", 404), ("/events/" + quote("urn:uuid:none", safe=""), 404),
                         ("/capture/../../etc", 404)]:
        got, _, problem = await rest.get(path)
        assert got == status and problem["type"].startswith("epcisException:"), (path, problem)
    async with rest.http.post(rest.base + "/capture", data=b"{not json", headers={"Content-Type": "application/json"}) as reply:
        assert reply.status == 400
    async with rest.http.post(rest.base + "/capture", data=b"<xml/>", headers={"Content-Type": "application/xml"}) as reply:
        assert reply.status == 415
    async with rest.http.post(rest.base + "/capture", json=document(_batch("h", 1, 3)),
                              headers={"GS1-Capture-Error-Behaviour": "sometimes"}) as reply:
        assert reply.status == 400


JUNK = ["", "|", "||", "x" * 1500, "\u0000", "' OR 1=1 --", "%", "_", "\\", "urn:epc:idpat:", "https://", "é\u202e",
        "2026-11-20T08:00:00.000+99:99", "9" * 30, "urn:epc:id:sgtin:0614141.012345.%00", "null", "[]", "{}"]


async def test_no_parameter_value_makes_a_server_error(rest):
    from shelfproof.registry import rest as module

    names = [*module._LIST_PARAMETERS, *module._TIME_PARAMETERS, *module._CONTROL_PARAMETERS, "EQ_INNER_x", "EQ_ILMD_y"]
    for name in names:
        for value in JUNK:
            status, _, body = await rest.get("/events", {name: value})
            assert status < 500, (name, value, body)
            if status != 200:
                assert body["type"].startswith("epcisException:"), (name, value, body)
    for path in ["/epcs/%00/events", "/epcs/" + quote("urn:epc:idpat:sgtin:0614141.012345.*", safe="") + "/events",
                 "/bizLocations/%25/events", "/readPoints/x/events", "/bizSteps/%2F%2F/events", "/events/%00"]:
        status, _, body = await rest.get(path)
        assert status < 500, (path, body)
