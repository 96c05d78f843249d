"""Local CometBFT networks of 1..N validators on loopback: generate node homes, run the nodes.

One host runs every validator, so each node gets its own ports (node i: p2p ``base + 10 i``, rpc
``+1``, abci ``+2``), all bound to 127.0.0.1, and its peers are the other nodes on 127.0.0.1.
Homes come from ``cometbft testnet`` (keys, node keys, one genesis); we then set the chain id and
our genesis app state, and rewrite each ``config.toml`` with a small line-based editor (no TOML
dependency: CometBFT's template has one ``key = value`` per line and no multi-line values).

Consensus timeouts default to values measured on a 2-core host with four validators in four
processes (see ``ConsensusTimeouts``). Nodes are plain subprocesses in their own process groups;
the ABCI application of each node is the caller's to run (``LocalNetwork.start(app_starter)``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import httpx

LOOPBACK = "127.0.0.1"
PORT_STRIDE = 10  # ports of node i start at base_port + 10 i (the scheme in the project notes)
P2P_OFFSET, RPC_OFFSET, ABCI_OFFSET = 0, 1, 2
LAYOUT_FILE = "network.json"
NODE_LOG = "cometbft.log"
RPC_TIMEOUT_S = 5.0

TomlValue = str | bool | int | float | Sequence[str]


# --- config.toml editing -------------------------------------------------------------------------


def format_toml_value(value: TomlValue) -> str:
    """A TOML literal for the value kinds CometBFT's config uses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes, \\uXXXX included).
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(format_toml_value(item) for item in value) + "]"


def _section_header(line: str) -> str | None:
    stripped = line.strip()
    if stripped.startswith("[") and not stripped.startswith("[["):
        end = stripped.find("]")
        if end > 0 and not stripped[end + 1 :].split("#", 1)[0].strip():
            return stripped[1:end].strip()
    return None


