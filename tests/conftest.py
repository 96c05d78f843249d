"""Fixtures shared by every tier: free ports, the real PostgreSQL cluster, isolated databases; and the
check that a test session leaves no server behind, whatever its outcome."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil
import psycopg
import pytest

from shelfproof.db.migrate import upgrade
from shelfproof.runtime.postgres import LocalPostgres
from shelfproof.runtime.processes import free_port

TIERS = ("unit", "integration", "e2e", "gpu", "security")


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier (the folder it lives in) and ``real_model`` where it uses the served
    vLLM engine (the e2e stack's, tests/e2e/conftest.py); skip the GPU tier without a GPU."""
    skip_gpu = None if _has_gpu() else pytest.mark.skip(reason="no NVIDIA GPU on this machine")
    for item in items:
        if "planner_llm" in getattr(item, "fixturenames", ()):
            item.add_marker("real_model")
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(tier)
        if skip_gpu and "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# Folders of this session's servers that outlive their parent (PostgreSQL daemonizes): the leftover
# check finds a server by its folder in its command line.
SESSION_DIR = Path(tempfile.gettempdir()) / f"shelfproof-tests-{os.getpid()}"


def postgres_reachable_tempdir(prefix: str) -> Path:
    """A fresh folder under /tmp that the postgres user can use when tests run as root."""
    SESSION_DIR.mkdir(mode=0o755, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=SESSION_DIR))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


def session_leftovers() -> list[psutil.Process]:
    """Live processes this session started: descendants of this process, and servers that daemonized
    out of it (their command line names a folder of this session)."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != me.pid and str(SESSION_DIR) in " ".join(proc.info["cmdline"] or ()):
            found[proc.pid] = proc
    alive = []
    for proc in found.values():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:160] or proc.name()}"
    except psutil.Error:
        return str(proc.pid)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test does not start while Ray and Serve are starting on this machine (another session's, or a
    stack's planner): they have fixed deadlines of 15-60 s, which two busy sessions beside them on two
    cores made them miss (runtime/machine.py). The wait is bounded well inside the test's timeout."""
    from shelfproof.runtime.machine import wait_for_quiet

    wait_for_quiet()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture's teardown (pass, failure, timeout or Ctrl-C): a PostgreSQL, CometBFT, ABCI,
    Ray or vLLM process still running fails the run, named; it is stopped (SIGTERM, then SIGKILL)."""
    # children that are already stopping get a moment
    deadline = time.monotonic() + float(os.environ.get("SHELFPROOF_TEST_LEFTOVER_GRACE_S", "10"))
    leftovers = session_leftovers()
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.2)
        leftovers = session_leftovers()
    if not leftovers:
        shutil.rmtree(SESSION_DIR, ignore_errors=True)
        return
    names = [_describe(p) for p in leftovers]
    for proc in leftovers:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(leftovers, timeout=10)
    for proc in still:
        try:
            proc.kill()
        except psutil.Error:
            pass
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = "processes started by the test session were still running at its end (now stopped):\n  " + "\n  ".join(names)
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[LocalPostgres]:
    """One real PostgreSQL server per test session (fsync off: test data need not survive a crash)."""
    cluster = LocalPostgres(
        postgres_reachable_tempdir("shelfproof-test-pg-"), free_port(), durable=False
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def migrated_template(postgres_cluster: LocalPostgres) -> str:
    """A database with every migration applied, copied for each test that needs one."""
    name = "shelfproof_template"
    postgres_cluster.ensure_database(name)
    upgrade(postgres_cluster.dsn(name))
    return name


@contextmanager
def fresh_database(cluster: LocalPostgres, template: str) -> Iterator[str]:
    """A migrated database copied from ``template``, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield cluster.dsn(name)
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_dsn(postgres_cluster: LocalPostgres, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database of its own for one test."""
    with fresh_database(postgres_cluster, migrated_template) as dsn:
        yield dsn
