"""Every RPC of every shelfproof gRPC service, fed hostile requests (tests/security/protofuzz.py) through
the real servers on loopback — ledger adapter over the embedded ledger, registry, pricing, planner (a scripted
model stands in for vLLM: the fuzz is of the service's input handling) — over a real PostgreSQL: each is
answered with a status a client can act on (never UNKNOWN, INTERNAL or DATA_LOSS), unary calls within
their deadline, and every server still serving afterwards.

Which services exist comes from the generated modules (every ``shelfproof.*.v1`` service), which ones a
server hosts from its reflection service; a service that no server of this stack hosts fails the test
unless NOT_IN_FUZZ_STACK says why.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
import shelfproof
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from hypothesis import given
from shelfproof.planner.drafter import Drafter
from shelfproof.pricing.projector import PricingProjector
from shelfproof.pricing.service import PricingService
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings

from tests.conftest import fresh_database
from tests.integration.planner_harness import PlannerStack
from tests.integration.test_planner_service import ScriptedModel
from tests.security.protofuzz import fuzz_settings, messages

# A status that says what is wrong with the request or the system's state; anything else is a bug.
ANSWERS = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}
UNARY_DEADLINE_S = 20.0
STREAM_DEADLINE_S = 1.0
NOT_IN_FUZZ_STACK: dict[str, str] = {}


def shelfproof_services() -> list[str]:
    """Every gRPC service the project's protos declare (the generated modules, imported)."""
    names = []
    for path in sorted(Path(shelfproof.__file__).parent.glob("*/v1/*_pb2.py")):
        generated = importlib.import_module(f"shelfproof.{path.parts[-3]}.v1.{path.stem}")
        names += [service.full_name for service in generated.DESCRIPTOR.services_by_name.values()]
    return sorted(set(names))


def _methods() -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    return [
        method for name in shelfproof_services() if name not in NOT_IN_FUZZ_STACK
        for method in pool.FindServiceByName(name).methods if not method.client_streaming
    ]


METHODS = _methods()


class StackThread:
    """The async stack on an event loop of its own thread, so hypothesis' synchronous tests call it."""

    def __init__(self, stack: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-stack", daemon=True)
        self.stack = stack

    def run(self, coroutine, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __enter__(self):
        self.thread.start()
        self.run(self.stack.__aenter__())
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.run(self.stack.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class FuzzStack(PlannerStack):
    """The planner's stack (ledger, registry, planner) plus the pricing service on a server of its own."""

    async def __aenter__(self):
        await super().__aenter__()
        self.pricing_projector = PricingProjector(self.pool, self.ledger, poll_s=0.01)
        await self.pricing_projector.start()
        pricing = PricingService(self.pool, self.retailer, self.pricing_projector)
        self.pricing_server = GrpcServer(GrpcServerSettings(port=0), [pricing.binding()])
        await self.pricing_server.start()
        return self

    async def __aexit__(self, *exc):
        await self.pricing_server.stop()
        await self.pricing_projector.stop()
        await super().__aexit__(*exc)


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory, postgres_cluster, migrated_template):
    with fresh_database(postgres_cluster, migrated_template) as dsn:
        stack = FuzzStack(tmp_path_factory.mktemp("fuzz"), dsn, Drafter(ScriptedModel()), products=3)
        with StackThread(stack) as running:
            running.run(stack.set_up_store())
            addresses = [running.stack.ledger_address, *(
                f"127.0.0.1:{server.port}" for server in (stack.server, stack.planner_server, stack.pricing_server)
            )]
            channels = {address: grpc.insecure_channel(address) for address in addresses}
            hosted = {}
            for address, channel in channels.items():
                for name in ProtoReflectionDescriptorDatabase(channel).get_services():
                    hosted[name] = channel
            try:
                yield hosted
            finally:
                for channel in channels.values():
                    channel.close()


def test_every_service_the_protos_declare_is_in_the_fuzz_stack(fuzz_stack):
    missing = [name for name in shelfproof_services() if name not in fuzz_stack and name not in NOT_IN_FUZZ_STACK]
    assert not missing, f"no server of the fuzz stack hosts {missing}: add it, or say why in NOT_IN_FUZZ_STACK"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_every_rpc_answers_hostile_requests_with_a_status(method: MethodDescriptor, fuzz_stack):
    service = method.containing_service.full_name
    channel = fuzz_stack.get(service)
    if channel is None:
        pytest.fail(f"{service} is not hosted (see test_every_service_the_protos_declare_is_in_the_fuzz_stack)")
    path = f"/{service}/{method.name}"
    serialize, keep_bytes = (lambda m: m.SerializeToString()), (lambda b: b)
    if method.server_streaming:
        call = channel.unary_stream(path, request_serializer=serialize, response_deserializer=keep_bytes)
    else:
        call = channel.unary_unary(path, request_serializer=serialize, response_deserializer=keep_bytes)

    @fuzz_settings()
    @given(messages(method.input_type))
    def answers(request) -> None:
        try:
            if method.server_streaming:
                for n, _ in enumerate(call(request, timeout=STREAM_DEADLINE_S)):
                    if n >= 2:
                        break
            else:
                call(request, timeout=UNARY_DEADLINE_S)
        except grpc.RpcError as err:
            code = err.code()
            if method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return  # a live stream with nothing (more) to send
            assert code in ANSWERS, f"{path} answered {code.name}: {err.details()!r} to {request!r}"[:2000]

    answers()
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