def _key_of(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None
    key = stripped.split("=", 1)[0].strip()
    return key if key and all(c.isalnum() or c in "_-." for c in key) else None


def set_toml_values(text: str, values: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """Return ``text`` with ``values[section][key]`` set; every other line is kept as it was.

    Existing keys are replaced in place (comments above them stay); missing keys are added after
    the section's last key; missing sections are appended at the end. ``""`` is the top level.
    """
    pending = {section: dict(keys) for section, keys in values.items() if keys}
    lines = text.splitlines()
    out: list[str] = []
    current = ""
    last_key_at: dict[str, int] = {}  # index in ``out`` after which a missing key is inserted

    def flush_missing(section: str) -> None:
        missing = pending.pop(section, None)
        if not missing:
            return
        at = last_key_at.get(section, len(out))
        new = [f"{key} = {format_toml_value(value)}" for key, value in missing.items()]
        out[at:at] = new

    for line in lines:
        header = _section_header(line)
        if header is not None:
            flush_missing(current)
            current = header
            out.append(line)
            last_key_at[current] = len(out)
            continue
        key = _key_of(line)
        if key is not None and key in pending.get(current, {}):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{key} = {format_toml_value(pending[current].pop(key))}")
        else:
            out.append(line)
        if key is not None:
            last_key_at[current] = len(out)
    flush_missing(current)
    for section, keys in pending.items():
        out.extend(["", f"[{section}]", *(f"{k} = {format_toml_value(v)}" for k, v in keys.items())])
    return "\n".join(out) + "\n"


def edit_config(path: Path, values: Mapping[str, Mapping[str, TomlValue]]) -> None:
    path.write_text(set_toml_values(path.read_text(), values))


def read_config(path: Path) -> dict[str, Any]:
    """A node's config.toml as data (the standard library parses TOML; only writing is ours)."""
    with open(path, "rb") as file:
        return tomllib.load(file)


# --- tunables ------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """A Go duration string (CometBFT parses "300ms", "1s")."""
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True)
class ConsensusTimeouts:
    """``[consensus]`` timeouts in seconds; the defaults were measured on a 2-core host.

    Measured with 4 validators (4 ``cometbft`` processes, built-in kvstore, empty blocks made
    back to back): commit 0.3 s → 2.8 blocks/s; the same with gossip sleep 0.1 s (CometBFT's
    default) → 1.8; commit 0.1 s → 6.4; ``skip_timeout_commit`` → 14.7. No height needed a second
    round in any of these, also with 3 busy-looping processes competing for the 2 cores.

    - ``commit`` 0.3 s: about 50 ms of consensus plus 0.3 s per block, so a tx waits ~0.4–0.7 s
      while the Python app pays its per-block FinalizeBlock/Commit (persistence) at most ~3x a
      second; txs that arrive meanwhile batch into the next block.
    - ``peer_gossip_sleep`` 20 ms: the idle sleep of the vote/data gossip routines; at 100 ms it
      is paid at each step and costs ~200 ms a block on loopback; 20 ms costs little CPU
      (4 idle nodes: 0.11 cores vs 0.09).
    - ``propose`` stays 3 s: a proposer slowed by a Python app on a busy host must not be skipped
      (a missed proposal costs a round); the price is 3 s whenever a *down* validator's turn comes.
    - ``prevote``/``precommit`` 1 s only run when +2/3 voted for different things (never seen
      with all peers up): lowering them buys nothing and invites extra rounds under load.
    - ``create_empty_blocks_interval`` 1 s: an idle chain still makes ~0.7 blocks/s (liveness for
      health checks and proofs of the latest state); a block starts as soon as a tx arrives.
    """

    propose: float = 3.0
    propose_delta: float = 0.5
    prevote: float = 1.0
    prevote_delta: float = 0.5
    precommit: float = 1.0
    precommit_delta: float = 0.5
    commit: float = 0.3
    skip_timeout_commit: bool = False
    create_empty_blocks: bool = True
    create_empty_blocks_interval: float = 1.0
    peer_gossip_sleep: float = 0.02

    def config_values(self) -> dict[str, TomlValue]:
        return {
            "timeout_propose": _duration(self.propose),
            "timeout_propose_delta": _duration(self.propose_delta),
            "timeout_prevote": _duration(self.prevote),
            "timeout_prevote_delta": _duration(self.prevote_delta),
            "timeout_precommit": _duration(self.precommit),
            "timeout_precommit_delta": _duration(self.precommit_delta),
            "timeout_commit": _duration(self.commit),
            "skip_timeout_commit": self.skip_timeout_commit,
            "create_empty_blocks": self.create_empty_blocks,
            "create_empty_blocks_interval": _duration(self.create_empty_blocks_interval),
            "peer_gossip_sleep_duration": _duration(self.peer_gossip_sleep),
        }


@dataclass(frozen=True)
class RpcLimits:
    """``[rpc]`` limits sized for a benchmark client hammering one node."""

    # 1 MiB txs (mempool max_tx_bytes) grow by a third in base64 plus the JSON envelope.
    max_body_bytes: int = 4_000_000
    # broadcast_tx_commit and websocket subscriptions count against these (defaults 100 / 5).
    max_subscription_clients: int = 1000
    max_subscriptions_per_client: int = 50
    max_open_connections: int = 900
    timeout_broadcast_tx_commit: float = 10.0  # above 10 s CometBFT raises the global HTTP write timeout

    def config_values(self) -> dict[str, TomlValue]:
        return {
            "max_body_bytes": self.max_body_bytes,
            "max_subscription_clients": self.max_subscription_clients,
            "max_subscriptions_per_client": self.max_subscriptions_per_client,
            "max_open_connections": self.max_open_connections,
            "timeout_broadcast_tx_commit": _duration(self.timeout_broadcast_tx_commit),
        }


# --- layout --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeLayout:
    index: int
    home: Path
    node_id: str
    p2p_port: int
    rpc_port: int
    abci_port: int

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rpc_port}"

    @property
    def abci_address(self) -> str:
        return f"tcp://{LOOPBACK}:{self.abci_port}"

    @property
    def p2p_address(self) -> str:
        """How peers name this node in ``persistent_peers``."""
        return f"{self.node_id}@{LOOPBACK}:{self.p2p_port}"

    @property
    def config_path(self) -> Path:
        return self.home / "config" / "config.toml"

    @property
    def genesis_path(self) -> Path:
        return self.home / "config" / "genesis.json"

    @property
    def log_path(self) -> Path:
        return self.home / NODE_LOG


