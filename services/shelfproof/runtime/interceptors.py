"""The one server interceptor: binds a request id, refuses text with NUL characters in any request, and
maps domain exceptions to google.rpc.Status.

Unexpected exceptions become INTERNAL with the request id and no stack trace on the wire; the trace
goes to the log.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_status import rpc_status

from shelfproof.runtime.errors import DomainError, FieldViolation, InvalidArgument
from shelfproof.runtime.fields import nul_in_text
from shelfproof.runtime.request_context import (
    REQUEST_ID_METADATA_KEY,
    bind_request_id,
    new_request_id,
    unbind_request_id,
)

log = logging.getLogger(__name__)


def _request_id_from(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_METADATA_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return new_request_id()


def _check_text(request: Any) -> None:
    """Bad text is refused here, once for every RPC, before a handler can store or compare it."""
    if isinstance(request, Message) and (field := nul_in_text(request)):
        raise InvalidArgument(f"{field} contains a NUL character", field_violations=[FieldViolation(field, "no NUL characters")])


async def _abort(context: grpc.aio.ServicerContext, error: BaseException, method: str) -> None:
    if isinstance(error, DomainError):
        status = error.to_status()
        log.info("%s answered %s: %s", method, error.code.name, error.message)
    else:
        log.error("%s failed unexpectedly", method, exc_info=error)
        status = status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0], message="internal error")
    grpc_status = rpc_status.to_status(status)
    await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        request_id = _request_id_from(handler_call_details)

        if handler.unary_unary or handler.stream_unary:
            behavior = handler.unary_unary or handler.stream_unary

            async def unary_response(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
                token = bind_request_id(request_id)
                try:
                    _check_text(request_or_iterator)
                    return await behavior(request_or_iterator, context)
                except (grpc.aio.AbortError, grpc.aio.UsageError):
                    raise
                except Exception as error:  # noqa: BLE001 - mapped to a status, never leaked
                    await _abort(context, error, method)
                finally:
                    unbind_request_id(token)

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return factory(
                unary_response,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        behavior = handler.unary_stream or handler.stream_stream
        if not inspect.isasyncgenfunction(behavior) and not inspect.isasyncgenfunction(
            getattr(behavior, "__func__", None)
        ):
            # A handler that writes with context.write() and returns a coroutine.
            async def stream_by_write(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> None:
                token = bind_request_id(request_id)
                try:
                    _check_text(request_or_iterator)
                    await behavior(request_or_iterator, context)
                except (grpc.aio.AbortError, grpc.aio.UsageError):
                    raise
                except Exception as error:  # noqa: BLE001
                    await _abort(context, error, method)
                finally:
                    unbind_request_id(token)

            stream_response = stream_by_write
        else:

            async def stream_by_yield(request_or_iterator: Any, context: grpc.aio.ServicerContext):
                token = bind_request_id(request_id)
                try:
                    _check_text(request_or_iterator)
                    async for response in behavior(request_or_iterator, context):
                        yield response
                except (grpc.aio.AbortError, grpc.aio.UsageError):
                    raise
                except Exception as error:  # noqa: BLE001
                    await _abort(context, error, method)
                finally:
                    unbind_request_id(token)

            stream_response = stream_by_yield

        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return factory(
            stream_response,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
