"""The benchmarks' Go load generators (``infra/loadgen`` for HTTP consumers, ``infra/grpcload`` for gRPC
clients): built into ``.tools/bin`` when missing or older than their source, run with a JSON spec on
stdin. In Go so that the load costs little of the machine whose server it measures: a Python gRPC
client spends about as much CPU per call as the Python server it calls."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def build(name: str) -> Path:
    """``.tools/bin/shelfproof-<name>`` built from ``infra/<name>`` if missing or older than its source."""
    source = REPO / "infra" / name
    binary = REPO / ".tools" / "bin" / f"shelfproof-{name}"
    newest = max(p.stat().st_mtime for p in source.iterdir())
    if not binary.exists() or binary.stat().st_mtime < newest:
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=source, check=True)
    return binary


async def run(binary: Path, spec: dict, timeout_s: float) -> dict:
    load = await asyncio.create_subprocess_exec(str(binary), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = await asyncio.wait_for(load.communicate(json.dumps(spec).encode()), timeout_s)
    if load.returncode != 0:
        raise RuntimeError(f"{binary.name} exited with {load.returncode}")
    return json.loads(out)


async def grpc_closed_loop(
    target: str, method: str, requests: list[bytes], *, concurrency: int, connections: int, seconds: float,
    warmup: float = 1.0, deadline_s: float = 5.0,
) -> dict:
    """Unary calls of ``method`` (``/package.Service/Method``) with ``requests`` in turn, ``concurrency``
    in flight over ``connections`` HTTP/2 connections: ``latencies`` (s, OK calls), ``codes``, ``cpu_s``."""
    binary = await asyncio.to_thread(build, "grpcload")
    spec = {
        "target": target, "method": method, "requests": [base64.b64encode(r).decode() for r in requests],
        "concurrency": concurrency, "connections": connections, "seconds": seconds, "warmup": warmup,
        "deadline_s": deadline_s,
    }
    return await run(binary, spec, seconds + warmup + 120)
