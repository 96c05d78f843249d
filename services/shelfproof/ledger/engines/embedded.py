"""The embedded engine: our ABCI application driven in-process by one validator key.

For development and fast tests. It runs the exact ABCI call sequence CometBFT runs (CheckTx into a
mempool; PrepareProposal, ProcessProposal, FinalizeBlock, Commit per block; RECHECK of what is left),
and produces headers and commits in CometBFT's v0.38 format signed by its key, so the adapter and the
light verifier treat it like a one-validator CometBFT chain. Blocks are stored in SQLite; on restart
the application is replayed from the stored blocks up to the block store's height, as CometBFT does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path

from google.protobuf import json_format, timestamp_pb2
from nacl.signing import SigningKey
from tendermint.abci import types_pb2 as abci
from tendermint.crypto import keys_pb2
from tendermint.types import params_pb2, types_pb2, validator_pb2
from tendermint.version import types_pb2 as version_pb2

from shelfproof.ledger.proofs import light, merkle
from shelfproof.ledger.proofs.light import EMBEDDED_VALIDATOR_POWER
from shelfproof.ledger.core.app import LedgerApplication
from shelfproof.ledger.storage import StateDB
from shelfproof.ledger.engines.engine import Block, TxOutcome
from shelfproof.ledger.v1 import state_pb2 as st

log = logging.getLogger(__name__)

BLOCK_PROTOCOL = 11  # CometBFT v0.38 block version
MAX_BLOCK_TXS = 10_000
MAX_TX_BYTES_PER_BLOCK = 21 * 1024 * 1024
MEMPOOL_SIZE = 50_000


def _timestamp(unix_ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=unix_ns // 1_000_000_000, nanos=unix_ns % 1_000_000_000)


def results_hash(results: list[abci.ExecTxResult]) -> bytes:
    """CometBFT's LastResultsHash: Merkle root over the deterministic part of each result."""
    return merkle.MerkleTree.from_items(
        [abci.ExecTxResult(code=r.code, data=r.data, gas_wanted=r.gas_wanted, gas_used=r.gas_used).SerializeToString() for r in results]
    ).root


def consensus_params_hash() -> bytes:
    return hashlib.sha256(
        params_pb2.HashedParams(block_max_bytes=MAX_TX_BYTES_PER_BLOCK, block_max_gas=-1).SerializeToString()
    ).digest()


class ValidatorKey:
    """The engine's Ed25519 key, kept in CometBFT's priv_validator_key.json format."""

    def __init__(self, signing_key: SigningKey) -> None:
        self.signing_key = signing_key
        self.public_key = bytes(signing_key.verify_key)
        self.address = hashlib.sha256(self.public_key).digest()[:20]

    @classmethod
    def load_or_create(cls, path: Path) -> "ValidatorKey":
        if path.exists():
            data = json.loads(path.read_text())
            return cls(SigningKey(base64.b64decode(data["priv_key"]["value"])[:32]))
        key = cls(SigningKey.generate())
        path.write_text(
            json.dumps(
                {
                    "address": key.address.hex().upper(),
                    "pub_key": {"type": "tendermint/PubKeyEd25519", "value": base64.b64encode(key.public_key).decode()},
                    "priv_key": {
                        "type": "tendermint/PrivKeyEd25519",
                        "value": base64.b64encode(bytes(key.signing_key) + key.public_key).decode(),
                    },
                },
                indent=2,
            )
        )
        path.chmod(0o600)
        return key

    def validator_set(self) -> validator_pb2.ValidatorSet:
        validator = validator_pb2.Validator(
            address=self.address,
            pub_key=keys_pb2.PublicKey(ed25519=self.public_key),
            voting_power=EMBEDDED_VALIDATOR_POWER,
            proposer_priority=0,
        )
        return validator_pb2.ValidatorSet(validators=[validator], proposer=validator, total_voting_power=EMBEDDED_VALIDATOR_POWER)


