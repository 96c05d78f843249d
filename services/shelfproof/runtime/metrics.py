"""The one owner of metrics: every Prometheus series shelfproof exports, their names and labels, and the
per-process HTTP endpoint that serves them (``/metrics``) beside a readiness probe (``/ready``).

Each process builds one ``ProcessMetrics`` in ``main()`` (its own registry: nothing global, so tests run
many side by side) and attaches what it runs with the ``watch_*`` functions below; components expose
plain state or an observer hook and never import prometheus_client themselves. Series read at scrape
time (heights, mempool, lag) are refreshed by the scrape, under a deadline; events (requests, blocks,
batches, drafts, verdicts) are recorded as they happen. Every label value is bounded: gRPC method names
come from the registered handlers (an unknown method is ``unknown``), verdicts from their enum.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Awaitable, Callable

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

# Seconds a scrape waits for the series it refreshes, and a readiness check for its dependency.
REFRESH_DEADLINE_S = 2.0
CHECK_DEADLINE_S = 1.0
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BLOCK_INTERVAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
DRAFT_SECONDS_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
UNKNOWN_METHOD = ("unknown", "unknown")

Check = Callable[[], Awaitable[bool]]


class ProcessMetrics:
    """One process's registry, its gRPC series, the readiness checks and what a scrape refreshes."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        labels = ["service", "method", "code"]
        self.grpc_requests = Counter(
            "shelfproof_grpc_requests", "gRPC requests handled, by service, method and status code",
            labels, registry=self.registry,
        )
        self.grpc_latency = Histogram(
            "shelfproof_grpc_request_duration_seconds",
            "gRPC handling time by service, method and status code (a stream: until it ends)",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._checks: dict[str, Check] = {}
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._families: dict[str, Any] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- what a process registers --------------------------------------------------------------

    def interceptor(self) -> "MetricsInterceptor":
        return MetricsInterceptor(self)

    def ready_when(self, name: str, check: Check) -> None:
        """``/ready`` answers 200 only while every check returns True within CHECK_DEADLINE_S."""
        self._checks[name] = check

    def on_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run before each scrape, in the order registered (a projector's lag after the ledger height)."""
        self._refreshers.append(refresh)

    def family(self, name: str, build: Callable[[CollectorRegistry], Any]) -> Any:
        """A series several components of one process share (e.g. one per projector): built once."""
        if name not in self._families:
            self._families[name] = build(self.registry)
        return self._families[name]

    # --- answers ---------------------------------------------------------------------------------

    async def ready(self) -> tuple[bool, dict[str, bool]]:
        async def run(check: Check) -> bool:
            try:
                return bool(await asyncio.wait_for(check(), CHECK_DEADLINE_S))
            except Exception:  # noqa: BLE001 - an unreachable dependency is a False, never an error page
                return False

        names = list(self._checks)
        results = await asyncio.gather(*(run(self._checks[n]) for n in names))
        checks = dict(zip(names, results))
        return all(results), checks

    async def exposition(self) -> bytes:
        try:
            async with asyncio.timeout(REFRESH_DEADLINE_S):
                for refresh in self._refreshers:
                    try:
                        await refresh()
                    except Exception as err:  # noqa: BLE001 - the series keep their last value; /ready says what is down
                        log.debug("refreshing a series failed: %r", err)
        except TimeoutError:
            log.debug("refreshing the series ran past %s s", REFRESH_DEADLINE_S)
        return generate_latest(self.registry)

    # --- the endpoint ----------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Serve ``/metrics`` and ``/ready`` on ``host:port`` (0: any free port); the bound port."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/ready", self._ready_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        log.info("metrics listening", extra={"address": f"http://{host}:{self.port}/metrics", "service": self.service})
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _ready_page(self, request: web.Request) -> web.Response:
        ok, checks = await self.ready()
        # {"status": "SERVING"} is what `shelfproof status` (cli/health.py) reads from an HTTP probe.
        body = {"status": "SERVING" if ok else "NOT_SERVING", "checks": {n: "up" if v else "down" for n, v in checks.items()}}
        return web.json_response(body, status=200 if ok else 503)


# --- gRPC --------------------------------------------------------------------------------------


def _method_names(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return (service, method) if service and method else UNKNOWN_METHOD


def _code_name(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    # An abort carries its code in the context (read above); anything else escaped every handler.
    return grpc.StatusCode.OK.name if error is None else grpc.StatusCode.UNKNOWN.name


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC by the status code it ends with. It runs outside the error interceptor
    (first in GrpcServer's list), so the code it records is the one that interceptor mapped."""

    def __init__(self, metrics: ProcessMetrics) -> None:
        self._metrics = metrics

    def _record(self, names: tuple[str, str], code: str, started: float) -> None:
        self._metrics.grpc_requests.labels(*names, code).inc()
        self._metrics.grpc_latency.labels(*names, code).observe(time.perf_counter() - started)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            # gRPC answers UNIMPLEMENTED; the name the caller sent is never a label (unbounded).
            self._record(UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED.name, time.perf_counter())
            return None
        names = _method_names(handler_call_details.method)
        record = self._record
        behavior = handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream

        if inspect.isasyncgenfunction(behavior) or inspect.isasyncgenfunction(getattr(behavior, "__func__", None)):

            async def timed(request: Any, context: grpc.aio.ServicerContext):  # a stream that yields
                started, error = time.perf_counter(), None
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as err:
                    error = err
                    raise
                finally:
                    record(names, _code_name(context, error), started)
        else:

            async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:  # unary, or a stream by write()
                started, error = time.perf_counter(), None
                try:
                    return await behavior(request, context)
                except BaseException as err:
                    error = err
                    raise
                finally:
                    record(names, _code_name(context, error), started)

        factory = (
            grpc.unary_unary_rpc_method_handler if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler if handler.stream_unary
            else grpc.unary_stream_rpc_method_handler if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return factory(timed, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


def watch_grpc_server(metrics: ProcessMetrics, server: Any) -> None:
    """Ready only while the process's own gRPC health answers SERVING (a ``GrpcServer``: NOT_SERVING
    from the start of a graceful stop, so a balancer drains it)."""
    from shelfproof.cli.health import grpc_health

    async def serving() -> bool:
        # With mTLS on, the probe presents the process's own certificate.
        tls = getattr(server, "tls", None)
        return server.port != 0 and await grpc_health(server.address, "", CHECK_DEADLINE_S, tls) == "SERVING"

    metrics.ready_when("grpc", serving)


# --- dependencies ------------------------------------------------------------------------------


class LedgerHeight:
    """The ledger's latest height as a client process sees it (``GetLedgerStatus``), refreshed by each
    scrape and each readiness check: what projector lag is measured against."""

    def __init__(self, ledger_stub: Any) -> None:
        self._stub = ledger_stub
        self.latest = 0

    async def refresh(self) -> int:
        from shelfproof.ledger.v1 import ledger_pb2

        reply = await self._stub.GetLedgerStatus(ledger_pb2.GetLedgerStatusRequest(), timeout=CHECK_DEADLINE_S)
        self.latest = reply.latest_height
        return self.latest


def watch_ledger_dependency(metrics: ProcessMetrics, ledger_stub: Any) -> LedgerHeight:
    height = LedgerHeight(ledger_stub)

    async def reachable() -> bool:
        await height.refresh()
        return True

    metrics.ready_when("ledger", reachable)
    metrics.on_scrape(height.refresh)
    return height


def watch_postgres(metrics: ProcessMetrics, pool: Any) -> None:
    async def reachable() -> bool:
        async with pool.connection(timeout=CHECK_DEADLINE_S) as conn:
            await conn.execute("SELECT 1")
        return True

    metrics.ready_when("postgres", reachable)


# --- the ledger adapter --------------------------------------------------------------------------


def watch_ledger_adapter(metrics: ProcessMetrics, adapter: Any) -> None:
    """Height, block interval, mempool, batch sizes and pending acknowledgements of a ``LedgerAdapter``;
    ready while its engine answers."""
    r = metrics.registry
    latest = Gauge("shelfproof_ledger_height", "the engine's latest committed height", registry=r)
    Gauge("shelfproof_ledger_indexed_height", "the last height the adapter has indexed (and streams)",
          registry=r).set_function(lambda: adapter.indexed_height)
    interval = Histogram("shelfproof_ledger_block_interval_seconds", "time between consecutive block headers",
                         buckets=BLOCK_INTERVAL_BUCKETS, registry=r)
    mempool = Gauge("shelfproof_ledger_mempool_transactions",
                    "engine transactions (batches) in the mempool; CometBFT: num_unconfirmed_txs", registry=r)
    batch_txs = Histogram("shelfproof_ledger_batch_transactions", "signed transactions per batch sent to the engine",
                          buckets=BATCH_SIZE_BUCKETS, registry=r)
    Gauge("shelfproof_ledger_pending_acknowledgements", "acknowledged transactions not yet committed or rejected",
          registry=r).set_function(lambda: adapter.index.pending_count)
    previous_ms: list[int] = []

    def on_block(height: int, time_ms: int) -> None:
        if previous_ms and time_ms >= previous_ms[0]:
            interval.observe((time_ms - previous_ms[0]) / 1000)
        previous_ms[:] = [time_ms]

    adapter.block_observers.append(on_block)
    adapter.packer.batch_observers.append(lambda count: batch_txs.observe(count))

    async def refresh() -> None:
        latest.set(await adapter.engine.latest_height())
        mempool.set(await adapter.engine.mempool_size())

    async def engine_answers() -> bool:
        await adapter.engine.latest_height()
        return True

    metrics.on_scrape(refresh)
    metrics.ready_when("engine", engine_answers)


# --- projectors ---------------------------------------------------------------------------------


def watch_query_service(metrics: ProcessMetrics, server: Any, pool: Any, ledger_stub: Any, projectors: dict[str, Any]) -> None:
    """A service over the query model (registry, pricing, planner): ready while its gRPC server serves and
    PostgreSQL and the ledger answer; each projector's height and lag."""
    watch_grpc_server(metrics, server)
    watch_postgres(metrics, pool)
    ledger = watch_ledger_dependency(metrics, ledger_stub)
    for name, projector in projectors.items():
        watch_projector(metrics, name, projector, ledger)


def watch_projector(metrics: ProcessMetrics, name: str, projector: Any, ledger: LedgerHeight) -> None:
    """``projector.projected_height``: the last height it has applied; ``projector.behind``: whether it
    may have more to apply. A projector of the committed stream that waits on it has applied everything
    there is, whatever its last height (blocks without its transactions), so its lag is 0; one busy
    applying, or cut off from the stream, lags by the heights between its last and the ledger's."""
    heights = metrics.family("shelfproof_projector_height", lambda r: Gauge(
        "shelfproof_projector_height", "the last ledger height a projector has applied", ["projector"], registry=r))
    lag = metrics.family("shelfproof_projector_lag_heights", lambda r: Gauge(
        "shelfproof_projector_lag_heights", "ledger heights a projector has yet to apply", ["projector"], registry=r))
    heights.labels(name).set_function(lambda: projector.projected_height)

    async def refresh() -> None:
        # registered after watch_ledger_dependency's refresh, so ledger.latest is this scrape's
        lag.labels(name).set(max(ledger.latest - projector.projected_height, 0) if projector.behind else 0)

    metrics.on_scrape(refresh)


# --- the planner ---------------------------------------------------------------------------------


class MeteredDrafter:
    """A drafting backend (``restock``, ``promotion``) with the engine's series: drafts waiting on the
    model, generated tokens (from the ``DraftOutput`` each answers) and tokens/s of the last draft."""

    def __init__(self, backend: Any, metrics: ProcessMetrics) -> None:
        self.backend = backend
        r = metrics.registry
        self.in_flight = Gauge("shelfproof_planner_engine_requests_in_flight",
                               "drafting requests waiting on the model (the engine's queue as the planner sees it)",
                               registry=r)
        self.drafts = Counter("shelfproof_planner_drafts", "drafting requests answered, by kind and outcome",
                              ["kind", "outcome"], registry=r)
        self.tokens = Counter("shelfproof_planner_generated_tokens", "completion tokens the model generated",
                              registry=r)
        self.tokens_per_s = Gauge("shelfproof_planner_tokens_per_second",
                                  "completion tokens per second of the last draft", registry=r)
        self.seconds = Histogram("shelfproof_planner_draft_duration_seconds", "time the model took per draft",
                                 ["kind"], buckets=DRAFT_SECONDS_BUCKETS, registry=r)

    async def _measured(self, kind: str, call: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        self.in_flight.inc()
        try:
            answer = await call
        except BaseException:
            self.drafts.labels(kind, "error").inc()
            raise
        finally:
            self.in_flight.dec()
        elapsed = time.perf_counter() - started
        output = answer[0]
        self.drafts.labels(kind, "answered").inc()
        self.seconds.labels(kind).observe(elapsed)
        self.tokens.inc(output.generated_tokens)
        if elapsed > 0:
            self.tokens_per_s.set(output.generated_tokens / elapsed)
        return answer

    async def restock(self, *args: Any, **kwargs: Any) -> Any:
        return await self._measured("restock", self.backend.restock(*args, **kwargs))

    async def promotion(self, *args: Any, **kwargs: Any) -> Any:
        return await self._measured("promotion", self.backend.promotion(*args, **kwargs))


# --- verify ------------------------------------------------------------------------------------


def watch_verifier(metrics: ProcessMetrics, verifier: Any) -> None:
    r = metrics.registry
    scans = Counter("shelfproof_verify_scans", "scans checked to a verdict", registry=r)
    verdicts = Counter("shelfproof_verify_verdicts", "verdicts by verdict", ["verdict"], registry=r)

    def on_verdict(verdict: str) -> None:
        scans.inc()
        verdicts.labels(verdict).inc()

    verifier.verdict_observers.append(on_verdict)
