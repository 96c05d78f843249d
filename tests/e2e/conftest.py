"""The one `shelfproof up` that the end-to-end tests share (tests/e2e/test_journey.py,
tests/e2e/test_stack_up.py): starting it costs about two minutes of CPU here, so it is started once per
session, on first use; test_stack_up.py stops it with SIGTERM and checks what that leaves (it runs last),
and the fixture's teardown stops whatever is still running after a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from shelfproof.ledger.network.config import find_free_base_port
from shelfproof.planner.model import default_model_dir, gguf_source
from shelfproof.runtime.client import service_channel
from shelfproof.runtime.processes import descendants, free_port
from tests.conftest import postgres_reachable_tempdir

SHELFPROOF = Path(sys.executable).with_name("shelfproof")
START_TIMEOUT_S = 600  # the planner's engine takes minutes on two cores


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The test that stops the shared stack runs after every other test of the session (stable sort)."""
    items.sort(key=lambda item: bool(getattr(getattr(item, "module", None), "STOPS_THE_SHARED_STACK", False)))


def stack_channel(address: str, state_dir: Path) -> grpc.aio.Channel:
    """The channel every e2e client of the shared stack uses: with the local tools' certificate (`shelfproof
    up` turns mTLS on by default), as `shelfproof status` connects."""
    from shelfproof.cli.stack import local_tools_tls

    tls = local_tools_tls(state_dir)
    assert tls is not None and tls.enabled, "the stack runs without mTLS"
    return service_channel(address, tls)


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def describe(pids: set[int]) -> list[str]:
    """Each process as its id and the start of its command line (what a failure message names)."""
    out = []
    for pid in sorted(pids):
        try:
            out.append(f"{pid} {(Path('/proc') / str(pid) / 'cmdline').read_bytes().replace(bytes(1), b' ').decode(errors='replace')[:160]}")
        except OSError:
            out.append(f"{pid} (gone)")
    return out


def stack_env(root: Path) -> dict[str, str]:
    ledger_port = free_port()
    return {
        **os.environ,
        "SHELFPROOF_STATE_DIR": str(root / "state"),
        "SHELFPROOF_PG_PORT": str(free_port()),
        "SHELFPROOF_PG_CLUSTER_DIR": str(postgres_reachable_tempdir("shelfproof-e2e-pg-") / "cluster"),
        "SHELFPROOF_LOG_FORMAT": "text",
        "SHELFPROOF_LEDGER_PORT": str(ledger_port),
        "SHELFPROOF_REGISTRY_LEDGER_ADDRESS": f"127.0.0.1:{ledger_port}",
        "SHELFPROOF_REGISTRY_PORT": str(free_port()),
        "SHELFPROOF_REGISTRY_EPCIS_PORT": str(free_port()),
        "SHELFPROOF_LEDGER_BASE_PORT": str(find_free_base_port(1)),
        "SHELFPROOF_VERIFY_PORT": str(free_port()),
        "SHELFPROOF_PRICING_PORT": str(free_port()),
        "SHELFPROOF_PLANNER_PORT": str(free_port()),
        "SHELFPROOF_PLANNER_OPENAI_PORT": str(free_port()),
        "SHELFPROOF_CONSOLE_PORT": str(free_port()),
        **{f"SHELFPROOF_{s}_METRICS_PORT": str(free_port()) for s in ("LEDGER", "REGISTRY", "PRICING", "PLANNER", "VERIFY")},
        # The journey's store is one the restock loop watches (the planner's default stores): checked every
        # few seconds, not every minute, so a reorder point reached is drafted for within the test's time.
        "SHELFPROOF_PLANNER_RESTOCK_CHECK_INTERVAL_S": "3",
        # The demo seed (three real-model drafts, about a minute here) is tested through the same
        # seed_demo in tests/integration/test_console_pages.py and the console's browser test.
        "SHELFPROOF_DEMO_SEED": "0",
        # The converted model is shared with the integration tests (converted once, read-only after).
        "SHELFPROOF_PLANNER_MODEL_DIR": str(default_model_dir(gguf_source().package_version).resolve()),
    }


@dataclass
class RunningStack:
    """`shelfproof up` as a user started it: its environment, process and what it printed."""

    env: dict[str, str]
    up: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    stopped: bool = False

    @property
    def state_dir(self) -> Path:
        return Path(self.env["SHELFPROOF_STATE_DIR"]).resolve()

    @property
    def pidfile(self) -> Path:
        return Path(self.env["SHELFPROOF_PG_CLUSTER_DIR"]) / "data" / "postmaster.pid"

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.env[f'SHELFPROOF_{service.upper()}_PORT']}"

    def kill_what_is_left(self) -> None:
        """After a failure or timeout: stop `shelfproof up` as Ctrl-C would (it stops its services and
        PostgreSQL), then kill whatever of its tree is left."""
        tree = set(descendants(self.up.pid))
        if self.up.poll() is None:
            self.up.send_signal(signal.SIGTERM)
            try:
                self.up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.up.kill()
        if self.pidfile.exists():
            tree.add(int(self.pidfile.read_text().split()[0]))
        for pid in tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.stopped = True


@pytest.fixture(scope="session")
def shelfproof_up(tmp_path_factory) -> Iterator[RunningStack]:
    """`shelfproof up`, started once and healthy (its banner printed through the ``logs:`` line)."""
    env = stack_env(tmp_path_factory.mktemp("stack"))
    up = subprocess.Popen([str(SHELFPROOF), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stack = RunningStack(env, up)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            stack.lines.append(line)
            if line.startswith("logs:"):
                break
        assert any(line.startswith("shelfproof is up") for line in stack.lines), "".join(stack.lines)
        yield stack
    finally:
        if not stack.stopped:
            stack.kill_what_is_left()
