"""``shelfproof.product.v1.EventService``: EPCIS 2.0 capture, queries, export, inventory positions."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shelfproof.common.v1 import common_pb2
from shelfproof.gs1 import epcis
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.codes import ResultCode
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.product.v1 import events_pb2 as pb
from shelfproof.product.v1 import events_pb2_grpc
from shelfproof.registry.projector import RegistryProjector, _gln_of
from shelfproof.runtime.fields import gln_field, gtin_field, timestamp_of
from shelfproof.runtime.errors import (
    DependencyUnavailable,
    FieldViolation,
    InvalidArgument,
    LedgerRejected,
)
from shelfproof.runtime.server import ServiceBinding

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_EVENTS = 1_000
MAX_EXPORT = 10_000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def _epcs(event: dict) -> list[str]:
    """Every item an event names: its EPC list, the parent and children of an aggregation, the
    inputs and outputs of a transformation."""
    names = [event.get("parentID")] if event.get("parentID") else []
    for field in ("epcList", "childEPCs", "inputEPCList", "outputEPCList"):
        names.extend(event.get(field) or [])
    return names


def _event(row: dict) -> pb.Event:
    return pb.Event(
        event_hash=row["event_hash"], event_type=row["event_type"], event_time=timestamp_of(row["event_time"]),
        action=row["action"] or "", biz_step=row["biz_step"] or "", disposition=row["disposition"] or "",
        biz_location_gln=row["biz_location_gln"] or "",
        event_json=json.dumps(row["document"], sort_keys=True, separators=(",", ":")).encode(),
        ledger_ref=common_pb2.LedgerRef(height=row["ledger_height"], tx_hash=bytes(row["tx_hash"])),
    )


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

    async def CaptureEvents(self, request: pb.CaptureEventsRequest, context) -> pb.CaptureEventsResponse:
        if len(request.epcis_document) > MAX_DOCUMENT_BYTES:
            raise InvalidArgument(
                "document too large", field_violations=[FieldViolation("epcis_document", f"at most {MAX_DOCUMENT_BYTES} bytes")]
            )
        try:
            events = epcis.parse_document(request.epcis_document, max_bytes=MAX_DOCUMENT_BYTES)
        except epcis.InvalidEpcisEvent as err:
            raise InvalidArgument(
                f"not a valid EPCIS 2.0 document: {err}",
                field_violations=[FieldViolation(f"epcis_document{path}", text) for path, text in err.violations[:20]],
            ) from None
        if not 1 <= len(events) <= MAX_EVENTS:
            raise InvalidArgument(
                "a document carries 1 to 1,000 events", field_violations=[FieldViolation("epcis_document.epcisBody.eventList", "1-1000 events")]
            )
        hashes = [epcis.event_hash_id(event) for event in events]
        async with self.pool.connection() as conn:
            rows = await conn.execute("SELECT event_hash FROM events WHERE event_hash = ANY(%s)", (hashes,))
            recorded = {row[0] for row in await rows.fetchall()}
        # Re-capturing an event is a no-op: only new ones become transactions (in document order,
        # so one batch of consecutive nonces carries them).
        bodies, new_hashes = [], []
        for event, event_hash in zip(events, hashes, strict=True):
            if event_hash in recorded or event_hash in new_hashes:
                continue
            new_hashes.append(event_hash)
            bodies.append(
                txpb.TransactionBody(
                    record_event=txpb.RecordEvent(
                        event_hash=event_hash,
                        epcis_event_json=json.dumps(event, sort_keys=True, separators=(",", ":")).encode(),
                        event_type=event["type"],
                        biz_step=event.get("bizStep", ""),
                        disposition=event.get("disposition", ""),
                        epcs=_epcs(event),
                        biz_location_gln=_gln_of(event.get("bizLocation")) or "",
                        read_point_gln=_gln_of(event.get("readPoint")) or "",
                    )
                )
            )
        outcomes = await self.ledger.submit_many(bodies) if bodies else []
        captured = []
        for event_hash, outcome in zip(new_hashes, outcomes, strict=True):
            if isinstance(outcome, LedgerRejected):
                if outcome.ledger_code != ResultCode.ALREADY_EXISTS:  # re-capturing an event is a no-op
                    raise InvalidArgument(
                        f"event {event_hash} was refused: {outcome.message}",
                        field_violations=[FieldViolation("epcis_document", outcome.message)],
                    )
                continue
            captured.append(pb.CapturedEvent(event_hash=event_hash, ledger_ref=common_pb2.LedgerRef(height=outcome.height, tx_hash=outcome.tx_hash)))
            if not await self.projector.wait_for(outcome.height, outcome.index, 30):
                raise DependencyUnavailable("committed on the ledger, but the query model is behind")
        # Events captured earlier keep their first ledger reference.
        known = {c.event_hash for c in captured}
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            for event_hash in hashes:
                if event_hash not in known:
                    await cur.execute("SELECT ledger_height, tx_hash FROM events WHERE event_hash = %s", (event_hash,))
                    row = await cur.fetchone()
                    if row:
                        captured.append(pb.CapturedEvent(event_hash=event_hash, ledger_ref=common_pb2.LedgerRef(height=row["ledger_height"], tx_hash=bytes(row["tx_hash"]))))
        order = {h: i for i, h in enumerate(hashes)}
        return pb.CaptureEventsResponse(events=sorted(captured, key=lambda c: order[c.event_hash]))

    def _where(self, f: pb.EventFilter) -> tuple[str, list, str]:
        conditions, values, join = [], [], ""
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
            values.append(f.from_time.ToDatetime(tzinfo=timezone.utc))
        if f.HasField("to_time"):
            conditions.append("e.event_time < %s")
            values.append(f.to_time.ToDatetime(tzinfo=timezone.utc))
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
        return pb.ListEventsResponse(events=[_event(r) for r in rows[:size]], next_page_token=token)

    async def ExportEvents(self, request: pb.ExportEventsRequest, context) -> pb.ExportEventsResponse:
        rows = await self._select(request.filter, None, MAX_EXPORT + 1)
        if len(rows) > MAX_EXPORT:
            raise InvalidArgument(
                f"more than {MAX_EXPORT} events match; narrow the filter", field_violations=[FieldViolation("filter", "too broad")]
            )
        document = epcis.epcis_document([r["document"] for r in rows], creation_date=datetime.now(timezone.utc))
        epcis.validate_document(document)
        return pb.ExportEventsResponse(epcis_document=json.dumps(document, separators=(",", ":")).encode())

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
