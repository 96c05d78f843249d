"""`shelfproof bench state --keys N`: the application's CPU time and memory to commit a block of 1,000
changed keys (half updates of existing keys, half new ones) with N keys already in state.

Each N runs in two fresh processes: one bulk-loads N keys into a state file (a snapshot restore, the
path a joining node takes), the other opens it as a validator does and commits blocks, so the RSS
reported is the validator's, not the loader's. The figures are for the state layer alone
(``LedgerState.next_version`` + ``commit``: bucket reads, hashing, the SQLite transaction), which is
what grows with N; transaction execution is the ledger benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shelfproof.bench import Benchmark

CHANGED_KEYS = 1_000
BLOCKS = 12
STORE = "items"


def _key(i: int) -> bytes:
    # An item key's shape: GTIN-14 / serial.
    return f"0061414112345{i % 10}/SN{i:010d}".encode()


def _value(i: int, generation: int) -> bytes:
    return (f"commissioned lot L{i % 977} expiry 2027-{1 + i % 12:02d} gen {generation} ".encode() * 2)[:120]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_state(path: Path, keys: int) -> dict:
    """Write ``keys`` keys into a fresh state file at height 1 (through the snapshot-restore path)."""
    from shelfproof.ledger.core.state import app_hash_of_buckets
    from shelfproof.ledger.storage import StateDB

    db = StateDB(path)
    meta = {"height": b"1", "chain_id": b"bench-state"}

    def accept(bucket_roots) -> bool:
        meta["app_hash"] = app_hash_of_buckets(bucket_roots)
        return True

    start = time.perf_counter()
    db.replace_all(1, ((STORE, _key(i), _value(i, 0)) for i in range(keys)), meta, accept)
    db.close()
    return {"load_s": round(time.perf_counter() - start, 1)}


def commit_blocks(path: Path, keys: int) -> dict:
    """Open the state as a validator does and commit BLOCKS blocks of CHANGED_KEYS changed keys."""
    from shelfproof.ledger.core.state import LedgerState, Overlay
    from shelfproof.ledger.storage import StateDB

    start = time.perf_counter()
    state = LedgerState(StateDB(path))
    open_s = time.perf_counter() - start
    rss_open = _rss_bytes()
    cpu_ms, wall_ms = [], []
    fresh = keys
    for block in range(BLOCKS):
        overlay = Overlay(state.latest)
        stride = max(keys // (CHANGED_KEYS // 2), 1)
        for j in range(CHANGED_KEYS // 2):
            i = (block * 7919 + j * stride) % max(keys, 1)
            overlay.set(STORE, _key(i), _value(i, block + 1))
        for _ in range(CHANGED_KEYS - CHANGED_KEYS // 2):
            overlay.set(STORE, _key(fresh), _value(fresh, block + 1))
            fresh += 1
        cpu0, wall0 = time.process_time(), time.perf_counter()
        version = state.next_version(state.latest.height + 1, overlay)
        state.commit(version, overlay)
        cpu_ms.append((time.process_time() - cpu0) * 1e3)
        wall_ms.append((time.perf_counter() - wall0) * 1e3)
    # A proof at the newest provable height still answers after the blocks.
    state.versions[state.latest.height - 1].proof_ops(STORE, _key(3), True)
    return {
        "open_s": round(open_s, 2),
        "commit_cpu_ms_p50": round(statistics.median(cpu_ms), 1),
        "commit_cpu_ms_max": round(max(cpu_ms), 1),
        "commit_wall_ms_p50": round(statistics.median(wall_ms), 1),
        "rss_mb_after_open": round(rss_open / 2**20),
        "rss_mb": round(_rss_bytes() / 2**20),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "state_file_mb": round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20, 1),
    }


def _child(role: str, path: Path, keys: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "shelfproof.bench.state_bench", role, str(path), str(keys)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=int, action="append", help="keys already in state (repeatable; default 1e5, 1e6, 5e6)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the state files (default: a temporary one)")


async def run(args: argparse.Namespace) -> dict:
    sizes = args.keys or [100_000, 1_000_000, 5_000_000]
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for keys in sizes:
            path = Path(tmp) / f"state-{keys}.db"
            loaded = await asyncio.to_thread(_child, "load", path, keys)
            measured = await asyncio.to_thread(_child, "commit", path, keys)
            results.append({"keys": keys, "changed_keys_per_block": CHANGED_KEYS, **loaded, **measured})
            for leftover in Path(tmp).glob(path.name + "*"):
                leftover.unlink()
    return {"benchmark": "state", "blocks_per_size": BLOCKS, "results": results, "targets": {"cpu_ms": 100, "rss_mb": 2048}}


BENCHMARK = Benchmark(
    summary="CPU time and memory to commit a block of 1,000 changed keys over N keys in state",
    add_arguments=add_arguments,
    run=run,
)


if __name__ == "__main__":
    role, file, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(load_state(file, count) if role == "load" else commit_blocks(file, count)))
