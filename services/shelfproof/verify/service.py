"""The verifier: a scanned Digital Link in, a verdict with the ledger's checked evidence out.

Hot-path costs are shared, not repeated: concurrent verifications are coalesced into one
``QueryMany`` call (one header, deduplicated keys), a header's commit signatures are checked once
per height, a batch's Merkle tree is built once from the content store and kept, and the immutable
facts of an item (its batch and leaf index) are read from the query model once.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from psycopg_pool import AsyncConnectionPool

from shelfproof.gs1.digital_link import DigitalLink
from shelfproof.gs1.labels import verify_label
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.core.rules.common import MAX_SCANS_PER_TX
from shelfproof.ledger.core.tx import MAX_TX_BYTES
from shelfproof.ledger.proofs.merkle import MerkleTree
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.client import call
from shelfproof.runtime.errors import DependencyUnavailable, DomainError
from shelfproof.verify import evidence as ev
from shelfproof.verify.verdict import Assessment, CloneRules, Facts, Verdict, assess

log = logging.getLogger(__name__)

HEADLINES = {
    Verdict.GENUINE: "Genuine product",
    Verdict.COUNTERFEIT: "Not a genuine code",
    Verdict.SUSPICIOUS: "Suspicious: this code may be copied",
    Verdict.RECALLED: "Recalled: do not use",
}


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class TTLCache:
    """A bounded LRU whose entries expire (ttl None = never)."""

    def __init__(self, size: int, ttl_s: float | None) -> None:
        self.size, self.ttl_s = size, ttl_s
        self._data: OrderedDict = OrderedDict()

    def get(self, key, default=None):
        hit = self._data.get(key)
        if hit is None:
            return default
        value, expires = hit
        if expires is not None and expires < time.monotonic():
            del self._data[key]
            return default
        self._data.move_to_end(key)
        return value

    def put(self, key, value, ttl_s: float | None = ...) -> None:
        ttl = self.ttl_s if ttl_s is ... else ttl_s
        self._data[key] = (value, None if ttl is None else time.monotonic() + ttl)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


# --- the query model (PostgreSQL): immutable item facts and display names -------------------------


@dataclass(frozen=True)
class ItemRow:
    batch_id: str
    leaf_index: int
    lot: str


class QueryModel:
    PREFETCH_BATCH_ITEMS = 100_000

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._items = TTLCache(500_000, None)  # an item's batch and leaf never change
        self._names = TTLCache(50_000, 60.0)

    async def item(self, gtin: str, serial: str) -> ItemRow | None:
        key = (gtin, serial)
        hit = self._items.get(key, False)
        if hit is not False:
            return hit
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT i.batch_id, i.leaf_index, b.lot, b.count FROM items i JOIN batches b USING (batch_id) "
                    "WHERE i.gtin = %s AND i.serial = %s",
                    key,
                )
            ).fetchone()
            if row is None:
                # Unknown codes are remembered briefly: a batch may be projected a moment after it commits.
                self._items.put(key, None, 5.0)
                return None
            batch_id, leaf_index, lot, count = row
            if count <= self.PREFETCH_BATCH_ITEMS:
                # Whoever scans one item of a batch is soon followed by scans of its siblings.
                rows = await (
                    await conn.execute("SELECT serial, leaf_index FROM items WHERE batch_id = %s", (batch_id,))
                ).fetchall()
                for sibling, index in rows:
                    self._items.put((gtin, sibling), ItemRow(batch_id, index, lot))
        item = ItemRow(batch_id, leaf_index, lot)
        self._items.put(key, item)
        return item

    async def names(self, gtin: str, glns: list[str]) -> tuple[dict, dict[str, str]]:
        """(product display fields, location names by GLN), cached for a minute."""
        product = self._names.get(("p", gtin))
        missing = [g for g in set(glns) if self._names.get(("l", g)) is None]
        if product is None or missing:
            async with self.pool.connection() as conn:
                if product is None:
                    row = await (await conn.execute("SELECT name, brand FROM products WHERE gtin = %s", (gtin,))).fetchone()
                    product = {"name": row[0], "brand": row[1]} if row else {"name": "", "brand": ""}
                    self._names.put(("p", gtin), product)
                if missing:
                    rows = await (
                        await conn.execute("SELECT gln, name FROM locations WHERE gln = ANY(%s)", (missing,))
                    ).fetchall()
                    found = dict(rows)
                    for gln in missing:
                        self._names.put(("l", gln), found.get(gln, ""))
        return product, {g: self._names.get(("l", g)) or "" for g in glns}


# --- the ledger: coalesced, checked reads ------------------------------------------------------------


@dataclass
class LedgerRead:
    header: ev.CheckedHeader
    values: list[pb.StoreValue]
    records: dict[str, object]
    proofs: list[dict]  # ev.value_json of each value


class LedgerReader:
    """Concurrent reads share one QueryMany call per short window; its header and every value's
    proof are checked against the trusted validator sets before anyone sees them."""

    MAX_KEYS = 256

    def __init__(
        self, stub: ledger_pb2_grpc.LedgerServiceStub, chain_id: str, trusted: set[bytes], window_s: float = 0.002,
        deadline_s: float = 3.0,
    ) -> None:
        self.stub = stub
        self.chain_id = chain_id
        self.trusted = trusted
        self.window_s = window_s
        self.deadline_s = deadline_s
        self._pending: list[tuple[list[tuple[str, bytes]], asyncio.Future]] = []
        self._pending_keys: set[tuple[str, bytes]] = set()
        self._timer: asyncio.TimerHandle | None = None
        # Values already checked against an app hash: the brand's key, the product and the batch
        # come back in every call at a height, and a proof that held once holds again.
        self._checked = TTLCache(20_000, None)
        self.calls = 0
        self.reads = 0

    async def read(self, keys: list[tuple[str, bytes]]) -> LedgerRead:
        loop = asyncio.get_running_loop()
        if len(self._pending_keys) + sum(k not in self._pending_keys for k in keys) > self.MAX_KEYS:
            self._flush()
        future = loop.create_future()
        self._pending.append((keys, future))
        self._pending_keys.update(keys)
        if self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending, self._pending_keys = self._pending, [], set()
        if batch:
            asyncio.get_running_loop().create_task(self._serve(batch))

    async def _serve(self, batch: list[tuple[list[tuple[str, bytes]], asyncio.Future]]) -> None:
        unique = list(dict.fromkeys(k for keys, _ in batch for k in keys))
        self.calls += 1
        self.reads += len(batch)
        try:
            reply = await call(
                self.stub.QueryMany,
                pb.QueryManyRequest(keys=[pb.StoreKey(store=s, key=k) for s, k in unique], prove=True),
                idempotent=True, deadline_s=self.deadline_s,
            )
            header = ev.check_header(self.chain_id, reply.height, reply.signed_header, reply.validator_set, self.trusted)
            by_key = {(v.store, v.key): v for v in reply.values}
            checked = {k: self._check(header, by_key[k]) for k in unique}  # (records, value_json)
        except (DomainError, ev.EvidenceError, KeyError) as err:
            if isinstance(err, ev.EvidenceError):
                log.error("ledger evidence failed its check", extra={"error": str(err)})
                err = DependencyUnavailable(f"the ledger's evidence did not check out: {err}")
            elif isinstance(err, KeyError):
                err = DependencyUnavailable("the ledger left out a requested key")
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for keys, future in batch:
            if future.done():
                continue
            records: dict[str, object] = {}
            for k in keys:
                records.update(checked[k][0])
            future.set_result(LedgerRead(header, [by_key[k] for k in keys], records, [checked[k][1] for k in keys]))

    def _check(self, header: ev.CheckedHeader, value: pb.StoreValue) -> tuple[dict[str, object], dict]:
        """The value's records, its proof checked, and its evidence JSON: both kept for the app hash."""
        cache_key = (header.app_hash, value.store, value.key, value.value)
        checked = self._checked.get(cache_key)
        if checked is None:
            checked = (ev.check_values(header, [value]), ev.value_json(value))
            self._checked.put(cache_key, checked)
        return checked

    async def content(self, sha256: bytes) -> bytes:
        reply = await call(self.stub.GetContent, pb.GetContentRequest(sha256=sha256), idempotent=True, deadline_s=60)
        return reply.content


