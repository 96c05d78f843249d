"""What this machine is: its CPU (model, cores, instruction-set features), its memory, and a short
calibration of per-core speed that every benchmark reports beside its results.

Machines of one kind differ in CPU: bf16 arithmetic is native only with AVX512_BF16 or AMX (elsewhere
PyTorch emulates it, at about half the speed of float32), and per-core speed differs by 2-3x. Code that
depends on either reads it here, at run time, never assumes it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
