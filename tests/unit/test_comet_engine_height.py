"""CometEngine's newest height: the block websocket's while it delivers blocks, /status otherwise.

A query asks for the newest height first; a /status call per query was a third of the adapter's CPU
under verification load. These tests hold the engine to falling back to /status whenever the socket
can no longer be trusted: stale, closed, or cancelled by the node (CometBFT drops slow subscribers
with an error message on a socket it keeps open)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import websockets

from shelfproof.ledger.engines import comet_engine
from shelfproof.ledger.engines.comet_engine import CometEngine


def _new_block(height: int) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"data": {
        "type": "tendermint/event/NewBlock", "value": {"block": {"header": {"height": str(height)}}},
    }}})


async def _wait(predicate, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _following(node, rpc):
    """An engine whose block watcher follows ``node`` (a websocket handler on loopback), its RPC ``rpc``."""
    async with websockets.serve(node, "127.0.0.1", 0) as server:
        engine = CometEngine([f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"])
        engine._rpc = rpc
        engine._watcher = asyncio.create_task(engine._watch_blocks())
        try:
            yield engine
        finally:
            await engine.close()


async def test_the_websockets_height_stands_for_status_only_while_blocks_arrive(monkeypatch):
    monkeypatch.setattr(comet_engine, "FOLLOWED_FRESH_S", 0.3)
    then_cancel = asyncio.Event()

    async def node(socket):
        await socket.recv()  # the subscription
        await socket.send(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}}))
        await socket.send(_new_block(7))
        await then_cancel.wait()
        await socket.send(json.dumps({"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32000, "message": "Server error", "data": "subscription was cancelled (reason: client is not pulling messages fast enough)",
        }}))
        await socket.wait_closed()  # the socket stays open, as CometBFT's does

    statuses = []

    async def rpc(method: str, params: dict) -> dict:
        assert method == "status"
        statuses.append(method)
        return {"sync_info": {"latest_block_height": "5"}}

    async with _following(node, rpc) as engine:
        await _wait(lambda: engine._latest == 7)
        assert await engine.latest_height() == 7 and statuses == []  # fresh: no /status call

        await asyncio.sleep(0.35)  # no block for longer than the freshness window
        assert await engine.latest_height() == 7 and statuses == ["status"]  # asked (the node says 5: max kept)

        statuses.clear()
        then_cancel.set()
        await _wait(lambda: engine._followed_at is None and statuses)  # the watcher polled once on the error
        statuses.clear()
        assert await engine.latest_height() == 7 and statuses == ["status"]  # no longer trusted


async def test_a_socket_the_node_closes_stops_standing_for_status(monkeypatch):
    connections = []

    async def node(socket):
        connections.append(socket)
        await socket.recv()
        if len(connections) == 1:  # later connections close at once, before any block
            await socket.send(_new_block(3))
        await socket.close()

    calls = []

    async def rpc(method: str, params: dict) -> dict:
        calls.append(method)
        return {"sync_info": {"latest_block_height": "4"}}

    async with _following(node, rpc) as engine:
        await _wait(lambda: engine._latest == 4)  # closed: the watcher asked /status
        assert engine._followed_at is None
        calls.clear()
        assert await engine.latest_height() == 4 and calls == ["status"]
