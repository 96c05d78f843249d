"""The series that no integration test can drive cheaply: the planner's engine series through the real
Drafter over a scripted model (the vLLM engine is not started here), projector lag both ways, label
values bounded against a caller who invents method names, and /ready's deadline."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import generate_latest

from shelfproof.planner.drafter import Drafter
from shelfproof.runtime.metrics import CHECK_DEADLINE_S, LedgerHeight, MeteredDrafter, ProcessMetrics, watch_projector
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings
from tests.unit.test_planner_guard import ScriptedModel, _candidate

pytestmark = pytest.mark.unit


def sample(metrics: ProcessMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


class SlowDrafter:
    """The service's drafting backend (a Serve handle in production) over the real Drafter."""

    def __init__(self, drafter: Drafter, started: asyncio.Event, release: asyncio.Event) -> None:
        self.drafter, self.started, self.release = drafter, started, release

    async def restock(self, *args, **kwargs):
        self.started.set()
        await self.release.wait()
        return await self.drafter.restock(*args, **kwargs)

    async def promotion(self, *args, **kwargs):
        raise ConnectionError("the engine is away")


async def test_the_planner_records_queue_depth_tokens_and_tokens_per_second_from_its_drafts():
    answer = lambda prompt: json.dumps({"lines": []})  # noqa: E731 - the scripted model's reply
    metrics = ProcessMetrics("planner")
    started, release = asyncio.Event(), asyncio.Event()
    drafter = MeteredDrafter(SlowDrafter(Drafter(ScriptedModel(answer), urgent_lines=50), started, release), metrics)
    candidates = [_candidate(f"0000000000{n:04d}", 24, urgency=n / 100) for n in range(12)]

    draft = asyncio.create_task(drafter.restock("0614141000029", candidates, 10**9, "EUR"))
    await started.wait()
    assert sample(metrics, "shelfproof_planner_engine_requests_in_flight") == 1
    release.set()
    output, _ = await draft
    assert sample(metrics, "shelfproof_planner_engine_requests_in_flight") == 0
    # Three requests of 42 tokens each (the scripted model's count), what the draft's output says.
    assert output.generated_tokens == 126
    assert sample(metrics, "shelfproof_planner_generated_tokens_total") == 126
    assert sample(metrics, "shelfproof_planner_tokens_per_second") > 0
    assert sample(metrics, "shelfproof_planner_drafts_total", kind="restock", outcome="answered") == 1
    assert sample(metrics, "shelfproof_planner_draft_duration_seconds_count", kind="restock") == 1

    with pytest.raises(ConnectionError):
        await drafter.promotion("0614141000029", [], max_discount_bps=1000, margin_floor_bps=500)
    assert sample(metrics, "shelfproof_planner_drafts_total", kind="promotion", outcome="error") == 1
    assert sample(metrics, "shelfproof_planner_engine_requests_in_flight") == 0
    assert sample(metrics, "shelfproof_planner_generated_tokens_total") == 126


class FakeProjector:
    def __init__(self, height: int, behind: bool) -> None:
        self.projected_height, self.behind = height, behind


class FixedLedger:
    """A ledger stub that answers GetLedgerStatus with a fixed height."""

    def __init__(self, height: int) -> None:
        self.height = height

    async def GetLedgerStatus(self, request, timeout=None):
        from shelfproof.ledger.v1 import ledger_pb2

        return ledger_pb2.GetLedgerStatusResponse(latest_height=self.height)


async def test_projector_lag_counts_heights_only_while_the_projector_may_have_more_to_apply():
    metrics = ProcessMetrics("registry")
    ledger = LedgerHeight(FixedLedger(40))
    metrics.on_scrape(ledger.refresh)
    busy, idle = FakeProjector(31, behind=True), FakeProjector(12, behind=False)
    watch_projector(metrics, "registry", busy, ledger)
    watch_projector(metrics, "planner", idle, ledger)  # one family for both, no duplicate registration
    await metrics.exposition()
    assert sample(metrics, "shelfproof_projector_lag_heights", projector="registry") == 9
    assert sample(metrics, "shelfproof_projector_lag_heights", projector="planner") == 0
    assert sample(metrics, "shelfproof_projector_height", projector="planner") == 12
    # Ahead of the height this process last saw (the ledger moved on since): never a negative lag.
    busy.projected_height = 45
    await metrics.exposition()
    assert sample(metrics, "shelfproof_projector_lag_heights", projector="registry") == 0


async def test_invented_method_names_never_become_labels_and_every_code_is_counted_by_name():
    metrics = ProcessMetrics("test")
    server = GrpcServer(GrpcServerSettings(port=0), [], metrics)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for n in range(50):
                call = channel.unary_unary(f"/evil.Service{n}/Method{n}")
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(b"", timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            health = health_pb2_grpc.HealthStub(channel)
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    finally:
        await server.stop()
    text = generate_latest(metrics.registry).decode()
    assert "evil" not in text
    assert sample(metrics, "shelfproof_grpc_requests_total", service="unknown", method="unknown", code="UNIMPLEMENTED") == 50
    assert sample(metrics, "shelfproof_grpc_requests_total", service="grpc.health.v1.Health", method="Check", code="OK") == 1
    assert sample(metrics, "shelfproof_grpc_requests_total", service="grpc.health.v1.Health", method="Check", code="NOT_FOUND") == 1
    assert sample(metrics, "shelfproof_grpc_request_duration_seconds_count", service="grpc.health.v1.Health", method="Check", code="OK") == 1


async def test_a_dependency_that_hangs_or_raises_makes_ready_false_within_the_deadline():
    metrics = ProcessMetrics("test")

    async def hangs() -> bool:
        await asyncio.sleep(3600)
        return True

    async def raises() -> bool:
        raise OSError("connection refused")

    async def answers() -> bool:
        return True

    metrics.ready_when("hangs", hangs)
    metrics.ready_when("raises", raises)
    metrics.ready_when("answers", answers)
    loop = asyncio.get_running_loop()
    began = loop.time()
    ok, checks = await metrics.ready()
    assert loop.time() - began < CHECK_DEADLINE_S + 1
    assert (ok, checks) == (False, {"hangs": False, "raises": False, "answers": True})
