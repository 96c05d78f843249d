"""The config.toml editor and the homes generate_network writes (real `cometbft testnet`, no node run)."""

from __future__ import annotations

import json
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest

from shelfproof.ledger.network.config import (
    ConsensusTimeouts,
    NetworkLayout,
    find_free_base_port,
    format_toml_value,
    generate_network,
    node_ports,
    read_config,
    set_toml_values,
)

COMETBFT = Path(__file__).resolve().parents[2] / ".tools/bin/cometbft"
needs_cometbft = pytest.mark.skipif(
    not COMETBFT.exists(), reason=f"CometBFT binary not built at {COMETBFT} (run `make cometbft`)"
)

SAMPLE = """\
# top comment
proxy_app = "tcp://127.0.0.1:26658"
moniker = "x"

#######
[rpc]

# the RPC listen address
laddr = "tcp://127.0.0.1:26657"
max_body_bytes = 1000000

[p2p]
# same key name as in [rpc]
laddr = "tcp://0.0.0.0:26656"
pex = true

[consensus]
timeout_commit = "1s"
"""


# --- the editor ----------------------------------------------------------------------------------


def test_same_key_is_set_only_in_its_own_section() -> None:
    text = set_toml_values(SAMPLE, {"p2p": {"laddr": "tcp://127.0.0.1:40000"}})
    data = tomllib.loads(text)
    assert data["p2p"]["laddr"] == "tcp://127.0.0.1:40000"
    assert data["rpc"]["laddr"] == "tcp://127.0.0.1:26657"


def test_untouched_lines_and_comments_stay_byte_for_byte() -> None:
    text = set_toml_values(SAMPLE, {"rpc": {"max_body_bytes": 5}, "": {"moniker": "node3"}})
    before, after = SAMPLE.splitlines(), text.splitlines()
    assert len(before) == len(after)
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert changed == [('moniker = "x"', 'moniker = "node3"'), ("max_body_bytes = 1000000", "max_body_bytes = 5")]


def test_missing_keys_land_in_their_section_and_missing_sections_are_added() -> None:
    text = set_toml_values(
        SAMPLE,
        {
            "": {"abci": "socket"},
            "p2p": {"flush_throttle_timeout": "10ms"},
            "mempool": {"recheck": False},
            "consensus": {"skip_timeout_commit": True},
        },
    )
    data = tomllib.loads(text)
    assert data["abci"] == "socket"
    assert data["p2p"] == {"laddr": "tcp://0.0.0.0:26656", "pex": True, "flush_throttle_timeout": "10ms"}
    assert data["mempool"] == {"recheck": False}
    assert data["consensus"] == {"timeout_commit": "1s", "skip_timeout_commit": True}
    # The top-level key went before the first header, not into [rpc].
    assert text.index("abci = ") < text.index("[rpc]")


def test_values_are_valid_toml_of_the_right_type() -> None:
    values = {"s": 'quote " and \\ back', "b": True, "i": 42, "f": 0.5, "l": ["a", "b"], "e": ""}
    text = set_toml_values("", {"section": values})
    assert tomllib.loads(text)["section"] == values
    assert format_toml_value(False) == "false"


def test_editing_is_idempotent() -> None:
    values = {"p2p": {"pex": False, "new_key": "v"}, "x": {"y": 1}}
    once = set_toml_values(SAMPLE, values)
    assert set_toml_values(once, values) == once


# --- free ports ----------------------------------------------------------------------------------


def test_free_base_port_skips_a_block_with_a_taken_port() -> None:
    base = find_free_base_port(2)
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", node_ports(base, 1)[1]))  # node1's RPC port
        # Only two candidate blocks in this range: `base` (now partly taken) and the next one.
        found = find_free_base_port(1, low=base + 10, high=base + 30)
        assert found == base + 20
        assert find_free_base_port(2, low=base, high=base + 40) == base + 20
    finally:
        taken.close()


# --- generate_network ------------------------------------------------------------------------------


