"""A project-local PostgreSQL cluster: created, started and stopped by shelfproof itself.

PostgreSQL refuses to run as root, so when we are root the cluster's files belong to the ``postgres``
user and its programs run through ``runuser``. The cluster listens on 127.0.0.1 and a Unix socket in
its own folder, on a port of its own, with trust authentication: it is a development and test
database that nothing outside this machine can reach. Production points ``SHELFPROOF_PG_DSN`` at a
managed server instead.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

SERVICE_USER = "postgres"


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian keeps them out of PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3])
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError(
        "PostgreSQL is not installed: run `make deps` (Debian package `postgresql`)"
    )


def _is_root() -> bool:
    return os.geteuid() == 0


def _reachable_by_service_user(path: Path) -> bool:
    """True when the postgres user can traverse every parent of path (e.g. not under /root)."""
    for parent in [path, *path.parents]:
        if parent.exists():
            result = subprocess.run(
                ["runuser", "-u", SERVICE_USER, "--", "test", "-x", str(parent)],
                capture_output=True,
            )
            return result.returncode == 0
    return False


def default_cluster_dir(state_dir: Path) -> Path:
    """<state_dir>/postgres, or a folder under /var/tmp when root's files are out of postgres's reach."""
    wanted = (state_dir / "postgres").resolve()
    if not _is_root() or _reachable_by_service_user(wanted.parent):
        return wanted
    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"shelfproof-pg-{digest}"


@dataclass
class LocalPostgres:
    cluster_dir: Path
    port: int
    superuser: str = "shelfproof"
    # Test clusters trade durability for speed; `shelfproof up` keeps PostgreSQL's durable defaults.
    durable: bool = True
    bin_dir: Path = field(default_factory=find_bin_dir)

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.cluster_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.cluster_dir / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if _is_root():
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def initialize(self) -> bool:
        """Create the cluster if it does not exist; True when it was created now."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        self.cluster_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if _is_root():
            shutil.chown(self.cluster_dir, SERVICE_USER, SERVICE_USER)
            shutil.chown(self.socket_dir, SERVICE_USER, SERVICE_USER)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", self.superuser, "--auth=trust",
            "--encoding=UTF8", "--no-locale", "--no-instructions",
        )
        log.info("initialized PostgreSQL cluster", extra={"cluster_dir": str(self.cluster_dir)})
        return True

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def start(self) -> bool:
        """Start the cluster (creating it first if needed); False when it was already running."""
        self.initialize()
        if self.is_running():
            return False
        options = [
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "30",
            "-o", " ".join(options), "start",
        )
        log.info("PostgreSQL started", extra={"port": self.port, "cluster_dir": str(self.cluster_dir)})
        return True

    def stop(self) -> None:
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            log.info("PostgreSQL stopped", extra={"port": self.port})

    def ensure_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
