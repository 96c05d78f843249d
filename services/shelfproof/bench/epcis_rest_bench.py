"""`shelfproof bench epcis-rest`: the EPCIS 2.0 REST binding's query latency over a 10,000-event store.

The registry runs as in production (its own process, the ledger in another, PostgreSQL with durable
defaults). The store is filled through the binding itself (one ``POST /capture`` of the `epcis`
benchmark's document: mixed event types, 1-50 EPCs each), then each query is asked over HTTP on
loopback, one at a time, and timed from request to the last byte of the EPCISQueryDocument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from urllib.parse import quote

from shelfproof.bench import Benchmark
from shelfproof.bench.epcis_bench import _gln, build_document
from shelfproof.bench.registry_stack import RegistryStack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=50, help="times each query is asked")
    parser.add_argument("--seed", type=int, default=20261201)


def _queries(document: dict) -> dict[str, tuple[str, dict]]:
    events = document["epcisBody"]["eventList"]
    epc = next(e["epcList"][0] for e in events[len(events) // 2:] if e.get("epcList"))
    return {
        "all, first page (30)": ("/events", {}),
        "eventType=TransformationEvent": ("/events", {"eventType": "TransformationEvent"}),
        "EQ_bizStep=shipping": ("/events", {"EQ_bizStep": "shipping"}),
        "EQ_bizLocation (1 of 50)": ("/events", {"EQ_bizLocation": f"https://id.gs1.org/414/{_gln(7)}"}),
        "GE/LT_eventTime (one day)": ("/events", {"GE_eventTime": "2026-11-10T00:00:00Z", "LT_eventTime": "2026-11-11T00:00:00Z"}),
        "MATCH_epc (one item)": ("/events", {"MATCH_epc": epc}),
        "/epcs/{epc}/events": (f"/epcs/{quote(epc, safe='')}/events", {}),
        "MATCH_anyEPC pattern (every item)": ("/events", {"MATCH_anyEPC": "urn:epc:idpat:sgtin:0614141.012345.*"}),
        "bizStep+location+time": ("/events", {"EQ_bizStep": "receiving", "EQ_bizLocation": f"https://id.gs1.org/414/{_gln(3)}",
                                              "GE_eventTime": "2026-11-05T00:00:00Z"}),
        "orderBy=eventTime DESC, perPage=100": ("/events", {"orderBy": "eventTime", "perPage": "100"}),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run(args: argparse.Namespace) -> dict:
    import aiohttp

    document = build_document(args.events, args.seed)
    raw = json.dumps(document, separators=(",", ":")).encode()
    async with RegistryStack("embedded") as stack, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{stack.epcis_port}"
        deadline = time.monotonic() + 60
        while True:  # the binding starts right after the gRPC server
            try:
                async with http.get(base + "/healthz") as reply:
                    if reply.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the EPCIS REST binding did not start")
            await asyncio.sleep(0.2)
        began = time.perf_counter()
        async with http.post(base + "/capture", data=raw, headers={"Content-Type": "application/json"}) as reply:
            assert reply.status == 202, await reply.text()
            location = reply.headers["Location"]
        accepted_s = time.perf_counter() - began
        while True:
            async with http.get(base + location) as reply:
                job = await reply.json()
            if not job["running"]:
                break
            await asyncio.sleep(0.2)
        capture_s = time.perf_counter() - began
        assert job["success"], job["errors"]
        results, every = {}, []
        for name, (path, params) in _queries(document).items():
            times, returned = [], 0
            # one unmeasured round first: connection set up, plans cached
            for round_ in range(args.rounds + 1):
                began = time.perf_counter()
                async with http.get(base + path, params=params) as reply:
                    body = await reply.read()
                    assert reply.status == 200, body[:500]
                elapsed = time.perf_counter() - began
                if round_:
                    times.append(elapsed * 1000)
                    returned = len(json.loads(body)["epcisBody"]["queryResults"]["resultsBody"]["eventList"])
            every += times
            results[name] = {"p50_ms": round(statistics.median(times), 2), "p99_ms": round(_percentile(times, 0.99), 2),
                             "events_returned": returned}
    return {
        "benchmark": "epcis-rest",
        "events_in_store": args.events,
        "capture_accepted_s": round(accepted_s, 2),
        "capture_job_s": round(capture_s, 2),
        "capture_events_per_s": round(args.events / capture_s, 1),
        "rounds_per_query": args.rounds,
        "queries": results,
        "all_queries": {"p50_ms": round(statistics.median(every), 2), "p99_ms": round(_percentile(every, 0.99), 2)},
    }


BENCHMARK = Benchmark("EPCIS REST binding: query latency p50/p99 over a 10,000-event store", add_arguments, run)
