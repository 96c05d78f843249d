"""Health probes used by `shelfproof up` and `shelfproof status`."""

from __future__ import annotations

import asyncio
import json

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shelfproof.runtime.client import service_channel
from shelfproof.runtime.settings import TlsSettings


async def grpc_health(address: str, service: str = "", deadline_s: float = 1.0, tls: TlsSettings | None = None) -> str:
    """The serving status name (SERVING, NOT_SERVING, …) or UNREACHABLE; ``tls``: the prober's identity."""
    async with service_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=deadline_s)
        except grpc.aio.AioRpcError:
            return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def http_health(address: str, path: str = "/healthz", deadline_s: float = 1.0, ssl_context=None) -> str:
    """SERVING when ``http://address/path`` answers 200 with {"status": "SERVING"} (or Streamlit's plain
    ``ok``), else NOT_SERVING or UNREACHABLE. One HTTP/1.0 GET on asyncio's streams: an HTTP client
    library would cost `shelfproof status` more to import than the whole probe takes."""
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(deadline_s):
            reader, writer = await asyncio.open_connection(host, int(port), ssl=ssl_context)
            try:
                writer.write(f"GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                reply = b""
                while len(reply) < 64 * 1024 and (chunk := await reader.read(64 * 1024)):
                    reply += chunk  # to the end: headers and body may come in separate segments
            finally:
                writer.close()
        head, _, body = reply.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b""
        if status != b"200":
            return "NOT_SERVING"
        if body.strip() == b"ok":  # Streamlit's /_stcore/health (the console)
            return "SERVING"
        return json.loads(body).get("status", "UNKNOWN")
    except (OSError, TimeoutError, ValueError, IndexError, AttributeError):
        return "UNREACHABLE"


async def component_health(
    kind: str, address: str, health_service: str, deadline_s: float = 1.0, tls: TlsSettings | None = None
) -> str:
    if kind == "http":
        return await http_health(address, health_service, deadline_s)
    if kind == "https":  # an HTTP port behind mTLS: the prober's certificate
        from shelfproof.runtime.tls import client_ssl_context

        if tls is None or not tls.enabled or tls.key_file is None or tls.ca_file is None:
            return "UNREACHABLE"
        return await http_health(address, health_service, deadline_s, client_ssl_context(tls.cert_file, tls.key_file, tls.ca_file))
    return await grpc_health(address, health_service, deadline_s, tls)


def postgres_health(dsn: str) -> str:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return "UNREACHABLE"
    return "SERVING"


async def ledger_status(address: str, deadline_s: float = 5.0, tls: TlsSettings | None = None):
    """The ledger's GetLedgerStatus answer (engine, chain, height)."""
    from shelfproof.ledger.v1 import ledger_pb2, ledger_pb2_grpc

    async with service_channel(address, tls) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        return await stub.GetLedgerStatus(ledger_pb2.GetLedgerStatusRequest(), timeout=deadline_s)
