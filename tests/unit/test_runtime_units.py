"""Fast checks of the shared runtime's pure parts (the real-channel checks are in integration/)."""

from __future__ import annotations

import io
import json
import logging

import grpc
import pytest
from google.rpc import error_details_pb2

from shelfproof.bench.stats import percentile
from shelfproof.ledger.client import ledger_error
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.runtime import errors
from shelfproof.runtime.log import JsonLineFormatter
from shelfproof.runtime.request_context import bind_request_id, unbind_request_id
from shelfproof.runtime.settings import CommonSettings, PostgresSettings


def test_status_carries_code_reason_and_field_violations():
    err = errors.InvalidArgument(
        "bad gtin", field_violations=[errors.FieldViolation("product.gtin", "check digit is 3, not 4")]
    )
    status = err.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and info.reason == "ERROR_REASON_INVALID_FIELD"
    assert info.domain == errors.ERROR_DOMAIN
    assert status.details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("product.gtin", "check digit is 3, not 4")
    ]


def test_ledger_rejection_keeps_its_code_in_metadata():
    err = errors.LedgerRejected("nonce gap", ledger_code=7)
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.metadata == {"ledger_code": "7"}


@pytest.mark.parametrize(
    ("ledger_code", "expected", "status"),
    [
        (ResultCode.ALREADY_EXISTS, errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
        (ResultCode.NOT_FOUND, errors.NotFound, grpc.StatusCode.NOT_FOUND),
        (ResultCode.INVALID_ARGUMENT, errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
        (ResultCode.PERMISSION_DENIED, errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
        (ResultCode.INTERNAL_ERROR, errors.Internal, grpc.StatusCode.INTERNAL),
        (ResultCode.GUARDRAIL_VIOLATED, errors.LedgerRejected, grpc.StatusCode.FAILED_PRECONDITION),
        (ResultCode.NONCE_GAP, errors.LedgerRejected, grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_ledger_codes_map_to_the_domain_error_a_caller_acts_on(ledger_code, expected, status):
    err = ledger_error(errors.LedgerRejected("the ledger said no", ledger_code=ledger_code))
    assert type(err) is expected and err.code == status
    assert err.metadata["ledger_code"] == str(int(ledger_code)) and err.message == "the ledger said no"
    assert err.to_status().code == status.value[0]


def test_json_log_lines_carry_request_id_and_extras():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger("test.jsonlog")
    logger.addHandler(handler)
    logger.propagate = False
    token = bind_request_id("req-123")
    try:
        logger.warning("hello %s", "world", extra={"gtin": "09506000134352"})
    finally:
        unbind_request_id(token)
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "hello world"
    assert entry["request_id"] == "req-123"
    assert entry["gtin"] == "09506000134352"
    assert entry["level"] == "warning"


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SHELFPROOF_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("SHELFPROOF_PG_PORT", "6543")
    assert CommonSettings().log_level == "DEBUG"
    assert PostgresSettings().port == 6543
    monkeypatch.setenv("SHELFPROOF_PG_PORT", "70000")
    with pytest.raises(ValueError):
        PostgresSettings()


def test_percentile_nearest_rank():
    samples = list(range(1, 101))
    assert percentile(samples, 0.5) == 50
    assert percentile(samples, 0.99) == 99
    assert percentile(samples, 1.0) == 100


def test_nul_in_any_text_field_is_found_with_its_path():
    from google.protobuf import timestamp_pb2

    from shelfproof.product.v1 import events_pb2, product_pb2
    from shelfproof.runtime.fields import nul_in_text, time_field

    clean = product_pb2.Product(gtin="00614141123452", name="Tea", attributes={"colour": "green"})
    assert nul_in_text(clean) is None
    assert nul_in_text(product_pb2.Product(name="Te\x00a")) == "name"
    assert nul_in_text(product_pb2.Product(attributes={"colour": "gr\x00een"})) == "attributes['colour']"
    assert nul_in_text(product_pb2.Product(attributes={"col\x00our": "green"})).startswith("attributes[")
    nested = events_pb2.ListEventsRequest(filter=events_pb2.EventFilter(serial="S\x00"))
    assert nul_in_text(nested) == "filter.serial"
    with pytest.raises(errors.InvalidArgument):
        time_field(timestamp_pb2.Timestamp(seconds=2**62), "filter.from_time")
    assert time_field(timestamp_pb2.Timestamp(seconds=0), "t").year == 1970


def test_free_ports_are_never_handed_out_twice():
    # The kernel hands a just-closed ephemeral port out again; two settings sharing one failed the e2e
    # stack's planner (its model endpoint and /metrics were given the same port).
    from shelfproof.runtime.processes import free_port

    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_a_failed_start_still_stops_what_it_started():
    import asyncio

    from shelfproof.runtime.server import run_until_signalled

    stopped: list[str] = []

    async def start() -> None:
        stopped.append("started")
        raise OSError(98, "address already in use")

    async def stop() -> None:
        stopped.append("stopped")

    with pytest.raises(OSError, match="address already in use"):
        asyncio.run(run_until_signalled(start, stop))
    assert stopped == ["started", "stopped"]


def test_the_wire_byte_check_agrees_with_the_field_walk():
    # nul_in_text looks at the serialization first: a 0x00 byte that is not text (a double's bytes, an
    # empty nested message, a zero in a packed list) must still lead to the walk, and NUL text be found.
    import random

    from shelfproof.planner.v1 import planner_pb2
    from shelfproof.product.v1 import events_pb2, product_pb2
    from shelfproof.runtime.fields import _nul_in_fields, nul_in_text

    rng = random.Random(5)
    cases = [
        events_pb2.ListEventsRequest(filter=events_pb2.EventFilter()),  # empty nested message: "\x0a\x00"
        events_pb2.ListEventsRequest(filter=events_pb2.EventFilter(serial="S1\x00")),
        product_pb2.Product(name="x" * 70_000 + "\x00"),  # past the wire check's size: walked
        product_pb2.Product(name="x" * 70_000),
        planner_pb2.RestockRun(reason="clean", forecast_mase=1.0),  # 1.0 as a double: six 0x00 bytes
        planner_pb2.RestockRun(reason="n\x00", forecast_mase=1.0),
    ]
    for _ in range(300):
        text = lambda: "".join(rng.choice("ab\x00é") for _ in range(rng.randint(0, 4)))  # noqa: E731
        cases.append(product_pb2.Product(gtin=text(), name=text(), attributes={text(): text() for _ in range(rng.randint(0, 2))}))
    assert sum(nul_in_text(m) is not None for m in cases) > 100  # both kinds are among the cases
    for message in cases:
        assert nul_in_text(message) == _nul_in_fields(message, "")
