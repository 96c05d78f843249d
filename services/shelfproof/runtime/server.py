"""Asyncio gRPC server bootstrap: health checking, reflection, the error interceptor, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shelfproof.runtime.interceptors import DomainErrorInterceptor
from shelfproof.runtime.settings import GrpcServerSettings, TlsSettings

if TYPE_CHECKING:
    from shelfproof.runtime.metrics import ProcessMetrics

log = logging.getLogger(__name__)

# 16 MiB: a commissioning batch's progress or a block can exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Clients (runtime/client.py) ping an idle connection this often, so a long-lived stream (a projector
# following the ledger) notices a dead peer; servers accept pings at twice that rate.
KEEPALIVE_TIME_MS = 30_000


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and how to add it to a server, under its full proto service name."""

    full_name: str  # e.g. "shelfproof.ledger.v1.LedgerService"
    add_to_server: Callable[[grpc.aio.Server], None]


class GrpcServer:
    """One process's gRPC server. Bind to port 0 in tests; ``port`` is the bound port after start."""

    def __init__(
        self,
        settings: GrpcServerSettings,
        services: Sequence[ServiceBinding],
        metrics: ProcessMetrics | None = None,
        tls: TlsSettings | None = None,
        signing_organization: str = "",
    ) -> None:
        """With ``tls`` enabled: mTLS (client certificates required, reloaded when the files change) and the
        identity interceptor; ``signing_organization`` is the GLN whose agent this service signs as."""
        self._settings = settings
        self._services = list(services)
        interceptors: list[grpc.aio.ServerInterceptor] = [DomainErrorInterceptor()]
        self._credentials = None
        self.tls = tls if tls is not None and tls.enabled else None  # how a client of this process connects
        self.authorization = None  # the identity decision, shared with the process's HTTP ports
        if tls is not None and tls.enabled:
            from shelfproof.runtime.identity import CallerAuthorization, IdentityInterceptor
            from shelfproof.runtime.tls import ReloadingServerCredentials, RevocationList

            if tls.key_file is None or tls.ca_file is None or tls.crl_file is None:
                raise SystemExit("SHELFPROOF_TLS_CERT_FILE needs _KEY_FILE, _CA_FILE and _CRL_FILE")
            self._credentials = ReloadingServerCredentials(tls.cert_file, tls.key_file, tls.ca_file)
            self.authorization = CallerAuthorization(
                RevocationList(tls.crl_file, tls.ca_file), signing_organization=signing_organization,
                write_rate_per_s=settings.write_rate_per_s, write_burst=settings.write_burst,
            )
            interceptors.append(IdentityInterceptor(self.authorization))
        self._server = grpc.aio.server(
            # The metrics interceptor outside the error interceptor: it records the code that one mapped.
            interceptors=[*([metrics.interceptor()] if metrics is not None else []), *interceptors],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                # Accept our clients' keepalive pings on streams that carry no data for a while (gRPC's
                # default allows one per 5 min and answered a quiet projector stream with GOAWAY
                # "too_many_pings" every few minutes).
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
            ],
        )
        self._health = health.aio.HealthServicer()
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self._settings.host}:{self.port}"

    async def start(self) -> int:
        for service in self._services:
            service.add_to_server(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = [s.full_name for s in self._services]
        reflection.enable_server_reflection(
            names + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self._server,
        )
        bind = f"{self._settings.host}:{self._settings.port}"
        if self._credentials is not None:
            self.port = self._server.add_secure_port(bind, self._credentials.credentials)
        else:
            self.port = self._server.add_insecure_port(bind)
        if self.port == 0:
            raise OSError(f"cannot bind {self._settings.host}:{self._settings.port}")
        await self._server.start()
        for name in ["", *names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC server listening", extra={"address": self.address, "services": names})
        return self.port

    async def stop(self) -> None:
        """Stop taking work (health NOT_SERVING first, so balancers drain), then finish in-flight RPCs."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self._settings.shutdown_grace_s)
        log.info("gRPC server stopped", extra={"address": self.address})


async def run_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Run ``start``, wait for SIGINT or SIGTERM, then ``stop``: the body of every service's main().

    A ``start`` that fails (a port taken) still runs ``stop``, so what was already started (the planner's
    Ray and model engine) does not outlive the process; the start's error is the one raised."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await start()
    except BaseException:
        try:
            await stop()
        except Exception:
            log.exception("stopping after a failed start failed as well")
        raise
    try:
        await stopping.wait()
    finally:
        await stop()


def run_service_with_postgres(serve: Callable[[Path, str], Awaitable[None]]) -> None:
    """The ``main()`` of a service that reads the query model: logging set up once, the PostgreSQL DSN
    required (``shelfproof up`` sets it), then ``serve(state_dir, dsn)`` until a signal stops it."""
    from shelfproof.runtime.log import configure_logging
    from shelfproof.runtime.settings import CommonSettings, PostgresSettings

    common = CommonSettings()
    configure_logging(common.log_level, common.log_format)
    pg = PostgresSettings()
    if not pg.dsn:
        raise SystemExit("SHELFPROOF_PG_DSN is required (shelfproof up sets it)")
    asyncio.run(serve(common.state_dir, pg.dsn))
