"""Finding 10: a canonical envelope. The signature covers exactly the bytes that are hashed and
executed: any other encoding of a signed transaction, and any field the ledger does not know, is
MALFORMED in CheckTx and FinalizeBlock, so a relayer cannot give a transaction a second hash."""

from __future__ import annotations

import pytest

from shelfproof.ledger.core import tx
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.proofs.merkle import uvarint
from shelfproof.ledger.core.tx import sign_doc_bytes
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import transaction_pb2 as txpb

from tests.security.ledger_nodes import (
    BRAND, CHAIN, GTIN, RETAILER, STORE_GLN, block, body, check, draft, genesis, node, policy, product, relayer_copies,
    replenishment, signers,
)


def test_relayer_reencodings_are_malformed_in_checktx_and_finalize_block_and_the_original_commits():
    g = genesis()
    checked, unchecked = node(g), node(g)
    original = signers(g)[f"{BRAND}/admin-0"].sign(product())
    copies = relayer_copies(original)
    for name, copy in copies.items():
        assert copy != original
        if name != "unknown field":
            assert txpb.SignedTransaction.FromString(copy) == txpb.SignedTransaction.FromString(original), name
        assert check(checked, copy) == ResultCode.MALFORMED, name
    assert check(checked, original) == 0
    txs = [*copies.values(), original]
    expected = [ResultCode.MALFORMED] * len(copies) + [0]
    assert block(checked, txs) == block(unchecked, txs) == expected
    assert checked.app_hash == unchecked.app_hash
    assert checked.state.latest.get("products", GTIN.encode()) is not None


def _sign_body_bytes(signer: AccountSigner, body_bytes: bytes) -> bytes:
    nonce, signer.next_nonce = signer.next_nonce, signer.next_nonce + 1
    doc = sign_doc_bytes(CHAIN, signer.agent_id, signer.key_id, nonce, body_bytes)
    return txpb.SignedTransaction(
        body=body_bytes, signer=signer.agent_id, key_id=signer.key_id, nonce=nonce,
        signature=signer.signing_key.sign(doc).signature,
    ).SerializeToString()


def test_a_signer_cannot_smuggle_unknown_fields_or_a_second_body_encoding():
    """Unknown fields would be stored verbatim in records; a body with two encodings has two hashes."""
    g = genesis()
    app = node(g)
    brand = signers(g)[f"{BRAND}/admin-0"]
    canonical = product().SerializeToString(deterministic=True)
    product_bytes = txpb.RegisterProduct(gtin=GTIN, name="Olive oil 500 ml", brand="Demo").SerializeToString()
    nested_unknown = txpb.TransactionBody.FromString(
        txpb.TransactionBody(created_unix_ms=1).SerializeToString()
        + b"\xa2\x01" + uvarint(len(product_bytes) + 3) + product_bytes + b"\xf8\x06\x01"  # field 111 in the action
    )
    hostile = {
        "unknown field in the body": canonical + b"\xf8\x3e\x01",
        "unknown field in a nested message": nested_unknown.SerializeToString(),
        "duplicated body field": canonical + txpb.TransactionBody(created_unix_ms=1).SerializeToString(),
        "default value encoded": b"\x08\x00" + canonical[2:],  # created_unix_ms = 0 written out
    }
    for name, body_bytes in hostile.items():
        raw = _sign_body_bytes(brand, body_bytes)
        assert check(app, raw) == ResultCode.MALFORMED, name
        assert block(app, [raw]) == [ResultCode.MALFORMED], name
    # Through the client too: a body carrying unknown fields is signed as is, and refused.
    brand.next_nonce = 1
    assert check(app, brand.sign(nested_unknown)) == ResultCode.MALFORMED


CLIENT_BODIES = [
    product(),
    policy(),
    replenishment(),
    draft("d1"),
    body(change_price=txpb.ChangePrice(gtin=GTIN, location_gln=STORE_GLN, price=txpb.Money(currency_code="EUR", amount_minor=999), unit_cost=txpb.Money(currency_code="EUR", amount_minor=500))),
    body(update_product=txpb.UpdateProduct(product=txpb.RegisterProduct(gtin=GTIN, name="n", attributes=[txpb.Attribute(key="a", value="b"), txpb.Attribute(key="c", value="d")]), update_paths=["name", "attributes"])),
    body(record_scans=txpb.RecordScans(scans=[txpb.Scan(gtin=GTIN, serial=f"S{n}", cell="u33d", scan_unix_s=1_780_000_000 + n) for n in range(50)])),
    body(define_role=txpb.DefineRole(organization_gln=RETAILER, role="clerk", permissions=["event::record", "scan::record"])),
    body(approve_draft=txpb.ApproveDraft()),  # an empty action message is still present
    txpb.TransactionBody(approve_draft=txpb.ApproveDraft(draft_id="d1")),  # created_unix_ms filled in by sign
]


@pytest.mark.parametrize("action", CLIENT_BODIES, ids=lambda b: b.WhichOneof("action"))
def test_account_signer_produces_the_canonical_encoding(action):
    signer = AccountSigner.generate(CHAIN, f"{BRAND}/admin-0")
    raw = signer.sign(action)
    parsed = tx.parse(raw)
    assert parsed.signed.SerializeToString(deterministic=True) == raw
    assert parsed.body.SerializeToString(deterministic=True) == parsed.signed.body
    assert parsed.body == action


def test_parse_is_the_envelope_check():
    with pytest.raises(TxRejected) as refused:
        tx.parse(relayer_copies(AccountSigner.generate(CHAIN, "a/b").sign(product()))["reordered fields"])
    assert refused.value.code == ResultCode.MALFORMED
