"""`shelfproof bench ledger`: committed transactions per second and commit latency.

The method of CometBFT's QA reports: a load generator offers signed transactions at a fixed rate,
each carrying its creation time; latency is the committing block's time minus that creation time.
Transactions are ~1 KiB custody events (RecordEvent with its EPCIS JSON) from 100+ accounts, so every
node verifies every signature. The ledger service (adapter + engine, and for CometBFT the validators
and their ABCI application processes) runs as its own process tree, started and stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import tempfile
import time
from pathlib import Path

import grpc

from shelfproof.bench import Benchmark
from shelfproof.bench.ledger_process import LedgerProcess
from shelfproof.bench.stats import percentile
from shelfproof.ledger.genesis import CONSORTIUM_GLN, Member, build_genesis
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.client import insecure_channel

CHAIN_ID = "shelfproof-bench"
# The brand's own agents record events about its own items (the ledger scopes events to the signer).
BRAND_GLN = "0614141000005"
# The ledger service refuses a genesis without a consortium: the operator is one, the brand signs.
ORGS = [Member(CONSORTIUM_GLN, "operator"), Member(BRAND_GLN, "brand", ("0614141",))]
AGENTS_PER_ORG = 104  # 104 accounts of the brand
SUSTAINED = 0.95  # committed rate / offered rate that counts as keeping up


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["embedded", "cometbft"], default="embedded")
    parser.add_argument("--validators", type=int, default=1)
    parser.add_argument("--rate", type=float, default=None, help="offered tx/s; omitted = sweep")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--drain-seconds", type=float, default=15.0, help="wait for commits after offering")


def _genesis(agents_per_org: int):
    return build_genesis(CHAIN_ID, ORGS, agents_per_org=agents_per_org, consortium_gln=CONSORTIUM_GLN)


def _brand_signers(genesis) -> list:
    return [
        account.signer(CHAIN_ID) for account in genesis.accounts.values()
        if account.organization_gln == BRAND_GLN and "/admin-" in account.agent_id
    ]


def _event_body(account_index: int, sequence: int) -> txpb.TransactionBody:
    epc = f"https://id.gs1.org/01/00614141123452/21/B{account_index:03d}S{sequence:07d}"
    event = {
        "type": "ObjectEvent",
        "eventTime": "2026-11-25T10:00:00.000Z",
        "eventTimeZoneOffset": "+00:00",
        "epcList": [epc],
        "action": "OBSERVE",
        "bizStep": "shipping",
        "disposition": "in_transit",
        "readPoint": {"id": "https://id.gs1.org/414/0614141000029"},
        "bizLocation": {"id": "https://id.gs1.org/414/0614141000029"},
        # A despatch advice, not a purchase order: an event naming a member's order must fill a real one.
        "bizTransactionList": [{"type": "desadv", "bizTransaction": f"urn:epcglobal:cbv:bt:0614141000005:DA{sequence:09d}"}],
        "ilmd": {"note": "x" * 420},
    }
    document = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(document).hexdigest()
    return txpb.TransactionBody(
        record_event=txpb.RecordEvent(
            event_hash=f"ni:///sha-256;{digest}?ver=CBV2.0",
            epcis_event_json=document,
            event_type="ObjectEvent",
            biz_step="shipping",
            disposition="in_transit",
            epcs=[epc],
            biz_location_gln="0614141000029",
        )
    )


async def _offer(stub, transactions: list[bytes], rate: float, seconds: float) -> tuple[int, set[bytes], list[str]]:
    """Offer ``rate`` tx/s for ``seconds``; return (offered, hashes acknowledged, errors).

    Every 10 ms the transactions that have come due go out as one SubmitTransactions batch. Batches
    are started in order (the adapter hands them to the engine in that order, so each account's
    nonces stay in order) without waiting for earlier ones, up to 32 in flight.
    """
    start = time.perf_counter()
    acknowledged: set[bytes] = set()
    errors: list[str] = []
    offered = 0
    inflight: set[asyncio.Task] = set()

    async def submit(batch: list[bytes]) -> None:
        try:
            reply = await stub.SubmitTransactions(pb.SubmitTransactionsRequest(transactions=batch), timeout=60)
        except Exception as err:  # noqa: BLE001 - counted and reported, never hidden
            if len(errors) < 5:
                errors.append(repr(err)[:300])
            return
        for result in reply.results:
            if result.status in (pb.TRANSACTION_STATUS_PENDING, pb.TRANSACTION_STATUS_COMMITTED):
                acknowledged.add(result.tx_hash)
            elif len(errors) < 5:
                errors.append(f"rejected: code {result.code}: {result.log[:200]}")

    while offered < len(transactions):
        await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        due = min(len(transactions), int(elapsed * rate) + 1, offered + 1000)
        if due <= offered or len(inflight) >= 32:
            continue
        task = asyncio.create_task(submit(transactions[offered:due]))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        offered = due
    await asyncio.gather(*inflight)
    return offered, acknowledged, errors


async def _collect_commits(
    stub, from_height: int, wanted: dict[bytes, int], done: asyncio.Event
) -> tuple[dict[bytes, float], dict[bytes, float], set[bytes]]:
    """Follow committed transactions; for each wanted hash (-> creation ms) record latency and time.

    Returns (hash -> latency s, hash -> time seen ms, rejected hashes)."""
    latencies, seen_at, rejected = {}, {}, set()
    stream = stub.StreamCommittedTransactions(
        pb.StreamCommittedTransactionsRequest(from_height=from_height, include_rejected=True)
    )
    try:
        while not (done.is_set() and not wanted):
            item = await stream.read()
            if item is grpc.aio.EOF:
                break
            created_ms = wanted.get(item.result.tx_hash)
            if created_ms is not None:
                del wanted[item.result.tx_hash]
            if created_ms is None:
                continue
            if item.result.code != 0:
                rejected.add(item.result.tx_hash)
                continue
            # Latency ends when the committed transaction reaches a client through the adapter's
            # stream: stricter than block time, which BFT time sets from the previous commit's
            # votes and so can precede a transaction's arrival.
            now_ms = time.time() * 1000
            latencies[item.result.tx_hash] = (now_ms - created_ms) / 1000
            seen_at[item.result.tx_hash] = now_ms
    finally:
        stream.cancel()
    return latencies, seen_at, rejected


async def _run_once(args: argparse.Namespace, rate: float) -> dict:
    genesis = _genesis(AGENTS_PER_ORG)
    signers = _brand_signers(genesis)
    count = int(rate * args.seconds) + 1
    with tempfile.TemporaryDirectory(prefix="shelfproof-bench-ledger-") as tmp:
        async with LedgerProcess(args.engine, args.validators, Path(tmp), genesis) as ledger:
            # Sign everything before the clock starts; transaction i carries the time it is due.
            offer_start_ms = int(time.time() * 1000) + 1000 + count // 4
            signed, created = [], {}
            for i in range(count):
                body = _event_body(i % len(signers), i)
                body.created_unix_ms = offer_start_ms + int(i * 1000 / rate)
                raw = signers[i % len(signers)].sign(body)
                signed.append(raw)
                created[hashlib.sha256(raw).digest()] = body.created_unix_ms
            async with insecure_channel(ledger.address) as channel:
                stub = ledger_pb2_grpc.LedgerServiceStub(channel)
                start_height = (await stub.GetLedgerStatus(pb.GetLedgerStatusRequest(), timeout=10)).latest_height
                lead_s = (offer_start_ms - time.time() * 1000) / 1000
                if lead_s > 0:
                    await asyncio.sleep(lead_s)
                offering_done = asyncio.Event()
                wanted = dict(created)
                collector = asyncio.create_task(_collect_commits(stub, start_height + 1, wanted, offering_done))
                began_ms = time.time() * 1000
                offered, acknowledged_hashes, errors = await _offer(stub, signed, rate, args.seconds)
                offer_elapsed = min((time.time() * 1000 - began_ms) / 1000, args.seconds)
                acknowledged = len(acknowledged_hashes)
                for tx_hash in set(created) - acknowledged_hashes:
                    wanted.pop(tx_hash, None)  # never offered or never acknowledged
                offering_done.set()
                try:
                    latencies, seen_at, rejected = await asyncio.wait_for(collector, args.drain_seconds + args.seconds)
                except asyncio.TimeoutError:
                    latencies, seen_at, rejected = {}, {}, set()
                    errors.append("commits not all seen within the drain time")
                cpu = ledger.cpu_seconds()
    # Everything committed counts toward throughput; `lost` counts acknowledged transactions that
    # neither committed nor were rejected.
    committed = len(latencies)
    lost = len(acknowledged_hashes - set(latencies) - rejected)
    # The rate commits arrived at, from the first to the last: it equals the offered rate while the
    # ledger keeps up, and falls below it once a backlog builds.
    window_s = (max(seen_at.values()) - min(seen_at.values())) / 1000 if len(seen_at) > 1 else args.seconds
    window_s = max(window_s, 0.001)
    latencies = list(latencies.values())
    return {
        "offered": offered,
        "acknowledged": acknowledged,
        "committed": committed,
        "rejected": len(rejected),
        "lost": lost,
        "offered_tx_per_s": round(offered / offer_elapsed, 1),
        "committed_tx_per_s": round(committed / window_s, 1),
        "latency_p50_s": round(percentile(latencies, 0.5), 3) if latencies else None,
        "latency_p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "cpu_seconds": cpu,
        "errors": errors,
    }


async def run(args: argparse.Namespace) -> dict:
    common = {
        "benchmark": "ledger",
        "engine": args.engine,
        "validators": args.validators if args.engine == "cometbft" else 1,
        "seconds": args.seconds,
        "tx_bytes": None,
        "accounts": AGENTS_PER_ORG,
    }
    common["tx_bytes"] = len(_brand_signers(_genesis(1))[0].sign(_event_body(0, 0)))
    # The physical limit: every node verifies every signature once, on this machine's cores.
    calibration = getattr(args, "calibration", None)
    if calibration:
        common["physical_limit_tx_per_s"] = round(
            calibration["cores"] * calibration["ed25519_verify_per_s_per_core"] / common["validators"]
        )
    if args.rate:
        return _with_fraction({**common, **await _run_once(args, args.rate)})
    # Sweep: double the offered rate until the ledger stops keeping up, then bisect twice.
    sweep, best, best_rate, failed_rate = [], None, None, None
    rate = 200.0

    async def attempt(rate: float) -> bool:
        nonlocal best, best_rate
        result = await _run_once(args, rate)
        sustained = result["committed_tx_per_s"] >= SUSTAINED * result["offered_tx_per_s"] and result["lost"] == 0
        sweep.append(
            {"rate": rate, "sustained": sustained}
            | {k: result[k] for k in ("offered_tx_per_s", "committed_tx_per_s", "latency_p50_s", "latency_p99_s", "lost")}
        )
        if sustained and (best_rate is None or rate > best_rate):
            best, best_rate = result, rate
        return sustained

    while rate <= 25_600 and await attempt(rate):
        rate *= 2
    failed_rate = rate
    for _ in range(2):
        if best_rate is None:
            break
        middle = round((best_rate + failed_rate) / 2, -1)
        if not await attempt(middle):
            failed_rate = middle
    return _with_fraction({**common, **(best or {}), "highest_sustained_rate": best_rate, "sweep": sweep})


def _with_fraction(result: dict) -> dict:
    if result.get("physical_limit_tx_per_s") and result.get("committed_tx_per_s") is not None:
        result["fraction_of_physical_limit"] = round(result["committed_tx_per_s"] / result["physical_limit_tx_per_s"], 3)
    return result


BENCHMARK = Benchmark("committed signed transactions per second and commit latency", add_arguments, run)
