"""Every service's /metrics after real traffic, and /ready following its dependencies: the embedded ledger
behind its gRPC server, the registry over a real PostgreSQL, the verify page (tests/integration/
verify_harness.py), each with the ProcessMetrics and watch_* wiring its main() uses, on loopback."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shelfproof.product.v1 import product_pb2 as ppb
from shelfproof.runtime.metrics import (
    ProcessMetrics,
    watch_grpc_server,
    watch_ledger_adapter,
    watch_ledger_dependency,
    watch_postgres,
    watch_query_service,
    watch_verifier,
)
from tests.integration.pricing_harness import Pricing
from tests.integration.verify_harness import VerifyStack

pytestmark = pytest.mark.integration

GTIN = "00614141123452"
LEDGER = "shelfproof.ledger.v1.LedgerService"
PRODUCTS = "shelfproof.product.v1.ProductService"


class MeteredStack(VerifyStack):
    def __init__(self, tmp_path, dsn: str) -> None:
        super().__init__(tmp_path, dsn)
        self.ledger_metrics, self.registry_metrics = ProcessMetrics("ledger"), ProcessMetrics("registry")
        self.verify_metrics = ProcessMetrics("verify")

    async def __aenter__(self):
        await super().__aenter__()
        watch_grpc_server(self.ledger_metrics, self.ledger_server)
        watch_ledger_adapter(self.ledger_metrics, self.adapter)
        watch_query_service(self.registry_metrics, self.server, self.pool, self.ledger, {"registry": self.projector})
        watch_verifier(self.verify_metrics, self.verifier)
        watch_postgres(self.verify_metrics, self.pool)
        watch_ledger_dependency(self.verify_metrics, self.ledger)
        self.urls = {}
        for name, metrics in (("ledger", self.ledger_metrics), ("registry", self.registry_metrics), ("verify", self.verify_metrics)):
            self.urls[name] = f"http://127.0.0.1:{await metrics.start('127.0.0.1', 0)}"
        return self

    async def __aexit__(self, *exc):
        for metrics in (self.ledger_metrics, self.registry_metrics, self.verify_metrics):
            await metrics.stop()
        await super().__aexit__(*exc)


async def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.get(f"{url}/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def ready(url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.get(f"{url}/ready")
    return reply.status_code, reply.json()


async def test_every_series_moves_after_real_traffic_and_ready_follows_dependencies(tmp_path, database_dsn):
    async with MeteredStack(tmp_path, database_dsn) as stack:
        before = {name: await scrape(url) for name, url in stack.urls.items()}

        await stack.stub.CreateProduct(ppb.CreateProductRequest(product=ppb.Product(gtin=GTIN, name="Olive oil 1 l", brand="Demo")), timeout=20)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stack.stub.GetProduct(ppb.GetProductRequest(gtin="00614141999996"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stack.stub.CreateProduct(ppb.CreateProductRequest(product=ppb.Product(gtin="123", name="x")), timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        async for _ in stack.stub.CommissionItems(ppb.CommissionItemsRequest(gtin=GTIN, lot="M1", count=3, expiry="2030-01-31"), timeout=60):
            pass
        committed = (await stack.stub.GetProduct(ppb.GetProductRequest(gtin=GTIN), timeout=10)).product
        assert committed.gtin == GTIN
        await stack.provable(stack.adapter.indexed_height)
        # A consumer scans a code the brand never signed: a verdict, counted by its name.
        async with httpx.AsyncClient(timeout=20) as client:
            reply = await client.get(stack.base_url + f"/01/{GTIN}/21/NOSUCHSERIAL", headers={"Accept": "application/json"})
        assert reply.status_code == 200, reply.text
        verdict = reply.json()["verdict"]

        after = {name: await scrape(url) for name, url in stack.urls.items()}

        ledger0, ledger1 = before["ledger"], after["ledger"]
        assert value(ledger1, "shelfproof_ledger_height") > value(ledger0, "shelfproof_ledger_height")
        assert value(ledger1, "shelfproof_ledger_indexed_height") >= value(ledger0, "shelfproof_ledger_height") + 1
        assert value(ledger1, "shelfproof_ledger_block_interval_seconds_count") > value(ledger0, "shelfproof_ledger_block_interval_seconds_count")
        assert value(ledger1, "shelfproof_ledger_batch_transactions_count") > value(ledger0, "shelfproof_ledger_batch_transactions_count")
        assert ("shelfproof_ledger_mempool_transactions", frozenset()) in ledger1
        assert value(ledger1, "shelfproof_ledger_pending_acknowledgements") == stack.adapter.index.pending_count
        submitted = sum(
            value(ledger1, "shelfproof_grpc_requests_total", service=LEDGER, method=m, code="OK")
            - value(ledger0, "shelfproof_grpc_requests_total", service=LEDGER, method=m, code="OK")
            for m in ("SubmitTransaction", "SubmitTransactions")
        )
        assert submitted >= 2  # the product and the commissioning batch, at least
        assert value(ledger1, "shelfproof_grpc_request_duration_seconds_count", service=LEDGER, method="GetLedgerStatus", code="OK") > 0

        registry0, registry1 = before["registry"], after["registry"]
        assert value(registry1, "shelfproof_grpc_requests_total", service=PRODUCTS, method="CreateProduct", code="OK") == 1
        # The codes are the error interceptor's, by name.
        assert value(registry1, "shelfproof_grpc_requests_total", service=PRODUCTS, method="GetProduct", code="NOT_FOUND") == 1
        assert value(registry1, "shelfproof_grpc_requests_total", service=PRODUCTS, method="CreateProduct", code="INVALID_ARGUMENT") == 1
        assert value(registry1, "shelfproof_grpc_requests_total", service=PRODUCTS, method="CommissionItems", code="OK") == 1
        assert value(registry1, "shelfproof_projector_height", projector="registry") > value(registry0, "shelfproof_projector_height", projector="registry")
        # Caught up and waiting on the stream: nothing left to apply.
        assert value(registry1, "shelfproof_projector_lag_heights", projector="registry") == 0

        verify0, verify1 = before["verify"], after["verify"]
        assert value(verify1, "shelfproof_verify_scans_total") == value(verify0, "shelfproof_verify_scans_total") + 1
        assert value(verify1, "shelfproof_verify_verdicts_total", verdict=verdict) == 1

        for name, url in stack.urls.items():
            assert await ready(url) == (200, {"status": "SERVING", "checks": {
                "ledger": {"grpc": "up", "engine": "up"},
                "registry": {"grpc": "up", "postgres": "up", "ledger": "up"},
                "verify": {"postgres": "up", "ledger": "up"},
            }[name]}), name

        # The ledger's gRPC server stops: its own readiness (health) and its clients' (a dependency) fail.
        await stack.ledger_server.stop()
        for name, url in stack.urls.items():
            status, body = await ready(url)
            assert status == 503 and body["status"] == "NOT_SERVING", (name, body)
            assert body["checks"]["grpc" if name == "ledger" else "ledger"] == "down", (name, body)
        assert (await ready(stack.urls["registry"]))[1]["checks"]["postgres"] == "up"
        # A scrape still answers, from the series' last values, within its deadline.
        assert value(await scrape(stack.urls["registry"]), "shelfproof_projector_height", projector="registry") > 0


async def test_the_pricing_projector_lag_falls_to_zero_once_it_has_applied_the_ledger(tmp_path, database_dsn):
    async with Pricing(tmp_path, database_dsn) as pricing:
        metrics = ProcessMetrics("pricing")
        watch_query_service(metrics, pricing.server, pricing.pool, pricing.ledger, {"pricing": pricing.projector})
        url = f"http://127.0.0.1:{await metrics.start('127.0.0.1', 0)}"
        try:
            await pricing.set_up_store()
            await asyncio.sleep(0.2)
            for _ in range(100):
                samples = await scrape(url)
                if value(samples, "shelfproof_projector_lag_heights", projector="pricing") == 0:
                    break
                await asyncio.sleep(0.05)
            assert value(samples, "shelfproof_projector_lag_heights", projector="pricing") == 0
            assert value(samples, "shelfproof_projector_height", projector="pricing") == pricing.projector.height > 0
            assert await ready(url) == (200, {"status": "SERVING", "checks": {"grpc": "up", "postgres": "up", "ledger": "up"}})
        finally:
            await metrics.stop()
