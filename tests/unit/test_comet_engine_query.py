"""CometEngine.query reads CometBFT's JSON answer to abci_query: an absence proof's first op has empty
data, which CometBFT's JSON leaves out (null), as it leaves out the bucket op's empty key. (The real
node's answer is read, and verified, in tests/e2e/test_journey.py.)"""

from __future__ import annotations

import base64

from shelfproof.ledger.engines.comet_engine import CometEngine


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_an_absence_proof_with_its_empty_data_left_out_is_read_as_empty_bytes():
    engine = CometEngine(["http://127.0.0.1:1"])  # never reached: the RPC answer is given below
    answer = {"response": {"code": 0, "height": "41", "key": _b64(b"k"), "proofOps": {"ops": [
        {"type": "shelfproof:absent", "key": _b64(b"0061/L1"), "data": None},
        {"type": "simple:v", "data": _b64(b"\x01" * 40)},
        {"type": "simple:v", "key": _b64(b"recalls")},
    ]}}}

    async def rpc(method: str, params: dict) -> dict:
        assert method == "abci_query" and params["prove"] is True
        return answer

    engine._rpc = rpc
    try:
        response = await engine.query("recalls", b"0061/L1", 41, True)
    finally:
        await engine.close()
    assert response.value == b"" and response.height == 41
    assert [(op.type, op.key, op.data) for op in response.proof_ops.ops] == [
        ("shelfproof:absent", b"0061/L1", b""), ("simple:v", b"", b"\x01" * 40), ("simple:v", b"recalls", b""),
    ]


async def test_a_block_whose_results_the_node_has_not_stored_yet_is_read_once_they_are(monkeypatch):
    """/status names a height as soon as its block is stored; its block_results follow a moment later.
    A read in between waits for them (bounded) instead of failing the caller with UNAVAILABLE."""
    from shelfproof.ledger.engines import comet_engine
    from shelfproof.ledger.engines.comet_engine import RpcError
    from shelfproof.ledger.engines.engine import EngineUnavailable

    monkeypatch.setattr(comet_engine, "RESULTS_PENDING_WAIT_S", 0.001)
    monkeypatch.setattr(comet_engine.rpc_json, "signed_header_from_json", lambda value: ("header", value))
    monkeypatch.setattr(comet_engine.rpc_json, "validator_set_from_json", lambda value: ("validators", len(value)))
    engine = CometEngine(["http://127.0.0.1:1"])
    pending = {"left": 3}

    async def rpc(method: str, params: dict) -> dict:
        if method == "status":
            return {"sync_info": {"latest_block_height": "65"}}
        if method == "block_results":
            if pending["left"]:
                pending["left"] -= 1
                raise RpcError({"code": -32603, "message": "Internal error", "data": "could not find results for height #65"})
            return {"txs_results": [{"code": 0, "data": _b64(b"ok")}]}
        if method == "block":
            return {"block": {"data": {"txs": [_b64(b"tx")]}}}
        if method == "commit":
            return {"signed_header": {"height": "65"}}
        if method == "validators":
            return {"validators": [{}], "total": "1"}
        raise AssertionError(method)

    engine._rpc = rpc
    try:
        block = await engine.block(65)
        assert block is not None and block.txs == [b"tx"] and block.results[0].data == b"ok" and pending["left"] == 0
        pending["left"] = 10**6  # never stored: the caller hears of it, bounded
        try:
            await engine.block(65)
            raise AssertionError("no error")
        except EngineUnavailable as err:
            assert "could not find results" in str(err)
    finally:
        await engine.close()
