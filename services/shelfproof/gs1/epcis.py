"""EPCIS 2.0 JSON events for product lifecycle, GS1 schema validation and the CBV 2.0 Event Hash ID.

Events are plain dicts so they serialise unchanged onto the ledger and to trading partners. The Event Hash ID
lets two parties name the same event without agreeing on an eventID; it follows the reference generator
(epcis-event-hash-generator 1.9.3), including its quirks, because partners will compute it with that tool.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import jsonschema
import jsonschema_rs

from shelfproof.gs1.canonical import MAX_KEY_URI, canonical_key, item_key
from shelfproof.gs1.event_hash import event_hash_id, prehash_string, utc_milliseconds  # noqa: F401  (public API)
from shelfproof.gs1.keys import InvalidGs1Key, validate_gln

# The versioned context: stable, and what offline tools (the reference hash generator among them) bundle.
EPCIS_CONTEXT_URL = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
CBV_BASE = "https://ref.gs1.org/cbv/"
DL_BASE = "https://id.gs1.org"

BIZ_STEPS = frozenset(
    "accepting arriving assembling collecting commissioning consigning creating_class_instance cycle_counting "
    "decommissioning departing destroying disassembling dispensing encoding entering_exiting holding inspecting "
    "installing killing loading other packing picking receiving removing repackaging repairing replacing reserving "
    "retail_selling shipping staging_outbound stock_taking stocking storing transporting unloading unpacking "
    "void_shipping sensor_reporting sampling".split()
)
DISPOSITIONS = frozenset(
    "active container_closed damaged destroyed dispensed disposed encoded expired in_progress in_transit inactive "
    "no_pedigree_match non_sellable_other partially_dispensed recalled reserved retail_sold returned "
    "sellable_accessible sellable_not_accessible stolen unknown available completeness_verified "
    "completeness_inferred conformant container_open mismatch_instance mismatch_class mismatch_quantity "
    "needs_replacement non_conformant unavailable".split()
)
BIZ_TRANSACTION_TYPES = frozenset("bol cert desadv inv pedigree po poc prodorder recadv rma testprd testres upevt".split())
SOURCE_DEST_TYPES = frozenset(("owning_party", "possessing_party", "location"))
ACTIONS = frozenset(("ADD", "OBSERVE", "DELETE"))

Action = Literal["ADD", "OBSERVE", "DELETE"]
_TZ_OFFSET = re.compile(r"[+-](?:0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00", re.ASCII)
Violation = tuple[str, str]


class InvalidEpcisEvent(ValueError):
    """An EPCIS event or document that we must not emit or accept; `.violations` lists (field path, reason)."""

    def __init__(self, violations: Sequence[Violation]):
        self.violations: list[Violation] = list(violations)
        super().__init__("; ".join(f"{path}: {why}" for path, why in self.violations))


# --------------------------------------------------------------------------------------------------- builders


def _time_fields(event_time: datetime, tz_offset: str | None, errors: list[Violation]) -> dict[str, str]:
    if event_time.tzinfo is None or event_time.utcoffset() is None:
        errors.append(("eventTime", "must be timezone-aware (EPCIS requires an offset)"))
        return {}
    off = event_time.utcoffset()
    assert off is not None
    if tz_offset is None:
        minutes = int(off.total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        tz_offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    if len(tz_offset) != 6 or not _TZ_OFFSET.fullmatch(tz_offset):
        errors.append(("eventTimeZoneOffset", f"{tz_offset!r} is not ±hh:mm within -14:00..+14:00"))
    # Millisecond precision: the hash truncates to ms anyway, and sub-ms digits only invite rounding disputes.
    text = event_time.isoformat(timespec="milliseconds")
    return {"eventTime": text, "eventTimeZoneOffset": tz_offset}


def _gln_uri(gln: str, field: str, errors: list[Violation]) -> str | None:
    try:
        return f"{DL_BASE}/414/{validate_gln(gln)}"
    except InvalidGs1Key as exc:
        errors.append((field, str(exc)))
        return None


def _check_word(value: str, allowed: frozenset[str], field: str, errors: list[Violation]) -> None:
    if value not in allowed:
        errors.append((field, f"{value!r} is not a CBV 2.0 value"))


def _check_epcs(epcs: Sequence[str], field: str, errors: list[Violation], *, required: bool) -> None:
    if required and not epcs:
        errors.append((field, "must contain at least one EPC"))
    for i, epc in enumerate(epcs):
        if not isinstance(epc, str) or not epc.startswith(("https://", "http://", "urn:epc:")):
            errors.append((f"{field}[{i}]", f"{epc!r} is not a GS1 Digital Link URI or EPC URN"))


def _common(
    event_type: str,
    event_time: datetime,
    tz_offset: str | None,
    action: str,
    biz_step: str | None,
    disposition: str | None,
    read_point_gln: str | None,
    biz_location_gln: str | None,
    biz_transactions: Sequence[tuple[str, str]],
    sources: Sequence[tuple[str, str]],
    destinations: Sequence[tuple[str, str]],
    errors: list[Violation],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (head, tail): fields that precede and follow the EPC fields in the usual JSON layout."""
    head: dict[str, Any] = {"type": event_type, **_time_fields(event_time, tz_offset, errors)}
    tail: dict[str, Any] = {}
    if action not in ACTIONS:
        errors.append(("action", f"{action!r} is not one of ADD, OBSERVE, DELETE"))
    tail["action"] = action
    if biz_step is not None:
        _check_word(biz_step, BIZ_STEPS, "bizStep", errors)
        tail["bizStep"] = biz_step
    if disposition is not None:
        _check_word(disposition, DISPOSITIONS, "disposition", errors)
        tail["disposition"] = disposition
    if read_point_gln is not None and (uri := _gln_uri(read_point_gln, "readPoint.id", errors)):
        tail["readPoint"] = {"id": uri}
    if biz_location_gln is not None and (uri := _gln_uri(biz_location_gln, "bizLocation.id", errors)):
        tail["bizLocation"] = {"id": uri}
    if biz_transactions:
        for i, (btt, _) in enumerate(biz_transactions):
            _check_word(btt, BIZ_TRANSACTION_TYPES, f"bizTransactionList[{i}].type", errors)
        tail["bizTransactionList"] = [{"type": t, "bizTransaction": v} for t, v in biz_transactions]
    for key, field, items in (("source", "sourceList", sources), ("destination", "destinationList", destinations)):
        if items:
            for i, (sdt, _) in enumerate(items):
                _check_word(sdt, SOURCE_DEST_TYPES, f"{field}[{i}].type", errors)
            tail[field] = [{"type": t, key: v} for t, v in items]
    return head, tail


