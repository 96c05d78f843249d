"""The benchmarks' Go gRPC load generator against a real grpc.aio server on loopback: it sends the
serialized requests it is given, in turn, and counts answers by status code (what `bench grpc` and
`bench pricing` read their figures from)."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shelfproof.bench import loadgen

pytestmark = pytest.mark.integration


async def test_calls_are_answered_and_counted_by_status():
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set("known", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        requests = [health_pb2.HealthCheckRequest(service=name).SerializeToString() for name in ("known", "unknown")]
        result = await loadgen.grpc_closed_loop(
            f"127.0.0.1:{port}", "/grpc.health.v1.Health/Check", requests, concurrency=4, connections=2, seconds=1.0, warmup=0.2,
        )
    finally:
        await server.stop(0)
    codes = result["codes"]
    # half the clients' requests name a service the server does not know: NOT_FOUND, about as many as OK
    assert codes["OK"] > 20 and 0.5 < codes["NotFound"] / codes["OK"] < 2, codes
    assert len(result["latencies"]) == codes["OK"] and all(0 < s < 5 for s in result["latencies"])
    assert set(codes) == {"OK", "NotFound"} and result["cpu_s"] > 0
