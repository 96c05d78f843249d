"""`shelfproof bench epcis`: EPCIS 2.0 capture at partner scale, end to end.

One EPCISDocument of 10,000 events (mixed types, 1-50 EPCs each) goes through
``EventService.CaptureEvents`` on the registry as it runs in production (its own process, the ledger
service in another, PostgreSQL with durable defaults): GS1 schema check, Event Hash IDs, one ledger
transaction per event, and the projection into PostgreSQL, which the call waits for. The capture
plan (schema check and hashes) is also timed in this process, to show its share.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from shelfproof.bench import Benchmark
from shelfproof.bench.registry_stack import RegistryStack
from shelfproof.gs1.canonical import check_digit

EVENT_TYPES = (("ObjectEvent", 50), ("AggregationEvent", 20), ("TransactionEvent", 15), ("TransformationEvent", 10),
               ("AssociationEvent", 5))
STEPS = ("shipping", "receiving", "commissioning", "packing", "retail_selling", "storing")
CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld", {"bench": "https://bench.example.com/"}]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["embedded", "cometbft"], default="embedded")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261201)


def _gln(n: int) -> str:
    body = f"0614141{n:05d}"
    return body + check_digit(body)


def build_document(count: int, seed: int) -> dict:
    """`count` events of the five types, 1-50 EPCs each (URNs and Digital Links), every one unique."""
    rng = random.Random(seed)
    kinds = [k for k, weight in EVENT_TYPES for _ in range(weight)]
    serial = 0

    def epcs(n: int) -> list[str]:
        nonlocal serial
        out = []
        for _ in range(n):
            serial += 1
            out.append(f"urn:epc:id:sgtin:0614141.012345.B{serial}" if serial % 2 else
                       f"https://id.gs1.org/01/00614141123452/21/B{serial}")
        return out

    events = []
    for i in range(count):
        kind = rng.choice(kinds)
        n = rng.randint(1, 50)
        event: dict = {"type": kind, "eventTime": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.{i % 1000:03d}+01:00",
                       "eventTimeZoneOffset": "+01:00"}
        if kind == "ObjectEvent":
            event.update(epcList=epcs(n), action=rng.choice(["ADD", "OBSERVE"]))
        elif kind in ("AggregationEvent", "AssociationEvent"):
            sscc = f"0614141{serial:010d}"[-17:]
            event.update(parentID=f"https://id.gs1.org/00/{sscc}{check_digit(sscc)}", childEPCs=epcs(n - 1 or 1),
                         action="ADD")
        elif kind == "TransactionEvent":
            event.update(epcList=epcs(n), action="ADD",
                         bizTransactionList=[{"type": "po", "bizTransaction": f"https://po.example.com/PO{i}"}])
        else:
            half = max(1, n // 2)
            event.update(inputEPCList=epcs(half), outputEPCList=epcs(max(1, n - half)),
                         outputQuantityList=[{"epcClass": "urn:epc:class:lgtin:0614141.012345.L1", "quantity": 2.5, "uom": "KGM"}])
        if kind != "TransformationEvent":
            event["bizStep"] = rng.choice(STEPS)
            event["disposition"] = "in_progress"
        event["readPoint"] = {"id": f"https://id.gs1.org/414/{_gln(rng.randrange(50))}"}
        event["bizLocation"] = {"id": f"https://id.gs1.org/414/{_gln(rng.randrange(50))}"}
        if rng.random() < 0.1:
            event["sensorElementList"] = [{"sensorReport": [{"type": "Temperature", "value": 4.5, "uom": "CEL"}]}]
        if rng.random() < 0.1:
            event["bench:batch"] = f"run-{i}"
        events.append(event)
    return {"@context": CONTEXT, "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": "2026-12-01T12:00:00.000Z", "epcisBody": {"eventList": events}}


async def run(args: argparse.Namespace) -> dict:
    from shelfproof.product.v1 import events_pb2 as pb
    from shelfproof.product.v1 import events_pb2_grpc
    from shelfproof.registry.events import plan_capture
    from shelfproof.runtime.client import insecure_channel
    from shelfproof.runtime.processes import process_cpu_seconds

    document = build_document(args.events, args.seed)
    raw = json.dumps(document, separators=(",", ":")).encode()
    epc_count = sum(len(e.get("epcList", e.get("childEPCs", []))) + len(e.get("inputEPCList", []))
                    + len(e.get("outputEPCList", [])) for e in document["epcisBody"]["eventList"])
    began = time.perf_counter()
    plan_capture(raw)
    plan_s = time.perf_counter() - began
    async with RegistryStack(args.engine) as stack, insecure_channel(stack.address) as channel:
        stub = events_pb2_grpc.EventServiceStub(channel)
        began = time.perf_counter()
        reply = await stub.CaptureEvents(pb.CaptureEventsRequest(epcis_document=raw), timeout=1800)
        elapsed = time.perf_counter() - began
        found = process_cpu_seconds(stack.process.pid)
        registry_cpu = round(found[1], 2) if found else None
        ledger_cpu = stack.ledger.cpu_seconds()
    assert len(reply.events) == args.events
    return {
        "benchmark": "epcis",
        "engine": args.engine,
        "events": args.events,
        "epcs": epc_count,
        "document_bytes": len(raw),
        "seconds": round(elapsed, 2),
        "events_per_s": round(args.events / elapsed, 1),
        "plan_seconds_in_process": round(plan_s, 2),
        "plan_events_per_s": round(args.events / plan_s, 1),
        "registry_cpu_s": registry_cpu,
        "ledger_cpu_s": ledger_cpu,
        "postgres": "durable defaults (fsync on, synchronous_commit on); event projection commits without waiting for the WAL flush (replayable from the ledger)",
    }


BENCHMARK = Benchmark("capture an EPCIS document of 10,000 events end to end", add_arguments, run)
