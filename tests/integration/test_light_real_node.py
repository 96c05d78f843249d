"""Our header hashing, JSON conversion and commit verification against a real CometBFT v0.38 node
(its built-in kvstore application) on loopback."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from tendermint.types import types_pb2

from shelfproof.ledger.proofs import light

from shelfproof.ledger.engines import rpc_json
from shelfproof.ledger.proofs.light import LightVerificationError, header_hash, verify_commit
from tests.conftest import free_port

COMETBFT = Path(__file__).resolve().parents[2] / ".tools/bin/cometbft"

pytestmark = pytest.mark.skipif(
    not COMETBFT.exists(), reason=f"CometBFT binary not built at {COMETBFT} (run `make deps`)"
)


class Node:
    def __init__(self, url: str, process: subprocess.Popen, log_path: Path) -> None:
        self.url = url
        self.process = process
        self.log_path = log_path
        self.http = httpx.Client(base_url=url, timeout=15.0)

    def rpc(self, method: str, **params: Any) -> dict:
        response = self.http.get(f"/{method}", params=params)
        body = response.json()
        if "error" in body:
            raise AssertionError(f"{method} {params}: {body['error']}")
        return body["result"]

    def height(self) -> int:
        return int(self.rpc("status")["sync_info"]["latest_block_height"])

    def wait_for_height(self, height: int, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"cometbft exited: {self.log_path.read_text()[-3000:]}")
            try:
                current = self.height()
                if current >= height:
                    return current
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"no block {height} within {timeout_s}s: {self.log_path.read_text()[-3000:]}")

    def commit(self, height: int) -> dict:
        return self.rpc("commit", height=str(height))

    def validators(self, height: int) -> list[dict]:
        validators: list[dict] = []
        page = 1
        while True:
            result = self.rpc("validators", height=str(height), page=str(page), per_page="100")
            validators.extend(result["validators"])
            if len(validators) >= int(result["total"]):
                return validators
            page += 1


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    home = Path(tempfile.mkdtemp(prefix="shelfproof-cometbft-"))
    process = None
    try:
        subprocess.run([str(COMETBFT), "init", "--home", str(home)], check=True, capture_output=True)
        config = home / "config/config.toml"
        # Faster blocks; everything else stays as `cometbft init` wrote it.
        config.write_text(re.sub(r'(?m)^timeout_commit = ".*"$', 'timeout_commit = "300ms"', config.read_text()))
        rpc_port, p2p_port = free_port(), free_port()
        log_path = home / "node.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    str(COMETBFT), "node", "--home", str(home), "--proxy_app=kvstore",
                    "--rpc.laddr", f"tcp://127.0.0.1:{rpc_port}",
                    "--p2p.laddr", f"tcp://127.0.0.1:{p2p_port}",
                    "--log_level", "error",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "CMTHOME": str(home)},
            )
        n = Node(f"http://127.0.0.1:{rpc_port}", process, log_path)
        n.wait_for_height(3)
        yield n
        n.http.close()
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(home, ignore_errors=True)


def chain_id(node: Node) -> str:
    return node.rpc("status")["node_info"]["network"]


def test_header_hash_equals_real_block_ids(node: Node) -> None:
    latest = node.height()
    for height in range(1, latest + 1):
        result = node.commit(height)
        header = rpc_json.header_from_json(result["signed_header"]["header"])
        expected = result["signed_header"]["commit"]["block_id"]["hash"]
        assert header_hash(header).hex().upper() == expected, height
        block = node.rpc("block", height=str(height))
        assert header_hash(rpc_json.header_from_json(block["block"]["header"])).hex().upper() == block["block_id"]["hash"]


def test_verify_commit_accepts_real_commits(node: Node) -> None:
    cid = chain_id(node)
    latest = node.wait_for_height(4)
    for height in sorted({1, 2, latest - 1, latest}):
        signed_header = rpc_json.signed_header_from_json(node.commit(height))
        validator_set = rpc_json.validator_set_from_json(node.validators(height))
        check = verify_commit(cid, signed_header, validator_set, use_cache=False)
        assert check.height == height
        assert check.signers == len(validator_set.validators) == 1
        assert check.signed_power == check.total_power == validator_set.validators[0].voting_power > 0
        assert light.validator_set_hash(validator_set.validators) == signed_header.header.validators_hash


def test_tampered_real_commits_fail(node: Node) -> None:
    cid = chain_id(node)
    height = 2
    original = rpc_json.signed_header_from_json(node.commit(height))
    validator_set = rpc_json.validator_set_from_json(node.validators(height))
    verify_commit(cid, original, validator_set)  # cached from here on

    def tampered() -> types_pb2.SignedHeader:
        copy = types_pb2.SignedHeader()
        copy.CopyFrom(original)
        return copy

    bad_app_hash = tampered()
    app_hash = bytearray(bad_app_hash.header.app_hash)
    app_hash[0] ^= 0x01
    bad_app_hash.header.app_hash = bytes(app_hash)
    with pytest.raises(LightVerificationError, match="header hashes to"):
        verify_commit(cid, bad_app_hash, validator_set)

    # The commit re-pointed at the tampered header: now the signature gives it away.
    bad_app_hash.commit.block_id.hash = header_hash(bad_app_hash.header)
    with pytest.raises(LightVerificationError, match="wrong signature"):
        verify_commit(cid, bad_app_hash, validator_set)

    bad_sig = tampered()
    sig = bytearray(bad_sig.commit.signatures[0].signature)
    sig[10] ^= 0x01
    bad_sig.commit.signatures[0].signature = bytes(sig)
    with pytest.raises(LightVerificationError, match="wrong signature"):
        verify_commit(cid, bad_sig, validator_set, use_cache=False)

    bad_time = tampered()
    bad_time.commit.signatures[0].timestamp.nanos += 1  # the nanoseconds are signed too
    with pytest.raises(LightVerificationError, match="wrong signature"):
        verify_commit(cid, bad_time, validator_set, use_cache=False)

    with pytest.raises(LightVerificationError):
        verify_commit(cid + "-x", original, validator_set)


def test_times_keep_nanoseconds(node: Node) -> None:
    result = node.commit(2)["signed_header"]
    for text in (result["header"]["time"], result["commit"]["signatures"][0]["timestamp"]):
        assert rpc_json.format_time(rpc_json.parse_time(text)) == text


def test_kvstore_tx_changes_the_verified_app_hash(node: Node) -> None:
    cid = chain_id(node)
    key, value = f"sp-{time.time_ns()}".encode(), b"authentic"
    result = node.rpc("broadcast_tx_commit", tx='"' + (key + b"=" + value).decode() + '"')
    assert int(result["check_tx"].get("code", 0)) == 0 and int(result["tx_result"].get("code", 0)) == 0
    tx_height = int(result["height"])

    # The app hash after block H is in header H+1.
    node.wait_for_height(tx_height + 1)
    before = rpc_json.signed_header_from_json(node.commit(tx_height))
    after = rpc_json.signed_header_from_json(node.commit(tx_height + 1))
    validator_set = rpc_json.validator_set_from_json(node.validators(tx_height + 1))
    verify_commit(cid, after, validator_set, use_cache=False)
    assert after.header.app_hash != before.header.app_hash

    response = node.rpc("abci_query", path='"/store"', data="0x" + key.hex(), prove="true")["response"]
    assert int(response.get("code", 0)) == 0
    assert base64.b64decode(response["key"]) == key
    assert base64.b64decode(response["value"]) == value
    # The built-in kvstore returns no proof ops; the conversion must cope with that.
    assert rpc_json.proof_ops_from_json(response) == []
