"""EPCIS builders against GS1's schema, and our Event Hash ID against the reference generator (test oracle)."""

from __future__ import annotations

import copy
import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from shelfproof.gs1 import epcis as E
from shelfproof.gs1.keys import check_digit

GLN_DC = "9521141123454"
GLN_STORE = "9506000134352"  # valid 13-digit key reused as a location
GTIN = "09506000134352"
T = datetime(2024, 3, 1, 10, 0, 0, 123000, tzinfo=timezone(timedelta(hours=2)))


def dl(serial: str, gtin: str = GTIN) -> str:
    return f"https://id.gs1.org/01/{gtin}/21/{serial}"


def sscc(ref: str) -> str:
    body = "0" + "9521141" + ref
    return f"https://id.gs1.org/00/{body}{check_digit(body)}"


def lifecycle_events() -> dict[str, dict[str, Any]]:
    epcs = [dl("A1b2C3"), dl("Z9")]
    return {
        "commissioning": E.object_event(event_time=T, epcs=epcs, action="ADD", biz_step="commissioning",
                                        disposition="active", read_point_gln=GLN_DC,
                                        ilmd={"cbvmda:lotNumber": "LOT42", "cbvmda:itemExpirationDate": "2026-12-31"}),
        "shipping": E.object_event(event_time=T, epcs=epcs, action="OBSERVE", biz_step="shipping",
                                   disposition="in_transit", read_point_gln=GLN_DC,
                                   sources=[("owning_party", f"https://id.gs1.org/417/{GLN_DC}")],
                                   destinations=[("location", f"https://id.gs1.org/414/{GLN_STORE}")]),
        "receiving": E.object_event(event_time=T, epcs=epcs, action="OBSERVE", biz_step="receiving",
                                    disposition="sellable_not_accessible", biz_location_gln=GLN_STORE),
        "retail_selling": E.object_event(event_time=T, epcs=epcs[:1], action="OBSERVE", biz_step="retail_selling",
                                         disposition="retail_sold", biz_location_gln=GLN_STORE),
        "recall": E.object_event(event_time=T, epcs=epcs, action="OBSERVE", biz_step="holding",
                                 disposition="recalled", persistent_set=["recalled"], biz_location_gln=GLN_DC),
        "stolen": E.object_event(event_time=T, epcs=epcs, action="OBSERVE", disposition="stolen",
                                 read_point_gln=GLN_STORE),
        "destroying": E.object_event(event_time=T, epcs=epcs, action="DELETE", biz_step="destroying",
                                     disposition="destroyed"),
        "packing": E.aggregation_event(event_time=T, parent_id=sscc("000000001"), child_epcs=epcs, action="ADD",
                                       biz_step="packing", disposition="container_closed", read_point_gln=GLN_DC),
        "po": E.transaction_event(event_time=T, epcs=epcs, action="ADD",
                                  biz_transactions=[("po", f"urn:epcglobal:cbv:bt:{GLN_DC}:PO-77")],
                                  biz_step="shipping"),
    }


@pytest.mark.parametrize("name", list(lifecycle_events()))
def test_builder_documents_validate_against_gs1_schema(name: str) -> None:
    event = lifecycle_events()[name]
    doc = E.epcis_document([event], creation_date=T)
    E.validate_document(doc)
    assert doc["@context"] == [E.EPCIS_CONTEXT_URL] and doc["schemaVersion"] == "2.0"


def test_recall_carries_persistent_disposition() -> None:
    assert lifecycle_events()["recall"]["persistentDisposition"] == {"set": ["recalled"]}


def _violation(exc: pytest.ExceptionInfo[E.InvalidEpcisEvent], field: str) -> str:
    hits = [why for path, why in exc.value.violations if path == field]
    assert hits, exc.value.violations
    return hits[0]


