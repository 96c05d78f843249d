"""What this machine is: its CPU (model, cores, instruction-set features), its memory, and a short
calibration of per-core speed that every benchmark reports beside its results.

Machines of one kind differ in CPU: bf16 arithmetic is native only with AVX512_BF16 or AMX (elsewhere
PyTorch emulates it, at about half the speed of float32), and per-core speed differs by 2-3x. Code that
depends on either reads it here, at run time, never assumes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

# CPU flags (as /proc/cpuinfo spells them) that make bf16 matrix arithmetic native.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int  # usable by this process (its CPU affinity), not the host's total
    cpu_flags: frozenset[str]
    memory_bytes: int

    @property
    def native_bf16(self) -> bool:
        return bool(self.cpu_flags & NATIVE_BF16_FLAGS)

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30


def _cpuinfo_fields(text: str) -> tuple[str, frozenset[str]]:
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@lru_cache(maxsize=1)
def this_machine() -> Machine:
    try:
        model, flags = _cpuinfo_fields(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, flags = "", frozenset()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Machine(model or platform.processor() or "unknown", cores, flags, _memory_bytes())


def calibration(seconds: float = 0.25) -> dict:
    """Per-core speed measured now, single-threaded: Ed25519 verifications (PyNaCl, the ledger's
    signature check) and SHA-256 over 1 KiB (its hashing), so results from different machines of one
    kind can be compared as fractions of what each machine can do."""
    from nacl.signing import SigningKey

    machine = this_machine()
    key = SigningKey(b"\x07" * 32)
    message = b"\x01" * 200
    signed = key.sign(message)
    verify_key = key.verify_key
    verified, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            verify_key.verify(signed)
        verified += 100
    block = b"\x02" * 1024
    hashed, started = 0, time.perf_counter()
    while (hash_elapsed := time.perf_counter() - started) < seconds:
        for _ in range(1000):
            hashlib.sha256(block).digest()
        hashed += 1000
    return {
        "cpu_model": machine.cpu_model,
        "cores": machine.cores,
        "native_bf16": machine.native_bf16,
        "memory_gib": round(machine.memory_gib, 1),
        "ed25519_verify_per_s_per_core": round(verified / elapsed),
        "sha256_1k_mb_per_s": round(hashed * 1024 / hash_elapsed / 1e6, 1),
    }


# One heavy start at a time on a machine: a Ray node, a vLLM engine. An engine's start spends a minute
# of both cores, and Ray's raylet gives its agents a fixed 15 s to report their ports (not a setting in
# Ray 2.60), Serve its HTTP proxy 60 s: a Ray starting beside an engine, or beside two busy test sessions,
# on a two-core machine failed five times in a row. Ray's and Serve's own start also ask for quiet:
# cooperating processes (the test suite, between tests) wait while one is under way (``wait_for_quiet``).
START_LOCK_ENV = "SHELFPROOF_START_LOCK"
START_LOCK_WAIT_S = 900.0
QUIET_WAIT_S = 120.0  # Ray's and Serve's start: 10-60 s


def _lock_path(suffix: str) -> str:
    return (os.environ.get(START_LOCK_ENV) or os.path.join(tempfile.gettempdir(), "shelfproof-heavy-start.lock")) + suffix


def _open_lock(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # flock needs no write access: any user shares it
    except OSError as err:
        log.warning("no start lock at %s (%s)", path, err)
        return None


def _flock(fd: int, mode: int, wait_s: float, what: str) -> bool:
    """Take the lock within ``wait_s`` (True) or give up (False)."""
    give_up_at, said = time.monotonic() + wait_s, False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= give_up_at:
                return False
            if not said:
                log.info("waiting for another start to finish before %s", what)
                said = True
            time.sleep(0.2)


@contextlib.contextmanager
def _held(suffix: str, mode_name: str, what: str, wait_s: float) -> Iterator[None]:
    fd = _open_lock(_lock_path(suffix))
    held = fd is not None and _flock(fd, fcntl.LOCK_EX, wait_s, what)
    if fd is not None and not held:
        log.warning("starting %s without the %s after %.0f s", what, mode_name, wait_s)
    try:
        yield
    finally:
        if fd is not None:
            if held:  # explicitly: a process forked meanwhile (vLLM's engine core) shares the lock's file
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@contextlib.contextmanager
def one_heavy_start(what: str, wait_s: float = START_LOCK_WAIT_S) -> Iterator[None]:
    """Hold the machine's start lock (a file lock, so released when its process dies) while ``what``
    starts. Past ``wait_s`` it starts anyway: the lock spreads load, it is never a reason not to start."""
    with _held("", "start lock", what, wait_s):
        yield


@contextlib.contextmanager
def quiet_please(what: str, wait_s: float = START_LOCK_WAIT_S) -> Iterator[None]:
    """Ask cooperating processes to start nothing new while ``what`` runs against a fixed deadline of
    its own (they call ``wait_for_quiet``). Keep it short: everyone waits."""
    with _held(".quiet", "quiet", what, wait_s):
        yield


def wait_for_quiet(wait_s: float = QUIET_WAIT_S) -> float:
    """Wait while a start that asked for quiet is under way (at most ``wait_s``); the seconds waited."""
    fd = _open_lock(_lock_path(".quiet"))
    if fd is None:
        return 0.0
    started = time.monotonic()
    try:
        if _flock(fd, fcntl.LOCK_SH, wait_s, "going on"):
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return time.monotonic() - started
