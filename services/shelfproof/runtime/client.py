"""Client helpers: channels with sane options, deadlines on every call, retries only where safe.

A call is retried only when it is idempotent and failed with UNAVAILABLE (the request did not reach a
server that could act on it); anything else is raised as the domain error the server sent.
"""

from __future__ import annotations

import asyncio
import random
import time
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
    if tls.key_file is None or tls.ca_file is None:
        raise SystemExit("SHELFPROOF_TLS_CERT_FILE needs _KEY_FILE and _CA_FILE")
    return IdentityChannel(target, (tls.cert_file, tls.key_file, tls.ca_file))


class IdentityChannel(grpc.aio.Channel):
    """A secure channel whose client certificate follows its files (gRPC reads credentials once): after a
    rotation, new calls go over a channel built from the new certificate, while calls in flight and long
    streams finish on the one they started on. The files are looked at once a second at most."""

    RECHECK_S = 1.0

    def __init__(self, target: str, files: tuple) -> None:
        self._target, self._files = target, files
        self._channels: list[grpc.aio.Channel] = []
        self._stamp: tuple | None = None
        self._checked_at = float("-inf")
        self.current()

    def current(self) -> grpc.aio.Channel:
        from shelfproof.runtime.tls import channel_credentials, files_stamp

        now = time.monotonic()
        if self._channels and now - self._checked_at < self.RECHECK_S:
            return self._channels[-1]
        self._checked_at = now
        try:
            stamp = files_stamp(self._files)
            if stamp != self._stamp:
                credentials = channel_credentials(*self._files)
                self._channels.append(grpc.aio.secure_channel(self._target, credentials, options=CHANNEL_OPTIONS))
                self._stamp = stamp
        except (OSError, ValueError):
            if not self._channels:
                raise
        return self._channels[-1]  # a file being replaced: the last good certificate until it is readable

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _FollowingCallable(self, "unary_unary", method, request_serializer, response_deserializer, _registered_method)

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _FollowingCallable(self, "unary_stream", method, request_serializer, response_deserializer, _registered_method)

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _FollowingCallable(self, "stream_unary", method, request_serializer, response_deserializer, _registered_method)

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _FollowingCallable(self, "stream_stream", method, request_serializer, response_deserializer, _registered_method)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        for channel in self._channels:
            await channel.close(grace)

    async def __aenter__(self) -> "IdentityChannel":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close(None)


class _FollowingCallable:
    """A stub's method that calls over the channel's current certificate (one multicallable per channel)."""

    def __init__(self, owner: IdentityChannel, kind: str, method: str, serializer, deserializer, registered: bool) -> None:
        self._owner, self._kind, self._method = owner, kind, method
        self._serializer, self._deserializer, self._registered = serializer, deserializer, registered
        self._bound: dict[int, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        bound = self._bound.get(id(channel))
        if bound is None:
            bound = self._bound[id(channel)] = getattr(channel, self._kind)(
                self._method, request_serializer=self._serializer, response_deserializer=self._deserializer,
                _registered_method=self._registered,
            )
        return bound(*args, **kwargs)


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
