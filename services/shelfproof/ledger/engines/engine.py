"""What the ledger adapter needs from an engine, whichever runs the application underneath:
CometBFT validators (``comet_engine``) or the in-process single-key engine (``embedded``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tendermint.abci import types_pb2 as abci
from tendermint.types import types_pb2, validator_pb2


@dataclass(frozen=True)
class TxOutcome:
    code: int
    log: str = ""
    # The application's data: for a batch, a serialized BatchResult (per inner verdicts).
    data: bytes = b""


@dataclass(frozen=True)
class Block:
    height: int
    signed_header: types_pb2.SignedHeader
    validator_set: validator_pb2.ValidatorSet
    txs: list[bytes]
    results: list[TxOutcome]

    @property
    def block_hash(self) -> bytes:
        return self.signed_header.commit.block_id.hash

    @property
    def time_unix_ms(self) -> int:
        t = self.signed_header.header.time
        return t.seconds * 1000 + t.nanos // 1_000_000


class EngineUnavailable(Exception):
    """The engine cannot take or answer requests right now (node down, restarting)."""


class LedgerEngine(Protocol):
    name: str
    chain_id: str
    # How many ordered submission lanes the engine has (CometBFT: one per node). One account's
    # transactions must always take the same lane, in order: its nonces arrive in order.
    lanes: int

    def lane_of(self, signer: str) -> int: ...

    async def broadcast(self, raw: bytes, lane: int | None = None) -> TxOutcome:
        """Run CheckTx and, when it passes, put the transaction in the mempool (through ``lane``,
        or the signer's lane for one signed transaction)."""

    async def latest_height(self) -> int: ...

    async def mempool_size(self) -> int:
        """Engine transactions (batches) waiting in the mempool (CometBFT: ``num_unconfirmed_txs``)."""

    async def block(self, height: int) -> Block | None:
        """A committed block with its signed header and commit; None if not yet committed."""

    async def query(self, store: str, key: bytes, height: int, prove: bool) -> abci.ResponseQuery: ...

    async def query_many(self, request: bytes, height: int, prove: bool) -> abci.ResponseQuery:
        """The application's ``/keys`` query: a serialized QueryManyRequest in, QueryManyResponse out."""
        ...

    async def wait_for_new_block(self, after_height: int, timeout_s: float) -> int:
        """Wait until a block above ``after_height`` is committed; return the latest height."""

    async def close(self) -> None: ...
