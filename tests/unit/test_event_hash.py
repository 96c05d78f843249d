"""Our CBV 2.0 Event Hash ID against the reference generator (epcis-event-hash-generator 1.9.3, the oracle),
on a generated corpus covering every event type, field and GS1 key type; plus the places where the
reference departs from the standard, pinned to what we answer instead."""

from __future__ import annotations

import copy
import json
import time

import pytest

from shelfproof.gs1 import epcis as E
from shelfproof.gs1.canonical import MAX_KEY_URI, canonical_key, item_key
from shelfproof.gs1.event_hash import event_hash_id, prehash_string, utc_milliseconds
from tests.unit.epcis_corpus import CONTEXT, Corpus

EVENT_TYPES = ["ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"]


def reference_prehashes(document: dict) -> list[str]:
    from epcis_event_hash_generator import hash_generator, json_to_py

    json_to_py._namespaces.clear()  # the reference keeps prefixes in a module global across documents
    events = json_to_py.event_list_from_epcis_document_json(json.loads(json.dumps(document)))
    return hash_generator.derive_prehashes_from_events(events)


def reference_hashes(document: dict) -> list[str]:
    from epcis_event_hash_generator import hash_generator

    return hash_generator.calculate_hashes_from_pre_hashes(reference_prehashes(document))


@pytest.mark.parametrize("seed", range(6))
def test_generated_corpus_agrees_with_the_reference(seed: int) -> None:
    corpus = Corpus(seed)
    events = [corpus.event(EVENT_TYPES[i % 5]) for i in range(250)]
    document = corpus.document(events)
    E.validate_document(document)
    expected = reference_hashes(document)
    assert len(expected) == len(events)
    mine = [event_hash_id(e, document["@context"]) for e in events]
    disagreements = [(i, prehash_string(events[i], CONTEXT), reference_prehashes(corpus.document([events[i]])))
                     for i, (a, b) in enumerate(zip(mine, expected)) if a != b]
    assert not disagreements, disagreements[:2]
    # Every key type the corpus knows was drawn (instance, class and pattern URNs, Digital Links).
    assert len(corpus.key_types) >= 40, sorted(corpus.key_types)


def test_every_key_type_canonicalises_like_the_reference() -> None:
    from epcis_event_hash_generator.dl_normaliser import normaliser

    corpus = Corpus(99)
    uris = [corpus.instance() for _ in range(3000)] + [corpus.epc_class() for _ in range(1000)]
    kinds = sorted(corpus.key_types)
    assert len(kinds) == 40, kinds
    assert all(canonical_key(u) == normaliser(u) for u in uris), [
        (u, canonical_key(u), normaliser(u)) for u in uris if canonical_key(u) != normaliser(u)][:5]


@pytest.mark.parametrize(
    ("uri", "canonical"),
    [
        ("urn:epc:id:sgtin:9506000.013435.4711", "https://id.gs1.org/01/09506000134352/21/4711"),
        ("urn:epc:id:sscc:9521141.0000000001", "https://id.gs1.org/00/095211410000000014"),
        ("urn:epc:id:sgln:9506000.13435.0", "https://id.gs1.org/414/9506000134352"),
        ("urn:epc:id:sgln:9506000.13435.B1", "https://id.gs1.org/414/9506000134352/254/B1"),
        ("urn:epc:id:grai:9521141.00001.ABC", "https://id.gs1.org/8003/09521141000014ABC"),
        ("urn:epc:id:giai:9521141.A1-2", "https://id.gs1.org/8004/9521141A1-2"),
        ("urn:epc:id:gsrn:9521141.1234567890", "https://id.gs1.org/8018/952114112345678906"),
        ("urn:epc:id:gsrnp:9521141.1234567890", "https://id.gs1.org/8017/952114112345678906"),
        ("urn:epc:id:gdti:9521141.00001.D7", "https://id.gs1.org/253/9521141000014D7"),
        ("urn:epc:id:cpi:9521141.AB-1.77", "https://id.gs1.org/8010/9521141AB-1/8011/77"),
        ("urn:epc:id:sgcn:9521141.00001.12", "https://id.gs1.org/255/952114100001412"),
        ("urn:epc:id:ginc:9521141.C42", "https://id.gs1.org/401/9521141C42"),
        ("urn:epc:id:gsin:9521141.123456789", "https://id.gs1.org/402/95211411234567892"),
        ("urn:epc:id:itip:9521141.012345.01.02.S1", "https://id.gs1.org/8006/095211411234540102/21/S1"),
        ("urn:epc:id:upui:9521141.012345.TPX9", "https://id.gs1.org/01/09521141123454/235/TPX9"),
        ("urn:epc:id:pgln:9521141.00001", "https://id.gs1.org/417/9521141000014"),
        ("urn:epc:class:lgtin:9521141.012345.LOT7", "https://id.gs1.org/01/09521141123454/10/LOT7"),
        ("urn:epc:idpat:sgtin:9521141.012345.*", "https://id.gs1.org/01/09521141123454"),
        ("urn:epc:id:sgtin:9506000.013435.a!b", "https://id.gs1.org/01/09506000134352/21/a%21b"),
        # Digital Links on any host, alpha short names, CPV and lot dropped below the serial, query dropped.
        ("https://brand.example.com/shop/01/9506000134352/10/L1/21/S1?17=271231", "https://id.gs1.org/01/09506000134352/21/S1"),
        ("https://id.brand.example/gtin/09506000134352/lot/L1", "https://id.gs1.org/01/09506000134352/10/L1"),
        ("https://a.example/01/09506000134352/22/C1/21/S1", "https://id.gs1.org/01/09506000134352/21/S1"),
        ("https://brand.example.com/01/09506000134352/235/TPX1", "https://id.gs1.org/01/09506000134352/235/TPX1"),
        ("https://brand.example.com/01/09506000134352/235/TPX2", "https://id.gs1.org/01/09506000134352/235/TPX2"),
        ("http://id.gs1.org/8003/09521141000014ABC", "https://id.gs1.org/8003/09521141000014ABC"),
        ("https://x.example.org/8004/9521141A12", "https://id.gs1.org/8004/9521141A12"),
        ("https://x.example.org/8006/095211411234540102/21/S1", "https://id.gs1.org/8006/095211411234540102/21/S1"),
        ("https://x.example.org/414/9521141000014/254/7", "https://id.gs1.org/414/9521141000014/254/7"),
    ],
)
def test_canonical_forms(uri: str, canonical: str) -> None:
    assert canonical_key(uri) == canonical


