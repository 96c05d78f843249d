"""The registry's projection of the ledger into PostgreSQL: products, locations, batches and items,
recalls, events and inventory (the cursor and the follow loop are ``shelfproof.db.projection``)."""

from __future__ import annotations

import asyncio
import json
import logging
import math

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from shelfproof.db.projection import Projector, block_time
from shelfproof.gs1.epcis import (epcs_of, event_hash_id, identifiers_of, item_of, location_gln, parse_event_time,
                                  place_id)
from shelfproof.ledger.proofs.merkle import MerkleTree
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import transaction_pb2 as txpb

log = logging.getLogger(__name__)
async def _apply_register_product(cur, result: pb.TransactionResult, signer_org: str, a: txpb.RegisterProduct) -> None:
    at = block_time(result)
    await cur.execute(
        """INSERT INTO products (gtin, name, brand, category, net_content, attributes, brand_owner_gln,
                                 create_time, update_time, ledger_height, tx_hash)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (a.gtin, a.name, a.brand, a.category, a.net_content, Jsonb({x.key: x.value for x in a.attributes}),
         signer_org, at, at, result.height, result.tx_hash),
    )


async def _apply_update_product(cur, result: pb.TransactionResult, a: txpb.UpdateProduct) -> None:
    assignments, values = [], []
    for path in a.update_paths:
        if path == "attributes":
            assignments.append("attributes = %s")
            values.append(Jsonb({x.key: x.value for x in a.product.attributes}))
        else:
            assignments.append(f"{path} = %s")  # paths were checked by every validator
            values.append(getattr(a.product, path))
    await cur.execute(
        f"UPDATE products SET {', '.join(assignments)}, update_time = %s, ledger_height = %s, tx_hash = %s"
        " WHERE gtin = %s",
        (*values, block_time(result), result.height, result.tx_hash, a.product.gtin),
    )


async def _apply_commission_batch(
    cur, result: pb.TransactionResult, signer_org: str, a: txpb.CommissionBatch, serials: list[str]
) -> None:
    await cur.execute(
        """INSERT INTO batches (batch_id, gtin, lot, expiry, count, serials_merkle_root, serials_sha256,
                                brand_owner_gln, create_time, ledger_height, tx_hash)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (a.batch_id, a.gtin, a.lot, a.expiry or None, a.count, a.serials_merkle_root, a.serials_content_hash,
         signer_org, block_time(result), result.height, result.tx_hash),
    )
    # COPY text format, built in bulk: serials are [A-Za-z0-9]/CSET 82 (no tabs, newlines or backslashes).
    prefix = f"{a.gtin}\t"
    suffix = f"\t{a.batch_id}\t"
    chunk = 50_000
    async with cur.copy("COPY items (gtin, serial, batch_id, leaf_index) FROM STDIN") as copy:
        for start in range(0, len(serials), chunk):
            lines = [
                f"{prefix}{serial}{suffix}{start + offset}\n"
                for offset, serial in enumerate(serials[start:start + chunk])
            ]
            await copy.write("".join(lines).encode("ascii"))


async def _apply_recall_lot(cur, result: pb.TransactionResult, signer: str, a: txpb.RecallLot) -> None:
    await cur.execute(
        "INSERT INTO recalls VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (a.gtin, a.lot, a.reason, signer, block_time(result), result.height, result.tx_hash),
    )


async def _apply_register_location(cur, result: pb.TransactionResult, a: txpb.RegisterLocation) -> None:
    await cur.execute(
        "INSERT INTO locations VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (a.gln, a.organization_gln, a.name, a.street, a.city, a.postal_code, a.country_code or None,
         result.height, result.tx_hash),
    )


# Inventory effect of an event's business step on the stock at its location (CBV 2.0 words).
STOCK_IN = frozenset({"commissioning", "receiving"})
STOCK_OUT = frozenset({"shipping", "retail_selling", "destroying", "decommissioning", "dispensing"})


