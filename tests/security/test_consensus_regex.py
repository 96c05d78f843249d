"""Regular expressions in the consensus path are ASCII-only and matched in full: no trailing newline,
no digits of other scripts, no catastrophic backtracking."""

from __future__ import annotations

import importlib
import pkgutil
import re
import time

import pytest
from shelfproof.gs1.keys import CSET82_VALUE
from shelfproof.ledger.core import rules
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.core.rules import common
from shelfproof.ledger.v1 import transaction_pb2 as txpb

from tests.security.ledger_nodes import BRAND, GTIN, block, body, genesis, node, product, signers


def test_every_pattern_of_the_rules_is_ascii():
    # gs1.keys.CSET82_VALUE is imported: an explicit ASCII class, used with fullmatch (tested below).
    modules = [importlib.import_module(f"{rules.__name__}.{m.name}") for m in pkgutil.iter_modules(rules.__path__)]
    patterns = {id(v): v for m in modules for v in vars(m).values() if isinstance(v, re.Pattern) and v is not CSET82_VALUE}
    patterns = list(patterns.values())
    assert len(patterns) >= 6
    for pattern in patterns:
        assert pattern.flags & re.ASCII, pattern.pattern
        assert not pattern.pattern.startswith("^") and not pattern.pattern.endswith("$"), "use fullmatch"


def _batch(batch_id: str, lot: str = "L1", expiry: str = "") -> txpb.TransactionBody:
    return body(commission_batch=txpb.CommissionBatch(
        batch_id=batch_id, gtin=GTIN, lot=lot, expiry=expiry, count=1, serials_merkle_root=bytes(32), serials_content_hash=bytes(32),
    ))


def _event(event_hash: str) -> txpb.TransactionBody:
    return body(record_event=txpb.RecordEvent(
        event_hash=event_hash, event_type="ObjectEvent", epcs=[f"https://id.gs1.org/01/{GTIN}/21/S1"],
    ))


# Each hostile body beside its clean twin (the same body without the defect), which commits: the
# refusal is the pattern's, not some other rule's.
@pytest.mark.parametrize(
    ("hostile", "clean"),
    [
        (body(define_role=txpb.DefineRole(organization_gln=BRAND, role="clerk\n", permissions=["event::record"])),
         body(define_role=txpb.DefineRole(organization_gln=BRAND, role="clerk", permissions=["event::record"]))),
        (body(define_role=txpb.DefineRole(organization_gln=BRAND, role="clerk", permissions=["event::record\n"])),
         body(define_role=txpb.DefineRole(organization_gln=BRAND, role="clerk", permissions=["event::record"]))),
        (_batch("b1", expiry="２０２６-01-01"), _batch("b1", expiry="2026-01-01")),
        (_batch("b2", lot="L1\n"), _batch("b2")),
        (body(void_labels=txpb.VoidLabels(gtin=GTIN, serials=["S1\n"], reason="x")),
         body(void_labels=txpb.VoidLabels(gtin=GTIN, serials=["S1"], reason="x"))),
        (_event("ni:///sha-256;" + "a" * 64 + "?ver=CBV2.0\n"), _event("ni:///sha-256;" + "a" * 64 + "?ver=CBV2.0")),
    ],
    ids=["id-newline", "permission-newline", "fullwidth-date-digits", "lot-newline", "serial-newline", "event-hash-newline"],
)
def test_a_trailing_newline_or_non_ascii_digit_is_refused(hostile, clean):
    g = genesis()
    app = node(g)
    brand = signers(g)[f"{BRAND}/admin-0"]
    assert block(app, [brand.sign(product())]) == [0]
    assert block(app, [brand.sign(hostile)]) == [ResultCode.INVALID_ARGUMENT]
    assert block(app, [brand.sign(clean)]) == [0]


def test_identifier_pattern_is_linear_on_hostile_input():
    hostile = "a" * 100_000 + "!"
    started = time.process_time()
    for _ in range(100):
        assert common._ID.fullmatch(hostile) is None
    assert time.process_time() - started < 1.0
