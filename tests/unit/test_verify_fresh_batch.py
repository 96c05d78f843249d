"""A code whose batch committed moments ago: the verifier reads again until the batch is provable, and
answers "try again" (never "not genuine") when it still is not."""

from __future__ import annotations

import pytest

from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.runtime.errors import DependencyUnavailable
from shelfproof.verify import evidence as ev
from shelfproof.verify.service import LedgerRead, Verifier


class ReaderCatchingUp:
    """Answers without the batch for the first ``lagging`` reads (the proof height is one block behind)."""

    def __init__(self, lagging: int) -> None:
        self.lagging, self.reads = lagging, 0

    async def read(self, keys):
        self.reads += 1
        records = {} if self.reads <= self.lagging else {"batches": st.BatchRecord(height=7)}
        return LedgerRead(None, [], records, [])


def _verifier(reader: ReaderCatchingUp) -> Verifier:
    verifier = Verifier.__new__(Verifier)  # only the reader is used on this path
    verifier.reader = reader
    return verifier


REF = ev.ItemRef("00614141123452", "S1", "", "batch-1", "L1")


async def test_the_batch_is_read_again_until_its_block_is_provable():
    reader = ReaderCatchingUp(lagging=3)
    read = await _verifier(reader)._await_provable_batch(REF)
    assert read.records["batches"].height == 7 and reader.reads == 4


async def test_a_batch_that_never_becomes_provable_is_try_again_not_counterfeit(monkeypatch):
    monkeypatch.setattr(Verifier, "PROVABLE_WAIT_S", 0.6)
    with pytest.raises(DependencyUnavailable) as refused:
        await _verifier(ReaderCatchingUp(lagging=10**6))._await_provable_batch(REF)
    assert "try again" in refused.value.message