def _persistent(set_: Sequence[str], unset: Sequence[str], errors: list[Violation]) -> dict[str, list[str]] | None:
    if not set_ and not unset:
        return None
    for key, values in (("set", set_), ("unset", unset)):
        for i, v in enumerate(values):
            _check_word(v, DISPOSITIONS, f"persistentDisposition.{key}[{i}]", errors)
    out: dict[str, list[str]] = {}
    if set_:
        out["set"] = list(set_)
    if unset:
        out["unset"] = list(unset)
    return out


def object_event(
    *,
    event_time: datetime,
    epcs: Sequence[str],
    action: Action,
    biz_step: str | None = None,
    disposition: str | None = None,
    tz_offset: str | None = None,
    read_point_gln: str | None = None,
    biz_location_gln: str | None = None,
    biz_transactions: Sequence[tuple[str, str]] = (),
    sources: Sequence[tuple[str, str]] = (),
    destinations: Sequence[tuple[str, str]] = (),
    ilmd: Mapping[str, str] | None = None,
    persistent_set: Sequence[str] = (),
    persistent_unset: Sequence[str] = (),
) -> dict[str, Any]:
    """ObjectEvent about serialised items (commissioning, shipping, sale, recall, theft, destruction).

    `ilmd` keys are CURIEs such as ``cbvmda:lotNumber``; ILMD is only allowed on ADD (EPCIS SHACL rule).
    """
    errors: list[Violation] = []
    head, tail = _common("ObjectEvent", event_time, tz_offset, action, biz_step, disposition, read_point_gln,
                         biz_location_gln, biz_transactions, sources, destinations, errors)
    _check_epcs(epcs, "epcList", errors, required=True)
    event = {**head, "epcList": list(epcs), **tail}
    if (pd := _persistent(persistent_set, persistent_unset, errors)) is not None:
        event["persistentDisposition"] = pd
    if ilmd:
        if action != "ADD":
            errors.append(("ilmd", "ILMD is only allowed with action ADD"))
        event["ilmd"] = dict(ilmd)
    if errors:
        raise InvalidEpcisEvent(errors)
    return event


