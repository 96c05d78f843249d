"""`shelfproof up`: PostgreSQL and every service, started, checked healthy, and stopped cleanly.

Services run as child processes in their own session, so a terminal's Ctrl-C reaches only this
supervisor, which then stops them in reverse order (SIGTERM, then SIGKILL after a grace period). The
kernel sends each child SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from shelfproof.cli.health import component_health, ledger_status, postgres_health
from shelfproof.runtime.postgres import LocalPostgres, default_cluster_dir
from shelfproof.runtime.processes import die_with_parent
from shelfproof.runtime.settings import CommonSettings, PostgresSettings, TlsSettings

log = logging.getLogger(__name__)

STACK_FILE = "stack.json"
# The development CA and every certificate it issued (runtime/tls.py), under the state dir.
TLS_DIR = "tls"
# The certificate of the local tools: `shelfproof status`, the demo seed, tests talking to the stack.
LOCAL_TOOLS = "operator"


def tls_on() -> bool:
    """mTLS between every service and on every gRPC port unless SHELFPROOF_TLS=0 (development only)."""
    return os.environ.get("SHELFPROOF_TLS", "1") != "0"


def _tls_of(directory, name: str) -> TlsSettings:
    return TlsSettings(
        cert_file=directory / f"{name}.pem", key_file=directory / f"{name}.key",
        ca_file=directory / "ca.pem", crl_file=directory / "crl.pem",
    )


@dataclass(frozen=True)
class EndpointSpec:
    """Another listener of a service's process (e.g. the registry's EPCIS REST binding): its port is
    ``<service env_prefix><port_setting>``, its health an HTTP path."""

    name: str
    port_setting: str
    default_port: int
    health_path: str = "/healthz"
    # behind the service's mTLS when the stack runs with it (the EPCIS binding is for partners' systems)
    tls: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    """A service `shelfproof up` runs: ``python -m <module>`` listening on ``<env_prefix>PORT``; its
    health is the gRPC health service ``health_service`` or, for kind "http", that path."""

    name: str
    module: str
    env_prefix: str
    default_port: int
    health_service: str
    kind: str = "grpc"
    start_timeout_s: float = 90.0
    endpoints: tuple[EndpointSpec, ...] = ()
    # /metrics and /ready (runtime/metrics.py) at ``<env_prefix>METRICS_PORT``; 0: the process has none.
    metrics_port: int = 0


# Every service that exists so far, in start order (each may depend on the ones before it).
SERVICES: list[ServiceSpec] = [
    ServiceSpec(
        name="ledger",
        module="shelfproof.ledger",
        env_prefix="SHELFPROOF_LEDGER_",
        default_port=50051,
        health_service="shelfproof.ledger.v1.LedgerService",
        metrics_port=9101,
    ),
    ServiceSpec(
        name="registry",
        module="shelfproof.registry",
        env_prefix="SHELFPROOF_REGISTRY_",
        default_port=50052,
        health_service="shelfproof.product.v1.ProductService",
        metrics_port=9102,
        endpoints=(EndpointSpec("epcis-rest", "EPCIS_PORT", 8090, tls=True),),
    ),
    ServiceSpec(
        name="pricing",
        module="shelfproof.pricing",
        env_prefix="SHELFPROOF_PRICING_",
        default_port=50054,
        health_service="shelfproof.pricing.v1.PricingService",
        metrics_port=9104,
    ),
    ServiceSpec(
        name="planner",
        module="shelfproof.planner",
        env_prefix="SHELFPROOF_PLANNER_",
        default_port=50053,
        health_service="shelfproof.planner.v1.PlannerService",
        metrics_port=9103,
        # Ray, Serve and the vLLM engine start first (minutes on two cores, the first time longer).
        start_timeout_s=600.0,
    ),
    ServiceSpec(
        name="verify",
        module="shelfproof.verify",
        env_prefix="SHELFPROOF_VERIFY_",
        default_port=8080,
        health_service="/healthz",
        kind="http",
        metrics_port=9180,  # worker i: 9180 + i
    ),
    ServiceSpec(
        name="console",
        module="shelfproof.console",  # Streamlit on 127.0.0.1, headless (ui/console.py)
        env_prefix="SHELFPROOF_CONSOLE_",
        default_port=8501,
        health_service="/_stcore/health",
        kind="http",
    ),
]


@dataclass
class RunningComponent:
    name: str
    address: str
    kind: str  # "postgres" or "grpc"
    health_service: str = ""
    pid: int | None = None


class Stack:
    def __init__(self, common: CommonSettings, pg_settings: PostgresSettings) -> None:
        self.common = common
        self.pg_settings = pg_settings
        self.state_dir = common.state_dir.resolve()
        self.logs_dir = self.state_dir / "logs"
        self.postgres: LocalPostgres | None = None
        self._started_postgres = False
        self.children: list[tuple[ServiceSpec, subprocess.Popen]] = []
        self.components: list[RunningComponent] = []
        self.ca = None  # the development CA, when mTLS is on
        self.local_tls: TlsSettings | None = None

    @property
    def dsn(self) -> str:
        if self.pg_settings.dsn:
            return self.pg_settings.dsn
        assert self.postgres is not None
        return self.postgres.dsn(self.pg_settings.database)

    async def start(self) -> None:
        from shelfproof.db.migrate import upgrade  # Alembic and SQLAlchemy: not for `shelfproof status`

        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if tls_on():
            from shelfproof.runtime.tls import DevCertificateAuthority

            self.ca = DevCertificateAuthority.create_or_load(self.state_dir / TLS_DIR)
            self.issue_certificates()
            self.local_tls = _tls_of(self.ca.directory, LOCAL_TOOLS)
        if not self.pg_settings.dsn:
            cluster_dir = self.pg_settings.cluster_dir or default_cluster_dir(self.state_dir)
            self.postgres = LocalPostgres(cluster_dir, self.pg_settings.port, self.pg_settings.user)
            self._started_postgres = await asyncio.to_thread(self.postgres.start)
            await asyncio.to_thread(self.postgres.ensure_database, self.pg_settings.database)
        await asyncio.to_thread(upgrade, self.dsn)
        self.components.append(
            RunningComponent("postgres", self.dsn, "postgres")
        )
        for spec in SERVICES:
            await self._start_service(spec)
        self._write_stack_file()

    def issue_certificates(self) -> None:
        """A fresh certificate for every service (its name is its role, its organisation the one it signs
        for) and for the local tools; running servers pick theirs up at their next handshake."""
        from shelfproof.ledger.genesis import CONSORTIUM_GLN, DEMO_BRAND_GLN, DEMO_RETAILER_GLN

        signs_for = {"registry": DEMO_BRAND_GLN, "pricing": DEMO_RETAILER_GLN, "planner": DEMO_RETAILER_GLN}
        assert self.ca is not None
        for spec in SERVICES:
            agent = os.environ.get(f"{spec.env_prefix}SIGNER_AGENT_ID", "")
            gln = agent.split("/", 1)[0] if agent else signs_for.get(spec.name, CONSORTIUM_GLN)
            self.ca.issue(spec.name, gln, spec.name)
        self.ca.issue(LOCAL_TOOLS, CONSORTIUM_GLN, "operator")

    def _tls_env(self, spec: ServiceSpec) -> dict[str, str]:
        if self.ca is None:
            return {}
        tls = _tls_of(self.ca.directory, spec.name)
        return {
            "SHELFPROOF_TLS_CERT_FILE": str(tls.cert_file), "SHELFPROOF_TLS_KEY_FILE": str(tls.key_file),
            "SHELFPROOF_TLS_CA_FILE": str(tls.ca_file), "SHELFPROOF_TLS_CRL_FILE": str(tls.crl_file),
        }

    @staticmethod
    def _endpoint_port(spec: ServiceSpec, endpoint: EndpointSpec) -> int:
        return int(os.environ.get(f"{spec.env_prefix}{endpoint.port_setting}", endpoint.default_port))

    @staticmethod
    def _metrics_port(spec: ServiceSpec) -> int:
        return int(os.environ.get(f"{spec.env_prefix}METRICS_PORT", spec.metrics_port))

    @staticmethod
    def _port(spec: ServiceSpec) -> int:
        return int(os.environ.get(f"{spec.env_prefix}PORT", spec.default_port))

    def _wiring(self) -> dict[str, str]:
        """Where the services find each other: the ledger's address, and the verify page as the origin
        the QR labels point at (settings the user gave win)."""
        ports = {spec.name: self._port(spec) for spec in SERVICES}
        verify_origin = f"http://127.0.0.1:{ports['verify']}"
        wiring = {
            "SHELFPROOF_REGISTRY_LEDGER_ADDRESS": f"127.0.0.1:{ports['ledger']}",
            "SHELFPROOF_PLANNER_LEDGER_ADDRESS": f"127.0.0.1:{ports['ledger']}",
            "SHELFPROOF_PRICING_LEDGER_ADDRESS": f"127.0.0.1:{ports['ledger']}",
            "SHELFPROOF_VERIFY_LEDGER_ADDRESS": f"127.0.0.1:{ports['ledger']}",
            "SHELFPROOF_REGISTRY_RESOLVER": verify_origin,
            "SHELFPROOF_VERIFY_PUBLIC_ORIGIN": verify_origin,
            "SHELFPROOF_CONSOLE_LEDGER_ADDRESS": f"127.0.0.1:{ports['ledger']}",
            "SHELFPROOF_CONSOLE_REGISTRY_ADDRESS": f"127.0.0.1:{ports['registry']}",
            "SHELFPROOF_CONSOLE_PLANNER_ADDRESS": f"127.0.0.1:{ports['planner']}",
            "SHELFPROOF_CONSOLE_PRICING_ADDRESS": f"127.0.0.1:{ports['pricing']}",
        }
        return {k: v for k, v in wiring.items() if k not in os.environ}

    async def _start_service(self, spec: ServiceSpec) -> None:
        port = self._port(spec)
        address = f"127.0.0.1:{port}"
        env = {
            **os.environ,
            **self._wiring(),
            f"{spec.env_prefix}PORT": str(port),
            **{f"{spec.env_prefix}{e.port_setting}": str(self._endpoint_port(spec, e)) for e in spec.endpoints},
            **({f"{spec.env_prefix}METRICS_PORT": str(self._metrics_port(spec))} if spec.metrics_port else {}),
            "SHELFPROOF_PG_DSN": self.dsn,
            "SHELFPROOF_STATE_DIR": str(self.state_dir),
            "SHELFPROOF_LOG_FORMAT": "json",
            **self._tls_env(spec),
        }
        log_path = self.logs_dir / f"{spec.name}.log"
        with open(log_path, "ab") as log_file:
            child = subprocess.Popen(
                [sys.executable, "-m", spec.module],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.children.append((spec, child))
        deadline = time.monotonic() + spec.start_timeout_s
        while True:
            if child.poll() is not None:
                raise RuntimeError(
                    f"{spec.name} exited with {child.returncode} while starting; see {log_path}"
                )
            if await component_health(spec.kind, address, spec.health_service, tls=self.local_tls) == "SERVING":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{spec.name} did not become healthy in {spec.start_timeout_s:.0f} s; see {log_path}")
            await asyncio.sleep(0.2)
        self.components.append(
            RunningComponent(spec.name, address, spec.kind, spec.health_service, child.pid)
        )
        for endpoint in spec.endpoints:  # started by the same process, right after its main server
            endpoint_address = f"127.0.0.1:{self._endpoint_port(spec, endpoint)}"
            kind = "https" if endpoint.tls and self.ca is not None else "http"
            while await component_health(kind, endpoint_address, endpoint.health_path, tls=self.local_tls) != "SERVING":
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{spec.name}'s {endpoint.name} did not become healthy; see {log_path}")
                await asyncio.sleep(0.2)
            self.components.append(
                RunningComponent(endpoint.name, endpoint_address, kind, endpoint.health_path, child.pid)
            )
        if spec.name == "ledger":
            status = await ledger_status(address, tls=self.local_tls)
            print(
                f"ledger engine: {status.engine} with {status.validators} validator(s), "
                f"chain {status.chain_id}, because {status.engine_reason}",
                flush=True,
            )
        if spec.name == "planner":
            print(f"planner engine: {await planner_engine(_openai_base_url())}", flush=True)

    def _write_stack_file(self) -> None:
        payload = {
            "supervisor_pid": os.getpid(), "components": [asdict(c) for c in self.components],
            # where the local tools' identity is (None: the stack runs without TLS)
            "tls_dir": str(self.ca.directory) if self.ca is not None else None,
        }
        (self.state_dir / STACK_FILE).write_text(json.dumps(payload, indent=2))

    async def stop(self) -> None:
        for spec, child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(child.wait, 15)
                except subprocess.TimeoutExpired:
                    log.warning("%s ignored SIGTERM for 15 s; killing it", spec.name)
                    child.kill()
                    await asyncio.to_thread(child.wait)
        self.children.clear()
        if self.postgres is not None and self._started_postgres:
            await asyncio.to_thread(self.postgres.stop)
        (self.state_dir / STACK_FILE).unlink(missing_ok=True)


def _openai_base_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('SHELFPROOF_PLANNER_OPENAI_PORT', '8000')}/v1"


async def planner_engine(base_url: str) -> str:
    """What the planner's model runs on, from its OpenAI-compatible ``/v1/models``: engine, model, dtype and
    why that dtype."""
    import httpx

    async with httpx.AsyncClient(timeout=30) as client:
        model = (await client.get(f"{base_url}/models")).raise_for_status().json()["data"][0]
    engine = model.get("shelfproof_engine", {})
    return (
        f"{engine.get('engine', '?')} {engine.get('engine_version', '')}, {model['id']} in {engine.get('dtype', '?')} "
        f"because {engine.get('dtype_reason', '?')}"
    )


async def seed_demo_once(stack: Stack):
    """The demo supply chain, seeded through the services once (idempotent); skipped with
    SHELFPROOF_DEMO_SEED=0 or when there is no development genesis (a real network's keys)."""
    from pathlib import Path

    from shelfproof.demo.seed import seed_demo
    from shelfproof.ledger.genesis import Genesis

    genesis_file = Path(os.environ.get("SHELFPROOF_LEDGER_HOME", stack.state_dir / "ledger")) / "genesis.json"
    if os.environ.get("SHELFPROOF_DEMO_SEED", "1") == "0" or not genesis_file.exists():
        return None
    address = {c.name: c.address for c in stack.components}
    return await seed_demo(address["ledger"], address["registry"], address["planner"], Genesis.load(genesis_file), stack.state_dir,
                           progress=lambda text: print(text, flush=True), tls=stack.local_tls)


async def rotate_certificates(stack: Stack) -> None:
    """Re-issue every certificate at half its validity: servers reload theirs without a restart."""
    from shelfproof.runtime.tls import DEFAULT_VALIDITY

    while True:
        await asyncio.sleep(DEFAULT_VALIDITY.total_seconds() / 2)
        await asyncio.to_thread(stack.issue_certificates)
        log.info("certificates rotated")


def local_tools_tls(state_dir) -> TlsSettings | None:
    """The local tools' identity of the stack running under ``state_dir`` (None: no stack, or no TLS)."""
    stack_file = state_dir.resolve() / STACK_FILE
    if not stack_file.exists():
        return None
    from pathlib import Path

    tls_dir = json.loads(stack_file.read_text()).get("tls_dir")
    return _tls_of(Path(tls_dir), LOCAL_TOOLS) if tls_dir else None


async def run_up(common: CommonSettings, pg_settings: PostgresSettings) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    stack = Stack(common, pg_settings)
    rotation: asyncio.Task | None = None
    try:
        start = asyncio.create_task(stack.start())
        stop_wait = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if start not in done:
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            return 130
        stop_wait.cancel()
        start.result()
        rotation = asyncio.create_task(rotate_certificates(stack)) if stack.ca is not None else None
        demo = await seed_demo_once(stack)
        print("shelfproof is up:", flush=True)
        for component in stack.components:
            print(f"  {component.name:<12} {component.address}", flush=True)
        verify = next(c for c in stack.components if c.name == "verify")
        print(f"consumer page: http://{verify.address}/  (a product's QR code opens http://{verify.address}/01/<GTIN>/21/<serial>)", flush=True)
        print(f"planner model, OpenAI-compatible: {_openai_base_url()}", flush=True)
        console = next(c for c in stack.components if c.name == "console")
        print(f"console: http://{console.address}/", flush=True)
        if demo is not None:
            from shelfproof.console.people import PEOPLE

            print("demo logins (development only; passphrases from the demo seed):", flush=True)
            for login, passphrase in demo.passphrases.items():
                print(f"  {login:<8} {PEOPLE[login].role:<16} passphrase {passphrase}", flush=True)
        metrics = ", ".join(f"{s.name} 127.0.0.1:{Stack._metrics_port(s)}" for s in SERVICES if s.metrics_port)
        print(f"metrics (GET /metrics, /ready): {metrics}", flush=True)
        print(f"mTLS: {'on, development CA and certificates in ' + str(stack.ca.directory) if stack.ca else 'off (SHELFPROOF_TLS=0)'}", flush=True)
        print(f"logs: {stack.logs_dir}   status: shelfproof status   stop: Ctrl-C", flush=True)
        await stopping.wait()
        print("stopping shelfproof …", flush=True)
        return 0
    finally:
        if rotation is not None:
            rotation.cancel()
        await stack.stop()


async def run_status(common: CommonSettings, pg_settings: PostgresSettings) -> int:
    stack_file = common.state_dir.resolve() / STACK_FILE
    tls = local_tools_tls(common.state_dir)
    if stack_file.exists():
        components = [RunningComponent(**c) for c in json.loads(stack_file.read_text())["components"]]
    else:
        dsn = pg_settings.dsn or (
            f"postgresql://{pg_settings.user}@127.0.0.1:{pg_settings.port}/{pg_settings.database}"
        )
        components = [RunningComponent("postgres", dsn, "postgres")]
        for s in SERVICES:  # each service, then the other listeners of its process (the order `up` starts them)
            components.append(RunningComponent(
                s.name,
                f"127.0.0.1:{os.environ.get(f'{s.env_prefix}PORT', s.default_port)}",
                s.kind,
                s.health_service,
            ))
            components += [RunningComponent(e.name, f"127.0.0.1:{Stack._endpoint_port(s, e)}", "http", e.health_path)
                           for e in s.endpoints]

    async def probe(component: RunningComponent) -> str:
        if component.kind == "postgres":
            return await asyncio.to_thread(postgres_health, component.address)
        # A process's first gRPC calls set up gRPC itself; on a loaded machine that alone has taken
        # over a second, so the deadline is generous: a healthy stack still answers in well under one.
        return await component_health(component.kind, component.address, component.health_service, deadline_s=5.0, tls=tls)

    # all at once: a silent component costs its deadline once, not once per component after it
    statuses = await asyncio.gather(*(probe(c) for c in components))
    for component, status in zip(components, statuses):
        print(f"{component.name:<12} {component.address:<48} {status}")
    return 0 if all(status == "SERVING" for status in statuses) else 1
