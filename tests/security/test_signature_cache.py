"""Finding 2: no node-local consensus input. The signature cache is keyed on what it proves, so a
verification done in CheckTx against mempool state cannot change what a block computes."""

from __future__ import annotations

from nacl.signing import SigningKey

from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.core.rules import prove_possession
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import transaction_pb2 as txpb

from tests.security.ledger_nodes import BRAND, CHAIN, OTHER_GTIN, block, body, check, genesis, node, product, signers


def _add_key(owner: AccountSigner, key_id: str, new: SigningKey, nonce: int) -> bytes:
    """The owner's own rotation: a transactions key, with the new key's proof of possession."""
    purpose = txpb.KEY_PURPOSE_TRANSACTIONS
    proof = prove_possession(new, CHAIN, owner.agent_id, key_id, purpose)
    return owner.sign(body(add_key=txpb.AddKey(
        agent_id=owner.agent_id, key_id=key_id, public_key=bytes(new.verify_key), purpose=purpose, possession_signature=proof,
    )), nonce=nonce)


def test_checktx_against_mempool_state_cannot_split_nodes_by_cached_signature():
    """The attack: the mempool holds "add key k2 = P1"; a transaction signed with k2 (P1) passes CheckTx
    there. The agent then gets "add key k2 = P2" (same nonce) into the block instead, followed by that
    transaction. A node that saw CheckTx must not reuse its verdict: k2 is P2 in the block's state."""
    g = genesis()
    seen_checktx, fresh = node(g), node(g)
    owner = signers(g)[f"{BRAND}/admin-0"]
    p1, p2 = SigningKey.generate(), SigningKey.generate()
    nonce = owner.next_nonce
    add_p1 = _add_key(owner, "k2", p1, nonce)
    add_p2 = _add_key(owner, "k2", p2, nonce)
    with_k2 = AccountSigner(CHAIN, owner.agent_id, p1, key_id="k2", next_nonce=nonce + 1).sign(product())

    assert check(seen_checktx, add_p1) == 0
    assert check(seen_checktx, with_k2) == 0  # verified against P1, in uncommitted state

    txs = [add_p2, with_k2]
    assert block(seen_checktx, txs) == block(fresh, txs) == [0, ResultCode.BAD_SIGNATURE]
    assert seen_checktx.app_hash == fresh.app_hash


def test_checktx_before_a_revocation_does_not_let_the_revoked_key_through():
    g = genesis()
    seen_checktx, fresh = node(g), node(g)
    owner = signers(g)[f"{BRAND}/admin-0"]
    manager = signers(g)[f"{BRAND}/admin-1"]
    signed = owner.sign(product())
    assert check(seen_checktx, signed) == 0
    revoke = manager.sign(body(revoke_key=txpb.RevokeKey(agent_id=owner.agent_id, key_id=owner.key_id)))
    txs = [revoke, signed]
    assert block(seen_checktx, txs) == block(fresh, txs) == [0, ResultCode.KEY_REVOKED]
    assert seen_checktx.app_hash == fresh.app_hash


def test_a_cached_verdict_is_only_reused_for_the_same_key_document_and_signature():
    g = genesis()
    app = node(g)
    owner = signers(g)[f"{BRAND}/admin-0"]
    signed = txpb.SignedTransaction.FromString(owner.sign(product(OTHER_GTIN)))
    other_key = bytes(SigningKey.generate().verify_key)
    assert app._signature_valid(owner.public_key, signed)
    assert app._signature_valid(owner.public_key, signed)  # a hit gives the same answer
    assert not app._signature_valid(other_key, signed)
    signed.nonce += 1
    assert not app._signature_valid(owner.public_key, signed)
