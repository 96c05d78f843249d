"""`shelfproof up` as a user runs it: started, healthy, stopped by SIGTERM with nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shelfproof.ledger.network import find_free_base_port
from shelfproof.runtime.processes import descendants, free_port
from tests.conftest import postgres_reachable_tempdir

SHELFPROOF = Path(sys.executable).with_name("shelfproof")


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SHELFPROOF_STATE_DIR": str(tmp_path / "state"),
        "SHELFPROOF_PG_PORT": str(free_port()),
        "SHELFPROOF_PG_CLUSTER_DIR": str(postgres_reachable_tempdir("shelfproof-e2e-pg-") / "cluster"),
        "SHELFPROOF_LOG_FORMAT": "text",
        "SHELFPROOF_LEDGER_PORT": str(ledger_port := free_port()),
        "SHELFPROOF_REGISTRY_LEDGER_ADDRESS": f"127.0.0.1:{ledger_port}",
        "SHELFPROOF_REGISTRY_PORT": str(free_port()),
        "SHELFPROOF_LEDGER_BASE_PORT": str(find_free_base_port(1)),
    }


def test_up_status_and_sigterm_leave_nothing_behind(stack_env):
    up = subprocess.Popen(
        [str(SHELFPROOF), "up"], env=stack_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("logs:"):
                break
        assert any(line.startswith("shelfproof is up") for line in lines), "".join(lines)

        status = subprocess.run(
            [str(SHELFPROOF), "status"], env=stack_env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stdout + status.stderr
        rows = [row.split() for row in status.stdout.splitlines() if row.strip()]
        assert rows and all(row[-1] == "SERVING" for row in rows), status.stdout
        assert [row[0] for row in rows] == ["postgres", "ledger", "registry"]
        assert any(line.startswith("ledger engine: cometbft") for line in lines), "".join(lines)

        pidfile = Path(stack_env["SHELFPROOF_PG_CLUSTER_DIR"]) / "data" / "postmaster.pid"
        watched = set(descendants(up.pid)) | {int(pidfile.read_text().split()[0])}

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
    leftovers = {pid for pid in watched if _alive(pid)}
    assert not leftovers, f"processes left behind: {leftovers}"
    after = subprocess.run(
        [str(SHELFPROOF), "status"], env=stack_env, capture_output=True, text=True, timeout=60
    )
    assert after.returncode == 1 and "UNREACHABLE" in after.stdout
