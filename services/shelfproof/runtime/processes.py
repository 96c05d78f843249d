"""Process and port helpers for supervisors, benchmarks and tests (Linux /proc)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from pathlib import Path


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before by this process: the kernel gives a closed
    ephemeral port again at once, and two settings given the same port fail only when the second binds."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_cpu_seconds(pid: int) -> tuple[str, float] | None:
    """(a readable name, user+system CPU seconds) of a live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        words = [w.decode(errors="replace") for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if w]
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    name = Path(words[0]).name if words else "?"
    if "-m" in words:
        name = words[words.index("-m") + 1]
    if "--home" in words:
        name = f"{name} {Path(words[words.index('--home') + 1]).name}"
    return name, seconds


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for children: the kernel sends them SIGTERM if their parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


SHARED_MEMORY_DIR = "/dev/shm"


def mapped_shared_memory(pids: list[int] | None = None) -> set[str]:
    """The files under /dev/shm that the processes ``pids`` (None: every process) have mapped."""
    if pids is None:
        pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    found: set[str] = set()
    prefix = SHARED_MEMORY_DIR + "/"
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    at = line.find(prefix)
                    if at >= 0:
                        found.add(line[at:].rstrip("\n").removesuffix(" (deleted)"))
        except OSError:  # gone, or not ours to read
            continue
    return found


def release_unmapped_shared_memory(paths: set[str]) -> list[str]:
    """Unlink those of ``paths`` that still exist and that no process maps any more: what a killed process
    leaves behind (vLLM's engine core creates its ring buffers there and unlinks them only when it exits
    normally). Returns the paths removed."""
    left = {p for p in paths if os.path.exists(p)}
    if not left:
        return []
    removed = []
    for path in sorted(left - mapped_shared_memory()):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
