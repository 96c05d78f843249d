"""Issue 11's findings 1, 4, 6, 7, 8 and 9, each replayed against the ledger in memory: the attack now
gets the exact code named here and leaves the state as it was."""

from __future__ import annotations

from datetime import date

import pytest

from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.genesis import ALL_PERMISSIONS
from shelfproof.ledger.core.tx import key_id_for
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.verify.verdict import Facts, Verdict, assess
from tests.security.world import (
    BRAND, CHAIN, DC, DISTRIBUTOR, GTIN, OPERATOR, PLANT, RETAILER, RETAILER_GTIN, STORE, STORE2, T0, World, body,
)

DENIED = ResultCode.PERMISSION_DENIED


@pytest.fixture
def world() -> World:
    return World().with_goods()


def test_finding_1_retailer_admin_cannot_redefine_its_admin_role_with_org_register(world):
    retailer = world.agent(RETAILER, "admin-0")
    everything = txpb.DefineRole(organization_gln=RETAILER, role="admin", permissions=ALL_PERMISSIONS, replace=True)
    world.refused(retailer, body(define_role=everything), DENIED)
    # Not even with only the organisation permissions it already holds plus one consortium one.
    world.refused(retailer, body(define_role=txpb.DefineRole(organization_gln=RETAILER, role="boss", permissions=["org::register"])), DENIED)
    # And what the escalation was for stays out of reach: the brand's labels, lots and keys.
    world.refused(retailer, body(void_labels=txpb.VoidLabels(gtin=GTIN, serials=["S1"], reason="x")), DENIED)
    world.refused(retailer, body(recall_lot=txpb.RecallLot(gtin=GTIN, lot="L1", reason="x")), DENIED)
    stolen = AccountSigner.generate(CHAIN, f"{BRAND}/admin-0")
    world.refused(retailer, world.add_key(f"{BRAND}/admin-0", stolen), DENIED)


def test_finding_6_gtins_and_glns_belong_to_the_owner_of_their_company_prefix(world):
    retailer, brand = world.agent(RETAILER, "admin-0"), world.agent(BRAND, "admin-0")
    squat = "00614141123469"  # the brand's prefix, not yet registered
    world.refused(retailer, world.product(squat), DENIED)
    world.refused(retailer, body(register_location=txpb.RegisterLocation(gln=PLANT, organization_gln=RETAILER, name="squat")), DENIED)
    world.refused(brand, world.product(RETAILER_GTIN), DENIED)
    world.ok(brand, world.product(squat))
    # The consortium cannot hand out a prefix that overlaps one already claimed, either way round.
    operator = world.agent(OPERATOR, "admin-0")
    for prefixes in (["06141412"], ["061414"]):
        proposal = txpb.RegisterOrganization(gln="0614141000012", name="squatter", company_prefixes=prefixes)
        world.refused(operator, body(register_organization=proposal), ResultCode.ALREADY_EXISTS)


def test_finding_7_events_scans_prices_and_promotions_are_scoped_to_the_signer(world):
    distributor, store2 = world.agent(DISTRIBUTOR, "admin-0"), world.agent(STORE2, "admin-0")
    # Another member cannot mark the brand's items stolen or sold: not at its own site without
    # custody, and not anywhere else.
    world.refused(distributor, world.event("https://ref.gs1.org/cbv/BizStep-inspecting", "stolen", ["S1"], location=DC), DENIED)
    world.refused(distributor, world.event("retail_selling", "retail_sold", ["S1"], location=STORE), DENIED)
    # Scans: only the consortium's verifier, never in the future, only for commissioned products.
    world.refused(world.agent(RETAILER, "admin-0"), world.scans(T0), DENIED)
    verifier = world.agent(OPERATOR, "verifier-0")
    height = world.app.height + 1
    world.refused(verifier, world.scans(T0 + height + 10_000), ResultCode.INVALID_ARGUMENT, time_s=T0 + height)
    world.ok(world.agent(BRAND, "admin-0"), world.product("00614141123469"))
    world.refused(verifier, world.scans(T0, gtin_="00614141123469"), ResultCode.FAILED_PRECONDITION)
    # Another retailer's prices and promotions.
    world.refused(store2, world.price(STORE, 1), DENIED)
    promotion = txpb.CreatePromotion(promotion_id="p1", location_gln=STORE, gtins=[GTIN], discount_bps=500, start_unix_s=T0, end_unix_s=T0 + 60)
    world.refused(store2, body(create_promotion=promotion), DENIED)


def _facts(world: World, key: st.KeyRecord, batch_id: str) -> Facts:
    return Facts(
        gtin=GTIN, serial="S1", signature_present=True, signature_valid=True, key=key,
        product=world.read("products", GTIN, st.ProductRecord), batch=world.read("batches", batch_id, st.BatchRecord),
        in_batch=True, recall=None, void=None, item=None, scans=None, scan_cell="", scan_unix_s=T0, today=date(2026, 12, 1),
    )


