"""`shelfproof up` as a user runs it: started, healthy, listening on loopback only, stopped by SIGTERM with
nothing left behind. The stack is the session's shared one (tests/e2e/conftest.py): this test stops it, so
it runs after the others that use it (test_journey.py)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from shelfproof.runtime.processes import descendants
from tests.e2e.conftest import SHELFPROOF, RunningStack, alive, describe
from tests.sockets import is_loopback, listening_sockets

# Screenshots and other things a person may want to look at after a run (gitignored).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# It stops the stack the session shares: tests/e2e/conftest.py runs it after the others.
STOPS_THE_SHARED_STACK = True


def consumer_scan(env: dict[str, str]) -> None:
    """A brand registers and labels a product; a consumer's browser opens the QR code's URL; the
    command-line verifier checks the same code trusting only the validators."""
    import asyncio

    import grpc

    from shelfproof.ledger.v1 import ledger_pb2, ledger_pb2_grpc
    from shelfproof.product.v1 import labels_pb2, labels_pb2_grpc, product_pb2, product_pb2_grpc
    from shelfproof.cli.stack import local_tools_tls
    from shelfproof.runtime.client import insecure_channel, service_channel

    tls = local_tools_tls(Path(env["SHELFPROOF_STATE_DIR"]))  # `shelfproof up` turns mTLS on by default
    assert tls is not None and tls.enabled

    async def label_uri() -> str:
        async with insecure_channel(f"127.0.0.1:{env['SHELFPROOF_REGISTRY_PORT']}") as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await product_pb2_grpc.ProductServiceStub(plaintext).GetProduct(product_pb2.GetProductRequest(gtin="00614141123452"), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # no certificate: no handshake
        async with service_channel(f"127.0.0.1:{env['SHELFPROOF_REGISTRY_PORT']}", tls) as channel:
            products = product_pb2_grpc.ProductServiceStub(channel)
            await products.CreateProduct(product_pb2.CreateProductRequest(
                product=product_pb2.Product(gtin="00614141123452", name="Olive oil 1 l", brand="Demo")), timeout=30)
            batch = None
            async for reply in products.CommissionItems(
                product_pb2.CommissionItemsRequest(gtin="00614141123452", lot="E2E1", count=10), timeout=60
            ):
                batch = reply.batch if reply.HasField("batch") else batch
        async with service_channel(f"127.0.0.1:{env['SHELFPROOF_LEDGER_PORT']}", tls) as ledger_channel:
            content = await ledger_pb2_grpc.LedgerServiceStub(ledger_channel).GetContent(
                ledger_pb2.GetContentRequest(sha256=batch.serials_sha256), timeout=10
            )
        serial = content.content.decode().split("\n")[0]
        async with service_channel(f"127.0.0.1:{env['SHELFPROOF_REGISTRY_PORT']}", tls) as channel:
            labels = labels_pb2_grpc.LabelServiceStub(channel)
            for _ in range(100):  # the registry projects the batch's items a moment after the commit
                try:
                    reply = await labels.GetItemLabel(labels_pb2.GetItemLabelRequest(gtin="00614141123452", serial=serial), timeout=10)
                    break
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("no label for the item")
        # The verify page proves what it reads at the newest height with a header above it: the batch is
        # provable one block after its commit (what the integration tests' VerifyStack.provable waits for).
        async with service_channel(f"127.0.0.1:{env['SHELFPROOF_LEDGER_PORT']}", tls) as ledger_channel:
            ledger = ledger_pb2_grpc.LedgerServiceStub(ledger_channel)
            committed = (await ledger.GetLedgerStatus(ledger_pb2.GetLedgerStatusRequest(), timeout=10)).latest_height
            for _ in range(300):
                if (await ledger.GetLedgerStatus(ledger_pb2.GetLedgerStatusRequest(), timeout=10)).latest_height > committed:
                    return reply.uri
                await asyncio.sleep(0.1)
            raise AssertionError("the ledger made no block after the commissioning")

    uri = asyncio.run(label_uri())
    assert uri.startswith(f"http://127.0.0.1:{env['SHELFPROOF_VERIFY_PORT']}/01/00614141123452/21/")
    from tests.e2e.browser import screenshot_verdict

    # A phone set to Asia/Shanghai that shares no location: its page sends the time zone by itself.
    verdict_text, shot = screenshot_verdict(uri, ARTIFACTS / "verify-page-genuine.png", time_zone="Asia/Shanghai")
    assert verdict_text == "Genuine product" and shot.stat().st_size > 5_000

    async def scan_region() -> list[tuple[str, bool]]:
        from shelfproof.ledger.v1 import state_pb2

        serial = uri.split("/21/", 1)[1].split("?", 1)[0]
        async with service_channel(f"127.0.0.1:{env['SHELFPROOF_LEDGER_PORT']}", tls) as ledger_channel:
            ledger = ledger_pb2_grpc.LedgerServiceStub(ledger_channel)
            for _ in range(200):  # flushed once settled (2 s), then committed
                reply = await ledger.Query(ledger_pb2.QueryRequest(store="scans", key=f"00614141123452/{serial}".encode()), timeout=10)
                if reply.found:
                    record = state_pb2.ScanRecord.FromString(reply.value)
                    return [(s.cell, s.region) for s in record.sightings] + [("scans", record.scans)]
                await asyncio.sleep(0.1)
        raise AssertionError("the page's scan never reached the ledger")

    assert asyncio.run(scan_region()) == [("wt", True), ("scans", 1)]  # one look, with Shanghai's region
    checked = subprocess.run([str(SHELFPROOF), "verify", uri], env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "verdict: GENUINE" in checked.stdout, checked.stdout + checked.stderr
    assert "signed by 1 validator(s)" in checked.stdout
    forged = uri.replace("sig=", "sig=AAAA", 1)
    verdict_text, _ = screenshot_verdict(forged, ARTIFACTS / "verify-page-counterfeit.png")
    assert verdict_text == "Not a genuine code"
    checked = subprocess.run([str(SHELFPROOF), "verify", forged], env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "verdict: COUNTERFEIT" in checked.stdout, checked.stdout + checked.stderr


def openai_models(env: dict[str, str]) -> None:
    """The planner's model answers on its OpenAI-compatible endpoint."""
    import httpx

    base = f"http://127.0.0.1:{env['SHELFPROOF_PLANNER_OPENAI_PORT']}/v1"
    models = httpx.get(f"{base}/models", timeout=30).json()
    model = models["data"][0]["id"]
    reply = httpx.post(f"{base}/chat/completions", timeout=120, json={
        "model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello."}],
    }).json()
    assert reply["choices"][0]["message"]["content"] and reply["usage"]["completion_tokens"] >= 1


