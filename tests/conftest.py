"""Fixtures shared by every tier: free ports, the real PostgreSQL cluster, isolated databases."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

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
    """Mark each test with its tier (the folder it lives in); skip the GPU tier without a GPU."""
    skip_gpu = None if _has_gpu() else pytest.mark.skip(reason="no NVIDIA GPU on this machine")
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(tier)
        if skip_gpu and "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def postgres_reachable_tempdir(prefix: str) -> Path:
    """A fresh folder under /tmp that the postgres user can use when tests run as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


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


@pytest.fixture
def database_dsn(postgres_cluster: LocalPostgres, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database of its own for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    try:
        yield postgres_cluster.dsn(name)
    finally:
        with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