class BatchTrees:
    """Each batch's serial tree, built once from the content store and checked against the proven
    root; kept while the total of kept leaves stays under ``max_leaves``."""

    def __init__(self, reader: LedgerReader, max_leaves: int = 2_000_000) -> None:
        self.reader = reader
        self.max_leaves = max_leaves
        self._trees: OrderedDict[str, MerkleTree] = OrderedDict()
        self._building: dict[str, asyncio.Task] = {}

    async def get(self, batch: st.BatchRecord) -> MerkleTree:
        batch_id = batch.batch.batch_id
        tree = self._trees.get(batch_id)
        if tree is not None:
            self._trees.move_to_end(batch_id)
            return tree
        task = self._building.get(batch_id)
        if task is None:
            task = asyncio.ensure_future(self._build(batch))
            self._building[batch_id] = task
            task.add_done_callback(lambda _: self._building.pop(batch_id, None))
        return await asyncio.shield(task)

    async def _build(self, batch: st.BatchRecord) -> MerkleTree:
        content = await self.reader.content(batch.batch.serials_content_hash)
        if hashlib.sha256(content).digest() != batch.batch.serials_content_hash:
            raise DependencyUnavailable("the content store returned a different serial list")
        tree = await asyncio.to_thread(lambda: MerkleTree.from_items([s.encode() for s in content.decode("ascii").split("\n")]))
        if tree.root != batch.batch.serials_merkle_root:
            raise DependencyUnavailable(f"batch {batch.batch.batch_id}: serial list does not match its committed root")
        self._trees[batch.batch.batch_id] = tree
        while sum(len(t) for t in self._trees.values()) > self.max_leaves and len(self._trees) > 1:
            self._trees.popitem(last=False)
        return tree


