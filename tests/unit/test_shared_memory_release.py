"""What a killed process leaves in /dev/shm (vLLM's engine core's ring buffers) is released once no
process maps it, and never while one does. A real child process maps a real file there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from shelfproof.runtime.processes import SHARED_MEMORY_DIR, mapped_shared_memory, release_unmapped_shared_memory

# Creates and maps the file, says so, then waits to be killed (as a killed engine core: no unlink).
HOLDER = """
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o600)
os.ftruncate(fd, 1 << 20)
view = mmap.mmap(fd, 1 << 20)
print("mapped", flush=True)
time.sleep(300)
"""


def _holder(path: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "mapped"
    return child


def test_a_segment_left_by_a_killed_process_is_released_and_a_mapped_one_kept() -> None:
    left, held = (f"{SHARED_MEMORY_DIR}/sp-test-{uuid.uuid4().hex}" for _ in range(2))
    killed, alive = _holder(left), _holder(held)
    try:
        assert mapped_shared_memory([killed.pid]) == {left}
        assert {left, held} <= mapped_shared_memory()
        assert release_unmapped_shared_memory({left, held}) == []  # both mapped: nothing released
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert os.path.exists(left), "the killed holder's file should outlive it (the leak this releases)"
        assert release_unmapped_shared_memory({left, held}) == [left]
        assert not os.path.exists(left) and os.path.exists(held)
        assert release_unmapped_shared_memory({left}) == []  # already gone: nothing to do, no error
    finally:
        for child in (killed, alive):
            child.kill()
            child.wait(10)
        for path in (left, held):
            if os.path.exists(path):
                os.unlink(path)