@dataclass(frozen=True)
class NetworkLayout:
    root: Path
    chain_id: str
    base_port: int
    nodes: list[NodeLayout] = field(default_factory=list)

    @property
    def rpc_urls(self) -> list[str]:
        return [node.rpc_url for node in self.nodes]

    def save(self) -> None:
        data = asdict(self)
        data["root"] = str(self.root)
        for node in data["nodes"]:
            node["home"] = str(node["home"])
        (self.root / LAYOUT_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> NetworkLayout:
        """The layout ``generate_network`` wrote under ``root`` (to restart an existing network)."""
        data = json.loads((root / LAYOUT_FILE).read_text())
        nodes = [NodeLayout(**{**node, "home": Path(node["home"])}) for node in data["nodes"]]
        return cls(root=Path(data["root"]), chain_id=data["chain_id"], base_port=data["base_port"], nodes=nodes)


def node_ports(base_port: int, index: int) -> tuple[int, int, int]:
    """(p2p, rpc, abci) ports of node ``index``."""
    first = base_port + PORT_STRIDE * index
    return first + P2P_OFFSET, first + RPC_OFFSET, first + ABCI_OFFSET


def node_id_from_key(node_key_path: Path) -> str:
    """The p2p node id: hex of the first 20 bytes of SHA-256 of the node's Ed25519 public key."""
    key = json.loads(node_key_path.read_text())["priv_key"]
    private = base64.b64decode(key["value"])  # 32-byte seed ‖ 32-byte public key
    if key["type"] != "tendermint/PrivKeyEd25519" or len(private) != 64:
        raise ValueError(f"unexpected node key in {node_key_path}")
    return hashlib.sha256(private[32:]).digest()[:20].hex()


def _ephemeral_port_floor() -> int:
    """Lowest port the kernel hands out to outgoing connections (they could steal our ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def find_free_base_port(validators: int, *, low: int = 20_000, high: int | None = None) -> int:
    """A base port in ``[low, high)`` whose whole block of node ports binds on 127.0.0.1 right now.

    Random starting points keep parallel sessions apart; the range stays below the ephemeral
    range so outgoing connections cannot take a port between this check and the nodes' binds.
    (Still a check-then-use race: callers that lose it get a node that fails to start.)
    """
    high = high or _ephemeral_port_floor()
    span = PORT_STRIDE * validators
    if high - low < span:
        raise ValueError(f"port range {low}..{high} too small for {validators} nodes")
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = low + rng.randrange((high - low - span) // PORT_STRIDE + 1) * PORT_STRIDE
        ports = [p for i in range(validators) for p in node_ports(base, i)]
        if all(_port_is_free(port) for port in ports):
            return base
    raise OSError(f"no free block of {span} ports on {LOOPBACK} in {low}..{high}")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def default_cometbft_bin() -> Path:
    """The pinned binary built by ``make cometbft`` in this checkout, else ``cometbft`` on PATH."""
    pinned = Path(__file__).resolve().parents[4] / ".tools" / "bin" / "cometbft"
    if pinned.exists():
        return pinned
    found = shutil.which("cometbft")
    return Path(found) if found else pinned


def _app_state_json(app_state: dict | bytes | None) -> str | None:
    """The JSON text of ``app_state``: bytes are kept verbatim (the app may hash exactly them)."""
    if app_state is None:
        return None
    if isinstance(app_state, (bytes, bytearray)):
        raw = bytes(app_state).decode()
        if not isinstance(json.loads(raw), dict):
            raise ValueError("app_state must be a JSON object")
        return raw
    return json.dumps(app_state, sort_keys=True, separators=(",", ":"))


def _genesis_text(genesis: dict[str, Any], app_state_json: str | None) -> str:
    genesis = {k: v for k, v in genesis.items() if k != "app_state"}
    if app_state_json is None:
        return json.dumps(genesis, indent=2) + "\n"
    marker = "__shelfproof_app_state__"
    genesis["app_state"] = marker
    return json.dumps(genesis, indent=2).replace(json.dumps(marker), app_state_json, 1) + "\n"


def generate_network(
    root: Path,
    validators: int,
    *,
    chain_id: str,
    base_port: int,
    app_state: dict | bytes | None = None,
    consensus: ConsensusTimeouts = ConsensusTimeouts(),
    proxy_app: str | None = None,
    rpc: RpcLimits = RpcLimits(),
    log_level: str = "error",
    recheck: bool = True,
    overrides: Mapping[str, Mapping[str, TomlValue]] | None = None,
    cometbft_bin: Path | None = None,
) -> NetworkLayout:
    """Create ``root/node{i}`` homes for ``validators`` equal-power validators on loopback.

    ``proxy_app`` None points each node at its own ABCI port (``abci_address``); a built-in app
    name such as ``"kvstore"`` runs that app inside CometBFT (tests). ``overrides`` are extra
    ``{section: {key: value}}`` settings applied last to every node. ``root`` must not hold a
    network yet (``cometbft testnet`` would silently reuse its keys and genesis).
    """
    if validators < 1:
        raise ValueError("a network needs at least one validator")
    app_state_json = _app_state_json(app_state)
    root = Path(root).resolve()
    if (root / "node0").exists():
        raise FileExistsError(f"{root} already holds a network")
    root.mkdir(parents=True, exist_ok=True)
    binary = cometbft_bin or default_cometbft_bin()
    # `testnet` also for one validator: the same node0/ layout; `init` would write into --home.
    command = [str(binary), "testnet", "--v", str(validators), "--n", "0", "--o", str(root),
               "--starting-ip-address", LOOPBACK, "--log_level", "error"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"cometbft testnet failed ({done.returncode}): {done.stderr or done.stdout}")

    nodes = []
    for index in range(validators):
        home = root / f"node{index}"
        p2p, rpc_port, abci = node_ports(base_port, index)
        node_id = node_id_from_key(home / "config" / "node_key.json")
        nodes.append(NodeLayout(index, home, node_id, p2p, rpc_port, abci))

    genesis = json.loads(nodes[0].genesis_path.read_text())
    genesis["chain_id"] = chain_id
    genesis_text = _genesis_text(genesis, app_state_json)
    for node in nodes:
        node.genesis_path.write_text(genesis_text)
        values = _node_config(node, [p for p in nodes if p is not node], proxy_app, rpc, consensus, log_level, recheck)
        for section, keys in (overrides or {}).items():
            values.setdefault(section, {}).update(keys)
        edit_config(node.config_path, values)

    layout = NetworkLayout(root=root, chain_id=chain_id, base_port=base_port, nodes=nodes)
    layout.save()
    return layout


def _node_config(
    node: NodeLayout,
    peers: list[NodeLayout],
    proxy_app: str | None,
    rpc: RpcLimits,
    consensus: ConsensusTimeouts,
    log_level: str,
    recheck: bool,
) -> dict[str, dict[str, TomlValue]]:
    """The config.toml settings of one node of a local network (validator or not)."""
    return {
        "": {
            "proxy_app": proxy_app or node.abci_address,
            "abci": "socket",
            "moniker": f"node{node.index}",
            "log_level": log_level,
            "log_format": "plain",
        },
        "rpc": {
            "laddr": f"tcp://{LOOPBACK}:{node.rpc_port}",
            "grpc_laddr": "",
            "pprof_laddr": "",
            **rpc.config_values(),
        },
        "p2p": {
            "laddr": f"tcp://{LOOPBACK}:{node.p2p_port}",
            "external_address": "",
            "persistent_peers": ",".join(p.p2p_address for p in peers),
            "allow_duplicate_ip": True,
            "addr_book_strict": False,
            "pex": False,
            "flush_throttle_timeout": "10ms",
        },
        "mempool": {"recheck": recheck},
        "consensus": consensus.config_values(),
        "tx_index": {"indexer": "kv"},
        "instrumentation": {"prometheus": False},
    }


@dataclass(frozen=True)
class StateSync:
    """``[statesync]`` of a node that joins by snapshot instead of replaying from genesis: CometBFT's
    light client checks the snapshot height's header against ``trust_hash`` (a block hash at
    ``trust_height`` the operator trusts) through two RPC servers, and hands the application that
    header's app hash with the snapshot (OfferSnapshot), which the application restores only to it."""

    rpc_servers: tuple[str, ...]
    trust_height: int
    trust_hash: str
    trust_period: float = 7 * 24 * 3600.0
    discovery_time: float = 5.0
    chunk_request_timeout: float = 10.0

    def config_values(self) -> dict[str, TomlValue]:
        if len(self.rpc_servers) < 2:
            raise ValueError("state sync needs at least two RPC servers (a primary and a witness)")
        return {
            "enable": True,
            "rpc_servers": ",".join(self.rpc_servers),
            "trust_height": self.trust_height,
            "trust_hash": self.trust_hash,
            "trust_period": _duration(self.trust_period),
            "discovery_time": _duration(self.discovery_time),
            "chunk_request_timeout": _duration(self.chunk_request_timeout),
        }