def test_invalid_inputs_have_field_level_violations() -> None:
    with pytest.raises(E.InvalidEpcisEvent) as exc:
        E.object_event(event_time=T, epcs=[dl("1")], action="OBSERVE", biz_step="teleporting")
    assert "teleporting" in _violation(exc, "bizStep")
    with pytest.raises(E.InvalidEpcisEvent) as exc:
        E.object_event(event_time=datetime(2024, 1, 1), epcs=[dl("1")], action="OBSERVE")
    assert "timezone" in _violation(exc, "eventTime")
    with pytest.raises(E.InvalidEpcisEvent) as exc:
        E.object_event(event_time=T, epcs=[dl("1")], action="OBSERVE", read_point_gln="9521141123455")
    assert "check digit" in _violation(exc, "readPoint.id")
    with pytest.raises(E.InvalidEpcisEvent) as exc:
        E.object_event(event_time=T, epcs=[], action="ADD", biz_step="commissioning")
    _violation(exc, "epcList")
    with pytest.raises(E.InvalidEpcisEvent) as exc:
        E.transaction_event(event_time=T, epcs=[dl("1")], action="ADD", biz_transactions=[])
    _violation(exc, "bizTransactionList")
    with pytest.raises(E.InvalidEpcisEvent) as exc:
        E.object_event(event_time=T, epcs=[dl("1")], action="OBSERVE", ilmd={"cbvmda:lotNumber": "L"})
    _violation(exc, "ilmd")


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda d: d["epcisBody"]["eventList"][0].__setitem__("eventTime", "yesterday"), "/epcisBody/eventList/0"),
        (lambda d: d["epcisBody"]["eventList"][0].pop("eventTimeZoneOffset"), "/epcisBody/eventList/0"),
        (lambda d: d.pop("creationDate"), ""),
        (lambda d: d["epcisBody"]["eventList"][0].__setitem__("action", "UPSERT"), "/epcisBody/eventList/0"),
    ],
)
def test_hand_edited_document_fails_schema(edit: Any, path: str) -> None:
    doc = E.epcis_document([lifecycle_events()["shipping"]], creation_date=T)
    edit(doc)
    with pytest.raises(E.InvalidEpcisEvent) as exc:
        E.validate_document(doc)
    # JSON Pointer paths (RFC 6901); the document itself is "".
    assert any(p.startswith(path) if path else p == "" for p, _ in exc.value.violations), exc.value.violations


def test_format_checking_is_really_on() -> None:
    doc = E.epcis_document([lifecycle_events()["shipping"]], creation_date=T)
    doc["epcisBody"]["eventList"][0]["eventTime"] = "2024-13-45T99:00:00Z"
    with pytest.raises(E.InvalidEpcisEvent):
        E.validate_document(doc)


# ------------------------------------------------------------------------------------------- event hash oracle