@needs_cometbft
def test_four_validator_homes(tmp_path: Path) -> None:
    base = 31_000  # nothing is bound: only files are written
    app_state = {"organizations": [{"gln": "0614141000005"}], "version": 1}
    timeouts = ConsensusTimeouts(commit=0.25)
    layout = generate_network(
        tmp_path / "net", 4, chain_id="shelfproof-test", base_port=base, app_state=app_state, consensus=timeouts
    )

    assert [node.index for node in layout.nodes] == [0, 1, 2, 3]
    genesis_files = {node.genesis_path.read_bytes() for node in layout.nodes}
    assert len(genesis_files) == 1, "every node must hold the same genesis"
    genesis = json.loads(genesis_files.pop())
    assert genesis["chain_id"] == "shelfproof-test"
    assert genesis["app_state"] == app_state
    assert len(genesis["validators"]) == 4

    ports = [p for node in layout.nodes for p in (node.p2p_port, node.rpc_port, node.abci_port)]
    assert len(set(ports)) == 12
    assert layout.nodes[2].rpc_url == f"http://127.0.0.1:{base + 21}"
    assert layout.nodes[2].abci_address == f"tcp://127.0.0.1:{base + 22}"

    for node in layout.nodes:
        # Our node id (from node_key.json) is the one CometBFT derives.
        shown = subprocess.run(
            [str(COMETBFT), "show-node-id", "--home", str(node.home)], capture_output=True, text=True, check=True
        )
        assert shown.stdout.strip() == node.node_id

        config = read_config(node.config_path)
        peers = config["p2p"]["persistent_peers"].split(",")
        expected = {f"{o.node_id}@127.0.0.1:{o.p2p_port}" for o in layout.nodes if o is not node}
        assert set(peers) == expected and len(peers) == 3
        assert not any(p.startswith(node.node_id) for p in peers)

        assert config["proxy_app"] == node.abci_address
        assert config["abci"] == "socket"
        assert config["log_level"] == "error"
        assert config["rpc"]["laddr"] == f"tcp://127.0.0.1:{node.rpc_port}"
        assert config["rpc"]["max_body_bytes"] > 1_000_000
        assert config["p2p"]["laddr"] == f"tcp://127.0.0.1:{node.p2p_port}"
        assert config["p2p"]["allow_duplicate_ip"] is True
        assert config["p2p"]["addr_book_strict"] is False
        assert config["p2p"]["pex"] is False
        assert config["p2p"]["flush_throttle_timeout"] == "10ms"
        assert config["mempool"]["recheck"] is True
        assert config["tx_index"]["indexer"] == "kv"
        assert config["instrumentation"]["prometheus"] is False
        assert config["consensus"]["timeout_commit"] == "250ms"
        assert config["consensus"]["timeout_propose"] == "3000ms"
        assert config["consensus"]["create_empty_blocks_interval"] == "1000ms"
        # Keys we do not set keep CometBFT's values.
        assert config["mempool"]["size"] == 5000
        assert config["db_backend"] == "goleveldb"

    assert NetworkLayout.load(layout.root) == layout


@needs_cometbft
def test_options_for_tests_and_benchmarks(tmp_path: Path) -> None:
    raw_state = b'{"b": 1,  "a": [2]}'  # not canonical: must reach genesis.json byte for byte
    layout = generate_network(
        tmp_path,
        1,
        chain_id="solo",
        base_port=31_100,
        app_state=raw_state,
        proxy_app="kvstore",
        log_level="info",
        recheck=False,
        overrides={"mempool": {"size": 100}, "storage": {"discard_abci_responses": True}},
    )
    (node,) = layout.nodes
    config = read_config(node.config_path)
    assert config["proxy_app"] == "kvstore"
    assert config["p2p"]["persistent_peers"] == ""
    assert config["log_level"] == "info"
    assert config["mempool"]["recheck"] is False
    assert config["mempool"]["size"] == 100
    assert config["storage"]["discard_abci_responses"] is True
    assert b'"app_state": {"b": 1,  "a": [2]}' in node.genesis_path.read_bytes()

    with pytest.raises(FileExistsError):
        generate_network(tmp_path, 1, chain_id="again", base_port=31_200)
    with pytest.raises(ValueError):
        generate_network(tmp_path / "other", 1, chain_id="bad", base_port=31_200, app_state=b"[1]")