def _cbv_word(value: str | None) -> str:
    """`shipping` from `shipping`, `https://ref.gs1.org/cbv/BizStep-shipping` or `urn:epcglobal:cbv:bizstep:shipping`."""
    if not value:
        return ""
    return value.rsplit("-", 1)[-1] if value.startswith("http") else value.rsplit(":", 1)[-1]


def _json_number(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400: no JSON number PostgreSQL and Python agree on
        raise ValueError(f"number out of range: {text[:20]}")
    return number


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


def _event_json(raw: bytes) -> dict:
    """The recorded event. Any member can write one, so what PostgreSQL cannot hold (not a JSON object,
    NUL characters, lone surrogates, NaN or Infinity, numbers beyond a double) reads as {} rather than
    stopping the projection."""
    try:
        event = json.loads(raw, parse_constant=_not_json, parse_float=_json_number)
        if b"\\u" in raw:
            text = json.dumps(event, ensure_ascii=False)
            text.encode("utf-8")
            if "\\u0000" in text:
                return {}
    except (ValueError, RecursionError, UnicodeError):
        return {}
    return event if isinstance(event, dict) else {}


def _text(value) -> str | None:
    """A column value from member input: text without NULs, or None."""
    return value.replace("\x00", "") or None if isinstance(value, str) else None


async def _apply_record_event(cur, result: pb.TransactionResult, signer: str, a: txpb.RecordEvent, event: dict) -> None:
    """One recorded event: a declaration, or a captured event (a run of one)."""
    declaration = event.get("errorDeclaration")
    if isinstance(declaration, dict):
        await _apply_error_declaration(cur, result, signer, a, event, declaration)
    else:
        await _apply_captured_events(cur, [(result, signer, a, event)])


# The columns of a captured event; a declaration's four follow them where one applies.
EVENT_COLUMNS = ("event_hash, event_type, event_time, action, biz_step, disposition, biz_location_gln, document, "
                 "recorded_by, ledger_height, tx_index, tx_hash, event_id, record_time, read_point, biz_location")
# Their array types, for a run of events inserted by one statement (unnest); the document travels as the
# recorded JSON text, cast by PostgreSQL, rather than parsed and serialized again here.
EVENT_ARRAYS = ("text", "text", "timestamptz", "text", "text", "text", "text", "text", "text", "bigint", "int", "bytea",
                "text", "timestamptz", "text", "text")
_DOCUMENT = EVENT_COLUMNS.split(", ").index("document")


def _document_text(raw: bytes, event: dict) -> str:
    """The recorded JSON as PostgreSQL can hold it: the bytes themselves when they are what ``event`` was
    read from (numbers kept as written), else ``event`` serialized ({} for what ``_event_json`` refused)."""
    if event:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return json.dumps(event, ensure_ascii=False)


def _event_row(result, signer: str, event_hash: str, a: txpb.RecordEvent, event: dict, document=None) -> tuple:
    """The values of EVENT_COLUMNS for one event (``document``: its JSON, else ``event`` as Jsonb)."""
    return (event_hash, a.event_type, parse_event_time(event.get("eventTime")) or block_time(result), _text(event.get("action")),
            _text(a.biz_step) or _text(event.get("bizStep")), _text(a.disposition) or _text(event.get("disposition")),
            a.biz_location_gln or location_gln(event.get("bizLocation")),
            Jsonb(event) if document is None else document, signer, result.height, result.index,
            result.tx_hash, _text(event.get("eventID")), block_time(result), place_id(event.get("readPoint")),
            place_id(event.get("bizLocation")))


async def _insert_event(cur, result, signer: str, event_hash: str, a: txpb.RecordEvent, event: dict,
                        declaration: dict | None = None, declaration_hash: str | None = None) -> bool:
    await cur.execute(
        f"""INSERT INTO events ({EVENT_COLUMNS}, error_declaration, declaration_hash, declaration_height, declaration_tx_hash)
           VALUES ({", ".join(["%s"] * 20)}) ON CONFLICT (event_hash) DO NOTHING""",
        (*_event_row(result, signer, event_hash, a, event),
         Jsonb(declaration) if declaration is not None else None, declaration_hash,
         result.height if declaration_hash else None, result.tx_hash if declaration_hash else None),
    )
    if cur.rowcount != 1:
        return False
    identifiers = identifiers_of(event)
    if identifiers:  # what the EPCIS REST binding's MATCH_ parameters search
        await cur.execute(
            "INSERT INTO event_epcs SELECT %s, f, e FROM unnest(%b::text[], %b::text[]) AS t(f, e) ON CONFLICT DO NOTHING",
            (event_hash, [f for f, _ in identifiers], [e for _, e in identifiers]),
        )
    return True


async def _insert_items(cur, event_hash: str, epcs) -> list[tuple[str, str]]:
    items = [item for item in (item_of(epc) for epc in epcs) if item is not None]
    if items:  # one statement, not one round trip per item
        await cur.execute(
            "INSERT INTO event_items SELECT %s, g, s FROM unnest(%b::text[], %b::text[]) AS t(g, s) ON CONFLICT DO NOTHING",
            (event_hash, [g for g, _ in items], [s for _, s in items]),
        )
    return items


def _stock_change(biz_step: str, event: dict, biz_location: str | None, items: list[tuple[str, str]],
                  direction: int) -> tuple[str, dict[str, int]] | None:
    """(location, units per GTIN) an event moves, or None when it moves no stock."""
    step = _cbv_word(biz_step)
    sign = 1 if step in STOCK_IN else -1 if (step in STOCK_OUT or event.get("action") == "DELETE") else 0
    # Goods leaving a site are often recorded at its read point, with no business location.
    location = biz_location if sign > 0 else (biz_location or location_gln(event.get("readPoint")))
    if sign == 0 or location is None or not items:
        return None
    per_gtin: dict[str, int] = {}
    for gtin, _ in items:
        per_gtin[gtin] = per_gtin.get(gtin, 0) + sign * direction
    return location, per_gtin


async def _add_stock(cur, changes: dict[tuple[str, str], int], height: int) -> None:
    """Add units per (GTIN, location) to the stock positions, as of ``height``."""
    if not changes:
        return
    keys = sorted(changes)
    await cur.execute(
        """INSERT INTO inventory_positions SELECT g, l, d, %s FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS t(g, l, d)
           ON CONFLICT (gtin, location_gln) DO UPDATE
           SET quantity = inventory_positions.quantity + EXCLUDED.quantity, ledger_height = EXCLUDED.ledger_height""",
        (height, [g for g, _ in keys], [loc for _, loc in keys], [changes[k] for k in keys]),
    )


async def _apply_inventory(cur, result, biz_step: str, event: dict, biz_location: str | None,
                           items: list[tuple[str, str]], direction: int) -> None:
    change = _stock_change(biz_step, event, biz_location, items, direction)
    if change is not None:
        location, per_gtin = change
        await _add_stock(cur, {(g, location): d for g, d in per_gtin.items()}, result.height)


async def _apply_captured_events(cur, run: list[tuple[pb.TransactionResult, str, txpb.RecordEvent, dict]]) -> None:
    """A run of consecutive captured events (no error declarations) in four statements, not four per
    event: the events (those already recorded by a declaration are skipped, as one at a time), their
    identifiers and items, and the stock they move."""
    rows = [_event_row(result, signer, a.event_hash, a, event, _document_text(a.epcis_event_json, event))
            for result, signer, a, event in run]
    # (%b: arrays go over in binary; psycopg writes a text array element by element in Python, which
    # was a third of the registry's CPU under capture load.)
    casts = ", ".join(f"%b::{kind}[]" for kind in EVENT_ARRAYS)
    columns = ", ".join(f"c{k}::jsonb" if k == _DOCUMENT else f"c{k}" for k in range(len(EVENT_ARRAYS)))
    names = ", ".join(f"c{k}" for k in range(len(EVENT_ARRAYS)))
    await cur.execute(
        f"INSERT INTO events ({EVENT_COLUMNS}) SELECT {columns} FROM unnest({casts}) AS t({names})"
        " ON CONFLICT (event_hash) DO NOTHING RETURNING event_hash",
        [list(column) for column in zip(*rows)],
    )
    inserted = {row[0] for row in await cur.fetchall()}
    identifiers, items, stock = ([], [], []), ([], [], []), {}
    for result, _, a, event in run:
        if a.event_hash not in inserted:
            continue
        for field_name, value in identifiers_of(event):
            for column, v in zip(identifiers, (a.event_hash, field_name, value)):
                column.append(v)
        event_items = [item for item in (item_of(epc) for epc in a.epcs) if item is not None]
        for gtin, serial in event_items:
            for column, v in zip(items, (a.event_hash, gtin, serial)):
                column.append(v)
        change = _stock_change(a.biz_step, event, a.biz_location_gln or location_gln(event.get("bizLocation")), event_items, 1)
        if change is not None:
            location, per_gtin = change
            for gtin, units in per_gtin.items():
                stock[(gtin, location)] = stock.get((gtin, location), 0) + units
    if identifiers[0]:
        await cur.execute("INSERT INTO event_epcs SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT DO NOTHING",
                          list(identifiers))
    if items[0]:
        await cur.execute("INSERT INTO event_items SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT DO NOTHING",
                          list(items))
    await _add_stock(cur, stock, run[-1][0].height)


async def _apply_error_declaration(cur, result, signer: str, a: txpb.RecordEvent, event: dict, declaration: dict) -> None:
    """A copy of an event that declares it erroneous: linked to the declared event (created from the copy
    if it was never captured), with its corrective events; a declared event's inventory effect is undone."""
    try:
        declared = event_hash_id(event)  # errorDeclaration is not part of the hash: the declared event's id
    except Exception:  # a member's malformed record must not stop the projection
        log.warning("error declaration %s is not a hashable event; skipped", a.event_hash)
        return
    await cur.execute(
        "SELECT error_declaration IS NOT NULL, biz_step, biz_location_gln, document FROM events WHERE event_hash = %s",
        (declared,),
    )
    row = await cur.fetchone()
    if row is None:
        await _insert_event(cur, result, signer, declared, a, event, declaration, a.event_hash)
        await _insert_items(cur, declared, epcs_of(event))
    else:
        await cur.execute(
            """UPDATE events SET error_declaration = %s, declaration_hash = %s, declaration_height = %s,
                                 declaration_tx_hash = %s WHERE event_hash = %s""",
            (Jsonb(declaration), a.event_hash, result.height, result.tx_hash, declared))
        if not row[0]:  # the first declaration undoes the event's effect on stock
            original = row[3] if isinstance(row[3], dict) else {}
            await cur.execute("SELECT gtin, serial FROM event_items WHERE event_hash = %s", (declared,))
            items = [(g, s) for g, s in await cur.fetchall()]
            await _apply_inventory(cur, result, row[1] or "", original, row[2], items, -1)
    corrective = [c for c in declaration.get("correctiveEventIDs") or [] if isinstance(c, str) and len(c) <= 2048]
    if corrective:
        await cur.executemany(
            "INSERT INTO event_corrections VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(declared, c) for c in corrective[:1000]],
        )


class RegistryProjector(Projector):
    NAME = "registry"

    def __init__(self, pool: AsyncConnectionPool, ledger: ledger_pb2_grpc.LedgerServiceStub) -> None:
        super().__init__(pool, ledger)
        # Called with a GTIN after its product row changed (read caches evict it).
        self.product_changed: list = []
        self._agents_org: dict[str, str] = {}

    async def prepare(self, action: str, signed: txpb.SignedTransaction, body: txpb.TransactionBody) -> list[str]:
        return await self._serials(body.commission_batch) if action == "commission_batch" else []

    async def apply_group(self, cur, parsed: list[tuple]) -> None:
        """Consecutive captured events in one run of statements (``_apply_captured_events``), anything
        else in between one at a time, in ledger order."""
        if any(action == "record_event" for *_, action, _ in parsed):
            # The cursor commits with the events, and the ledger can replay what a crash loses, so this
            # commit need not wait for the WAL flush (events arrive by the thousand).
            await cur.execute("SET LOCAL synchronous_commit = off")
        run: list = []
        for result, signed, body, action, prepared in parsed:
            if action == "record_event":
                event = _event_json(body.record_event.epcis_event_json)
                if not isinstance(event.get("errorDeclaration"), dict):
                    run.append((result, signed.signer, body.record_event, event))
                    continue
            if run:
                await _apply_captured_events(cur, run)
                run = []
            await self.apply(cur, result, signed, body, action, prepared)
        if run:
            await _apply_captured_events(cur, run)

    async def apply(self, cur, result, signed, body, action, serials: list[str]) -> None:
        if action == "register_product":
            await _apply_register_product(cur, result, await self._org_of(signed.signer), body.register_product)
        elif action == "update_product":
            await _apply_update_product(cur, result, body.update_product)
        elif action == "record_event":
            await _apply_record_event(cur, result, signed.signer, body.record_event, _event_json(body.record_event.epcis_event_json))
        elif action == "register_location":
            await _apply_register_location(cur, result, body.register_location)
        elif action == "void_labels":
            await cur.execute(
                "UPDATE items SET voided_height = %s, void_reason = %s WHERE gtin = %s AND serial = ANY(%s)",
                (result.height, body.void_labels.reason, body.void_labels.gtin, list(body.void_labels.serials)),
            )
        elif action == "recall_lot":
            await _apply_recall_lot(cur, result, signed.signer, body.recall_lot)
        elif action == "commission_batch":
            org = await self._org_of(signed.signer)
            # Check the list against the committed root while PostgreSQL ingests it; a mismatch
            # aborts the transaction, so nothing of the batch is written.
            await asyncio.gather(
                asyncio.to_thread(self._check_root, body.commission_batch, serials),
                _apply_commission_batch(cur, result, org, body.commission_batch, serials),
            )

    def applied(self, action: str, body: txpb.TransactionBody) -> None:
        if action == "update_product":
            for listener in self.product_changed:
                listener(body.update_product.product.gtin)

    async def _serials(self, batch: txpb.CommissionBatch) -> list[str]:
        """The batch's serial list from the content store, checked against what the ledger committed."""
        reply = await self.ledger.GetContent(pb.GetContentRequest(sha256=batch.serials_content_hash), timeout=60)
        serials = reply.content.decode("ascii").split("\n")
        if len(serials) != batch.count:
            raise ValueError(f"batch {batch.batch_id}: {len(serials)} serials in the content store, {batch.count} committed")
        return serials

    @staticmethod
    def _check_root(batch: txpb.CommissionBatch, serials: list[str]) -> None:
        if MerkleTree.from_items([s.encode() for s in serials]).root != batch.serials_merkle_root:
            raise ValueError(f"batch {batch.batch_id}: serial list does not match the committed Merkle root")

    async def _org_of(self, agent_id: str) -> str:
        # An agent's organization never changes, so the answer can be kept.
        if agent_id not in self._agents_org:
            from shelfproof.ledger.v1 import state_pb2 as st

            answer = await self.ledger.Query(pb.QueryRequest(store="agents", key=agent_id.encode()), timeout=10)
            self._agents_org[agent_id] = st.AgentRecord.FromString(answer.value).organization_gln
        return self._agents_org[agent_id]
