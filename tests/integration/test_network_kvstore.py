"""Local CometBFT networks on loopback, run with CometBFT's built-in kvstore app: block production,
crash faults (one of four tolerated, two of four halt the chain) and recovery after restarts."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from shelfproof.ledger.network.config import (
    CometNode,
    LocalNetwork,
    find_free_base_port,
    generate_network,
)

COMETBFT = Path(__file__).resolve().parents[2] / ".tools/bin/cometbft"

pytestmark = pytest.mark.skipif(
    not COMETBFT.exists(), reason=f"CometBFT binary not built at {COMETBFT} (run `make cometbft`)"
)

StartNetwork = Callable[[int], LocalNetwork]


def processes_under(root: Path) -> list[int]:
    """Live processes whose command line names a path under ``root`` (our nodes' --home)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(root).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in found if pid != os.getpid()]


@pytest.fixture
def start_network(tmp_path: Path) -> Iterator[StartNetwork]:
    """Generate and start kvstore networks; stop them all afterwards and check none is left."""
    networks: list[LocalNetwork] = []

    def start(validators: int) -> LocalNetwork:
        root = tmp_path / f"net{len(networks)}"
        layout = generate_network(
            root, validators, chain_id=f"kv-{validators}", base_port=find_free_base_port(validators),
            proxy_app="kvstore", cometbft_bin=COMETBFT,
        )
        network = LocalNetwork(layout, COMETBFT)
        networks.append(network)
        network.start()
        return network

    try:
        yield start
    finally:
        for network in networks:
            network.stop(timeout=5)
        leftovers = processes_under(tmp_path)
        for pid in leftovers:  # should never happen; do not leave them running if it does
            os.kill(pid, 9)
        assert not leftovers, f"processes left behind: {leftovers}"


def put(node: CometNode, key: str, value: str) -> None:
    """Submit a kvstore ``key=value`` tx; CheckTx must accept it."""
    tx = base64.b64encode(f"{key}={value}".encode()).decode()
    result = node.rpc("broadcast_tx_sync", {"tx": tx})
    assert result.get("code", 0) == 0, result


def lookup(node: CometNode, key: str) -> str | None:
    response = node.rpc("abci_query", {"data": key.encode().hex()})["response"]
    value = response.get("value")
    return base64.b64decode(value).decode() if value else None


def wait_for_value(node: CometNode, key: str, value: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (found := lookup(node, key)) != value:
        assert time.monotonic() < deadline, f"node{node.layout.index}: {key}={found!r}, expected {value!r}"
        time.sleep(0.1)


def blocks_per_second(node: CometNode, seconds: float) -> float:
    start_height, start = node.latest_height(), time.monotonic()
    time.sleep(seconds)
    return (node.latest_height() - start_height) / (time.monotonic() - start)


@pytest.mark.timeout(30)
def test_one_validator_makes_blocks(start_network: StartNetwork) -> None:
    network = start_network(1)
    node = network.node(0)
    network.wait_for_height(2, timeout=15)
    put(node, "solo", "yes")
    wait_for_value(node, "solo", "yes")
    rate = blocks_per_second(node, 3.0)
    print(f"1 validator: {rate:.2f} blocks/s idle")
    assert rate > 0.3  # an idle chain still makes a block about every create_empty_blocks_interval


@pytest.mark.timeout(30)
def test_four_validators_make_blocks_and_share_txs(start_network: StartNetwork) -> None:
    network = start_network(4)
    started = time.monotonic()
    network.wait_for_height(2, timeout=20)
    print(f"4 validators: height 2 after {time.monotonic() - started:.1f}s")
    put(network.node(1), "shared", "by-node1")
    for node in network.nodes:
        wait_for_value(node, "shared", "by-node1")
    rate = blocks_per_second(network.node(0), 3.0)
    print(f"4 validators: {rate:.2f} blocks/s idle")
    assert rate > 0.3


@pytest.mark.timeout(60)
def test_crash_faults_and_recovery(start_network: StartNetwork) -> None:
    network = start_network(4)
    n0, n1, n2, n3 = network.nodes
    network.wait_for_height(2, timeout=20)
    put(n1, "before", "1")
    wait_for_value(n0, "before", "1")

    # One of four down: 3 of 4 votes are still > 2/3, the chain goes on (and takes txs).
    n3.kill()
    height = n0.latest_height()
    network.wait_for_height(height + 2, timeout=15, nodes=[0, 1, 2])
    put(n0, "one-down", "2")
    wait_for_value(n2, "one-down", "2")

    # Two of four down: no quorum, no block. The tx waits in the mempools.
    n2.kill()
    time.sleep(1.0)  # a block already past its precommits may still commit
    halted_at = [n0.latest_height(), n1.latest_height()]
    put(n0, "during-halt", "3")
    time.sleep(4.0)
    assert [n0.latest_height(), n1.latest_height()] == halted_at
    assert lookup(n0, "during-halt") is None
    assert not n2.is_running() and not n3.is_running()

    # Both back: they replay their stores into a fresh kvstore, catch up and the chain resumes.
    restarted = time.monotonic()
    n2.start()
    n3.start()
    network.wait_for_height(max(halted_at) + 1, timeout=30, nodes=[0])
    print(f"chain resumed {time.monotonic() - restarted:.1f}s after restarting two of four nodes")
    common = network.wait_for_height(n0.latest_height() + 1, timeout=20)  # every node, restarted ones too
    headers = [node.rpc("block", {"height": str(common)})["block"]["header"] for node in network.nodes]
    assert len({header["app_hash"] for header in headers}) == 1, headers
    assert len({node.rpc("block", {"height": str(common)})["block_id"]["hash"] for node in network.nodes}) == 1

    put(n3, "after", "4")
    for node in (n2, n3):
        wait_for_value(node, "after", "4")
        wait_for_value(node, "during-halt", "3")
        assert lookup(node, "before") == "1"
        assert lookup(node, "one-down") == "2"