def test_tpx_distinguishes_identifiers() -> None:
    """AI 235 was dropped once, so two UPUIs hashed alike and the second event was discarded."""
    a = {"type": "ObjectEvent", "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
         "epcList": ["https://brand.example.com/01/09506000134352/235/TPX1"], "action": "OBSERVE"}
    b = dict(a, epcList=["https://brand.example.com/01/09506000134352/235/TPX2"])
    assert event_hash_id(a) != event_hash_id(b)


def test_extension_and_ilmd_keys_expand_against_the_documents_context() -> None:
    event = {"type": "ObjectEvent", "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
             "epcList": ["urn:epc:id:sgtin:9506000.013435.1"], "action": "ADD",
             "ilmd": {"example:lot": "L1", "example:dims": {"example:h": 1.50}}, "example:note": "example:x"}
    pre = prehash_string(event, CONTEXT)
    assert "ilmd{http://ns.example.com/epcis/}dims{http://ns.example.com/epcis/}h=1.5" in pre
    assert "{http://ns.example.com/epcis/}note=http://ns.example.com/epcis/x" in pre
    assert pre == reference_prehashes(Corpus(0).document([event]))[0]
    # The same prefix bound to another namespace is another event; an event-level @context counts too.
    other = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld", {"example": "https://other.example/"}]
    assert event_hash_id(event, other) != event_hash_id(event, CONTEXT)
    assert event_hash_id(dict(event, **{"@context": other[1:]})) == event_hash_id(event, other)


def test_ignored_fields_and_equivalent_forms_hash_alike() -> None:
    base = {"type": "ObjectEvent", "eventTime": "2026-03-01T10:00:00.1234+02:00", "eventTimeZoneOffset": "+02:00",
            "epcList": ["https://id.gs1.org/01/09506000134352/21/A1", "https://id.gs1.org/01/09506000134352/21/B2"],
            "action": "OBSERVE", "bizStep": "shipping", "disposition": "in_transit"}
    same = dict(base, eventTime="2026-03-01T08:00:00.123Z", eventID="urn:uuid:1", recordTime="2027-01-01T00:00:00Z",
                errorDeclaration={"declarationTime": "2027-01-01T00:00:00Z"}, **{"rdfs:comment": "checked"},
                epcList=["urn:epc:id:sgtin:9506000.013435.B2", "https://brand.example/01/9506000134352/21/A1?17=270101"],
                bizStep="https://ref.gs1.org/cbv/BizStep-shipping", disposition="urn:epcglobal:cbv:disp:in_transit")
    assert event_hash_id(same) == event_hash_id(base)
    assert event_hash_id(dict(base, disposition="in_progress")) != event_hash_id(base)


def test_sensor_reports_sort_and_custom_event_types_hash() -> None:
    report_a = {"type": "Temperature", "value": 4.5, "uom": "CEL"}
    report_b = {"type": "RelativeHumidity", "value": 40, "uom": "A93"}
    event = {"type": "ObjectEvent", "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
             "epcList": ["urn:epc:id:sgtin:9506000.013435.1"], "action": "OBSERVE",
             "sensorElementList": [{"sensorMetadata": {"time": "2026-01-01T00:00:00Z"}, "sensorReport": [report_a, report_b]}]}
    swapped = copy.deepcopy(event)
    swapped["sensorElementList"][0]["sensorReport"].reverse()
    assert event_hash_id(event) == event_hash_id(swapped)
    assert "sensorReporttype=https://gs1.org/voc/RelativeHumidityvalue=40uom=A93sensorReporttype=" in prehash_string(event)
    custom = {"type": "example:InspectionEvent", "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
              "example:inspector": "QA-7"}
    assert prehash_string(custom, CONTEXT) == reference_prehashes(Corpus(0).document([custom]))[0]


