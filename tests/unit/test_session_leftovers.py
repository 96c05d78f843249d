"""The session-end check: a test session that leaves a process running fails, naming it, and the process
is stopped. Checked by running a session of its own that leaves one behind on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = "SHELFPROOF_TEST_LEAVE_A_PROCESS"


def test_probe_leaves_a_process_behind() -> None:
    """Only in the inner session below: starts a child and does not stop it."""
    if PROBE not in os.environ:
        pytest.skip("runs only inside test_a_session_that_leaves_a_process_fails")
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    Path(os.environ[PROBE]).write_text(str(child.pid))


def test_a_session_that_leaves_a_process_fails(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"{__file__}::test_probe_leaves_a_process_behind"],
        cwd=ROOT, env={**os.environ, PROBE: str(pid_file), "SHELFPROOF_TEST_LEFTOVER_GRACE_S": "0.5"}, capture_output=True, text=True, timeout=120,
    )
    pid = int(pid_file.read_text())
    assert inner.returncode == 1, inner.stdout + inner.stderr
    assert "still running at its end" in inner.stdout and f"{pid} sleep 300" in inner.stdout, inner.stdout
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"process {pid} survived the check"
        time.sleep(0.1)
