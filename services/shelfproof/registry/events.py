"""``shelfproof.product.v1.EventService``: EPCIS 2.0 capture, queries, export, inventory positions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shelfproof.common.v1 import common_pb2
from shelfproof.gs1 import epcis
from shelfproof.gs1.epcis import InvalidEpcisEvent, epcs_of, location_gln, parse_event_time
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.product.v1 import events_pb2 as pb
from shelfproof.product.v1 import events_pb2_grpc
from shelfproof.registry.projector import RegistryProjector
from shelfproof.runtime.fields import gln_field, gtin_field, time_field, timestamp_of
from shelfproof.runtime.identity import reader_organization
from shelfproof.runtime.errors import (
    DependencyUnavailable,
    FieldViolation,
    InvalidArgument,
    LedgerRejected,
    PermissionDenied,
)
from shelfproof.runtime.server import ServiceBinding

# Within the 16 MiB gRPC message limit; ~1.5 KB per event leaves room for 10,000 events of 50 EPCs.
MAX_DOCUMENT_BYTES = 16_000_000
MAX_EVENTS = 10_000
MAX_EXPORT = 10_000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# What the ledger accepts (ledger/core/rules/catalogue.py record_event, ledger/core/tx.py MAX_TX_BYTES less the envelope).
LEDGER_EVENT_TYPES = frozenset(("ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent",
                                "AssociationEvent"))
MAX_EPCS_PER_EVENT = 1_000
MAX_EVENT_BODY_BYTES = 60_000
# Transactions per SubmitTransactions call (each a few KB; the call stays under the message limit).
SUBMIT_CHUNK = 1_000  # the adapter takes at most 1,000 per batch

log = logging.getLogger(__name__)


def _declaration_hash(event_hash: str, declaration: dict) -> str:
    """Ledger key of an error declaration: the declared event's hash and the declaration, hashed."""
    text = event_hash + json.dumps(declaration, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"ni:///sha-256;{hashlib.sha256(text.encode()).hexdigest()}?ver=CBV2.0"


@dataclass(frozen=True)
class PlannedEvent:
    """One document event, checked and ready for the ledger."""

    index: int
    event_hash: str  # its CBV 2.0 Event Hash ID
    ledger_key: str  # the hash it is recorded under: event_hash, or the declaration's for an errorDeclaration copy
    body: txpb.TransactionBody

    @property
    def declaration(self) -> bool:
        return self.ledger_key != self.event_hash


def _invalid(violations: list[tuple[str, str]], summary: str) -> InvalidArgument:
    return InvalidArgument(
        f"{summary}: " + "; ".join(f"{p or '(document)'}: {why}" for p, why in violations[:5]),
        field_violations=[FieldViolation(p or "epcis_document", why) for p, why in violations[:50]],
    )


def _ledger_event(event: dict, context: Any) -> dict:
    """The event as the ledger keeps it: verbatim, plus the document's @context when that binds prefixes."""
    inline = [c for c in (context if isinstance(context, list) else [context]) if isinstance(c, dict)]
    if not inline:
        return event
    own = event.get("@context")
    own = [] if own is None else own if isinstance(own, list) else [own]
    return {"@context": [c for c in (context if isinstance(context, list) else [context])] + own,
            **{k: v for k, v in event.items() if k != "@context"}}


def _plan_event(index: int, event: dict, context: Any) -> PlannedEvent:
    where = f"/epcisBody/eventList/{index}"
    event_type = event.get("type")
    if event_type not in LEDGER_EVENT_TYPES:
        raise InvalidEpcisEvent([(f"{where}/type", f"{str(event_type)[:80]!r}: the ledger records the five EPCIS 2.0 "
                                  "event types (Object, Aggregation, Transaction, Transformation, Association)")])
    if parse_event_time(event.get("eventTime")) is None:
        raise InvalidEpcisEvent([(f"{where}/eventTime", "not a time this registry can order (leap second or year 0)")])
    epcs = epcs_of(event)
    if len(epcs) > MAX_EPCS_PER_EVENT:
        raise InvalidEpcisEvent([(where, f"names {len(epcs)} EPCs; at most {MAX_EPCS_PER_EVENT} per event")])
    event_hash = epcis.event_hash_id(event, context)
    recorded = _ledger_event(event, context)
    declaration = event.get("errorDeclaration")
    ledger_key = _declaration_hash(event_hash, declaration) if isinstance(declaration, dict) else event_hash
    body = txpb.TransactionBody(
        record_event=txpb.RecordEvent(
            event_hash=ledger_key,
            epcis_event_json=json.dumps(recorded, separators=(",", ":"), ensure_ascii=False).encode(),
            event_type=event_type,
            # A declaration changes no custody: the ledger sees the record, not another step.
            biz_step="" if ledger_key != event_hash else str(event.get("bizStep", "")),
            disposition="" if ledger_key != event_hash else str(event.get("disposition", "")),
            epcs=[] if ledger_key != event_hash else epcs,
            biz_location_gln=location_gln(event.get("bizLocation")) or "",
            read_point_gln=location_gln(event.get("readPoint")) or "",
        )
    )
    if (size := body.ByteSize()) > MAX_EVENT_BODY_BYTES:
        raise InvalidEpcisEvent([(where, f"is {size} bytes as a ledger transaction; at most {MAX_EVENT_BODY_BYTES}")])
    return PlannedEvent(index, event_hash, ledger_key, body)


def plan_capture(document: bytes) -> list[PlannedEvent]:
    """Check a document and every event in it, hashes included, before anything is recorded.

    Answers the plan or raises InvalidArgument with JSON Pointer field violations; nothing else
    escapes, so no schema-valid document can turn into INTERNAL.
    """
    if len(document) > MAX_DOCUMENT_BYTES:
        raise InvalidArgument("document too large",
                              field_violations=[FieldViolation("epcis_document", f"at most {MAX_DOCUMENT_BYTES} bytes")])
    try:
        doc = epcis.load_document(document, max_bytes=MAX_DOCUMENT_BYTES)
    except epcis.InvalidEpcisEvent as err:
        raise _invalid(err.violations, "not a valid EPCIS 2.0 document") from None
    events = doc["epcisBody"].get("eventList") or []
    if not 1 <= len(events) <= MAX_EVENTS:
        raise _invalid([("/epcisBody/eventList", f"1 to {MAX_EVENTS} events, got {len(events)}")],
                       f"a document carries 1 to {MAX_EVENTS:,} events")
    context = doc.get("@context")
    planned, violations = [], []
    for index, event in enumerate(events):
        try:
            planned.append(_plan_event(index, event, context))
        except epcis.InvalidEpcisEvent as err:
            violations.extend(err.violations)
        except Exception as err:  # a schema-valid event we cannot handle is a bug, answered as bad input
            log.exception("event %d of a schema-valid document could not be prepared", index)
            violations.append((f"/epcisBody/eventList/{index}", f"cannot be recorded ({type(err).__name__})"))
        if len(violations) >= 50:
            break
    if violations:
        raise _invalid(violations, "events refused")
    return planned


def _event(row: dict, corrects: list[str]) -> pb.Event:
    declaration = row.get("error_declaration")
    return pb.Event(
        event_hash=row["event_hash"], event_type=row["event_type"], event_time=timestamp_of(row["event_time"]),
        action=row["action"] or "", biz_step=row["biz_step"] or "", disposition=row["disposition"] or "",
        biz_location_gln=row["biz_location_gln"] or "",
        event_json=json.dumps(row["document"], separators=(",", ":"), ensure_ascii=False).encode(),
        ledger_ref=common_pb2.LedgerRef(height=row["ledger_height"], tx_hash=bytes(row["tx_hash"])),
        event_id=row.get("event_id") or "",
        error_declaration_json=json.dumps(declaration, separators=(",", ":")).encode() if declaration else b"",
        corrective_event_ids=(declaration or {}).get("correctiveEventIDs") or [],
        corrects_event_hashes=corrects,
    )


def export_document(rows: list[dict]) -> dict:
    """An EPCISDocument of stored events: their prefixes hoisted into one @context where they agree."""
    prefixes: dict[str, str] = {}
    conflicting: set[str] = set()
    for row in rows:
        for part in epcis_context_parts(row["document"]):
            for prefix, iri in part.items():
                if prefixes.setdefault(prefix, iri) != iri:
                    conflicting.add(prefix)
    events = []
    for row in rows:
        event = row["document"]
        parts = epcis_context_parts(event)
        if "@context" in event and not any(set(p) & conflicting for p in parts):
            event = {k: v for k, v in event.items() if k != "@context"}
        if row.get("error_declaration") and "errorDeclaration" not in event:
            event = {**event, "errorDeclaration": row["error_declaration"]}  # declared since: sent as declared
        events.append(event)
    document = epcis.epcis_document(events, creation_date=datetime.now(timezone.utc))
    shared = {p: iri for p, iri in prefixes.items() if p not in conflicting}
    if shared:
        document["@context"] = [epcis.EPCIS_CONTEXT_URL, shared]
    return document


def epcis_context_parts(event: dict) -> list[dict]:
    context = event.get("@context")
    return [c for c in (context if isinstance(context, list) else [context]) if isinstance(c, dict)]


def party_scope(gln: str) -> tuple[str, list]:
    """SQL over ``events e``: the events an organisation may read — those its agents recorded, those at its
    locations, and those that name it (or one of its locations) as a source or destination party, written as a
    GS1 Digital Link (``/417/``, ``/414/``) or an EPC URN (pgln, sgln: every company-prefix length)."""
    urns = [f"urn:epc:id:pgln:{gln[:k]}.{gln[k:12]}" for k in range(6, 13)]
    patterns = [f"%/417/{gln}", f"%/414/{gln}%", *urns, *(f"urn:epc:id:sgln:{gln[:k]}.{gln[k:12]}.%" for k in range(6, 13))]
    sql = (
        "(e.recorded_by LIKE %s"
        " OR e.biz_location_gln IN (SELECT gln FROM locations WHERE organization_gln = %s)"
        " OR EXISTS (SELECT 1 FROM jsonb_path_query(e.document, 'lax $.sourceList[*].source') AS s(v) WHERE s.v #>> '{}' LIKE ANY(%s))"
        " OR EXISTS (SELECT 1 FROM jsonb_path_query(e.document, 'lax $.destinationList[*].destination') AS d(v)"
        " WHERE d.v #>> '{}' LIKE ANY(%s)))"
    )
    return sql, [f"{gln}/%", gln, patterns, patterns]


class EventService(events_pb2_grpc.EventServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, ledger: LedgerClient, projector: RegistryProjector) -> None:
        self.pool = pool
        self.ledger = ledger
        self.projector = projector

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            pb.DESCRIPTOR.services_by_name["EventService"].full_name,
            lambda server: events_pb2_grpc.add_EventServiceServicer_to_server(self, server),
        )

    async def _recorded(self, keys: list[str]) -> dict[str, tuple[int, bytes]]:
        """Ledger reference of each key already in the query model (events, and declarations)."""
        async with self.pool.connection() as conn:
            rows = await conn.execute(
                """SELECT event_hash, ledger_height, tx_hash FROM events WHERE event_hash = ANY(%s)
                   UNION ALL SELECT declaration_hash, declaration_height, declaration_tx_hash FROM events
                   WHERE declaration_hash = ANY(%s)""",
                (keys, keys),
            )
            return {key: (height, bytes(tx)) for key, height, tx in await rows.fetchall()}

    async def CaptureEvents(self, request: pb.CaptureEventsRequest, context) -> pb.CaptureEventsResponse:
        return await self.record(await asyncio.to_thread(plan_capture, request.epcis_document))

    async def record(self, planned: list[PlannedEvent]) -> pb.CaptureEventsResponse:
        """Record checked events (``plan_capture``) on the ledger and wait for the query model: the one
        capture path, for gRPC CaptureEvents and the EPCIS REST binding's capture jobs."""
        keys = list(dict.fromkeys(p.ledger_key for p in planned))
        recorded = await self._recorded(keys)
        # Re-capturing an event is a no-op: only new ones become transactions (in document order,
        # so consecutive nonces carry them).
        fresh = [p for p in {p.ledger_key: p for p in reversed(planned)}.values() if p.ledger_key not in recorded]
        fresh.sort(key=lambda p: p.index)
        refs: dict[str, tuple[int, bytes]] = dict(recorded)
        last = None
        for start in range(0, len(fresh), SUBMIT_CHUNK):
            chunk = fresh[start:start + SUBMIT_CHUNK]
            outcomes = await self.ledger.submit_many([p.body for p in chunk])
            for plan, outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, LedgerRejected):
                    if outcome.ledger_code == ResultCode.ALREADY_EXISTS:  # captured meanwhile: a no-op
                        continue
                    refusal = PermissionDenied if outcome.ledger_code == ResultCode.PERMISSION_DENIED else InvalidArgument
                    raise refusal(
                        f"event {plan.index} was refused by the ledger: {outcome.message}",
                        field_violations=[FieldViolation(f"/epcisBody/eventList/{plan.index}", outcome.message)],
                    )
                refs[plan.ledger_key] = (outcome.height, outcome.tx_hash)
                last = max(last or (0, -1), (outcome.height, outcome.index))
        # The projection follows at its own pace: allow it time in proportion to what was committed.
        if last is not None and not await self.projector.wait_for(*last, 60 + 0.05 * len(fresh)):
            raise DependencyUnavailable("committed on the ledger, but the query model is behind")
        missing = [k for k in keys if k not in refs]
        if missing:  # recorded by someone else while we submitted
            refs.update(await self._recorded(missing))
        return pb.CaptureEventsResponse(events=[
            pb.CapturedEvent(
                event_hash=p.event_hash, error_declaration=p.declaration,
                ledger_ref=common_pb2.LedgerRef(height=refs[p.ledger_key][0], tx_hash=refs[p.ledger_key][1]),
            )
            for p in planned if p.ledger_key in refs
        ])

    def _where(self, f: pb.EventFilter) -> tuple[str, list, str]:
        conditions, values, join = [], [], ""
        if (reader := reader_organization()) is not None:
            scope, scope_values = party_scope(reader)
            conditions.append(scope)
            values += scope_values
        if f.serial and not f.gtin:
            raise InvalidArgument("serial needs gtin", field_violations=[FieldViolation("filter.serial", "set filter.gtin too")])
        if f.gtin:
            join = " JOIN event_items i ON i.event_hash = e.event_hash"
            conditions.append("i.gtin = %s")
            values.append(gtin_field(f.gtin, "filter.gtin"))
            if f.serial:
                conditions.append("i.serial = %s")
                values.append(f.serial)
        if f.location_gln:
            conditions.append("e.biz_location_gln = %s")
            values.append(gln_field(f.location_gln, "filter.location_gln"))
        if f.HasField("from_time"):
            conditions.append("e.event_time >= %s")
            values.append(time_field(f.from_time, "filter.from_time"))
        if f.HasField("to_time"):
            conditions.append("e.event_time < %s")
            values.append(time_field(f.to_time, "filter.to_time"))
        return join, values, " AND ".join(conditions) or "TRUE"

    async def _select(self, f: pb.EventFilter, after: tuple[datetime, str] | None, limit: int) -> list[dict]:
        join, values, where = self._where(f)
        if after is not None:
            where += " AND (e.event_time, e.event_hash) > (%s, %s)"
            values += list(after)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT DISTINCT e.* FROM events e{join} WHERE {where} ORDER BY e.event_time, e.event_hash LIMIT %s",
                (*values, limit),
            )
            return await cur.fetchall()

    async def ListEvents(self, request: pb.ListEventsRequest, context) -> pb.ListEventsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0", field_violations=[FieldViolation("page_size", ">= 0")])
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = None
        if request.page_token:
            try:
                time_text, event_hash = json.loads(base64.urlsafe_b64decode(request.page_token))
                after = (datetime.fromisoformat(time_text), str(event_hash))
            except (ValueError, TypeError):
                raise InvalidArgument("page_token is not one this service issued", field_violations=[FieldViolation("page_token", "invalid")]) from None
        rows = await self._select(request.filter, after, size + 1)
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = base64.urlsafe_b64encode(json.dumps([last["event_time"].isoformat(), last["event_hash"]]).encode()).decode()
        rows = rows[:size]
        corrects = await self._corrects(rows)
        return pb.ListEventsResponse(events=[_event(r, corrects.get(r["event_hash"], [])) for r in rows],
                                     next_page_token=token)

    async def _corrects(self, rows: list[dict]) -> dict[str, list[str]]:
        """Per event of `rows`: the declared events naming it (by Event Hash ID or eventID) as corrective."""
        names = {r["event_hash"]: r["event_hash"] for r in rows}
        names.update({r["event_id"]: r["event_hash"] for r in rows if r.get("event_id")})
        if not names:
            return {}
        async with self.pool.connection() as conn:
            found = await conn.execute(
                "SELECT corrective_event_id, event_hash FROM event_corrections WHERE corrective_event_id = ANY(%s)"
                " ORDER BY event_hash", (list(names),),
            )
            out: dict[str, list[str]] = {}
            for corrective, declared in await found.fetchall():
                out.setdefault(names[corrective], []).append(declared)
        return out

    async def ExportEvents(self, request: pb.ExportEventsRequest, context) -> pb.ExportEventsResponse:
        rows = await self._select(request.filter, None, MAX_EXPORT + 1)
        if len(rows) > MAX_EXPORT:
            raise InvalidArgument(
                f"more than {MAX_EXPORT} events match; narrow the filter", field_violations=[FieldViolation("filter", "too broad")]
            )
        document, left_out = export_document(rows), []
        if not epcis.is_valid_document(document):
            # Only CaptureEvents validates what it records: find the events recorded otherwise.
            left_out = [r["event_hash"] for r in rows if not epcis.is_valid_document(export_document([r]))]
            document = export_document([r for r in rows if r["event_hash"] not in set(left_out)])
        epcis.validate_document(document)  # what is left must be valid; if not, a bug of ours (INTERNAL)
        return pb.ExportEventsResponse(
            epcis_document=json.dumps(document, separators=(",", ":")).encode(), unexportable_event_hashes=left_out
        )

    async def ListInventoryPositions(self, request: pb.ListInventoryPositionsRequest, context) -> pb.ListInventoryPositionsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0", field_violations=[FieldViolation("page_size", ">= 0")])
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        conditions, values = [], []
        if request.gtin:
            conditions.append("gtin = %s")
            values.append(gtin_field(request.gtin, "gtin"))
        if request.location_gln:
            conditions.append("location_gln = %s")
            values.append(gln_field(request.location_gln, "location_gln"))
        if request.page_token:
            try:
                gtin, gln = json.loads(base64.urlsafe_b64decode(request.page_token))
            except (ValueError, TypeError):
                raise InvalidArgument("page_token is not one this service issued", field_violations=[FieldViolation("page_token", "invalid")]) from None
            conditions.append("(gtin, location_gln) > (%s, %s)")
            values += [gtin, gln]
        if (reader := reader_organization()) is not None:  # stock at its own locations only
            conditions.append("location_gln IN (SELECT gln FROM locations WHERE organization_gln = %s)")
            values.append(reader)
        where = " AND ".join(conditions) or "TRUE"
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT * FROM inventory_positions WHERE {where} ORDER BY gtin, location_gln LIMIT %s", (*values, size + 1)
            )
            rows = await cur.fetchall()
        token = ""
        if len(rows) > size:
            token = base64.urlsafe_b64encode(json.dumps([rows[size - 1]["gtin"], rows[size - 1]["location_gln"]]).encode()).decode()
        return pb.ListInventoryPositionsResponse(
            positions=[
                pb.InventoryPosition(gtin=r["gtin"], location_gln=r["location_gln"], quantity=r["quantity"], as_of_height=r["ledger_height"])
                for r in rows[:size]
            ],
            next_page_token=token,
        )
