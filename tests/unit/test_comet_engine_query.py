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