def add_full_node(
    layout: NetworkLayout,
    *,
    state_sync: StateSync | None = None,
    consensus: ConsensusTimeouts = ConsensusTimeouts(),
    rpc: RpcLimits = RpcLimits(),
    log_level: str = "error",
    overrides: Mapping[str, Mapping[str, TomlValue]] | None = None,
    cometbft_bin: Path | None = None,
) -> NodeLayout:
    """A non-validator node ``node{n}`` joining ``layout``'s network (peers: every node so far), by
    state sync when ``state_sync`` is given; added to the layout and saved."""
    index = len(layout.nodes)
    home = layout.root / f"node{index}"
    binary = cometbft_bin or default_cometbft_bin()
    done = subprocess.run([str(binary), "init", "--home", str(home), "--log_level", "error"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"cometbft init failed ({done.returncode}): {done.stderr or done.stdout}")
    p2p, rpc_port, abci = node_ports(layout.base_port, index)
    node = NodeLayout(index, home, node_id_from_key(home / "config" / "node_key.json"), p2p, rpc_port, abci)
    node.genesis_path.write_text(layout.nodes[0].genesis_path.read_text())
    values = _node_config(node, list(layout.nodes), None, rpc, consensus, log_level, True)
    if state_sync is not None:
        values["statesync"] = state_sync.config_values()
    for section, keys in (overrides or {}).items():
        values.setdefault(section, {}).update(keys)
    edit_config(node.config_path, values)
    layout.nodes.append(node)
    layout.save()
    return node


# --- running nodes -------------------------------------------------------------------------------


class CometRpcError(RuntimeError):
    """A JSON-RPC error answer (``{"code", "message", "data"}``)."""

    def __init__(self, method: str, error: dict) -> None:
        super().__init__(f"{method}: {error}")
        self.error = error


class CometNode:
    """One ``cometbft node`` subprocess; can be started again after ``stop`` or ``kill``."""

    def __init__(self, layout: NodeLayout, cometbft_bin: Path | None = None) -> None:
        self.layout = layout
        self.binary = cometbft_bin or default_cometbft_bin()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        if self.is_running():
            raise RuntimeError(f"node{self.layout.index} is already running")
        with open(self.layout.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
            log.flush()
            # Own session: signals to the test runner's group do not hit it, and stop() can
            # signal the whole group.
            self._process = subprocess.Popen(
                [str(self.binary), "node", "--home", str(self.layout.home)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (CometBFT flushes its WAL and stores), SIGKILL after ``timeout`` seconds."""
        if self._process is None:
            return
        self.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests."""
        if self._process is None:
            return
        self.send_signal(signal.SIGKILL)
        self._process.wait()

    def send_signal(self, signum: int) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            return
        try:
            os.killpg(self._process.pid, signum)
        except ProcessLookupError:
            pass

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.layout.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # --- RPC --------------------------------------------------------------------------------

    def rpc(self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float = RPC_TIMEOUT_S) -> Any:
        """JSON-RPC 2.0 POST; int64 values go as strings and bytes as base64 (CometBFT's JSON)."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": dict(params or {})}
        answer = _rpc_client().post(self.layout.rpc_url, json=body, timeout=timeout).json()
        if "error" in answer:
            raise CometRpcError(method, answer["error"])
        return answer["result"]

    def status(self) -> dict[str, Any]:
        return self.rpc("status")

    def latest_height(self) -> int:
        return int(self.status()["sync_info"]["latest_block_height"])

    def latest_app_hash(self) -> str:
        return self.status()["sync_info"]["latest_app_hash"]

    def wait_for_height(self, height: int, timeout: float = 30.0) -> int:
        """Poll ``/status`` until the node has committed ``height``; return the height reached."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            if not self.is_running():
                raise RuntimeError(f"node{self.layout.index} is not running:\n{self.log_tail()}")
            try:
                current = self.latest_height()
                if current >= height:
                    return current
            except (httpx.HTTPError, ValueError, CometRpcError) as err:
                last_error = err  # RPC not up yet, or restarting
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"node{self.layout.index} did not reach height {height} in {timeout}s "
                    f"(last error {last_error!r}):\n{self.log_tail()}"
                )
            time.sleep(0.05)


_RPC_CLIENT: httpx.Client | None = None
_RPC_CLIENT_LOCK = threading.Lock()


def _rpc_client() -> httpx.Client:
    """One HTTP client for every node's RPC in this process (thread-safe, connections kept): a client per
    call (``httpx.post``) built an SSL context each time, 23 ms of CPU, and ``wait_for_height`` polls
    every 50 ms. Local nodes only, so the environment's proxy settings are not read."""
    global _RPC_CLIENT
    with _RPC_CLIENT_LOCK:
        if _RPC_CLIENT is None:
            _RPC_CLIENT = httpx.Client(trust_env=False)
        return _RPC_CLIENT


class LocalNetwork:
    """The nodes of a generated layout, started and stopped together.

    Start order, per node: the caller's ``app_starter(node_layout)`` first, then ``cometbft node``.
    CometBFT dials ``proxy_app`` at start and retries only every 3 s, so an app that is already
    listening saves those seconds; the starter should return once its app accepts connections.
    Stopping is the reverse: CometBFT first (``stop``), then the caller stops its apps — an app
    that goes away first makes CometBFT exit with "Did the application crash?".
    """

    def __init__(self, layout: NetworkLayout, cometbft_bin: Path | None = None) -> None:
        self.layout = layout
        self.nodes = [CometNode(node, cometbft_bin) for node in layout.nodes]

    def node(self, index: int) -> CometNode:
        return self.nodes[index]

    @property
    def rpc_urls(self) -> list[str]:
        return self.layout.rpc_urls

    def start(self, app_starter: Callable[[NodeLayout], None] | None = None) -> None:
        try:
            for node in self.nodes:
                if app_starter is not None:
                    app_starter(node.layout)
                node.start()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every node at once, then wait (SIGKILL whatever outlives ``timeout``)."""
        for node in self.nodes:
            if node.is_running():
                node.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.stop(max(0.0, deadline - time.monotonic()))

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def running(self) -> list[CometNode]:
        return [node for node in self.nodes if node.is_running()]

    def wait_for_height(self, height: int, timeout: float = 30.0, *, nodes: Iterable[int] | None = None) -> int:
        """Wait until each of ``nodes`` (default: every running node) has committed ``height``."""
        chosen = [self.nodes[i] for i in nodes] if nodes is not None else self.running()
        if not chosen:
            raise RuntimeError("no running node to wait for")
        deadline = time.monotonic() + timeout
        return min(node.wait_for_height(height, max(0.1, deadline - time.monotonic())) for node in chosen)

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