def reference_prehashes_and_hashes(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    from epcis_event_hash_generator import hash_generator, json_to_py

    doc = E.epcis_document(events, creation_date=T)
    # The reference loads only its bundled context files offline; the 2.0.0 URL is one of them.
    doc["@context"] = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
    py_events = json_to_py.event_list_from_epcis_document_json(json.loads(json.dumps(doc)))
    prehashes = hash_generator.derive_prehashes_from_events(copy.deepcopy(py_events))
    hashes = hash_generator.calculate_hashes_from_pre_hashes(prehashes)
    return prehashes, hashes


def random_events(n: int, seed: int = 20240301) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    alnum = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789"
    glns = [GLN_DC, GLN_STORE, "4012345000009"]
    out = []
    for i in range(n):
        offset = timedelta(minutes=rng.choice([-600, -330, -60, 0, 60, 120, 345, 780]))
        base = datetime(2023, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(0, 60_000_000))
        when = (base + timedelta(milliseconds=rng.randrange(0, 1000))).astimezone(timezone(offset))
        epcs = [dl("".join(rng.choice(alnum) for _ in range(rng.randint(1, 12)))) for _ in range(rng.randint(1, 5))]
        bt = [(rng.choice(sorted(E.BIZ_TRANSACTION_TYPES)), f"urn:epcglobal:cbv:bt:{GLN_DC}:{rng.randrange(10**6)}")
              for _ in range(rng.randint(0, 2))]
        src = [(rng.choice(sorted(E.SOURCE_DEST_TYPES)), f"https://id.gs1.org/414/{rng.choice(glns)}")
               for _ in range(rng.randint(0, 2))]
        dst = [(rng.choice(sorted(E.SOURCE_DEST_TYPES)), f"https://id.gs1.org/417/{rng.choice(glns)}")
               for _ in range(rng.randint(0, 2))]
        common = dict(event_time=when, biz_step=rng.choice(sorted(E.BIZ_STEPS)),
                      disposition=rng.choice(sorted(E.DISPOSITIONS)),
                      read_point_gln=rng.choice(glns + [None]), biz_location_gln=rng.choice(glns + [None]),
                      sources=src, destinations=dst)
        kind = i % 3
        if kind == 0:
            action = rng.choice(["ADD", "OBSERVE", "DELETE"])
            ilmd = ({"cbvmda:lotNumber": "L" + str(rng.randrange(1000)), "cbvmda:itemExpirationDate": "2027-06-30"}
                    if action == "ADD" and rng.random() < 0.7 else None)
            pd = rng.sample(["recalled", "stolen", "damaged"], rng.randint(0, 2))
            out.append(E.object_event(epcs=epcs, action=action, biz_transactions=bt, ilmd=ilmd,
                                      persistent_set=pd, persistent_unset=["expired"] if rng.random() < 0.2 else [],
                                      **common))
        elif kind == 1:
            out.append(E.aggregation_event(parent_id=sscc(f"{rng.randrange(10**9):09d}"), child_epcs=epcs,
                                           action=rng.choice(["ADD", "OBSERVE"]), biz_transactions=bt, **common))
        else:
            parent = sscc(f"{rng.randrange(10**9):09d}") if rng.random() < 0.5 else None
            out.append(E.transaction_event(epcs=epcs, action=rng.choice(["ADD", "OBSERVE", "DELETE"]),
                                           biz_transactions=bt or [("po", "https://example.com/po/1")],
                                           parent_id=parent, **common))
    return out


def test_event_hash_matches_reference_for_random_builder_events() -> None:
    events = random_events(60) + list(lifecycle_events().values())
    E.validate_document(E.epcis_document(events, creation_date=T))
    ref_pre, ref_hashes = reference_prehashes_and_hashes(events)
    assert len(ref_hashes) == len(events) == 69
    for event, pre, h in zip(events, ref_pre, ref_hashes):
        assert E.prehash_string(event) == pre
        assert E.event_hash_id(event) == h


def test_hash_form_and_normalisations() -> None:
    ev = lifecycle_events()["shipping"]
    h = E.event_hash_id(ev)
    assert h.startswith("ni:///sha-256;") and h.endswith("?ver=CBV2.0") and len(h) == len("ni:///sha-256;?ver=CBV2.0") + 64
    # Same instant in another offset (offset field kept) and excluded fields do not change the hash.
    same = dict(ev, eventID="urn:uuid:1", recordTime="2025-01-01T00:00:00Z",
                errorDeclaration={"declarationTime": "2025-01-01T00:00:00Z"})
    assert E.event_hash_id(same) == h
    # EPC URN and legacy CBV URN forms hash like DL and bare words.
    urn = dict(ev, epcList=["urn:epc:id:sgtin:9506000.013435.Z9", "urn:epc:id:sgtin:9506000.013435.A1b2C3"],
               bizStep="urn:epcglobal:cbv:bizstep:shipping")
    assert E.event_hash_id(urn) == h
    assert E.event_hash_id(dict(ev, disposition="in_progress")) != h


def test_reference_package_bundled_examples() -> None:
    """The installed 1.9.3 wheel ships only two JSON-LD context files, no test vectors; guard that assumption."""
    import importlib.resources

    files = [p.name for p in importlib.resources.files("epcis_event_hash_generator").iterdir()
             if p.name.endswith((".jsonld", ".hashes", ".prehashes", ".xml"))]
    assert not any(n.endswith((".hashes", ".prehashes")) for n in files), files


def test_export_import_round_trip() -> None:
    events = random_events(12, seed=7) + list(lifecycle_events().values())
    raw = json.dumps(E.epcis_document(events, creation_date=T)).encode()
    back = E.parse_document(raw)
    assert back == events
    assert [E.event_hash_id(e) for e in back] == [E.event_hash_id(e) for e in events]
    with pytest.raises(E.InvalidEpcisEvent):
        E.parse_document(raw, max_bytes=100)
    with pytest.raises(E.InvalidEpcisEvent):
        E.parse_document(b"{not json")
