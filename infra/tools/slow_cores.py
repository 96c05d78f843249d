"""Run a command on emulated slower cores: ``python infra/tools/slow_cores.py SHARE -- COMMAND...``.

Machines of this kind differ in per-core speed (the AVX2-only AMD EPYC verifies about half the Ed25519
signatures per second per core of the AVX-512 ones), so a suite that fits here may not fit there. This
pins one SCHED_FIFO burner to each core that spins for ``1 - SHARE`` of every 10 ms: every other process
keeps ``SHARE`` of each core, in slices short enough that single-threaded work (an engine's start, Ray's)
slows as much as parallel work (a CPU quota would slow only the latter). Needs root or CAP_SYS_NICE.
Exits with the command's status; the burners die with this process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PERIOD_S = 0.01
_PR_SET_PDEATHSIG = 1


def _burn(cpu: int, burn_s: float) -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    due = time.perf_counter()
    while True:
        until = due + burn_s
        while time.perf_counter() < until:
            pass
        due += PERIOD_S
        rest = due - time.perf_counter()
        if rest > 0:
            time.sleep(rest)
        else:
            due = time.perf_counter()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit(__doc__.split("\n")[0])
    share = float(argv[0])
    if not 0.05 <= share <= 1:
        raise SystemExit("SHARE is the fraction of each core left to the command, 0.05-1")
    burners = []
    for cpu in sorted(os.sched_getaffinity(0)) if share < 1 else []:
        pid = os.fork()
        if pid == 0:
            try:
                _burn(cpu, (1 - share) * PERIOD_S)
            finally:
                os._exit(1)
        burners.append(pid)
    try:
        return subprocess.call(argv[2:])
    finally:
        for pid in burners:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