def aggregation_event(
    *,
    event_time: datetime,
    parent_id: str | None,
    child_epcs: Sequence[str],
    action: Action,
    biz_step: str | None = None,
    disposition: str | None = None,
    tz_offset: str | None = None,
    read_point_gln: str | None = None,
    biz_location_gln: str | None = None,
    biz_transactions: Sequence[tuple[str, str]] = (),
    sources: Sequence[tuple[str, str]] = (),
    destinations: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """AggregationEvent (packing items into a case/pallet SSCC); parentID is required for ADD and DELETE."""
    errors: list[Violation] = []
    head, tail = _common("AggregationEvent", event_time, tz_offset, action, biz_step, disposition, read_point_gln,
                         biz_location_gln, biz_transactions, sources, destinations, errors)
    if parent_id is None and action in ("ADD", "DELETE"):
        errors.append(("parentID", f"required for action {action}"))
    if parent_id is not None:
        _check_epcs([parent_id], "parentID", errors, required=True)
    _check_epcs(child_epcs, "childEPCs", errors, required=action != "DELETE")
    event = {**head}
    if parent_id is not None:
        event["parentID"] = parent_id
    if child_epcs:
        event["childEPCs"] = list(child_epcs)
    event.update(tail)
    if errors:
        raise InvalidEpcisEvent(errors)
    return event


def transaction_event(
    *,
    event_time: datetime,
    epcs: Sequence[str],
    action: Action,
    biz_transactions: Sequence[tuple[str, str]],
    parent_id: str | None = None,
    biz_step: str | None = None,
    disposition: str | None = None,
    tz_offset: str | None = None,
    read_point_gln: str | None = None,
    biz_location_gln: str | None = None,
    sources: Sequence[tuple[str, str]] = (),
    destinations: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """TransactionEvent linking items to a business transaction (po, inv, desadv...), which is mandatory."""
    errors: list[Violation] = []
    if not biz_transactions:
        errors.append(("bizTransactionList", "a TransactionEvent needs at least one business transaction"))
    head, tail = _common("TransactionEvent", event_time, tz_offset, action, biz_step, disposition, read_point_gln,
                         biz_location_gln, biz_transactions, sources, destinations, errors)
    _check_epcs(epcs, "epcList", errors, required=True)
    event = {**head}
    if parent_id is not None:
        _check_epcs([parent_id], "parentID", errors, required=True)
        event["parentID"] = parent_id
    event["epcList"] = list(epcs)
    event.update(tail)
    if errors:
        raise InvalidEpcisEvent(errors)
    return event


# --------------------------------------------------------------------------------------------------- documents


def epcis_document(events: Iterable[Mapping[str, Any]], *, creation_date: datetime) -> dict[str, Any]:
    """Wrap events in an EPCISDocument (the exchange unit partners and the GS1 schema expect)."""
    if creation_date.tzinfo is None:
        raise InvalidEpcisEvent([("creationDate", "must be timezone-aware")])
    return {
        "@context": [EPCIS_CONTEXT_URL],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": creation_date.isoformat(timespec="milliseconds"),
        "epcisBody": {"eventList": [dict(e) for e in events]},
    }


def schema_dir() -> Path:
    """GS1's EPCIS schema folder: $SHELFPROOF_EPCIS_SCHEMA_DIR or the shared checkout next to the repo."""
    env = os.environ.get("SHELFPROOF_EPCIS_SCHEMA_DIR")
    if env:
        return Path(env)
    return (Path(__file__).resolve().parents[3] / "../shared/gs1/epcis").resolve()


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads((schema_dir() / "EPCIS-JSON-Schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def json_pointer(path: Iterable[Any]) -> str:
    """RFC 6901 pointer of a path into a document: ``/epcisBody/eventList/0/epcList/3``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


@lru_cache(maxsize=1)
def _fast_validator() -> Any:
    schema = json.loads((schema_dir() / "EPCIS-JSON-Schema.json").read_text(encoding="utf-8"))
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def is_valid_document(doc: Mapping[str, Any]) -> bool:
    return _fast_validator().is_valid(doc)


def validate_document(doc: Mapping[str, Any]) -> None:
    """Check a document against GS1's EPCIS 2.0 JSON schema with `date-time`/`uri` formats enforced.

    jsonschema-rs decides (it is the capture path's cost); jsonschema words the refusal."""
    if _fast_validator().is_valid(doc):
        return
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise InvalidEpcisEvent([(json_pointer(e.absolute_path), e.message[:500]) for e in errors[:50]])
    raise InvalidEpcisEvent([(json_pointer(e.instance_path), e.message[:500])
                             for e in list(_fast_validator().iter_errors(doc))[:50]])


MAX_DEPTH = 24


def _too_deep(value: Any) -> str | None:
    """Pointer to the first value nested deeper than MAX_DEPTH (checked without recursion)."""
    stack = [(value, 0, ())]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            return json_pointer(path)
        if isinstance(item, dict):
            stack.extend((v, depth + 1, (*path, k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, depth + 1, (*path, i)) for i, v in enumerate(item))
    return None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_document(json_bytes: bytes | str, *, max_bytes: int = 8 * 1024 * 1024) -> dict[str, Any]:
    """A partner's EPCISDocument, checked: size cap, strict JSON, nesting bound, GS1's schema."""
    if len(json_bytes) > max_bytes:
        raise InvalidEpcisEvent([("", f"document is {len(json_bytes)} bytes, limit {max_bytes}")])
    try:
        doc = json.loads(json_bytes, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidEpcisEvent([("", f"not JSON: {str(exc)[:200]}")]) from None
    if not isinstance(doc, dict):
        raise InvalidEpcisEvent([("", "document must be a JSON object")])
    if (b"\\u" if isinstance(json_bytes, bytes) else "\\u") in json_bytes:  # escapes can spell what text cannot hold
        try:
            if "\\u0000" in json.dumps(doc, ensure_ascii=False).encode("utf-8").decode("utf-8"):
                raise InvalidEpcisEvent([("", "a string contains U+0000")])
        except UnicodeError:
            raise InvalidEpcisEvent([("", "a string contains a lone surrogate (not Unicode text)")]) from None
    if (where := _too_deep(doc)) is not None:
        raise InvalidEpcisEvent([(where, f"nested deeper than {MAX_DEPTH} levels")])
    validate_document(doc)
    if doc.get("type") != "EPCISDocument":
        raise InvalidEpcisEvent([("/type", "expected EPCISDocument")])
    return doc


def parse_document(json_bytes: bytes | str, *, max_bytes: int = 8 * 1024 * 1024) -> list[dict[str, Any]]:
    """Import a partner's EPCISDocument: its events (see ``load_document``)."""
    return list(load_document(json_bytes, max_bytes=max_bytes)["epcisBody"]["eventList"])


def parse_event_time(text: Any) -> datetime | None:
    """An RFC 3339 time (any fraction length, Z or offset, either case) as an aware datetime; None if not one."""
    if not isinstance(text, str):
        return None
    utc = utc_milliseconds(text)
    if utc is None:
        return None
    try:
        return datetime.fromisoformat(utc.replace("Z", "+00:00"))
    except ValueError:
        return None


def epcs_of(event: Mapping[str, Any]) -> list[str]:
    """Every instance an event names: parentID, epcList, childEPCs, inputEPCList, outputEPCList."""
    names = [event["parentID"]] if isinstance(event.get("parentID"), str) else []
    for field in ("epcList", "childEPCs", "inputEPCList", "outputEPCList"):
        value = event.get(field)
        if isinstance(value, list):
            names.extend(e for e in value if isinstance(e, str))
    return names


# Fields of an event that name identifiers: instances, and the classes of its quantity lists.
EPC_FIELDS = ("epcList", "childEPCs", "inputEPCList", "outputEPCList")
QUANTITY_FIELDS = ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList")


def identifiers_of(event: Mapping[str, Any], *, max_each: int = 1_000) -> list[tuple[str, str]]:
    """(field, identifier) for every EPC and EPC class the event names, canonical where it is a GS1
    key (so an EPC URN and its Digital Link compare equal); bounded, and only strings that fit a key."""
    found: list[tuple[str, str]] = []
    if isinstance(event.get("parentID"), str):
        found.append(("parentID", event["parentID"]))
    for field in EPC_FIELDS:
        value = event.get(field)
        if isinstance(value, list):
            found.extend((field, e) for e in value[:max_each] if isinstance(e, str))
    for field in QUANTITY_FIELDS:
        value = event.get(field)
        if isinstance(value, list):
            found.extend((field, q["epcClass"]) for q in value[:max_each]
                         if isinstance(q, dict) and isinstance(q.get("epcClass"), str))
    return list(dict.fromkeys((f, canonical_key(v) or v) for f, v in found
                              if 0 < len(v) <= MAX_KEY_URI and "\x00" not in v))


def place_id(place: Any) -> str | None:
    """A readPoint/bizLocation's id, canonical where it is a GS1 key (an SGLN URN and /414/ compare equal)."""
    identifier = place.get("id") if isinstance(place, dict) else None
    if not isinstance(identifier, str) or not 0 < len(identifier) <= MAX_KEY_URI or "\x00" in identifier:
        return None
    return canonical_key(identifier) or identifier


def location_gln(place: Any) -> str | None:
    """The GLN of a readPoint/bizLocation given as SGLN URN or Digital Link (AI 414), check digit valid."""
    identifier = place.get("id") if isinstance(place, dict) else None
    canonical = canonical_key(identifier) if isinstance(identifier, str) else None
    prefix = "https://id.gs1.org/414/"
    if canonical is None or not canonical.startswith(prefix):
        return None
    try:
        return validate_gln(canonical[len(prefix):len(prefix) + 13])
    except InvalidGs1Key:
        return None


# --------------------------------------------------------------------------------------------------- event hash

def canonical_epc(value: str) -> str:
    """EPC URN or DL URI -> constrained canonical id.gs1.org DL, the form the hash compares (others pass through)."""
    return canonical_key(value) or value


@lru_cache(maxsize=1 << 16)
def item_of(epc: str) -> tuple[str, str] | None:
    """(GTIN-14, serial) of a serialized item's EPC (DL URI on any host, or SGTIN URN); None for other identifiers.

    Consensus calls this on member input: it is bounded and linear-time (no backtracking regex). A pure
    function of the text, kept for recent EPCs: CheckTx and FinalizeBlock read the same event's EPCs.
    """
    return item_key(epc)