def test_finding_8_keys_need_permission_and_possession_never_come_back_and_rotation_keeps_old_labels(world):
    brand = world.agent(BRAND, "admin-0")
    clerk_body, clerk = world.new_agent(BRAND, "clerk", [])
    world.ok(brand, clerk_body)
    # add_key needs key::manage (or is the agent's own rotation) and proof of possession.
    intruder = AccountSigner.generate(CHAIN, brand.agent_id)
    world.refused(clerk, world.add_key(brand.agent_id, intruder), DENIED)
    unproven = world.add_key(brand.agent_id, intruder)
    unproven.add_key.possession_signature = bytes(64)
    world.refused(brand, unproven, ResultCode.BAD_SIGNATURE)
    world.refused(brand, world.add_key(brand.agent_id, intruder, chain="other-chain"), ResultCode.BAD_SIGNATURE)
    # Label keys sign no transaction.
    label = AccountSigner.generate(CHAIN, brand.agent_id)
    world.ok(brand, world.add_key(brand.agent_id, label, txpb.KEY_PURPOSE_LABELS))
    world.refused(label, world.product("00614141123469"), DENIED)
    # Rotation: old labels stay valid, labels of batches after the rotation do not.
    rotated = AccountSigner.generate(CHAIN, brand.agent_id)
    world.ok(brand, world.add_key(brand.agent_id, rotated))
    revoke = txpb.RevokeKey(agent_id=brand.agent_id, key_id=brand.key_id, reason=txpb.REVOCATION_REASON_ROTATED)
    world.ok(brand, body(revoke_key=revoke))
    revoked_at = world.app.height
    record = world.read("keys", key_id_for(brand.public_key), st.KeyRecord)
    assert (record.revoked, record.revoked_height, record.revocation_reason) == (True, revoked_at, txpb.REVOCATION_REASON_ROTATED)
    world.ok(rotated, world.commission("B2", "L2"))
    assert assess(_facts(world, record, "B1")).verdict == Verdict.GENUINE
    assert assess(_facts(world, record, "B2")).verdict == Verdict.COUNTERFEIT
    # The revoked public key cannot come back under a new key id (nor on another agent).
    again = AccountSigner(CHAIN, brand.agent_id, brand.signing_key, key_id="comeback")
    world.refused(rotated, world.add_key(brand.agent_id, again), ResultCode.ALREADY_EXISTS)
    # The revoked key itself signs nothing more.
    assert world.block([world.sync_nonce(brand).sign(world.product("00614141123476"))]) == [ResultCode.KEY_REVOKED]
    # A compromised key vouches for no label at all.
    world.ok(rotated, body(revoke_key=txpb.RevokeKey(agent_id=brand.agent_id, key_id=label.key_id, reason=txpb.REVOCATION_REASON_COMPROMISED)))
    compromised = world.read("keys", key_id_for(label.public_key), st.KeyRecord)
    assert compromised.revocation_reason == txpb.REVOCATION_REASON_COMPROMISED
    assert assess(_facts(world, compromised, "B1")).verdict == Verdict.COUNTERFEIT


def test_finding_9_approval_quorums_count_distinct_people_never_the_submitter(world):
    retailer, planner = world.agent(RETAILER, "admin-0"), world.agent(RETAILER, "admin-1")
    person_0, person_1 = world.agent(RETAILER, "person-0"), world.agent(RETAILER, "person-1")
    world.ok(planner, world.order_draft("big", 600))  # 60,000 >= threshold: two people
    # Another service agent of the same organisation: not a person, and its key is no approvals key.
    world.refused(retailer, world.approve("big"), DENIED)
    world.ok(person_0, world.approve("big"))
    # A second agent of the same person does not count twice.
    phone_body, phone = world.new_agent(RETAILER, "person-0-phone", ["approver"], kind=txpb.AGENT_KIND_PERSON,
                                        person_id="person-0", purpose=txpb.KEY_PURPOSE_APPROVALS)
    world.ok(retailer, phone_body)
    world.refused(phone, world.approve("big"), ResultCode.ALREADY_EXISTS)
    # A key added by the submitter's organisation to another person does not approve.
    planted = AccountSigner.generate(CHAIN, person_1.agent_id)
    world.refused(retailer, world.add_key(person_1.agent_id, planted, txpb.KEY_PURPOSE_APPROVALS), DENIED)
    world.refused(retailer, world.add_key(person_1.agent_id, planted), DENIED)
    world.ok(person_1, world.approve("big"))
    assert world.read("drafts", "big", st.DraftRecord).status == st.DRAFT_STATUS_APPROVED
    # A person who submits (from a transactions-key agent) cannot approve from their approvals agent.
    world.ok(retailer, body(define_role=txpb.DefineRole(organization_gln=RETAILER, role="buyer", permissions=["draft::submit"])))
    desk_body, desk = world.new_agent(RETAILER, "person-1-desk", ["buyer"], kind=txpb.AGENT_KIND_PERSON, person_id="person-1")
    world.ok(retailer, desk_body)
    world.ok(desk, world.order_draft("own", 600))
    world.refused(person_1, world.approve("own"), DENIED)
    # Promotion limits are checked again at approval: a tightened policy binds.
    world.ok(planner, world.promotion_draft("promo", 2_000))
    world.ok(retailer, world.policy(max_discount_bps=1_000))
    world.refused(person_0, world.approve("promo"), ResultCode.GUARDRAIL_VIOLATED)
    assert world.read("promotions", "promo-promo", st.PromotionRecord) is None


def test_finding_4_a_64kb_epc_costs_checktx_milliseconds_not_seconds(world):
    """The Digital Link pattern backtracked for 26 s of CPU on one 64 KB EPC, on the loop all four ABCI
    connections share. Now every consensus pattern is linear and inputs are bounded before matching."""
    import time

    brand = world.agent(BRAND, "admin-0")
    hostile = "https://a/" + "01/1/" * 12_500 + "\n?"  # 62.5 KB: the transaction still fits
    event = world.event("https://ref.gs1.org/cbv/BizStep-shipping", "in_transit", ["S1"])
    event.record_event.epcs[:] = [hostile]
    started = time.thread_time()  # CPU time: a loaded machine does not count
    world.refused(brand, event, ResultCode.INVALID_ARGUMENT)  # CheckTx and FinalizeBlock, state unchanged
    assert time.thread_time() - started < 0.5
