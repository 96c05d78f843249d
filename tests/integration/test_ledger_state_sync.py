"""A fifth node joins a running network of four real CometBFT validators by state sync: it restores a
validator's snapshot (chunks from its peers, the app hash from its light client), never replays the
blocks before it, and then follows the chain with the same app hash as the validators."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import httpx
import pytest
from tendermint.crypto import proof_pb2

from shelfproof.ledger.adapter.service import LedgerAdapter
from shelfproof.ledger.engines.comet_engine import CometEngine
from shelfproof.ledger.genesis import DEMO_BRAND_PREFIX, build_genesis
from shelfproof.ledger.network.config import find_free_base_port
from shelfproof.ledger.network.local import ShelfproofNetwork
from shelfproof.ledger.proofs import merkle
from shelfproof.ledger.v1 import ledger_pb2 as pb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings

COMETBFT = Path(__file__).resolve().parents[2] / ".tools/bin/cometbft"
CHAIN = "state-sync-test"
BRAND = "0614141000005"
SNAPSHOT_INTERVAL = 4

pytestmark = [
    pytest.mark.skipif(not COMETBFT.exists(), reason="CometBFT not installed (make cometbft)"),
    pytest.mark.timeout(300),
]


def _event(n: int) -> txpb.TransactionBody:
    return txpb.TransactionBody(
        record_event=txpb.RecordEvent(
            event_hash=f"ni:///sha-256;{n:064x}?ver=CBV2.0", event_type="ObjectEvent",
            biz_step="shipping", disposition="in_transit", epcs=[f"https://id.gs1.org/01/00614141123452/21/S{n}"],
        )
    )


def _header(network: ShelfproofNetwork, node: int, height: int) -> dict:
    return network.network.node(node).rpc("commit", {"height": str(height)})["signed_header"]["header"]


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


async def test_a_fifth_node_joins_by_state_sync_and_reaches_the_same_app_hash(tmp_path):
    genesis = build_genesis(CHAIN, [(BRAND, "brand", [DEMO_BRAND_PREFIX])], agents_per_org=1)
    signer = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    network = ShelfproofNetwork.create_or_load(
        tmp_path / "net", genesis, 4, find_free_base_port(5), COMETBFT,
        app_env={"SHELFPROOF_ABCI_SNAPSHOT_INTERVAL": str(SNAPSHOT_INTERVAL)},
    )
    await asyncio.to_thread(network.start)
    engine = adapter = server = channel = None
    try:
        await asyncio.to_thread(network.network.wait_for_height, 2, 60)
        engine = CometEngine(network.rpc_urls)
        await engine.start()
        adapter = LedgerAdapter(engine, tmp_path / "adapter")
        await adapter.start()
        server = GrpcServer(GrpcServerSettings(port=0, shutdown_grace_s=0.5), [adapter.binding()])
        channel = insecure_channel(f"127.0.0.1:{await server.start()}")
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)

        async def submit(n: int) -> None:
            reply = await stub.SubmitTransaction(
                pb.SubmitTransactionRequest(transaction=signer.sign(_event(n)), wait_for_commit=True), timeout=60
            )
            assert reply.result.status == pb.TRANSACTION_STATUS_COMMITTED, reply

        for n in range(1, 6):
            await submit(n)
        # Past two snapshot heights, so a finished snapshot is listed by every validator.
        node0 = network.network.node(0)
        await asyncio.to_thread(network.network.wait_for_height, node0.latest_height() + 2 * SNAPSHOT_INTERVAL + 1, 120)
        trust_height = node0.latest_height() - 1
        trust_hash = node0.rpc("block", {"height": str(trust_height)})["block_id"]["hash"]

        joined = await asyncio.to_thread(network.join_by_state_sync, trust_height, trust_hash)
        assert joined == 4
        newcomer = network.network.node(joined)

        def caught_up() -> bool:
            try:
                sync = newcomer.status()["sync_info"]
            except (httpx.HTTPError, RuntimeError, OSError):
                return False
            return not sync["catching_up"] and int(sync["latest_block_height"]) > trust_height

        await asyncio.to_thread(_wait, caught_up, 150, "the fifth node to catch up")
        sync = newcomer.status()["sync_info"]
        # It started from a snapshot: it holds no block below the snapshot's height, and its app says so.
        assert int(sync["earliest_block_height"]) > 1, sync
        app_log = (network.layout.nodes[joined].home / "app.log").read_text()
        assert "state restored from a snapshot" in app_log

        # Transactions after the join reach it too, and all five agree on the app hash.
        for n in range(6, 9):
            await submit(n)
        target = node0.latest_height()
        await asyncio.to_thread(network.network.wait_for_height, target + 1, 60, nodes=range(5))
        hashes = {_header(network, node, target + 1)["app_hash"] for node in range(5)}
        assert len(hashes) == 1, f"nodes disagree at height {target}: {hashes}"

        # The newcomer proves a transaction committed before it joined, against a validator's header.
        key = _event(1).record_event.event_hash.encode()
        response = httpx.get(
            f"{network.layout.nodes[joined].rpc_url}/abci_query",
            params={"path": '"/store/events/key"', "data": "0x" + key.hex(), "prove": "true", "height": str(target)},
            timeout=10,
        ).json()["result"]["response"]
        assert response.get("code", 0) == 0, response
        ops = [
            proof_pb2.ProofOp(type=op["type"], key=base64.b64decode(op.get("key") or ""), data=base64.b64decode(op["data"]))
            for op in response["proofOps"]["ops"]
        ]
        app_hash = bytes.fromhex(_header(network, 0, target + 1)["app_hash"])
        merkle.verify_value_proof(ops, app_hash, merkle.keypath_for("events", key), base64.b64decode(response["value"]))
    finally:
        if channel is not None:
            await channel.close()
        if server is not None:
            await server.stop()
        if adapter is not None:
            await adapter.stop()
        if engine is not None:
            await engine.close()
        await asyncio.to_thread(network.stop)
