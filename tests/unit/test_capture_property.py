"""Property: any EPCIS 2.0 document GS1's schema accepts is planned for capture or refused with
INVALID_ARGUMENT naming a JSON Pointer, never another exception (which the service would answer as
INTERNAL). Documents are drawn by hypothesis over the schema's own vocabularies and shapes, with
hostile strings, numbers, times and extensions, and kept only when the GS1 schema validates them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shelfproof.gs1 import epcis as E
from shelfproof.gs1.event_hash import event_hash_id
from shelfproof.registry.events import MAX_EVENTS, PlannedEvent, plan_capture
from shelfproof.registry.projector import _event_json
from shelfproof.runtime.errors import InvalidArgument
from tests.unit.epcis_corpus import BTT, DISPOSITIONS, MEASUREMENTS, SDT, Corpus

CONTEXTS = [
    ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
    ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld", {"example": "http://ns.example.com/epcis/"}],
    ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld", {"example": "urn:x:", "a": {"@id": "urn:y:"}}],
]
text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(["", " ", "\x00", "0123", "1e400", "NaN", "8E93"])
numbers = st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(st.none() | st.booleans() | numbers | text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                           max_leaves=12)
corpus_seeds = st.integers(0, 10**6)


@st.composite
def uris(draw: Any) -> str:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return Corpus(draw(corpus_seeds)).instance()
    if choice == 1:
        return Corpus(draw(corpus_seeds)).epc_class()
    if choice == 2:
        return "https://id.gs1.org/01/09506000134352/21/" + draw(st.text("AZaz09/.-!()*+,:;='?&", min_size=1, max_size=30)) + draw(
            st.sampled_from(["", "%2F", "%41", "%zz"]))
    if choice == 3:
        return draw(st.sampled_from(["urn:epc:id:sgtin:", "https://x.example/01/", "urn:epc:idpat:grai:", "ex:"])) + draw(
            st.text("0123456789.*%AB/", max_size=2000))
    if choice == 4:
        return "urn:x:" + draw(st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="<>\"{}|\\^`%"), max_size=60))
    return draw(st.sampled_from(["example:thing", "https://ns.example.com/a?b=c#d", "urn:uuid:1"]))


@st.composite
def times(draw: Any) -> str:
    date = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    base = f"{date.year:04d}-{date:%m-%dT%H:%M:%S}"
    fraction = draw(st.sampled_from(["", ".", ".9995", ".123456789", ".1", ".99999999"]))
    offset = draw(st.sampled_from(["Z", "z", "+00:00", "-14:00", "+23:59", "+05:45", "-00:00"]))
    return base + (fraction if fraction != "." else ".0") + offset


def maybe(draw: Any, key: str, strategy: Any, event: dict) -> None:
    if draw(st.booleans()):
        event[key] = draw(strategy)


locations = st.fixed_dictionaries({"id": uris()}, optional={"example:x": json_values})
quantities = st.lists(st.fixed_dictionaries({"epcClass": uris()}, optional={"quantity": numbers, "uom": st.sampled_from(["KGM", "EA"])}),
                      max_size=3)
sensor_reports = st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(MEASUREMENTS) | uris()},
    optional={"value": numbers, "uom": st.sampled_from(["CEL", "KGM"]), "time": times(), "stringValue": text,
              "booleanValue": st.booleans(), "hexBinaryValue": st.text("0123456789ABCDEF", max_size=8),
              "exception": st.sampled_from(["ALARM_CONDITION", "ERROR_CONDITION"]), "component": st.sampled_from(["x", "y"]),
              "deviceID": uris(), "example:cal": json_values}), min_size=1, max_size=3)
sensor_elements = st.lists(st.fixed_dictionaries(
    {"sensorReport": sensor_reports},
    optional={"sensorMetadata": st.fixed_dictionaries({}, optional={"time": times(), "startTime": times(), "deviceID": uris(),
                                                                     "example:fw": json_values})}), min_size=1, max_size=2)


@st.composite
def events(draw: Any) -> dict:
    kind = draw(st.sampled_from(["ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent",
                                 "AssociationEvent", "example:CustomEvent", "https://ns.example.com/Custom"]))
    e: dict[str, Any] = {"type": kind, "eventTime": draw(times()),
                         "eventTimeZoneOffset": draw(st.sampled_from(["+00:00", "-14:00", "+14:00", "+05:30"]))}
    maybe(draw, "eventID", uris(), e)
    maybe(draw, "certificationInfo", uris() | st.lists(uris(), max_size=2), e)
    maybe(draw, "errorDeclaration", st.fixed_dictionaries(
        {"declarationTime": times()}, optional={"reason": st.sampled_from(["did_not_occur", "incorrect_data"]),
                                                "correctiveEventIDs": st.lists(uris(), max_size=2)}), e)
    epc_lists = st.lists(uris(), max_size=4)
    if kind in ("ObjectEvent", "TransactionEvent"):
        e["epcList"] = draw(epc_lists)
        maybe(draw, "quantityList", quantities, e)
    if kind in ("AggregationEvent", "AssociationEvent", "TransactionEvent"):
        maybe(draw, "parentID", uris(), e)
    if kind in ("AggregationEvent", "AssociationEvent"):
        maybe(draw, "childEPCs", epc_lists, e)
        maybe(draw, "childQuantityList", quantities, e)
    if kind == "TransformationEvent":
        for key in ("inputEPCList", "outputEPCList"):
            maybe(draw, key, epc_lists, e)
        for key in ("inputQuantityList", "outputQuantityList"):
            maybe(draw, key, quantities, e)
        maybe(draw, "transformationID", uris(), e)
    if kind != "TransformationEvent" and not kind.startswith(("example", "https")):
        e["action"] = draw(st.sampled_from(["ADD", "OBSERVE", "DELETE"]))
    maybe(draw, "bizStep", st.sampled_from(["shipping", "receiving", "commissioning"]) | uris(), e)
    maybe(draw, "disposition", st.sampled_from(DISPOSITIONS) | uris(), e)
    if kind in ("ObjectEvent", "TransformationEvent"):
        maybe(draw, "persistentDisposition", st.fixed_dictionaries({"set": st.lists(st.sampled_from(DISPOSITIONS), min_size=1, max_size=2)}), e)
        maybe(draw, "ilmd", st.dictionaries(st.sampled_from(["example:lot", "example:n", "urn:x:k"]), json_values, max_size=3), e)
    maybe(draw, "readPoint", locations, e)
    maybe(draw, "bizLocation", locations, e)
    biz_transactions = st.lists(st.fixed_dictionaries({"bizTransaction": uris()}, optional={"type": st.sampled_from(BTT)}),
                                min_size=1, max_size=2)
    if kind == "TransactionEvent":
        e["bizTransactionList"] = draw(biz_transactions)
    else:
        maybe(draw, "bizTransactionList", biz_transactions, e)
    maybe(draw, "sourceList", st.lists(st.fixed_dictionaries({"type": st.sampled_from(SDT), "source": uris()}), max_size=2), e)
    maybe(draw, "sensorElementList", sensor_elements, e)
    for _ in range(draw(st.integers(0, 2))):
        e[draw(st.sampled_from(["example:ext", "example:deep", "example:n"]))] = draw(json_values)
    return e


@st.composite
def documents(draw: Any) -> bytes:
    doc = {"@context": draw(st.sampled_from(CONTEXTS)), "type": "EPCISDocument", "schemaVersion": "2.0",
           "creationDate": draw(times()), "epcisBody": {"eventList": draw(st.lists(events(), min_size=1, max_size=4))}}
    raw = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    return raw


def _schema_valid(raw: bytes) -> bool:
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    return not any(True for _ in E._validator().iter_errors(doc))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(documents())
def test_schema_valid_documents_are_captured_or_refused_never_crash(raw: bytes) -> None:
    assume(_schema_valid(raw))
    try:
        plan = plan_capture(raw)
    except InvalidArgument as err:
        assert err.field_violations and all(v.field == "epcis_document" or v.field.startswith("/epcisBody")
                                            or v.field.startswith("/") or v.field == "" for v in err.field_violations)
        return
    assert all(isinstance(p, PlannedEvent) for p in plan)
    for p in plan:
        record = p.body.record_event
        # What the ledger will carry reads back, and a declaration links to the Event Hash ID it declares.
        event = _event_json(record.epcis_event_json)
        assert event
        if p.declaration:
            assert event_hash_id(event) == p.event_hash
        assert p.event_hash.startswith("ni:///sha-256;") and len(record.epcs) <= 1000


def test_documents_the_schema_refuses_are_invalid_argument_too() -> None:
    deep = Corpus(2).document([dict(Corpus(2).event("ObjectEvent"), **{"example:deep": json.loads("[" * 30 + "]" * 30)})])
    for raw in (b"{not json", b"[]", b"{}", b'{"a": NaN}', b"[" * 100_000, json.dumps(deep).encode()):
        with pytest.raises(InvalidArgument) as caught:
            plan_capture(raw)
        assert caught.value.field_violations
    too_many = Corpus(1).document([Corpus(1).event("ObjectEvent")] * (MAX_EVENTS + 1))
    with pytest.raises(InvalidArgument) as caught:
        plan_capture(json.dumps(too_many).encode())
    assert caught.value.field_violations[0].field == "/epcisBody/eventList"


def test_refusals_name_the_event_and_field() -> None:
    corpus = Corpus(3)
    ok = corpus.event("ObjectEvent")
    custom = {"type": "example:Inspection", "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00"}
    many = dict(ok, epcList=[f"https://id.gs1.org/01/09506000134352/21/S{i}" for i in range(1001)])
    with pytest.raises(InvalidArgument) as caught:
        plan_capture(json.dumps(corpus.document([ok, custom, many])).encode())
    fields = [v.field for v in caught.value.field_violations]
    assert fields == ["/epcisBody/eventList/1/type", "/epcisBody/eventList/2"], fields
    bad = dict(ok, eventTime="yesterday")
    with pytest.raises(InvalidArgument) as caught:
        plan_capture(json.dumps(corpus.document([ok, bad])).encode())
    assert [v.field for v in caught.value.field_violations] == ["/epcisBody/eventList/1/eventTime"]
