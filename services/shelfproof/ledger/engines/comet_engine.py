"""The CometBFT engine: the adapter's view of a network of validators through their JSON-RPC.

Requests go to the first node that answers (nodes can be down: that is what BFT tolerates); new
blocks are watched over the websocket (``tm.event='NewBlock'``) with polling as the fallback. While the
websocket delivers blocks, the newest height is the one it announced (no ``status`` call per query).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import zlib

import aiohttp
import orjson
import websockets
from tendermint.abci import types_pb2 as abci
from tendermint.crypto import proof_pb2

from shelfproof.ledger.engines import rpc_json
from shelfproof.ledger.engines.engine import Block, EngineUnavailable, TxOutcome
from shelfproof.ledger.v1 import transaction_pb2 as txpb

log = logging.getLogger(__name__)

RPC_TIMEOUT_S = 10.0
# The websocket's newest height stands for /status while a block arrived this recently (an idle
# chain still makes an empty block a second); older, or with the socket down, /status is asked.
FOLLOWED_FRESH_S = 3.0
# Broadcasts that arrive within this window go to the node as one JSON-RPC batch: one HTTP round
# trip (and one parse) per batch instead of per transaction.
BROADCAST_WINDOW_S = 0.003
MAX_BROADCAST_BATCH = 200
# JSON-RPC errors of broadcast_tx_sync that are not the application's verdict.
MEMPOOL_FULL_CODE = -1
ALREADY_KNOWN_CODE = -2


class CometEngine:
    name = "cometbft"

    def __init__(self, rpc_urls: list[str]) -> None:
        if not rpc_urls:
            raise ValueError("at least one CometBFT RPC URL is needed")
        self.rpc_urls = list(rpc_urls)
        self.chain_id = ""
        self._session: aiohttp.ClientSession | None = None  # made in the loop that uses it
        self._preferred = 0
        self._latest = 0
        self._followed_at: float | None = None  # when the websocket last announced a block
        self._new_block = asyncio.Condition()
        self._watcher: asyncio.Task | None = None
        self._request_id = 0
        # Per node: queued broadcasts, the flush timer, and the one batch sender in flight.
        self._broadcasts: list[list[tuple[bytes, asyncio.Future]]] = [[] for _ in self.rpc_urls]
        self._broadcast_flush: list[asyncio.TimerHandle | None] = [None for _ in self.rpc_urls]
        self._broadcast_sender: list[asyncio.Task | None] = [None for _ in self.rpc_urls]

    async def start(self) -> None:
        status = await self._rpc("status", {})
        self.chain_id = status["node_info"]["network"]
        self._latest = int(status["sync_info"]["latest_block_height"])
        self._watcher = asyncio.create_task(self._watch_blocks(), name="cometbft-block-watcher")

    async def close(self) -> None:
        if self._watcher:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: a JSON-RPC call here cost about half the adapter's CPU under
        # consumer verification load (profiled), most of it in httpx's connection pool.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=RPC_TIMEOUT_S)
            )
        return self._session

    async def _post(self, url: str, payload) -> object:
        async with self._http().post(url, data=orjson.dumps(payload), headers=_JSON) as reply:
            return orjson.loads(await reply.read())

    # --- JSON-RPC ------------------------------------------------------------------------------

    async def _rpc(self, method: str, params: dict) -> dict:
        """Call the preferred node, failing over to the others; raise EngineUnavailable if none answers."""
        errors = []
        for attempt in range(len(self.rpc_urls)):
            index = (self._preferred + attempt) % len(self.rpc_urls)
            self._request_id += 1
            try:
                body = await self._post(
                    self.rpc_urls[index], {"jsonrpc": "2.0", "id": self._request_id, "method": method, "params": params}
                )
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
                errors.append(f"{self.rpc_urls[index]}: {err!r}")
                continue
            self._preferred = index
            if "error" in body:
                raise RpcError(body["error"])
            return body["result"]
        raise EngineUnavailable("; ".join(errors))

    async def _rpc_batch(self, calls: list[tuple[str, dict]], first: int) -> list[dict]:
        """One JSON-RPC batch to node ``first`` (or the next that answers), answers in call order."""
        errors = []
        for attempt in range(len(self.rpc_urls)):
            index = (first + attempt) % len(self.rpc_urls)
            first_id = self._request_id + 1
            self._request_id += len(calls)
            payload = [
                {"jsonrpc": "2.0", "id": first_id + i, "method": method, "params": params}
                for i, (method, params) in enumerate(calls)
            ]
            try:
                body = await self._post(self.rpc_urls[index], payload)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
                errors.append(f"{self.rpc_urls[index]}: {err!r}")
                continue
            if isinstance(body, dict):
                if body.get("id") is None:  # the whole batch was refused (e.g. too large)
                    raise EngineUnavailable(RpcError(body.get("error", {})).text)
                body = [body]  # CometBFT answers a batch of one with a bare object
            by_id = {answer.get("id"): answer for answer in body}
            return [by_id.get(first_id + i, {"error": {"message": "no answer"}}) for i in range(len(calls))]
        raise EngineUnavailable("; ".join(errors))

    # --- LedgerEngine ---------------------------------------------------------------------------

    @property
    def lanes(self) -> int:
        return len(self.rpc_urls)

    def lane_of(self, signer: str) -> int:
        return zlib.crc32(signer.encode()) % len(self.rpc_urls)

    async def broadcast(self, raw: bytes, lane: int | None = None) -> TxOutcome:
        """CheckTx on one node. Each account's transactions go to the same node, in order (its
        nonces must arrive in order), and accounts spread over the nodes (each node's RPC does a
        share of the decoding); a node that is down passes its share to the next. A batch names
        its lane (the adapter packs each lane's accounts together)."""
        node = self.lane_of(txpb.SignedTransaction.FromString(raw).signer) if lane is None else lane % len(self.rpc_urls)
        future = asyncio.get_running_loop().create_future()
        self._broadcasts[node].append((raw, future))
        sender = self._broadcast_sender[node]
        idle = sender is None or sender.done()
        if len(self._broadcasts[node]) >= MAX_BROADCAST_BATCH:
            self._send_broadcasts(node)
        elif self._broadcast_flush[node] is None and idle:
            self._broadcast_flush[node] = asyncio.get_running_loop().call_later(
                BROADCAST_WINDOW_S, self._send_broadcasts, node
            )
        return await future

    def _send_broadcasts(self, node: int) -> None:
        timer = self._broadcast_flush[node]
        if timer is not None:
            timer.cancel()
            self._broadcast_flush[node] = None
        sender = self._broadcast_sender[node]
        # One batch in flight per node: the node must see an account's nonces in order.
        if sender is None or sender.done():
            self._broadcast_sender[node] = asyncio.get_running_loop().create_task(self._drain_broadcasts(node))

    async def _drain_broadcasts(self, node: int) -> None:
        queue = self._broadcasts[node]
        while queue:
            batch = queue[:MAX_BROADCAST_BATCH]
            del queue[:MAX_BROADCAST_BATCH]
            await self._broadcast_batch(batch, node)

    async def _broadcast_batch(self, batch: list[tuple[bytes, asyncio.Future]], node: int) -> None:
        calls = [("broadcast_tx_sync", {"tx": base64.b64encode(raw).decode()}) for raw, _ in batch]
        try:
            answers = await self._rpc_batch(calls, first=node)
        except EngineUnavailable as err:
            for _, future in batch:
                if not future.done():
                    future.set_exception(EngineUnavailable(str(err)))
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if "error" in answer:
                future.set_result(_broadcast_error(RpcError(answer["error"]).text))
            else:
                result = answer["result"]
                # broadcast_tx_sync's data is hex (block_results' is base64).
                data = bytes.fromhex(result.get("data") or "")
                future.set_result(TxOutcome(int(result.get("code", 0)), result.get("log", ""), data))

    async def mempool_size(self) -> int:
        # "total", not "n_txs": n_txs counts only the transactions the reply lists (a page of them).
        return int((await self._rpc("num_unconfirmed_txs", {}))["total"])

    async def latest_height(self) -> int:
        followed = self._followed_at
        if followed is not None and time.monotonic() - followed < FOLLOWED_FRESH_S:
            return self._latest
        return await self._status_height()

    async def _status_height(self) -> int:
        status = await self._rpc("status", {})
        self._latest = max(self._latest, int(status["sync_info"]["latest_block_height"]))
        return self._latest

    async def block(self, height: int) -> Block | None:
        if height > self._latest and height > await self.latest_height():
            return None
        for attempt in range(RESULTS_PENDING_TRIES):
            try:
                block, results, commit, validators = await asyncio.gather(
                    self._rpc("block", {"height": str(height)}),
                    self._rpc("block_results", {"height": str(height)}),
                    self._rpc("commit", {"height": str(height)}),
                    self._validators(height),
                )
                break
            except RpcError as err:
                if "must be less than or equal" in err.text:
                    return None
                # The node stores a block before the results of executing it: /status can already name a
                # height whose block_results are a few milliseconds away (seen under load, e2e).
                if RESULTS_PENDING in err.text and attempt + 1 < RESULTS_PENDING_TRIES:
                    await asyncio.sleep(RESULTS_PENDING_WAIT_S)
                    continue
                raise EngineUnavailable(err.text) from err
        txs = [base64.b64decode(tx) for tx in (block["block"]["data"].get("txs") or [])]
        outcomes = [
            TxOutcome(int(r.get("code", 0)), r.get("log", ""), base64.b64decode(r.get("data") or ""))
            for r in (results.get("txs_results") or [])
        ]
        return Block(
            height,
            rpc_json.signed_header_from_json(commit["signed_header"]),
            rpc_json.validator_set_from_json(validators),
            txs,
            outcomes,
        )

    async def _validators(self, height: int) -> list[dict]:
        validators, page = [], 1
        while True:
            result = await self._rpc("validators", {"height": str(height), "page": str(page), "per_page": "100"})
            validators.extend(result["validators"])
            if len(validators) >= int(result["total"]):
                return validators
            page += 1

    async def query(self, store: str, key: bytes, height: int, prove: bool) -> abci.ResponseQuery:
        result = (
            await self._rpc(
                "abci_query",
                {"path": f"/store/{store}/key", "data": key.hex(), "height": str(height), "prove": prove},
            )
        )["response"]
        response = abci.ResponseQuery(
            code=int(result.get("code", 0)),
            log=result.get("log", ""),
            key=base64.b64decode(result.get("key") or ""),
            value=base64.b64decode(result.get("value") or ""),
            height=int(result.get("height", 0)),
        )
        for op in (result.get("proofOps") or result.get("proof_ops") or {}).get("ops") or []:
            response.proof_ops.ops.append(
                # (CometBFT's JSON leaves out an empty key, the bucket op's, and empty data: an absence proof's)
                proof_pb2.ProofOp(type=op["type"], key=base64.b64decode(op.get("key") or ""), data=base64.b64decode(op.get("data") or ""))
            )
        return response

    async def query_many(self, request: bytes, height: int, prove: bool) -> abci.ResponseQuery:
        result = (
            await self._rpc("abci_query", {"path": "/keys", "data": request.hex(), "height": str(height), "prove": prove})
        )["response"]
        return abci.ResponseQuery(
            code=int(result.get("code", 0)),
            log=result.get("log", ""),
            value=base64.b64decode(result.get("value") or ""),
            height=int(result.get("height", 0)),
        )

    async def wait_for_new_block(self, after_height: int, timeout_s: float) -> int:
        if self._latest > after_height:
            return self._latest
        async with self._new_block:
            try:
                await asyncio.wait_for(self._new_block.wait_for(lambda: self._latest > after_height), timeout_s)
            except asyncio.TimeoutError:
                pass
        if self._latest <= after_height:
            try:
                await self._status_height()
            except EngineUnavailable:
                pass
        return self._latest

    async def _watch_blocks(self) -> None:
        """Follow NewBlock events on one node's websocket; on failure, poll and reconnect elsewhere."""
        subscribe = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"query": "tm.event='NewBlock'"}}
        )
        while True:
            url = self.rpc_urls[self._preferred].replace("http://", "ws://").rstrip("/") + "/websocket"
            try:
                async with websockets.connect(url, max_size=64 * 1024 * 1024, open_timeout=3) as socket:
                    await socket.send(subscribe)
                    async for message in socket:
                        body = json.loads(message)
                        if "error" in body:  # e.g. the node cancelled a subscriber it found too slow
                            raise RpcError(body["error"])
                        data = body.get("result", {}).get("data", {})
                        if data.get("type") == "tendermint/event/NewBlock":
                            # (CometBFT fires NewBlock once the application has committed the block.)
                            await self._announce(int(data["value"]["block"]["header"]["height"]))
                            self._followed_at = time.monotonic()
                raise ConnectionError("the node closed the block websocket")
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - node down or restarting: poll, then reconnect
                self._followed_at = None
                log.debug("block websocket to %s failed: %r", url, err)
                try:
                    await self._announce(await self._status_height())
                except EngineUnavailable:
                    pass
                await asyncio.sleep(0.5)
            finally:
                self._followed_at = None

    async def _announce(self, height: int) -> None:
        if height > self._latest:
            self._latest = height
            async with self._new_block:
                self._new_block.notify_all()


def _broadcast_error(text: str) -> TxOutcome:
    """A JSON-RPC error of broadcast_tx_sync: the mempool's verdict, not the application's."""
    if "already exists in cache" in text or "already in mempool" in text:
        return TxOutcome(ALREADY_KNOWN_CODE, text)
    return TxOutcome(MEMPOOL_FULL_CODE, text)  # full, rechecking, too large: worth retrying


_JSON = {"Content-Type": "application/json"}
RESULTS_PENDING = "could not find results for height"
RESULTS_PENDING_TRIES, RESULTS_PENDING_WAIT_S = 40, 0.05  # 2 s: a block's execution, under load


class RpcError(Exception):
    def __init__(self, error: dict) -> None:
        self.text = f"{error.get('message', '')}: {error.get('data', '')}"
        super().__init__(self.text)