def epcis_rest_query(env: dict[str, str]) -> None:
    """The registry's EPCIS REST binding answers a query as an EPCISQueryDocument valid against GS1's schema
    (over HTTPS, to the local tools' client certificate)."""
    import httpx

    from shelfproof.cli.stack import local_tools_tls
    from shelfproof.gs1 import epcis
    from shelfproof.runtime.tls import client_ssl_context

    tls = local_tools_tls(Path(env["SHELFPROOF_STATE_DIR"]))
    identity = client_ssl_context(tls.cert_file, tls.key_file, tls.ca_file)
    reply = httpx.get(f"https://127.0.0.1:{env['SHELFPROOF_REGISTRY_EPCIS_PORT']}/events", params={"perPage": "5"}, timeout=30,
                      verify=identity)
    assert reply.status_code == 200, reply.text
    epcis.validate_document(reply.json())
    assert reply.json()["type"] == "EPCISQueryDocument"


# The shared stack's start (up to 10 minutes here) counts against this test when it runs alone.
@pytest.mark.timeout(1200)
def test_up_status_and_sigterm_leave_nothing_behind(shelfproof_up: RunningStack):
    stack_env, up, lines = shelfproof_up.env, shelfproof_up.up, shelfproof_up.lines
    pidfile = shelfproof_up.pidfile
    stopped = False
    try:
        status = subprocess.run(
            [str(SHELFPROOF), "status"], env=stack_env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stdout + status.stderr
        rows = [row.split() for row in status.stdout.splitlines() if row.strip()]
        assert rows and all(row[-1] == "SERVING" for row in rows), status.stdout
        assert [row[0] for row in rows] == ["postgres", "ledger", "registry", "epcis-rest", "pricing", "planner", "verify", "console"]
        assert any(line.startswith("ledger engine: cometbft") for line in lines), "".join(lines)
        assert any(line.startswith("consumer page: http://127.0.0.1:") for line in lines), "".join(lines)
        engine_line = next(line for line in lines if line.startswith("planner engine: "))
        assert " in bfloat16 because " in engine_line or " in float32 because " in engine_line, engine_line

        consumer_scan(stack_env)
        openai_models(stack_env)
        epcis_rest_query(stack_env)

        watched = set(descendants(up.pid)) | {int(pidfile.read_text().split()[0])}
        # PostgreSQL's own children (its background workers) hold no listening sockets of their own.
        sockets = listening_sockets(watched | {up.pid})
        names = {name for _, name, _ in sockets}
        assert "postgres" in names and len(sockets) >= 8, sockets
        # the planner's Ray (GCS, raylet, agents, workers), the Serve proxy and replicas (their inter-deployment
        # gRPC servers included) and vLLM's processes among them
        assert any(n.startswith("ray::ServeReplica") for n in names) and {"raylet", "gcs_server"} <= names, sockets
        exposed = [s for s in sockets if not is_loopback(s[2])]
        assert not exposed, f"listening beyond loopback: {exposed}"

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        stopped = shelfproof_up.stopped = True
    finally:
        if not stopped:
            shelfproof_up.kill_what_is_left()
    # `up` has waited for its children; their own children (Ray's workers, the engine) may take a moment
    # more to exit on a loaded machine (the same grace as the session's leftover check in tests/conftest.py).
    deadline = time.monotonic() + 10
    while (leftovers := {pid for pid in watched if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers, f"processes left behind: {describe(leftovers)}"
    after = subprocess.run(
        [str(SHELFPROOF), "status"], env=stack_env, capture_output=True, text=True, timeout=60
    )
    assert after.returncode == 1 and "UNREACHABLE" in after.stdout