def test_where_the_reference_departs_from_the_standard() -> None:
    """Pinned: each of these makes the reference crash or mis-read the identifier; we answer the standard."""
    # A GRAI whose company prefix has 12 digits (empty asset type): the reference wants three dots.
    assert canonical_key("urn:epc:id:grai:952114112345..S1") == "https://id.gs1.org/8003/09521141123454S1"
    # A CPV followed by more than 20 characters is still dropped.
    assert canonical_key("https://a.example/01/09506000134352/22/CPV1/21/SERIAL12345678901") == \
        "https://id.gs1.org/01/09506000134352/21/SERIAL12345678901"
    # Milliseconds that round up to the next second carry instead of raising.
    assert utc_milliseconds("2026-12-31T23:59:59.9996Z") == "2027-01-01T00:00:00.000Z"
    # An untyped business transaction (schema-valid) hashes; the reference raises IndexError on it.
    untyped = {"type": "TransactionEvent", "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
               "epcList": ["urn:epc:id:sgtin:9506000.013435.1"], "action": "ADD",
               "bizTransactionList": [{"bizTransaction": "https://po.example.com/1"}]}
    assert "bizTransactionListbizTransaction=https://po.example.com/1" in prehash_string(untyped)
    # A value that reads as infinity stays text (the reference raises OverflowError).
    assert "hexBinaryValue=8E9389" in prehash_string({
        "type": "ObjectEvent", "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
        "epcList": [], "action": "OBSERVE", "readPoint": {"id": "urn:epc:id:sgln:9506000.13435.0"},
        "sensorElementList": [{"sensorReport": [{"type": "Temperature", "hexBinaryValue": "8E9389"}]}]})


@pytest.mark.parametrize(
    "hostile",
    [
        "https://a/" + "01/1/" * 13_000 + "\n?",  # 26 s of backtracking in the old Digital Link regex
        "https://a.example/" + "01/1/" * 13_000 + "\n?",
        "https://" + "a" * 65_536,
        "urn:epc:id:sgtin:" + "1" * 65_536 + ".1.1",
        "https://id.gs1.org/01/09506000134352/21/" + "A" * 65_536,
        "https://x.example/" + "/".join(["01", "0950600013435"] * 5000),
        "urn:epc:id:giai:9521141." + "%41" * 20_000,
    ],
)
def test_hostile_identifiers_are_refused_in_linear_time(hostile: str) -> None:
    started = time.thread_time()  # CPU time: a loaded machine does not count
    assert canonical_key(hostile) is None or len(hostile) <= MAX_KEY_URI
    assert item_key(hostile) is None and E.item_of(hostile) is None
    event = {"type": "ObjectEvent", "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
             "epcList": [hostile], "action": "OBSERVE"}
    assert event_hash_id(event).startswith("ni:///sha-256;")
    assert time.thread_time() - started < 0.5


def test_item_of_keeps_its_contract() -> None:
    assert E.item_of("urn:epc:id:sgtin:9506000.013435.4711") == ("09506000134352", "4711")
    assert E.item_of("https://verify.shelfproof.example/01/09506000134352/21/a%2Fb?sig=x") == ("09506000134352", "a/b")
    assert E.item_of("https://id.gs1.org/01/9506000134352/10/L1/21/S1") == ("09506000134352", "S1")
    assert E.item_of("https://id.gs1.org/01/09506000134352/10/L1") is None
    assert E.item_of("https://id.gs1.org/00/095211410000000014") is None
    assert E.item_of("https://id.gs1.org/01/09506000134352/21/" + "A" * 21) is None
    assert E.item_of("https://id.gs1.org/01/09506000134352/21/A%20B") is None  # space is not CSET 82


def test_every_gs1_regex_is_ascii_anchored_and_linear() -> None:
    """Issue 11 finding 4: in gs1/, patterns are re.ASCII, whole-string, with no nested quantifiers."""
    import pathlib
    import re

    from shelfproof.gs1.keys import CSET82_VALUE

    assert CSET82_VALUE.flags & re.ASCII
    assert not CSET82_VALUE.match("LOT1\n") and not CSET82_VALUE.match("LOT١") and CSET82_VALUE.match("LOT1")
    source = "".join(p.read_text() for p in pathlib.Path(E.__file__).parent.glob("*.py"))
    patterns = re.findall(r"re\.compile\((r?\"[^\n]*?\")", source)
    assert patterns and all("re.ASCII" in line for line in source.splitlines() if "re.compile(" in line)
    assert not any(re.search(r"[*+}]\)[*+{]", p) for p in patterns)  # no (x+)+ shapes
    started = time.thread_time()  # CPU time: a loaded machine does not count
    assert not CSET82_VALUE.match("!" * 100_000)
    assert time.thread_time() - started < 0.05
