"""Client helpers: channels with sane options, deadlines on every call, retries only where safe.

A call is retried only when it is idempotent and failed with UNAVAILABLE (the request did not reach a
server that could act on it); anything else is raised as the domain error the server sent.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable, TypeVar

import grpc

from shelfproof.runtime.errors import error_from_rpc
from shelfproof.runtime.request_context import (
    REQUEST_ID_METADATA_KEY,
    current_request_id,
    new_request_id,
)
from shelfproof.runtime.server import KEEPALIVE_TIME_MS, MAX_MESSAGE_BYTES
from shelfproof.runtime.settings import TlsSettings

DEFAULT_DEADLINE_S = 5.0

Response = TypeVar("Response")


CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.enable_retries", 0),  # retries are ours, decided per call below
]


def insecure_channel(target: str) -> grpc.aio.Channel:
    """A channel to a shelfproof service on a trusted network (loopback, a cluster network)."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def service_channel(target: str, tls: TlsSettings | None = None) -> grpc.aio.Channel:
    """A channel that presents this process's certificate when ``tls`` is enabled, else plaintext."""
    if tls is None or not tls.enabled:
        return insecure_channel(target)
    from shelfproof.runtime.tls import channel_credentials

    if tls.key_file is None or tls.ca_file is None:
        raise SystemExit("SHELFPROOF_TLS_CERT_FILE needs _KEY_FILE and _CA_FILE")
    return grpc.aio.secure_channel(target, channel_credentials(tls.cert_file, tls.key_file, tls.ca_file), options=CHANNEL_OPTIONS)


async def call(
    method: Callable[..., Awaitable[Response]],
    request: Any,
    *,
    idempotent: bool,
    deadline_s: float = DEFAULT_DEADLINE_S,
    attempts: int = 4,
    backoff_s: float = 0.05,
) -> Response:
    """Call a unary RPC with a deadline spanning all attempts; map failures to domain errors.

    The request id of the current request (or a new one) travels as ``x-request-id`` metadata.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + deadline_s
    metadata = ((REQUEST_ID_METADATA_KEY, current_request_id() or new_request_id()),)
    attempt = 0
    while True:
        attempt += 1
        remaining = give_up_at - loop.time()
        try:
            return await method(request, timeout=max(remaining, 0.001), metadata=metadata)
        except grpc.aio.AioRpcError as error:
            retryable = idempotent and error.code() == grpc.StatusCode.UNAVAILABLE
            pause = backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
            if not retryable or attempt >= attempts or loop.time() + pause >= give_up_at:
                raise error_from_rpc(error) from error
            await asyncio.sleep(pause)
