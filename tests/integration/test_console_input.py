"""What a scanner or a person types into the console, and how a service's refusal reads: the GS1
parsing of the Scan box, and real gRPC statuses (from a real server) turned into sentences."""

from __future__ import annotations

import grpc
import pytest

from shelfproof.console.errors import problem_of
from shelfproof.console.scan import GS, InvalidScan, parse_scan
from shelfproof.runtime.client import insecure_channel
from shelfproof.runtime.errors import FieldViolation, InvalidArgument, LedgerRejected
from shelfproof.runtime.server import GrpcServer, ServiceBinding
from shelfproof.runtime.settings import GrpcServerSettings

pytestmark = pytest.mark.integration
GTIN = "00614141000418"


@pytest.mark.parametrize("typed, serial, lot, expiry", [
    (f"]d201{GTIN}21ABC-1{GS}10L7", "ABC-1", "L7", None),  # symbology prefix, FNC1 as GS
    (f"01{GTIN}17261231" + f"10L9{GS}21XYZ", "XYZ", "L9", "261231"),  # fixed-length 17 needs no separator
    (f"01{GTIN}21S1<GS>10L2", "S1", "L2", None),  # a separator typed by hand
    (f"(01){GTIN}(21)S2", "S2", None, None),
    (f"https://id.gs1.org/01/{GTIN}/21/S3?sig=abc&kid=k", "S3", None, None),
    (f"HTTPS://ID.GS1.ORG/01/{GTIN}/21/S4", "S4", None, None),  # CAPS LOCK on
    (f"{GTIN} S5", "S5", None, None),
    ("614141000418 S6", "S6", None, None),  # a GTIN-12 is padded to 14
])
def test_scanner_input_is_read(typed, serial, lot, expiry):
    code = parse_scan(typed)
    assert (code.gtin, code.serial, code.lot, code.expiry) == (GTIN, serial, lot, expiry)


@pytest.mark.parametrize("typed, why", [
    ("", "nothing"), ("0100614141000419", "check digit"), (f"01{GTIN}9912", "application identifier"),
    (f"01{GTIN}21" + "X" * 21, "1 to 20"), ("x" * 600, "at most"), ("(01)123", "14 digits"),
    ("https://example.com/not-a-link", "Digital Link"), (f"10L1{GS}21S", "no GTIN"),
])
def test_bad_input_is_refused_with_a_reason(typed, why):
    with pytest.raises(InvalidScan, match=why):
        parse_scan(typed)


def _refusing(error: Exception) -> ServiceBinding:
    """A real method on a real server (through the one error interceptor) that refuses as the services do."""

    async def refuse(request: bytes, context) -> bytes:
        raise error

    handler = grpc.method_handlers_generic_handler("shelfproof.test.Refusing", {"Refuse": grpc.unary_unary_rpc_method_handler(refuse)})
    return ServiceBinding("shelfproof.test.Refusing", lambda server: server.add_generic_rpc_handlers((handler,)))


@pytest.mark.parametrize("error, expected", [
    (InvalidArgument("gtin is not a valid GTIN", field_violations=[FieldViolation("gtin", "check digit")]),
     "Gtin is not a valid GTIN (gtin: check digit). Correct the highlighted input and try again."),
    (LedgerRejected("agent may not approve drafts of another organization", ledger_code=7),
     "Agent may not approve drafts of another organization. The ledger refused the transaction; nothing was written."),
])
async def test_refusals_read_as_sentences(error, expected):
    server = GrpcServer(GrpcServerSettings(port=0), [_refusing(error)])
    port = await server.start()
    try:
        async with insecure_channel(f"127.0.0.1:{port}") as channel:
            refuse = channel.unary_unary("/shelfproof.test.Refusing/Refuse", request_serializer=bytes, response_deserializer=bytes)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await refuse(b"", timeout=5)
    finally:
        await server.stop()
    assert problem_of(caught.value).sentence().startswith(expected)


def test_an_unreachable_service_says_what_to_do():
    channel = grpc.insecure_channel("127.0.0.1:1")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert "shelfproof status" in problem_of(caught.value).sentence()
