"""A validator's process killed (SIGKILL) at the worst moments of Commit: inside the state file's write
transaction, and right after it committed but before the in-memory trees took the block. Reopened, the
state is the previous commit or this one, never a mix, and replaying the block reaches the same app hash
as a node that never crashed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from shelfproof.ledger.core.state import LedgerState, Overlay
from shelfproof.ledger.storage import StateDB

# Blocks 1..4 of a small history; block 4 is the one the crash interrupts.
_BLOCKS = """
def blocks():
    out = []
    for h in range(1, 5):
        out.append({("items", f"k{(h * 31 + j) % 500}".encode()): f"h{h}-{j}".encode() for j in range(300)}
                   | {("orgs", f"o{h}".encode()): b"org"})
    return out

def run_block(state, writes):
    overlay = Overlay(state.latest)
    for (store, key), value in writes.items():
        overlay.set(store, key, value)
    version = state.next_version(state.latest.height + 1, overlay)
    state.commit(version, overlay)
    return version.app_hash
"""
exec(_BLOCKS)  # the same history here and in the child  # noqa: S102


def _child(path, kill_at: str) -> int:
    script = textwrap.dedent(
        f"""
        import os, signal
        from shelfproof.ledger.core.state import LedgerState, Overlay
        from shelfproof.ledger.storage import StateDB
        {textwrap.indent(_BLOCKS, '        ').strip()}
        db = StateDB({str(path)!r})
        state = LedgerState(db)
        history = blocks()
        for writes in history[:3]:
            run_block(state, writes)
        kill_at = {kill_at!r}
        def trace(sql):
            if sql.startswith(kill_at):
                os.kill(os.getpid(), signal.SIGKILL)
        if kill_at == "after-commit":
            original = state.db.save
            def save(*args, **kwargs):
                original(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
            state.db.save = save
        else:
            db.conn.set_trace_callback(trace)
        run_block(state, history[3])
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).returncode


@pytest.mark.parametrize(
    "kill_at, height_after",
    [
        ("INSERT OR REPLACE INTO kv", 3),  # rows half written
        ("INSERT OR REPLACE INTO buckets", 3),  # rows written, bucket roots not
        ("DELETE FROM kv WHERE until", 3),  # everything but the pruning, the transaction still open
        ("COMMIT", 3),  # the commit statement itself
        ("after-commit", 4),  # on disk, not yet in memory
    ],
)
def test_a_kill_at_the_worst_moment_leaves_one_commit_and_replay_reaches_the_same_hash(tmp_path, kill_at, height_after):
    honest = LedgerState(StateDB(tmp_path / "honest.db"))
    hashes = [run_block(honest, writes) for writes in blocks()]  # noqa: F821 - from _BLOCKS

    path = tmp_path / "crashed.db"
    assert _child(path, kill_at) == -signal.SIGKILL
    reopened = LedgerState(StateDB(path))
    assert reopened.latest.height == height_after
    assert reopened.latest.app_hash == hashes[height_after - 1]
    if height_after == 3:  # CometBFT replays the block the application does not have
        assert run_block(reopened, blocks()[3]) == hashes[3]  # noqa: F821
    assert reopened.dump() == honest.dump()
    assert LedgerState(StateDB(path)).latest.app_hash == hashes[3]