class BlockStore:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, signed_header BLOB, txs BLOB, results BLOB)"
        )

    def height(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(height), 0) FROM blocks").fetchone()[0]

    def save(self, signed_header: types_pb2.SignedHeader, txs: list[bytes], results: abci.ResponseFinalizeBlock) -> None:
        self.conn.execute(
            "INSERT INTO blocks VALUES (?, ?, ?, ?)",
            (
                signed_header.header.height,
                signed_header.SerializeToString(),
                types_pb2.Data(txs=txs).SerializeToString(),
                results.SerializeToString(),
            ),
        )

    def load(self, height: int) -> tuple[types_pb2.SignedHeader, list[bytes], abci.ResponseFinalizeBlock] | None:
        row = self.conn.execute("SELECT signed_header, txs, results FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            return None
        signed_header = types_pb2.SignedHeader.FromString(row[0])
        return signed_header, list(types_pb2.Data.FromString(row[1]).txs), abci.ResponseFinalizeBlock.FromString(row[2])


class EmbeddedEngine:
    name = "embedded"
    lanes = 1

    def __init__(
        self,
        home: Path,
        chain_id: str,
        genesis: st.GenesisState,
        *,
        block_interval_s: float = 0.05,
        empty_block_interval_s: float = 1.0,
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.chain_id = chain_id
        self.genesis = genesis
        self.block_interval_s = block_interval_s
        self.empty_block_interval_s = empty_block_interval_s
        self.key = ValidatorKey.load_or_create(home / "priv_validator_key.json")
        self.validator_set = self.key.validator_set()
        self.validators_hash = light.validator_set_hash(self.validator_set.validators)
        self.app = LedgerApplication(StateDB(home / "app" / "state.db"))
        self.blocks = BlockStore(home / "blocks.db")
        self.mempool: dict[bytes, bytes] = {}  # tx hash -> tx, in arrival order
        self._new_block = asyncio.Condition()
        self._producer: asyncio.Task | None = None
        self._last_block: tuple[types_pb2.SignedHeader, abci.ResponseFinalizeBlock] | None = None
        self._proof_block_due = False
        self._start()

    # --- start-up: genesis or replay -------------------------------------------------------------

    def _start(self) -> None:
        store_height, app_height = self.blocks.height(), self.app.height
        if app_height > store_height:
            raise RuntimeError(f"application at height {app_height} is ahead of the block store ({store_height})")
        if store_height == 0:
            if self.app.chain_id and self.app.chain_id != self.chain_id:
                raise RuntimeError(f"state belongs to chain {self.app.chain_id}, not {self.chain_id}")
            response = self.app.init_chain(
                abci.RequestInitChain(
                    chain_id=self.chain_id,
                    app_state_bytes=json_format.MessageToJson(self.genesis).encode(),
                    initial_height=1,
                )
            )
            self._genesis_app_hash = response.app_hash
        else:
            for height in range(app_height + 1, store_height + 1):
                signed_header, txs, _ = self.blocks.load(height)
                self.app.finalize_block(self._finalize_request(signed_header.header, txs))
                self.app.commit()
                log.info("replayed block", extra={"height": height})
            signed_header, _, results = self.blocks.load(store_height)
            self._last_block = (signed_header, results)
            if results.app_hash != self.app.app_hash:
                raise RuntimeError("app hash after replay differs from the stored block's")

    def _finalize_request(self, header: types_pb2.Header, txs: list[bytes]) -> abci.RequestFinalizeBlock:
        return abci.RequestFinalizeBlock(
            txs=txs,
            hash=light.header_hash(header),
            height=header.height,
            time=header.time,
            next_validators_hash=header.next_validators_hash,
            proposer_address=header.proposer_address,
        )

    async def start(self) -> None:
        self._producer = asyncio.create_task(self._produce_blocks(), name="embedded-block-producer")

    async def close(self) -> None:
        if self._producer:
            self._producer.cancel()
            await asyncio.gather(self._producer, return_exceptions=True)
        self.blocks.conn.close()
        if self.app.state.db:
            self.app.state.db.close()

    # --- the engine's API (LedgerEngine) -------------------------------------------------------

    def lane_of(self, signer: str) -> int:
        return 0

    async def broadcast(self, raw: bytes, lane: int | None = None) -> TxOutcome:
        tx_hash = hashlib.sha256(raw).digest()
        if tx_hash in self.mempool:
            return TxOutcome(0, "already in mempool")
        if len(self.mempool) >= MEMPOOL_SIZE:
            return TxOutcome(-1, "mempool is full")
        response = self.app.check_tx(abci.RequestCheckTx(tx=raw, type=abci.NEW))
        if response.code == 0:
            self.mempool[tx_hash] = raw
        return TxOutcome(response.code, response.log, response.data)

    async def mempool_size(self) -> int:
        return len(self.mempool)

    async def latest_height(self) -> int:
        return self.blocks.height()

    async def block(self, height: int) -> Block | None:
        loaded = self.blocks.load(height)
        if loaded is None:
            return None
        signed_header, txs, results = loaded
        return Block(
            height,
            signed_header,
            self.validator_set,
            txs,
            [TxOutcome(r.code, r.log, r.data) for r in results.tx_results],
        )

    async def query(self, store: str, key: bytes, height: int, prove: bool) -> abci.ResponseQuery:
        return self.app.query(abci.RequestQuery(path=f"/store/{store}/key", data=key, height=height, prove=prove))

    async def query_many(self, request: bytes, height: int, prove: bool) -> abci.ResponseQuery:
        return self.app.query(abci.RequestQuery(path="/keys", data=request, height=height, prove=prove))

    async def wait_for_new_block(self, after_height: int, timeout_s: float) -> int:
        async with self._new_block:
            try:
                await asyncio.wait_for(
                    self._new_block.wait_for(lambda: self.blocks.height() > after_height), timeout_s
                )
            except asyncio.TimeoutError:
                pass
        return self.blocks.height()

    # --- block production ----------------------------------------------------------------------

    async def _produce_blocks(self) -> None:
        last_block_at = time.monotonic()
        while True:
            await asyncio.sleep(self.block_interval_s)
            due = self.mempool or self._proof_block_due
            if not due and time.monotonic() - last_block_at < self.empty_block_interval_s:
                continue
            self.produce_block()
            last_block_at = time.monotonic()
            async with self._new_block:
                self._new_block.notify_all()

    def produce_block(self) -> None:
        """Make, execute, sign and store the next block (synchronous: nothing interleaves)."""
        height = self.blocks.height() + 1
        now_ns = time.time_ns()
        if self._last_block is None:
            last_block_id = types_pb2.BlockID()
            last_commit_hash = merkle.MerkleTree.from_items([]).root
            app_hash, last_results = self._genesis_app_hash, merkle.MerkleTree.from_items([]).root
        else:
            previous, previous_results = self._last_block
            # With one validator, BFT time is the time of its vote in the previous commit.
            vote = previous.commit.signatures[0].timestamp
            now_ns = vote.seconds * 1_000_000_000 + vote.nanos
            last_block_id = previous.commit.block_id
            last_commit_hash = merkle.MerkleTree.from_items(
                [sig.SerializeToString() for sig in previous.commit.signatures]
            ).root
            app_hash, last_results = previous_results.app_hash, results_hash(list(previous_results.tx_results))

        proposal = self.app.prepare_proposal(
            abci.RequestPrepareProposal(
                max_tx_bytes=MAX_TX_BYTES_PER_BLOCK,
                txs=list(self.mempool.values())[:MAX_BLOCK_TXS],
                height=height,
                time=_timestamp(now_ns),
                next_validators_hash=self.validators_hash,
                proposer_address=self.key.address,
            )
        )
        txs = list(proposal.txs)
        header = types_pb2.Header(
            version=version_pb2.Consensus(block=BLOCK_PROTOCOL, app=1),
            chain_id=self.chain_id,
            height=height,
            time=_timestamp(now_ns),
            last_block_id=last_block_id,
            last_commit_hash=last_commit_hash,
            data_hash=merkle.MerkleTree.from_leaf_hashes(
                [merkle.leaf_hash(hashlib.sha256(tx).digest()) for tx in txs]
            ).root,
            validators_hash=self.validators_hash,
            next_validators_hash=self.validators_hash,
            consensus_hash=consensus_params_hash(),
            app_hash=app_hash,
            last_results_hash=last_results,
            evidence_hash=merkle.MerkleTree.from_items([]).root,
            proposer_address=self.key.address,
        )
        verdict = self.app.process_proposal(
            abci.RequestProcessProposal(txs=txs, height=height, time=header.time, hash=light.header_hash(header))
        )
        if verdict.status != abci.ResponseProcessProposal.ACCEPT:
            # PrepareProposal leaves out what ProcessProposal refuses: disagreeing is a bug in the app.
            raise RuntimeError(f"the application rejected its own proposal at height {height}")
        results = self.app.finalize_block(self._finalize_request(header, txs))
        block_id = light.block_id_for(header)
        # The vote is cast after the block's time (CometBFT requires the next block to be later).
        vote_ns = max(time.time_ns(), now_ns + 1_000_000)
        commit = light.sign_commit(
            self.chain_id, header, block_id, (self.key.signing_key, self.key.address), _timestamp(vote_ns)
        )
        signed_header = types_pb2.SignedHeader(header=header, commit=commit)
        # The block is stored before the application commits, as CometBFT saves a block before
        # calling Commit: a crash in between is repaired by replay on restart.
        self.blocks.save(signed_header, txs, results)
        self.app.commit()
        self._last_block = (signed_header, results)
        # A changed app hash needs the next header to carry it before it can be proven.
        self._proof_block_due = bool(txs)
        for raw in txs:
            self.mempool.pop(hashlib.sha256(raw).digest(), None)
        for tx_hash, raw in list(self.mempool.items()):
            if self.app.check_tx(abci.RequestCheckTx(tx=raw, type=abci.RECHECK)).code != 0:
                del self.mempool[tx_hash]