# --- scans: recorded without personal data, batched into ledger transactions ------------------------


# Room for the envelope around a body (signer, key id, nonce, signature) under the ledger's bound.
_ENVELOPE_BYTES = 1024


def scan_transactions(scans: list[txpb.Scan]) -> list[txpb.TransactionBody]:
    """RecordScans bodies of at most MAX_SCANS_PER_TX scans each and small enough to be one ledger
    transaction (a scan with its batch id is about 75 bytes: 1,000 of them would not fit)."""
    bodies, chunk, size = [], [], 0
    for scan in scans:
        cost = scan.ByteSize() + 4  # the field's tag and length
        if chunk and (len(chunk) == MAX_SCANS_PER_TX or size + cost > MAX_TX_BYTES - _ENVELOPE_BYTES):
            bodies.append(txpb.TransactionBody(record_scans=txpb.RecordScans(scans=chunk)))
            chunk, size = [], 0
        chunk.append(scan)
        size += cost
    if chunk:
        bodies.append(txpb.TransactionBody(record_scans=txpb.RecordScans(scans=chunk)))
    return bodies


class ScanRecorder:
    """Buffers scans (GTIN, serial, coarse cell or time zone region, time: nothing about the person) and
    commits them as RecordScans transactions of up to 1,000 scans (``scan_transactions``), once a second,
    each after ``settle_s`` in the buffer: the page's own follow-up (its time zone, a moment after the
    first look) still joins its scan. Repeats of one item by one client within ``repeat_window_s`` count
    once; the client key is a salted hash kept in memory only."""

    def __init__(
        self, ledger: LedgerClient | None, flush_interval_s: float = 1.0, repeat_window_s: float = 600.0,
        settle_s: float = 2.0,
    ) -> None:
        self.ledger = ledger
        self.flush_interval_s = flush_interval_s
        self.settle_s = settle_s
        self._salt = hashlib.sha256(str(time.time_ns()).encode()).digest()
        self._recent = TTLCache(200_000, repeat_window_s)
        self._buffer: list[txpb.Scan] = []
        self._buffered_at: list[float] = []  # monotonic time each buffered scan arrived
        self._task: asyncio.Task | None = None
        self.recorded = 0
        self.committed = 0
        self.dropped = 0
        self.max_buffer = 200_000

    def record(
        self, client: str, gtin: str, serial: str, cell: str, unix_s: int, batch_id: str = "", region: str = ""
    ) -> bool:
        """True when this scan counts (it is not a repeat from the same client)."""
        who = hashlib.blake2b(self._salt + client.encode() + b"\0" + gtin.encode() + b"/" + serial.encode(), digest_size=16).digest()
        earlier = self._recent.get(who)
        if earlier is not None:
            if cell and not earlier.cell:
                earlier.cell = cell  # the consumer shared a location after the first look
                earlier.region = ""
            elif region and not earlier.cell and not earlier.region:
                earlier.region = region  # the page sent its time zone after the first look
            return False
        scan = txpb.Scan(
            gtin=gtin, serial=serial, cell=cell, scan_unix_s=unix_s, batch_id=batch_id, region="" if cell else region
        )
        if len(self._buffer) >= self.max_buffer:
            self.dropped += 1
            return False
        self._buffer.append(scan)
        self._buffered_at.append(time.monotonic())
        self._recent.put(who, scan)
        self.recorded += 1
        return True

    def start(self) -> None:
        if self.ledger is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush(settled_only=True)
            except Exception:  # noqa: BLE001 - a failed flush must not stop later ones
                log.exception("recording scans failed")

    async def flush(self, settled_only: bool = False) -> None:
        """Commit the buffered scans (with ``settled_only``, those buffered ``settle_s`` ago or more)."""
        if not self._buffer or self.ledger is None:
            return
        cut = bisect.bisect_right(self._buffered_at, time.monotonic() - self.settle_s) if settled_only else len(self._buffer)
        if not cut:
            return
        scans, self._buffer, self._buffered_at = self._buffer[:cut], self._buffer[cut:], self._buffered_at[cut:]
        bodies = scan_transactions(scans)
        results = await self.ledger.submit_many(bodies)
        for body, result in zip(bodies, results):
            if isinstance(result, Exception):
                log.warning("scans rejected by the ledger", extra={"error": str(result), "scans": len(body.record_scans.scans)})
            else:
                self.committed += len(body.record_scans.scans)


