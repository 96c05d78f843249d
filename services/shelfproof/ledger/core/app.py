"""The ABCI 2.0 application (CometBFT v0.38 wire types), transport-free.

The socket server (``abci_server``) and the embedded engine (``embedded``) both drive this class, so
CometBFT validators and the in-process engine execute identical code. Execution is total: every
transaction is answered with a code (a rejection, or INTERNAL_ERROR with its writes discarded for a bug
a transaction reaches), never an exception, and nothing it depends on is node-local: parsing is a
function of the bytes (``tx.parse``), keys and revocations are read from the state being executed,
and the one cache (signature validity) is keyed on everything the verification reads. The one raise
left in block execution is a FinalizeBlock for a height other than the next: a node bug, not input.

A batch (``tx.TransactionBatch``) is one CometBFT transaction of many signed ones, each executed on
its own: its own signature check, nonce, result code and writes, so one bad inner transaction never
sinks its neighbours. A batch enters the mempool only if every inner transaction passes CheckTx
(the answer's ``data`` says which did not, so the adapter re-packs the rest); in a block each inner
result is committed in the batch's ``ExecTxResult.data`` (a ``BatchResult``). Only a batch whose own
envelope is invalid is refused as a whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from google.protobuf import json_format
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from tendermint.abci import types_pb2 as abci
from tendermint.crypto import proof_pb2

from shelfproof.ledger.core import rules
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.proofs.merkle import uvarint
from shelfproof.ledger.core.state import (
    RETAINED_VERSIONS,
    SNAPSHOT_FORMAT,
    STORES,
    AppVersion,
    LedgerState,
    Overlay,
    SnapshotError,
    StateStore,
    decode_snapshot_chunk,
    parse_snapshot_metadata,
)
from shelfproof.ledger.core.tx import ParsedTx, application_transactions, is_batch, parse, parse_batch, sign_doc_bytes, tx_hash
from shelfproof.ledger.v1 import ledger_pb2
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

log = logging.getLogger(__name__)

APP_VERSION = 1
SIGNATURE_CACHE_SIZE = 200_000
# Inner transactions this node committed lately: CheckTx answers "already known" for them (as
# CometBFT's own cache does for whole transactions), so a resubmission is not taken for a replay.
RECENTLY_COMMITTED_SIZE = 200_000
BATCH_PLANS_SIZE = 20_000


MAX_KEYS_PER_QUERY = 256


class LedgerApplication:
    """State machine + ABCI handlers. ``db`` (``shelfproof.ledger.storage.StateDB``) persists the
    committed state; None keeps it in memory (unit tests). ``retain`` versions stay provable; every
    ``snapshot_interval`` heights (0: never) a state-sync snapshot is taken, the newest
    ``snapshot_keep`` kept."""

    def __init__(
        self, db: StateStore | None = None, *, retain: int = RETAINED_VERSIONS, snapshot_interval: int = 0, snapshot_keep: int = 2
    ) -> None:
        self.state = LedgerState(db, retain)
        self.snapshot_interval = snapshot_interval
        self.snapshot_keep = snapshot_keep
        # The snapshot being restored (OfferSnapshot accepted it): its height, trusted app hash, chain
        # id, block time, chunk hashes and the records of the chunks applied so far.
        self._restoring: _Restore | None = None
        self.chain_id = self.state.meta.get("chain_id", b"").decode()
        # The time of the last committed block: CheckTx checks against it (a scan may be stamped at
        # most MAX_SCAN_SKEW_S after it), so it is committed with the state and survives a restart.
        self._last_block_time = int(self.state.meta.get("last_block_time", b"0"))
        # Signature validity keyed on what the verification reads: SHA-256 of (public key, sign-doc
        # bytes, signature). A hit is the answer a fresh verification would give, whatever state or
        # node asked, so the cache cannot make nodes differ; which key a transaction names and
        # whether it is revoked are read from the state being executed every time.
        self._signature_ok: OrderedDict[bytes, bool] = OrderedDict()
        # Node-local, read only by CheckTx (never by a block): inner transactions in the mempool's
        # check state (rebuilt by RECHECK after each Commit) and recently committed ones.
        self._checked_inner: set[bytes] = set()
        self._recently_committed: OrderedDict[bytes, None] = OrderedDict()
        self._block_inner: list[bytes] = []  # the hashes of the block being finalized, for Commit
        # Per batch admitted by CheckTx: (inner hash, signer, nonce) of each inner transaction, a
        # function of the batch's bytes. RECHECK (after every block, for every batch still in the
        # mempool) reads it instead of parsing every inner transaction again.
        self._batch_plans: OrderedDict[bytes, tuple[tuple[bytes, str, int], ...]] = OrderedDict()
        # The first height FinalizeBlock may run for on a fresh chain (InitChain's initial_height).
        self._initial_height = 1
        self._reset_check_state()
        # FinalizeBlock's result (version, writes, block time) until Commit persists it.
        self._pending_block: tuple[AppVersion, Overlay, int, list[bytes]] | None = None
        # Proof ops by (app hash, store, key): many readers ask for the same keys at one height.
        self._proof_ops: OrderedDict[tuple[bytes, str, bytes], tuple[ledger_pb2.ProofOp, ...]] = OrderedDict()

    # --- queries of the committed state (used by ABCI Query and the embedded engine) ---------

    @property
    def height(self) -> int:
        return self.state.latest.height

    @property
    def app_hash(self) -> bytes:
        return self.state.latest.app_hash

    # --- ABCI: info and genesis ----------------------------------------------------------------

    def info(self, request: abci.RequestInfo) -> abci.ResponseInfo:
        height = self.height
        return abci.ResponseInfo(
            data="shelfproof-ledger",
            version="1",
            app_version=APP_VERSION,
            last_block_height=height,
            last_block_app_hash=self.app_hash if height else b"",
        )

    def init_chain(self, request: abci.RequestInitChain) -> abci.ResponseInitChain:
        """Load the genesis organizations, roles and agents. Idempotent: runs again after a crash
        before the first Commit, starting from empty state each time."""
        self.chain_id = request.chain_id
        self._initial_height = max(request.initial_height, 1)
        genesis = st.GenesisState()
        if request.app_state_bytes and request.app_state_bytes.strip() not in (b"", b"null", b"{}"):
            json_format.Parse(request.app_state_bytes, genesis)
        overlay = Overlay(self.state.genesis_base())
        rules.load_genesis(overlay, genesis)
        version = self.state.replace_genesis(overlay)
        self._reset_check_state()
        log.info("genesis loaded", extra={"chain_id": self.chain_id, "agents": len(genesis.agents)})
        return abci.ResponseInitChain(app_hash=version.app_hash)

    # --- transaction checks ------------------------------------------------------------------

    @staticmethod
    def _parse(raw: bytes) -> ParsedTx:
        return parse(raw)

    def _authenticate(self, state: Overlay, tx: ParsedTx) -> st.AgentRecord:
        signed = tx.signed
        agent = rules.read(state, "agents", signed.signer, st.AgentRecord)
        if agent is None:
            raise TxRejected(ResultCode.UNKNOWN_SIGNER, f"unknown signer {signed.signer!r}")
        key = next((k for k in agent.keys if k.key_id == signed.key_id), None)
        if key is None:
            raise TxRejected(ResultCode.UNKNOWN_KEY, f"{signed.signer} has no key {signed.key_id!r}")
        if key.revoked:
            raise TxRejected(ResultCode.KEY_REVOKED, f"key {signed.key_id} of {signed.signer} is revoked")
        if not self._signature_valid(key.public_key, signed):
            raise TxRejected(
                ResultCode.BAD_SIGNATURE,
                f"signature does not verify for chain {self.chain_id!r}, signer, key, nonce and body",
            )
        return agent

    def _signature_valid(self, public_key: bytes, signed: txpb.SignedTransaction) -> bool:
        doc = sign_doc_bytes(self.chain_id, signed.signer, signed.key_id, signed.nonce, signed.body)
        proves = hashlib.sha256()
        for part in (public_key, doc, signed.signature):
            proves.update(len(part).to_bytes(8, "big"))
            proves.update(part)
        cache_key = proves.digest()
        valid = self._signature_ok.get(cache_key)
        if valid is None:
            try:
                VerifyKey(public_key).verify(doc, signed.signature)
                valid = True
            except (BadSignatureError, ValueError, TypeError):
                valid = False
            self._signature_ok[cache_key] = valid
            if len(self._signature_ok) > SIGNATURE_CACHE_SIZE:
                self._signature_ok.popitem(last=False)
        return valid

    @staticmethod
    def _check_nonce(agent: st.AgentRecord, nonce: int) -> None:
        expected = agent.nonce + 1
        if nonce < expected:
            raise TxRejected(ResultCode.NONCE_REPLAYED, f"nonce {nonce} of {agent.agent_id} is used; next is {expected}")
        if nonce > expected:
            raise TxRejected(ResultCode.NONCE_GAP, f"nonce {nonce} of {agent.agent_id} skips ahead; next is {expected}")

    def _execute(self, state: Overlay, tx: ParsedTx, height: int, time_unix_s: int) -> None:
        """Authenticate, consume the nonce, then apply the action atomically (or not at all)."""
        agent = self._authenticate(state, tx)
        self._check_nonce(agent, tx.signed.nonce)
        agent.nonce = tx.signed.nonce
        rules.write(state, "agents", agent.agent_id, agent)
        permissions = rules.permissions_of(state, agent)
        ctx = rules.TxContext(height, time_unix_s, tx.hash, agent, permissions, tx.signed.key_id, self.chain_id)
        rules.authorize(state, ctx, tx.action)
        action_state = Overlay(state)
        rules.HANDLERS[tx.action](action_state, ctx, getattr(tx.body, tx.action))
        action_state.merge_into(state)

    def _reset_check_state(self) -> None:
        self._check_state = Overlay(self.state.latest)
        self._checked_inner = set()

    def _known_to_this_node(self, h: bytes) -> bool:
        return h in self._checked_inner or h in self._recently_committed

    def _check_one(self, state: Overlay, raw: bytes, recheck: bool) -> ParsedTx:
        """CheckTx of one signed transaction into ``state`` (left untouched when it is rejected)."""
        tx = self._parse(raw)
        if recheck:
            # After a block: only the nonce can have gone stale (the signature and the rules are
            # checked again in FinalizeBlock, against the block's state).
            agent = rules.read(state, "agents", tx.signed.signer, st.AgentRecord)
            if agent is None:
                raise TxRejected(ResultCode.UNKNOWN_SIGNER, "unknown signer")
            self._check_nonce(agent, tx.signed.nonce)
            agent.nonce = tx.signed.nonce
            rules.write(state, "agents", agent.agent_id, agent)
        else:
            tx_state = Overlay(state)
            self._execute(tx_state, tx, self.height + 1, self._last_block_time)
            tx_state.merge_into(state)
        return tx

    def _recheck_planned(self, plan: tuple[tuple[bytes, str, int], ...]) -> abci.ResponseCheckTx:
        """RECHECK of a batch this node admitted: its nonces against the check state, each signer's
        record read and written once."""
        agents: dict[str, st.AgentRecord | None] = {}
        passed = 0
        for _, signer, nonce in plan:
            if signer not in agents:
                agents[signer] = rules.read(self._check_state, "agents", signer, st.AgentRecord)
            agent = agents[signer]
            if agent is not None and nonce == agent.nonce + 1:
                agent.nonce = nonce
                passed += 1
        if not passed:
            return abci.ResponseCheckTx(code=ResultCode.NONCE_REPLAYED, log="no inner transaction is still valid", codespace="shelfproof")
        for signer, agent in agents.items():
            if agent is not None:
                rules.write(self._check_state, "agents", signer, agent)
        self._checked_inner.update(h for h, _, _ in plan)
        return abci.ResponseCheckTx(code=0, gas_wanted=1)

    def _check_batch(self, request: abci.RequestCheckTx) -> abci.ResponseCheckTx:
        """A new batch enters the mempool only if every inner transaction passes, in order; the
        answer's data is a BatchResult naming each verdict. RECHECK keeps a batch while any inner
        transaction still passes (the stale ones are answered in-band in the block)."""
        recheck = request.type == abci.RECHECK
        if recheck:
            plan = self._batch_plans.get(tx_hash(request.tx))
            if plan is not None:
                return self._recheck_planned(plan)
        batch = parse_batch(request.tx)
        batch_state = Overlay(self._check_state)
        results, passed, plan, first_failure = [], [], [], None
        for raw in batch.transactions:
            h = tx_hash(raw)
            result = txpb.InnerResult(tx_hash=h)
            if not recheck and (self._known_to_this_node(h) or h in passed):
                result.code, result.log, result.already_known = ResultCode.NONCE_REPLAYED, _ALREADY_KNOWN_LOG, True
            else:
                try:
                    tx = self._check_one(batch_state, raw, recheck)
                    passed.append(h)
                    plan.append((h, tx.signed.signer, tx.signed.nonce))
                except TxRejected as rejected:
                    result.code, result.log = rejected.code, rejected.log
                except Exception:  # noqa: BLE001 - a bug an inner transaction reaches is its rejection
                    log.exception("CheckTx failed on an inner transaction; rejected as INTERNAL_ERROR", extra={"tx_hash": h.hex()})
                    result.code, result.log = ResultCode.INTERNAL_ERROR, _INTERNAL_LOG
            if result.code and first_failure is None:
                first_failure = result
            results.append(result)
        data = txpb.BatchResult(results=results).SerializeToString()
        if (bool(passed) if recheck else first_failure is None):
            batch_state.merge_into(self._check_state)
            self._checked_inner.update(passed)
            if not recheck:
                self._batch_plans[batch.hash] = tuple(plan)
                while len(self._batch_plans) > BATCH_PLANS_SIZE:
                    self._batch_plans.popitem(last=False)
            return abci.ResponseCheckTx(code=0, gas_wanted=1, data=data)
        return abci.ResponseCheckTx(
            code=first_failure.code, data=data, codespace="shelfproof",
            log=f"{sum(1 for r in results if r.code)} of {len(results)} inner transactions refused; first: {first_failure.log}",
        )

    def check_tx(self, request: abci.RequestCheckTx) -> abci.ResponseCheckTx:
        try:
            if is_batch(request.tx):
                return self._check_batch(request)
            if request.type != abci.RECHECK and self._known_to_this_node(tx_hash(request.tx)):
                raise TxRejected(ResultCode.NONCE_REPLAYED, _ALREADY_KNOWN_LOG)
            self._check_one(self._check_state, request.tx, request.type == abci.RECHECK)
            self._checked_inner.add(tx_hash(request.tx))
        except TxRejected as rejected:
            return abci.ResponseCheckTx(code=rejected.code, log=rejected.log, codespace="shelfproof")
        except Exception:  # noqa: BLE001 - a bug a transaction reaches is its rejection, not the node's end
            log.exception("CheckTx failed on a transaction; rejected as INTERNAL_ERROR", extra={"tx_hash": _hash_hex(request.tx)})
            return abci.ResponseCheckTx(code=ResultCode.INTERNAL_ERROR, log=_INTERNAL_LOG, codespace="shelfproof")
        return abci.ResponseCheckTx(code=0, gas_wanted=1)

    # --- blocks --------------------------------------------------------------------------------

    def prepare_proposal(self, request: abci.RequestPrepareProposal) -> abci.ResponsePrepareProposal:
        """Take mempool transactions in order while they fit (size counted as CometBFT does), leaving
        out any that fail the stateless checks (ProcessProposal would reject the block)."""
        room, chosen = request.max_tx_bytes, []
        for raw in request.txs:
            size = len(raw) + 1 + len(uvarint(len(raw)))
            if size > room:
                break
            if _stateless_rejection(raw) is not None:
                continue
            room -= size
            chosen.append(raw)
        return abci.ResponsePrepareProposal(txs=chosen)

    def process_proposal(self, request: abci.RequestProcessProposal) -> abci.ResponseProcessProposal:
        """Reject a block carrying a transaction no state could make valid (too large, malformed,
        non-canonical, out of bounds; for a batch, its own envelope): only a faulty proposer
        includes one. A bad inner transaction of a well-formed batch is answered in-band. Stateful failures stay
        in-band in FinalizeBlock, where rejecting the block would only cost liveness."""
        for raw in request.txs:
            rejected = _stateless_rejection(raw)
            if rejected is not None:
                log.warning(
                    "rejecting a proposal with a stateless-invalid transaction",
                    extra={"height": request.height, "tx_hash": _hash_hex(raw), "code": int(rejected.code), "reason": rejected.log},
                )
                return abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.REJECT)
        return abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.ACCEPT)

    def _execute_in_block(
        self, block_state: Overlay, raw: bytes, height: int, block_time: int
    ) -> tuple[ResultCode, str, ParsedTx | None]:
        """Execute one signed transaction into ``block_state``: (code, log, the parsed transaction
        when it succeeded). Total: every outcome is a code."""
        tx_state = Overlay(block_state)
        try:
            tx = self._parse(raw)
            self._execute(tx_state, tx, height, block_time)
        except TxRejected as rejected:
            # tx_state holds at most the consumed nonce (the action's writes were discarded):
            # once the signature checked out, a failed action still uses its nonce.
            tx_state.merge_into(block_state)
            return rejected.code, rejected.log, None
        except Exception:  # noqa: BLE001 - every transaction gets a result, never an exception
            # A bug the transaction reaches: the same code on every node, and every write of
            # the transaction discarded (its nonce too), so the state stays one the rules allow.
            log.error(
                "transaction raised; answered INTERNAL_ERROR, its writes discarded",
                exc_info=True, extra={"height": height, "tx_hash": _hash_hex(raw)},
            )
            return ResultCode.INTERNAL_ERROR, _INTERNAL_LOG, None
        tx_state.merge_into(block_state)
        return ResultCode.OK, "", tx

    def _execute_batch(self, block_state: Overlay, raw: bytes, height: int, block_time: int) -> abci.ExecTxResult:
        """Each inner transaction on its own; their verdicts are committed as the batch's data
        (codes and hashes only: data is hashed into the next header, logs are not)."""
        try:
            batch = parse_batch(raw)
        except TxRejected as rejected:
            return abci.ExecTxResult(code=rejected.code, log=rejected.log, codespace="shelfproof")
        verdicts, logs = txpb.BatchResult(), []
        for inner in batch.transactions:
            code, text, _ = self._execute_in_block(block_state, inner, height, block_time)
            h = tx_hash(inner)
            verdicts.results.add(tx_hash=h, code=code)
            logs.append(text)
            self._block_inner.append(h)
        return abci.ExecTxResult(code=0, data=verdicts.SerializeToString(), log=json.dumps(logs))

    def finalize_block(self, request: abci.RequestFinalizeBlock) -> abci.ResponseFinalizeBlock:
        expected = self.height + 1 if self.height else self._initial_height
        if request.height != expected:
            # CometBFT never asks this: our committed state and its block store disagree, and
            # answering would build on the wrong state. The one raise out of FinalizeBlock: this
            # node stops loudly. (The same height again before Commit is fine: CometBFT restarted.)
            raise RuntimeError(f"FinalizeBlock for height {request.height}, but the next height is {expected}")
        block_time = request.time.seconds
        block_state = Overlay(self.state.latest)
        # Scheduled prices and promotion windows due by this block's time, before its transactions
        # (bounded work, total: see rules.pricing.run_price_schedule).
        rules.run_price_schedule(block_state, request.height, block_time)
        results = []
        self._block_inner = []
        for raw in request.txs:
            if is_batch(raw):
                results.append(self._execute_batch(block_state, raw, request.height, block_time))
                continue
            code, text, tx = self._execute_in_block(block_state, raw, request.height, block_time)
            self._block_inner.append(tx_hash(raw))
            if tx is None:
                results.append(abci.ExecTxResult(code=code, log=text, codespace="shelfproof"))
                continue
            results.append(
                abci.ExecTxResult(
                    code=0,
                    events=[
                        abci.Event(
                            type="shelfproof",
                            attributes=[
                                abci.EventAttribute(key="action", value=tx.action, index=True),
                                abci.EventAttribute(key="signer", value=tx.signed.signer, index=True),
                            ],
                        )
                    ],
                )
            )
        version = self.state.next_version(request.height, block_state)
        self._pending_block = (version, block_state, block_time, self._block_inner)
        return abci.ResponseFinalizeBlock(tx_results=results, app_hash=version.app_hash)

    def commit(self) -> abci.ResponseCommit:
        if self._pending_block is None:
            raise RuntimeError("Commit without FinalizeBlock")
        version, overlay, block_time, inner_hashes = self._pending_block
        self.state.commit(version, overlay, {"chain_id": self.chain_id.encode(), "last_block_time": str(block_time).encode()})
        self._last_block_time = block_time
        self._pending_block = None
        for h in inner_hashes:
            self._recently_committed[h] = None
        while len(self._recently_committed) > RECENTLY_COMMITTED_SIZE:
            self._recently_committed.popitem(last=False)
        self._reset_check_state()
        if self.snapshot_interval and version.height % self.snapshot_interval == 0:
            self.state.db.take_snapshot(version.height, self.chain_id, block_time, self.snapshot_keep)
        return abci.ResponseCommit(retain_height=0)

    # --- ABCI: snapshots (state sync) ------------------------------------------------------------
    # Chunks come from peers, so everything about them is hostile until the restored state hashes to
    # the app hash CometBFT's light client trusts (OfferSnapshot's app_hash): each chunk must match its
    # hash in the offered metadata (else refetched from another peer), each record must parse within
    # bounds, and the whole state is written in one store transaction only if its root is that hash.

    def list_snapshots(self, request: abci.RequestListSnapshots) -> abci.ResponseListSnapshots:
        return abci.ResponseListSnapshots(
            snapshots=[
                abci.Snapshot(height=h, format=SNAPSHOT_FORMAT, chunks=n, hash=hashlib.sha256(m).digest(), metadata=m)
                for h, n, m in self.state.db.list_snapshots()
            ]
        )

    def load_snapshot_chunk(self, request: abci.RequestLoadSnapshotChunk) -> abci.ResponseLoadSnapshotChunk:
        if request.format != SNAPSHOT_FORMAT:
            return abci.ResponseLoadSnapshotChunk()
        return abci.ResponseLoadSnapshotChunk(chunk=self.state.db.load_snapshot_chunk(request.height, request.chunk) or b"")

    def offer_snapshot(self, request: abci.RequestOfferSnapshot) -> abci.ResponseOfferSnapshot:
        result = abci.ResponseOfferSnapshot.Result
        snapshot = request.snapshot
        if snapshot.format != SNAPSHOT_FORMAT:
            return abci.ResponseOfferSnapshot(result=result.REJECT_FORMAT)
        if self.height:
            log.warning("snapshot offered to a node with state at height %d; refused", self.height)
            return abci.ResponseOfferSnapshot(result=result.ABORT)
        try:
            if hashlib.sha256(snapshot.metadata).digest() != snapshot.hash:
                raise SnapshotError("metadata does not hash to the snapshot's hash")
            if snapshot.height <= 0 or len(request.app_hash) != 32:
                raise SnapshotError(f"height {snapshot.height}, app hash of {len(request.app_hash)} bytes")
            chain_id, block_time, hashes = parse_snapshot_metadata(snapshot.metadata, snapshot.chunks)
        except SnapshotError as err:
            log.warning("snapshot at height %d refused: %s", snapshot.height, err)
            return abci.ResponseOfferSnapshot(result=result.REJECT)
        self._restoring = _Restore(snapshot.height, bytes(request.app_hash), chain_id, block_time, hashes)
        return abci.ResponseOfferSnapshot(result=result.ACCEPT)

    def apply_snapshot_chunk(self, request: abci.RequestApplySnapshotChunk) -> abci.ResponseApplySnapshotChunk:
        result = abci.ResponseApplySnapshotChunk.Result
        restoring = self._restoring
        if restoring is None:
            return abci.ResponseApplySnapshotChunk(result=result.ABORT)
        if request.index != len(restoring.applied):
            # CometBFT applies chunks in order; anything else is out of step: start this snapshot over.
            self._restoring = None
            return abci.ResponseApplySnapshotChunk(result=result.RETRY_SNAPSHOT)
        if hashlib.sha256(request.chunk).digest() != restoring.chunk_hashes[request.index]:
            log.warning("snapshot chunk %d from %s does not match its hash; refetching", request.index, request.sender)
            return abci.ResponseApplySnapshotChunk(
                result=result.RETRY, refetch_chunks=[request.index], reject_senders=[request.sender] if request.sender else []
            )
        try:
            records = decode_snapshot_chunk(request.chunk)
        except SnapshotError as err:
            # The chunk is the one the metadata names: the snapshot itself is bad.
            log.warning("snapshot at height %d refused: chunk %d: %s", restoring.height, request.index, err)
            self._restoring = None
            return abci.ResponseApplySnapshotChunk(result=result.REJECT_SNAPSHOT)
        restoring.applied.append(records)
        if len(restoring.applied) < len(restoring.chunk_hashes):
            return abci.ResponseApplySnapshotChunk(result=result.ACCEPT)
        self._restoring = None
        items = (record for chunk in restoring.applied for record in chunk)
        meta = {"chain_id": restoring.chain_id.encode(), "last_block_time": str(restoring.block_time).encode()}
        if not self.state.restore(restoring.height, items, restoring.app_hash, meta):
            log.warning("snapshot at height %d refused: its state does not hash to the trusted app hash", restoring.height)
            return abci.ResponseApplySnapshotChunk(result=result.REJECT_SNAPSHOT)
        self.chain_id = restoring.chain_id
        self._last_block_time = restoring.block_time
        self._pending_block = None
        self._proof_ops.clear()
        self._reset_check_state()
        log.info("state restored from a snapshot", extra={"height": restoring.height})
        return abci.ResponseApplySnapshotChunk(result=result.ACCEPT)

    # --- queries -------------------------------------------------------------------------------

    def query(self, request: abci.RequestQuery) -> abci.ResponseQuery:
        """``/store/<name>/key`` with the raw key in ``data``; proofs as three ``simple:v`` ops (key,
        bucket, store), or for a missing key a ``shelfproof:absent`` op and the bucket's and store's
        ``simple:v`` ops (the stock light proxy
        refuses absent values whatever the proof; our verifier checks them, merkle.verify_absence_proof).

        ``/keys`` reads several keys at one height: ``data`` is a QueryManyRequest, the answer's value a
        QueryManyResponse (without the header, which the adapter adds).
        """
        if request.path == "/keys":
            return self._query_many(request)
        parts = request.path.split("/")
        if len(parts) != 4 or parts[1] != "store" or parts[3] != "key" or parts[2] not in STORES:
            return abci.ResponseQuery(code=ResultCode.INVALID_ARGUMENT, log=f"unknown path {request.path!r}; use /store/<name>/key")
        store = parts[2]
        height = request.height or self.height
        version = self.state.versions.get(height)
        if version is None:
            return abci.ResponseQuery(
                code=ResultCode.NOT_FOUND,
                log=f"height {height} is not retained (have {sorted(self.state.versions)})",
                height=height,
            )
        value = version.get(store, request.data)
        response = abci.ResponseQuery(code=0, key=request.data, value=value or b"", height=height)
        if request.prove and request.data:
            for op in self._proof_ops_for(version, height, store, request.data, value is not None):
                response.proof_ops.ops.append(proof_pb2.ProofOp(type=op.type, key=op.key, data=op.data))
        return response


    def _query_many(self, request: abci.RequestQuery) -> abci.ResponseQuery:
        try:
            wanted = ledger_pb2.QueryManyRequest.FromString(request.data)
        except Exception:  # noqa: BLE001 - any decode failure is the caller's malformed request
            return abci.ResponseQuery(code=ResultCode.INVALID_ARGUMENT, log="data is not a QueryManyRequest")
        if not 1 <= len(wanted.keys) <= MAX_KEYS_PER_QUERY:
            return abci.ResponseQuery(code=ResultCode.INVALID_ARGUMENT, log=f"between 1 and {MAX_KEYS_PER_QUERY} keys")
        unknown = [k.store for k in wanted.keys if k.store not in STORES]
        if unknown:
            return abci.ResponseQuery(code=ResultCode.INVALID_ARGUMENT, log=f"unknown store {unknown[0]!r}")
        height = request.height or self.height
        version = self.state.versions.get(height)
        if version is None:
            return abci.ResponseQuery(
                code=ResultCode.NOT_FOUND, log=f"height {height} is not retained (have {sorted(self.state.versions)})", height=height
            )
        answer = ledger_pb2.QueryManyResponse(height=height)
        for wanted_key in wanted.keys:
            store, key = wanted_key.store, wanted_key.key
            value = version.get(store, key)
            out = answer.values.add(store=store, key=key, found=value is not None, value=value or b"")
            if request.prove and key:
                out.proof_ops.extend(self._proof_ops_for(version, height, store, key, value is not None))
        return abci.ResponseQuery(code=0, key=b"", value=answer.SerializeToString(), height=height)

    def _proof_ops_for(
        self, version: AppVersion, height: int, store: str, key: bytes, present: bool
    ) -> tuple[ledger_pb2.ProofOp, ...]:
        """The key's presence or absence proof at ``height``, cached by the app hash it proves against
        (the same state answers the same, at whatever height; a replaced genesis state cannot be stale)."""
        cache_key = (version.app_hash, store, key)
        ops = self._proof_ops.get(cache_key)
        if ops is None:
            ops = tuple(version.proof_ops(store, key, present))
            self._proof_ops[cache_key] = ops
            while len(self._proof_ops) > 50_000:
                self._proof_ops.popitem(last=False)
        return ops


@dataclass
class _Restore:
    height: int
    app_hash: bytes
    chain_id: str
    block_time: int
    chunk_hashes: list[bytes]
    applied: list[list[tuple[str, bytes, bytes]]] = field(default_factory=list)


_INTERNAL_LOG = "internal error while executing the transaction; its writes are discarded"
# Contains CometBFT's own words for it, which the adapter reads as "in flight, not rejected".
_ALREADY_KNOWN_LOG = "already in mempool or recently committed on this node"


def _hash_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest().upper()


def application_results(raw: bytes, code: int, log_text: str, data: bytes) -> list[tuple[bytes, int, str, bytes]]:
    """What one committed CometBFT transaction and its ExecTxResult mean per signed application
    transaction: (hash, code, log, raw) for each, in execution order. A batch refused as a whole
    (an invalid envelope: only a faulty proposer includes one) executed nothing and yields none."""
    if not is_batch(raw):
        return [(tx_hash(raw), code, log_text, raw)]
    inner = application_transactions(raw)
    if code != 0 or not inner:
        return []
    verdicts = txpb.BatchResult.FromString(data).results
    try:
        logs = json.loads(log_text) if log_text else []
    except ValueError:
        logs = []
    if len(verdicts) != len(inner):
        raise ValueError(f"a batch of {len(inner)} transactions has {len(verdicts)} results")
    return [
        (verdict.tx_hash, verdict.code, logs[k] if k < len(logs) and isinstance(logs[k], str) else "", inner[k])
        for k, verdict in enumerate(verdicts)
    ]


def _stateless_rejection(raw: bytes) -> TxRejected | None:
    """The verdict of the checks that need no state, for Prepare/ProcessProposal."""
    try:
        parse_batch(raw) if is_batch(raw) else parse(raw)
    except TxRejected as rejected:
        return rejected
    return None


def genesis_app_state(genesis: st.GenesisState) -> dict:
    """The JSON object CometBFT's genesis.json carries as ``app_state``."""
    return json.loads(json_format.MessageToJson(genesis, preserving_proto_field_name=True))
