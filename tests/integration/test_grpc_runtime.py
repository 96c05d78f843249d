"""The shared gRPC runtime over real channels on loopback: error mapping, request ids, health,
reflection, client deadlines and retries."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shelfproof.runtime import errors
from shelfproof.runtime.client import call, insecure_channel
from shelfproof.runtime.request_context import current_request_id
from shelfproof.runtime.server import GrpcServer, ServiceBinding
from shelfproof.runtime.settings import GrpcServerSettings

SERVICE = "shelfproof.test.v1.Probe"

# name -> (exception raised by the handler, expected status code, expected ErrorInfo reason)
DOMAIN_ERRORS = {
    "invalid": (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, "ERROR_REASON_INVALID_FIELD"),
    "missing": (errors.NotFound, grpc.StatusCode.NOT_FOUND, "ERROR_REASON_NOT_FOUND"),
    "exists": (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, "ERROR_REASON_ALREADY_EXISTS"),
    "precondition": (
        errors.FailedPrecondition,
        grpc.StatusCode.FAILED_PRECONDITION,
        "ERROR_REASON_FAILED_PRECONDITION",
    ),
    "guardrail": (
        errors.GuardrailViolated,
        grpc.StatusCode.FAILED_PRECONDITION,
        "ERROR_REASON_GUARDRAIL_VIOLATED",
    ),
    "denied": (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "ERROR_REASON_PERMISSION_DENIED"),
    "unauthenticated": (
        errors.Unauthenticated,
        grpc.StatusCode.UNAUTHENTICATED,
        "ERROR_REASON_UNAUTHENTICATED",
    ),
    "overloaded": (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, "ERROR_REASON_OVERLOADED"),
    "unavailable": (
        errors.DependencyUnavailable,
        grpc.StatusCode.UNAVAILABLE,
        "ERROR_REASON_DEPENDENCY_UNAVAILABLE",
    ),
}


class ProbeServicer:
    """Raises what the request names, so each mapping is exercised through the real interceptor."""

    def __init__(self) -> None:
        self.flaky_calls = 0

    async def unary(self, request: wrappers_pb2.StringValue, context) -> wrappers_pb2.StringValue:
        what = request.value
        if what in DOMAIN_ERRORS:
            raise DOMAIN_ERRORS[what][0](f"probe {what}", metadata={"probe": what})
        if what == "violations":
            raise errors.InvalidArgument(
                "two fields are wrong",
                field_violations=[
                    errors.FieldViolation("product.gtin", "check digit should be 2"),
                    errors.FieldViolation("product.name", "must not be empty"),
                ],
            )
        if what == "ledger":
            raise errors.LedgerRejected("nonce 5 expected, got 7", ledger_code=12)
        if what == "bug":
            raise KeyError("secret internal detail")
        if what == "flaky":
            self.flaky_calls += 1
            if self.flaky_calls < 3:
                raise errors.DependencyUnavailable("warming up")
        if what == "slow":
            await asyncio.sleep(2)
        return wrappers_pb2.StringValue(value=current_request_id() or "")

    async def stream(self, request: wrappers_pb2.StringValue, context):
        yield wrappers_pb2.StringValue(value="first")
        if request.value in DOMAIN_ERRORS:
            raise DOMAIN_ERRORS[request.value][0]("stream broke")
        yield wrappers_pb2.StringValue(value="second")


def _binding(servicer: ProbeServicer) -> ServiceBinding:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                servicer.unary,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=wrappers_pb2.StringValue.SerializeToString,
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                servicer.stream,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=wrappers_pb2.StringValue.SerializeToString,
            ),
        },
    )
    return ServiceBinding(SERVICE, lambda server: server.add_generic_rpc_handlers((handler,)))


@pytest.fixture
async def probe():
    servicer = ProbeServicer()
    server = GrpcServer(GrpcServerSettings(port=0, shutdown_grace_s=0.5), [_binding(servicer)])
    port = await server.start()
    channel = insecure_channel(f"127.0.0.1:{port}")
    unary = channel.unary_unary(
        f"/{SERVICE}/Unary",
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )
    stream = channel.unary_stream(
        f"/{SERVICE}/Stream",
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )
    yield servicer, server, channel, unary, stream
    await channel.close()
    await server.stop()


@pytest.mark.parametrize("what", sorted(DOMAIN_ERRORS))
async def test_each_domain_error_arrives_with_its_code_and_reason(probe, what):
    _, _, _, unary, _ = probe
    exc_type, code, reason = DOMAIN_ERRORS[what]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(wrappers_pb2.StringValue(value=what), timeout=5)
    assert caught.value.code() == code
    assert caught.value.details() == f"probe {what}"
    domain_error = errors.error_from_rpc(caught.value)
    assert type(domain_error) is exc_type
    assert domain_error.reason == reason
    assert domain_error.metadata == {"probe": what}


async def test_field_violations_travel_in_bad_request(probe):
    _, _, _, unary, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(wrappers_pb2.StringValue(value="violations"), timeout=5)
    err = errors.error_from_rpc(caught.value)
    assert isinstance(err, errors.InvalidArgument)
    assert [v.field for v in err.field_violations] == ["product.gtin", "product.name"]


async def test_ledger_rejection_keeps_ledger_code(probe):
    _, _, _, unary, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(wrappers_pb2.StringValue(value="ledger"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    err = errors.error_from_rpc(caught.value)
    assert isinstance(err, errors.LedgerRejected) and err.ledger_code == 12


async def test_unexpected_exception_is_internal_without_details(probe):
    _, _, _, unary, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(wrappers_pb2.StringValue(value="bug"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"
    assert "secret" not in str(caught.value.trailing_metadata())


async def test_streaming_errors_are_mapped_after_partial_results(probe):
    _, _, _, _, stream = probe
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in stream(wrappers_pb2.StringValue(value="missing"), timeout=5):
            received.append(reply.value)
    assert received == ["first"]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_request_id_reaches_the_handler(probe):
    _, _, _, unary, _ = probe
    reply = await unary(
        wrappers_pb2.StringValue(value="echo"), timeout=5, metadata=(("x-request-id", "abc-42"),)
    )
    assert reply.value == "abc-42"
    generated = await unary(wrappers_pb2.StringValue(value="echo"), timeout=5)
    assert len(generated.value) == 32


async def test_client_retries_unavailable_only_when_idempotent(probe):
    servicer, _, _, unary, _ = probe
    with pytest.raises(errors.DependencyUnavailable):
        await call(unary, wrappers_pb2.StringValue(value="flaky"), idempotent=False)
    assert servicer.flaky_calls == 1
    servicer.flaky_calls = 0
    reply = await call(unary, wrappers_pb2.StringValue(value="flaky"), idempotent=True, backoff_s=0.01)
    assert servicer.flaky_calls == 3 and reply.value


async def test_client_does_not_retry_other_errors(probe):
    _, _, _, unary, _ = probe
    with pytest.raises(errors.NotFound):
        await call(unary, wrappers_pb2.StringValue(value="missing"), idempotent=True)


async def test_client_deadline_bounds_the_call(probe):
    _, _, _, unary, _ = probe
    with pytest.raises(errors.DomainError) as caught:
        await call(unary, wrappers_pb2.StringValue(value="slow"), idempotent=True, deadline_s=0.2)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_health_and_reflection(probe):
    _, server, channel, _, _ = probe
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name async for reply in replies for s in reply.list_services_response.service]
    assert SERVICE in names and "grpc.health.v1.Health" in names


async def test_graceful_stop_finishes_inflight_calls():
    servicer = ProbeServicer()
    server = GrpcServer(GrpcServerSettings(port=0, shutdown_grace_s=5), [_binding(servicer)])
    port = await server.start()
    async with insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary(
            f"/{SERVICE}/Unary",
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        inflight = asyncio.ensure_future(unary(wrappers_pb2.StringValue(value="slow"), timeout=10))
        await asyncio.sleep(0.3)
        await server.stop()
        assert (await inflight).value  # the slow call finished inside the grace period