# --- the verifier --------------------------------------------------------------------------------------


class Verifier:
    # How long a scan waits for a just-committed batch to become provable (a block or two).
    PROVABLE_WAIT_S = 3.0

    def __init__(
        self, query_model: QueryModel, reader: LedgerReader, scans: ScanRecorder, rules: CloneRules = CloneRules()
    ) -> None:
        self.query_model = query_model
        self.reader = reader
        self.trees = BatchTrees(reader)
        self.scans = scans
        self.rules = rules
        self._rules_json = dataclasses.asdict(rules)
        self._signatures = TTLCache(200_000, None)
        # A serial's path to its batch's committed root, checked once: the batch's tree never changes.
        self._members = TTLCache(200_000, None)
        # Called with each scan's verdict (runtime/metrics.py).
        self.verdict_observers: list[Callable[[str], None]] = []

    def _signature_ok(self, link: DigitalLink, key: st.KeyRecord) -> bool:
        cache_key = (link.gtin, link.serial, link.signature, key.public_key)
        ok = self._signatures.get(cache_key)
        if ok is None:
            ok = verify_label(link, key.public_key)
            self._signatures.put(cache_key, ok)
        return ok

    async def verify(
        self, link: DigitalLink, *, client: str, cell: str = "", region: str = "", now: float | None = None
    ) -> dict:
        """The report for one scan (the JSON the API returns and the page renders). ``region``: the
        coarse region of the phone's time zone (``geo.region_of_time_zone``), used when no cell is."""
        region = "" if cell else region
        now = time.time() if now is None else now
        gtin, serial = link.gtin, link.serial or ""
        row = await self.query_model.item(gtin, serial)
        kid = ev.ItemRef.key_id_of(link.key_id)
        ref = ev.ItemRef(gtin, serial, kid, row.batch_id if row else "", row.lot if row else "")
        read = await self.reader.read(ref.keys())
        if row is not None and read.records.get("batches") is None:
            read = await self._await_provable_batch(ref)
        rec = read.records
        key, batch = rec.get("keys"), rec.get("batches")
        if batch is not None and (batch.batch.gtin != gtin or batch.batch.lot != ref.lot):
            raise DependencyUnavailable("the query model and the ledger disagree about this item's batch")
        membership = None
        if batch is not None and row is not None:
            tree = await self.trees.get(batch)
            if row.leaf_index < len(tree):
                membership = tree.proof(row.leaf_index)
        in_batch = False
        if membership is not None:
            member_key = (batch.batch.serials_merkle_root, batch.batch.count, serial, membership.index)
            in_batch = self._members.get(member_key)
            if in_batch is None:
                try:
                    ev.check_membership(serial, membership, batch)
                    in_batch = True
                except ev.EvidenceError:
                    in_batch = False
                self._members.put(member_key, in_batch)
            if not in_batch:
                membership = None
        facts = Facts(
            gtin=gtin, serial=serial, signature_present=link.signature is not None,
            signature_valid=self._signature_ok(link, key) if key is not None and link.signature is not None else None,
            key=key, product=rec.get("products"), batch=batch, in_batch=in_batch,
            recall=rec.get("recalls"), void=rec.get("status"), item=rec.get("items"), scans=rec.get("scans"),
            markets=rec.get("markets"),
            scan_cell=cell, scan_unix_s=int(now), today=datetime.fromtimestamp(now, timezone.utc).date(),
            scan_region=region,
        )
        verdict = assess(facts, self.rules)
        for observe in self.verdict_observers:
            observe(verdict.verdict.value)
        recorded = False
        # Scans of voided labels are recorded too: the ledger turns them into the brand's alerts.
        if verdict.verdict != Verdict.COUNTERFEIT or (facts.void is not None and in_batch):
            recorded = self.scans.record(
                client, gtin, serial, cell, int(now), batch.batch.batch_id if in_batch else "", region=region
            )
        return await self._report(link, facts, verdict, read, membership, recorded, now)

    async def _await_provable_batch(self, ref: ev.ItemRef) -> LedgerRead:
        """The query model holds the item's batch (it projects committed blocks) but the newest height
        with a header above it does not yet: the batch committed moments ago. Read again until its
        block can be proven; never call a code that exists "not genuine" for being new."""
        deadline = time.monotonic() + self.PROVABLE_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            read = await self.reader.read(ref.keys())
            if read.records.get("batches") is not None:
                return read
        raise DependencyUnavailable(
            "this code's batch was committed moments ago and cannot be proven yet; try again in a few seconds"
        )

    async def _report(
        self, link: DigitalLink, f: Facts, verdict: Assessment, read: LedgerRead, membership, recorded: bool, now: float
    ) -> dict:
        custody = list(f.item.custody) if f.item else []
        product_names, places = await self.query_model.names(f.gtin, [c.biz_location_gln for c in custody if c.biz_location_gln])
        journey = []
        if f.batch is not None and f.in_batch:
            journey.append({"step": "commissioned", "disposition": "", "location_gln": "", "location": "", "height": f.batch.height, "time": None})
        journey += [
            {
                "step": c.biz_step or "event", "disposition": c.disposition, "location_gln": c.biz_location_gln,
                "location": places.get(c.biz_location_gln, ""), "height": c.height,
                "time": _iso(c.block_unix_s) if c.block_unix_s else None,
            }
            for c in custody
        ]
        warnings = list(verdict.warnings)
        last_place = next((c.biz_location_gln for c in reversed(custody) if c.biz_location_gln), "")
        if last_place and not places.get(last_place):
            # Reported, not proven: the registry knows no such location of a supply-chain member.
            warnings.append(f"Its last custody step was at {last_place}, which is not a registered location.")
        # Present and absent keys alike are proven (absence by the key's neighbours in its store's tree).
        proven = ev.proven_facts(read.values, read.records)
        if membership is not None:
            proven.append("the serial is in its batch (Merkle path to the committed root)")
        reported = ["product name, brand and location names come from the query model"]
        if f.batch is None:
            reported.append("the query model knows no batch holding this serial")
        batch = f.batch.batch if f.batch else None
        return {
            "verdict": verdict.verdict.value,
            "headline": HEADLINES[verdict.verdict],
            "reasons": verdict.reasons,
            "warnings": warnings,
            "product": {
                "gtin": f.gtin, "serial": f.serial, "name": product_names["name"], "brand": product_names["brand"],
                "brand_owner_gln": f.product.brand_owner_gln if f.product else "",
                "lot": batch.lot if batch else "", "expiry": batch.expiry if batch else "",
            },
            "journey": journey,
            "facts": {"proven": proven, "reported": reported},
            "evidence": ev.evidence_json(read.header, read.values, membership, read.proofs),
            "scan": {
                "recorded": recorded, "cell": f.scan_cell or None, "region": f.scan_region or None, "time": _iso(now),
                "unix_s": int(now),
            },
            # The clone-signal thresholds this verdict used (policy, not facts).
            "rules": self._rules_json,
            "checked_at": _iso(now),
        }
