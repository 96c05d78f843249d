"""A local CometBFT network running our ABCI application: one app process per validator.

Node i's application listens on its ``abci_address`` and keeps its state in ``node{i}/app``; the
layout (ports, keys, genesis with our app state) is generated once and reused on restart, so a
restarted network replays into the same chain.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from shelfproof.ledger.engines.comet_engine import MAX_BROADCAST_BATCH
from shelfproof.ledger.genesis import Genesis
from shelfproof.ledger.network.config import (
    CometNode,
    ConsensusTimeouts,
    LocalNetwork,
    NetworkLayout,
    NodeLayout,
    StateSync,
    add_full_node,
    generate_network,
)

# Fewer, larger blocks than the network default: our application's per-block work (Merkle roots of
# the changed stores, one fsync'd commit) is then spread over more transactions.
CONSENSUS = ConsensusTimeouts(commit=1.0)
from shelfproof.runtime.processes import die_with_parent


class AppProcess:
    """Our ABCI application for one node, as its own process."""

    def __init__(self, node: NodeLayout, env: dict[str, str] | None = None) -> None:
        self.node = node
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.node.abci_address.rsplit(":", 1)[1])

    def start(self, timeout_s: float = 30.0) -> None:
        env = {
            **os.environ,
            "SHELFPROOF_ABCI_HOME": str(self.node.home / "app"),
            "SHELFPROOF_ABCI_PORT": str(self.port),
            "SHELFPROOF_LOG_FORMAT": "json",
            **self.env,
        }
        with open(self.node.home / "app.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shelfproof.ledger.engines.abci_server"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ABCI app of node{self.node.index} exited; see {self.node.home / 'app.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ABCI app of node{self.node.index} is not listening")
                time.sleep(0.05)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.is_running():
            self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.is_running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


class ShelfproofNetwork:
    """Validators and their applications: started, stopped, and (for fault tests) killed one by one."""

    def __init__(self, layout: NetworkLayout, cometbft_bin: Path, app_env: dict[str, str] | None = None) -> None:
        self.layout = layout
        self.cometbft_bin = cometbft_bin
        self.app_env = app_env or {}
        self.network = LocalNetwork(layout, cometbft_bin)
        self.apps = [AppProcess(node, self.app_env) for node in layout.nodes]

    @classmethod
    def create_or_load(
        cls, root: Path, genesis: Genesis, validators: int, base_port: int, cometbft_bin: Path,
        app_env: dict[str, str] | None = None,
    ) -> "ShelfproofNetwork":
        """``app_env``: settings for every node's application (e.g. SHELFPROOF_ABCI_SNAPSHOT_INTERVAL)."""
        if (root / "node0").exists():
            layout = NetworkLayout.load(root)
        else:
            layout = generate_network(
                root, validators, chain_id=genesis.chain_id, base_port=base_port,
                app_state=genesis.app_state_json(), cometbft_bin=cometbft_bin,
                consensus=CONSENSUS,
                # The adapter sends broadcasts as JSON-RPC batches (CometBFT allows 10 by default).
                overrides={"rpc": {"max_request_batch_size": MAX_BROADCAST_BATCH}},
            )
        return cls(layout, cometbft_bin, app_env)

    @property
    def rpc_urls(self) -> list[str]:
        return self.layout.rpc_urls

    def start(self) -> None:
        self.network.start(lambda node: self.apps[node.index].start())

    def start_node(self, index: int) -> None:
        """(Re)start one validator: its application first, then its CometBFT node."""
        if not self.apps[index].is_running():
            self.apps[index].start()
        if not self.network.node(index).is_running():
            self.network.node(index).start()

    def join_by_state_sync(self, trust_height: int, trust_hash: str, rpc_servers: list[str] | None = None) -> int:
        """Add a non-validator node that restores a validator's snapshot (verified by its light client
        against ``trust_hash`` at ``trust_height``) and then follows the chain; start it, return its index."""
        servers = tuple(rpc_servers or self.rpc_urls[:2])
        node = add_full_node(
            self.layout, state_sync=StateSync(servers, trust_height, trust_hash), consensus=CONSENSUS,
            overrides={"rpc": {"max_request_batch_size": MAX_BROADCAST_BATCH}}, cometbft_bin=self.cometbft_bin,
        )
        self.network.nodes.append(CometNode(node, self.cometbft_bin))
        self.apps.append(AppProcess(node, self.app_env))
        self.start_node(node.index)
        return node.index

    def kill_node(self, index: int) -> None:
        self.network.node(index).kill()
        self.apps[index].kill()

    def kill_app(self, index: int) -> None:
        """Kill only the application; its CometBFT node then stops itself ("did the app crash?")."""
        self.apps[index].kill()

    def stop(self) -> None:
        self.network.stop()
        for app in self.apps:
            app.stop()


async def start_local_network(
    root: Path, genesis: Genesis, validators: int, base_port: int, cometbft_bin: Path
) -> ShelfproofNetwork:
    network = await asyncio.to_thread(
        ShelfproofNetwork.create_or_load, root, genesis, validators, base_port, cometbft_bin
    )
    await asyncio.to_thread(network.start)
    await asyncio.to_thread(network.network.wait_for_height, 1, 60.0)
    return network
