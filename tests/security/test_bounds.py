"""Every integer, string and list of a transaction is bounded at the boundary (finding 3), checked
on the bytes alone, so no rule meets an int64 overflow and every node refuses alike."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from shelfproof.ledger.core import bounds, tx
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import transaction_pb2 as txpb

from tests.security.ledger_nodes import BRAND, CHAIN, GTIN, RETAILER, block, body, check, draft, genesis, node, policy, signers

_64_BIT = {
    FieldDescriptor.TYPE_INT64: 2**63 - 1, FieldDescriptor.TYPE_SINT64: 2**63 - 1, FieldDescriptor.TYPE_SFIXED64: 2**63 - 1,
    FieldDescriptor.TYPE_UINT64: 2**64 - 1, FieldDescriptor.TYPE_FIXED64: 2**64 - 1,
}


def _integer_paths(descriptor, prefix=(), depth=0):
    """(path of fields, leaf field) for every integer field reachable from a message type."""
    for field in descriptor.fields:
        path = (*prefix, field)
        if field.type == FieldDescriptor.TYPE_MESSAGE and depth < 6:
            yield from _integer_paths(field.message_type, path, depth + 1)
        elif field.type in _64_BIT:
            yield path


INTEGER_PATHS = list(_integer_paths(txpb.TransactionBody.DESCRIPTOR))


@pytest.mark.parametrize("path", INTEGER_PATHS, ids=lambda p: ".".join(f.name for f in p))
def test_every_64_bit_integer_of_a_transaction_is_refused_at_its_maximum(path):
    root = message = txpb.TransactionBody()
    for field in path[:-1]:
        message = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
        message.SetInParent()
    setattr(message, path[-1].name, _64_BIT[path[-1].type])
    if root.WhichOneof("action") is None:
        root.approve_draft.draft_id = "d"
    raw = AccountSigner.generate(CHAIN, "a/b").sign(root, nonce=1)
    with pytest.raises(TxRejected) as refused:
        tx.parse(raw)
    assert refused.value.code == ResultCode.INVALID_ARGUMENT


def test_the_envelope_nonce_is_bounded_too():
    raw = AccountSigner.generate(CHAIN, "a/b").sign(draft("d"), nonce=2**63)
    with pytest.raises(TxRejected) as refused:
        tx.parse(raw)
    assert refused.value.code == ResultCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "hostile",
    [
        policy(draft_ttl_s=2**63 - 1),
        policy(draft_ttl_s=367 * 86_400),
        policy(max_discount_bps=10_001),
        policy(budget_period_s=-1),
        body(create_promotion=txpb.CreatePromotion(promotion_id="p", discount_bps=-5)),
        body(change_price=txpb.ChangePrice(gtin=GTIN, price=txpb.Money(currency_code="EUR", amount_minor=2**62))),
        draft("big", quantity=bounds.MAX_QUANTITY + 1),
        body(register_product=txpb.RegisterProduct(gtin=GTIN, name="x" * (bounds.MAX_STRING_CHARS + 1))),
        body(void_labels=txpb.VoidLabels(gtin=GTIN, serials=["1"] * (bounds.MAX_REPEATED + 1))),
        txpb.TransactionBody(created_unix_ms=-1, approve_draft=txpb.ApproveDraft(draft_id="d")),
    ],
    ids=["ttl-int64-max", "ttl-over-a-year", "discount-over-100pc", "negative-period", "negative-discount",
         "price-2^62", "quantity", "long-string", "long-list", "negative-created-time"],
)
def test_out_of_bounds_values_are_refused_in_checktx_and_finalize_block(hostile):
    g = genesis()
    checked, unchecked = node(g), node(g)
    signer = signers(g)[f"{RETAILER}/admin-0"]
    raw = signer.sign(hostile)
    assert check(checked, raw) == ResultCode.INVALID_ARGUMENT
    assert block(checked, [raw]) == block(unchecked, [raw]) == [ResultCode.INVALID_ARGUMENT]
    assert checked.app_hash == unchecked.app_hash


def test_nesting_deeper_than_the_limit_is_malformed(monkeypatch):
    monkeypatch.setattr(bounds, "MAX_DEPTH", 1)  # the schema is not recursive: lower the limit to reach it
    raw = signers(genesis())[f"{BRAND}/admin-0"].sign(draft("d"))  # body > submit_ai_draft > order_lines > unit_cost
    with pytest.raises(TxRejected) as refused:
        tx.parse(raw)
    assert refused.value.code == ResultCode.MALFORMED


def test_values_at_the_bounds_are_accepted():
    tx.parse(AccountSigner.generate(CHAIN, "a/b").sign(policy(draft_ttl_s=366 * 86_400, max_discount_bps=10_000, margin_floor_bps=100_000)))
    tx.parse(AccountSigner.generate(CHAIN, "a/b").sign(draft("d", quantity=bounds.MAX_QUANTITY)))
