"""The ledger's folders are its layers: the deterministic core imports no I/O, the proofs depend on
nothing else of ours, and the consumer verifier checks evidence with the proofs alone."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
LEDGER = SERVICES / "shelfproof" / "ledger"
# Modules that reach outside the process or its memory: files, sockets, processes, clocks of the host.
IO_MODULES = {"sqlite3", "socket", "asyncio", "subprocess", "threading", "time", "os", "pathlib", "shutil", "grpc",
              "aiohttp", "httpx", "websockets", "psycopg", "random", "secrets", "tempfile", "datetime"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith("shelfproof.") and not n.startswith("shelfproof.ledger.v1")}


def test_the_core_imports_no_io_and_nothing_outside_the_core_and_proofs() -> None:
    for path in sorted((LEDGER / "core").glob("*.py")):
        names = imports_of(path)
        assert not {n.split(".")[0] for n in names} & IO_MODULES, (path.name, names & IO_MODULES)
        outside = {n for n in ours(names) if not n.startswith(("shelfproof.ledger.core", "shelfproof.ledger.proofs", "shelfproof.gs1"))}
        assert not outside, (path.name, outside)


def test_proofs_depend_on_nothing_else_of_ours() -> None:
    for path in sorted((LEDGER / "proofs").glob("*.py")):
        outside = {n for n in ours(imports_of(path)) if not n.startswith("shelfproof.ledger.proofs")}
        assert not outside, (path.name, outside)


def test_the_verifier_checks_evidence_with_the_proofs_alone() -> None:
    for name in ("check.py", "evidence.py", "trust.py", "verdict.py"):
        ledger = {n for n in ours(imports_of(SERVICES / "shelfproof" / "verify" / name)) if n.startswith("shelfproof.ledger")}
        # The clone rules are consensus rules the verifier recomputes: pure, integer, no state.
        assert all(n.startswith(("shelfproof.ledger.proofs", "shelfproof.ledger.core.clones")) for n in ledger), (name, ledger)


def test_one_transaction_parser() -> None:
    parsers = [p for p in LEDGER.rglob("*.py") if "def parse(" in p.read_text() and "v1" not in p.parts]
    assert [p.relative_to(LEDGER).as_posix() for p in parsers] == ["core/tx.py"]
