"""One test per row of the authorization table (``rules.AUTHORIZATION``): what the row allows goes
through, and each way round its scope gets its exact code and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from shelfproof.ledger.core import rules
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from tests.security.world import (
    BRAND, CHAIN, DC, DISTRIBUTOR, GTIN, OPERATOR, PLANT, RETAILER, STORE, STORE2, STORE2_SHOP, SUPPLIER, T0, World, body,
)

DENIED = ResultCode.PERMISSION_DENIED
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def world() -> World:
    return World().with_goods()


def _org(gln: str, name: str = "New Member", prefixes=("7612345",)) -> txpb.TransactionBody:
    return body(register_organization=txpb.RegisterOrganization(gln=gln, name=name, company_prefixes=list(prefixes)))


NEW_MEMBER = "7612345000008"


def test_table_covers_every_action_and_the_readme_shows_it():
    assert set(rules.AUTHORIZATION) == set(rules.HANDLERS) == {f.name for f in txpb.TransactionBody.DESCRIPTOR.oneofs_by_name["action"].fields}
    readme = README.read_text()
    for action, rule in rules.AUTHORIZATION.items():
        assert f"| `{action}` | `{rule.permission}` |" in readme, f"README's trust model lacks the row of {action}"


def test_row_register_organization_needs_the_consortium_and_a_quorum_of_members(world):
    operator = world.agent(OPERATOR, "admin-0")
    world.refused(world.agent(BRAND, "admin-0"), _org(NEW_MEMBER), DENIED)
    world.refused(world.agent(OPERATOR, "verifier-0"), _org(NEW_MEMBER), DENIED)
    world.ok(operator, _org(NEW_MEMBER))
    proposal = world.read("consortium", f"proposal/{NEW_MEMBER}", st.MembershipProposal)
    assert (list(proposal.approvals), proposal.approvals_required) == ([OPERATOR], 4)  # 6 members: a majority is 4
    assert world.read("orgs", NEW_MEMBER, st.OrganizationRecord) is None
    world.refused(operator, _org(NEW_MEMBER), ResultCode.ALREADY_EXISTS)
    for org in (BRAND, DISTRIBUTOR):
        world.ok(world.agent(org, "admin-0"), body(approve_membership=txpb.ApproveMembership(gln=NEW_MEMBER)))
    assert world.read("orgs", NEW_MEMBER, st.OrganizationRecord) is None
    world.ok(world.agent(RETAILER, "admin-0"), body(approve_membership=txpb.ApproveMembership(gln=NEW_MEMBER)))
    member = world.read("orgs", NEW_MEMBER, st.OrganizationRecord)
    assert member.status == st.ORGANIZATION_STATUS_ACTIVE and list(member.company_prefixes) == ["7612345"]
    assert world.read("consortium", "members", st.ConsortiumRecord).active_members == 7


def test_row_remove_organization_by_quorum_silences_the_members_agents(world):
    operator = world.agent(OPERATOR, "admin-0")
    removal = body(remove_organization=txpb.RemoveOrganization(gln=SUPPLIER))
    world.refused(world.agent(BRAND, "admin-0"), removal, DENIED)
    world.refused(operator, body(remove_organization=txpb.RemoveOrganization(gln=OPERATOR)), DENIED)
    world.ok(operator, removal)
    for org in (BRAND, DISTRIBUTOR, RETAILER):
        world.ok(world.agent(org, "admin-0"), body(approve_membership=txpb.ApproveMembership(gln=SUPPLIER)))
    assert world.read("orgs", SUPPLIER, st.OrganizationRecord).status == st.ORGANIZATION_STATUS_REMOVED
    world.refused(world.agent(SUPPLIER, "admin-0"), world.policy(SUPPLIER), DENIED)


def test_row_approve_membership_one_vote_per_member_none_on_its_own_removal(world):
    brand = world.agent(BRAND, "admin-0")
    vote = body(approve_membership=txpb.ApproveMembership(gln=NEW_MEMBER))
    world.refused(brand, vote, ResultCode.NOT_FOUND)
    world.ok(world.agent(OPERATOR, "admin-0"), _org(NEW_MEMBER), body(remove_organization=txpb.RemoveOrganization(gln=SUPPLIER)))
    world.ok(brand, vote)
    world.refused(world.agent(BRAND, "admin-1"), vote, ResultCode.ALREADY_EXISTS)  # the organisation votes once
    world.refused(world.agent(BRAND, "person-0"), vote, DENIED)  # an approvals key signs no membership vote
    world.refused(world.agent(SUPPLIER, "admin-0"), body(approve_membership=txpb.ApproveMembership(gln=SUPPLIER)), DENIED)


def test_row_define_role_within_the_signers_permissions_and_never_overwritten_silently(world):
    brand = world.agent(BRAND, "admin-0")
    clerk = txpb.DefineRole(organization_gln=BRAND, role="clerk", permissions=["event::record"])
    world.ok(brand, body(define_role=clerk))
    world.refused(brand, body(define_role=clerk), ResultCode.ALREADY_EXISTS)
    wider = txpb.DefineRole(organization_gln=BRAND, role="clerk", permissions=["event::record", "label::void"], replace=True)
    world.ok(brand, body(define_role=wider))
    assert world.read("roles", f"{BRAND}/clerk", st.RoleRecord).version == 2
    world.refused(brand, body(define_role=txpb.DefineRole(organization_gln=RETAILER, role="clerk", permissions=["event::record"])), DENIED)
    world.refused(brand, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="scanner", permissions=["scan::record"])), DENIED)
    world.refused(brand, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="x", permissions=["all::things"])), ResultCode.INVALID_ARGUMENT)
    # A role definer without recall::create can neither create nor strip a role that carries it.
    definer = txpb.DefineRole(organization_gln=BRAND, role="definer", permissions=["role::define", "event::record"])
    agent_body, limited = world.new_agent(BRAND, "definer-0", ["definer"])
    world.ok(brand, body(define_role=definer), agent_body)
    world.refused(limited, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="recaller", permissions=["recall::create"])), DENIED)
    world.refused(limited, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="admin", permissions=["event::record"], replace=True)), DENIED)


def test_row_grant_role_no_self_grant_and_not_beyond_the_granter(world):
    brand, other = world.agent(BRAND, "admin-0"), world.agent(BRAND, "admin-1")
    world.ok(brand, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="clerk", permissions=["event::record"])))
    world.ok(brand, body(grant_role=txpb.GrantRole(agent_id=other.agent_id, role="clerk")))
    world.refused(brand, body(grant_role=txpb.GrantRole(agent_id=brand.agent_id, role="clerk")), DENIED)
    world.refused(brand, body(grant_role=txpb.GrantRole(agent_id=f"{RETAILER}/admin-1", role="admin")), DENIED)
    world.ok(brand, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="granter", permissions=["role::grant"])))
    agent_body, granter = world.new_agent(BRAND, "granter-0", ["granter"])
    world.ok(brand, agent_body)
    world.refused(granter, body(grant_role=txpb.GrantRole(agent_id=f"{BRAND}/admin-2", role="clerk")), DENIED)


def test_row_revoke_role_own_organisation_and_within_the_revoker(world):
    brand = world.agent(BRAND, "admin-0")
    world.refused(brand, body(revoke_role=txpb.RevokeRole(agent_id=f"{RETAILER}/admin-1", role="admin")), DENIED)
    world.ok(brand, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="granter", permissions=["role::grant"])))
    agent_body, granter = world.new_agent(BRAND, "granter-0", ["granter"])
    world.ok(brand, agent_body)
    world.refused(granter, body(revoke_role=txpb.RevokeRole(agent_id=f"{BRAND}/admin-1", role="admin")), DENIED)
    world.ok(brand, body(revoke_role=txpb.RevokeRole(agent_id=f"{BRAND}/admin-1", role="admin")))
    assert list(world.read("agents", f"{BRAND}/admin-1", st.AgentRecord).roles) == []


def test_row_add_agent_within_the_signers_permissions_with_proof_of_possession(world):
    brand = world.agent(BRAND, "admin-0")
    agent_body, new = world.new_agent(BRAND, "line-scanner", ["approver"])
    world.ok(brand, agent_body)
    assert world.read("agents", new.agent_id, st.AgentRecord).kind == txpb.AGENT_KIND_SERVICE
    outsider, _ = world.new_agent(RETAILER, "planted", ["admin"])
    world.refused(brand, outsider, DENIED)
    outside_namespace = world.new_agent(BRAND, "x", [])[0]
    outside_namespace.add_agent.agent_id = f"{RETAILER}/x"
    world.refused(brand, outside_namespace, ResultCode.INVALID_ARGUMENT)
    world.refused(brand, world.new_agent(BRAND, "unproven", [], prove=False)[0], ResultCode.BAD_SIGNATURE)
    world.refused(brand, world.new_agent(BRAND, "svc", [], purpose=txpb.KEY_PURPOSE_APPROVALS)[0], ResultCode.INVALID_ARGUMENT)
    world.ok(brand, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="hr", permissions=["agent::add"])))
    hr_body, hr = world.new_agent(BRAND, "hr-0", ["hr"])
    world.ok(brand, hr_body)
    world.refused(hr, world.new_agent(BRAND, "superuser", ["admin"])[0], DENIED)


def test_row_add_key_by_a_stronger_key_manager_or_the_agents_own_rotation(world):
    brand = world.agent(BRAND, "admin-0")
    world.ok(brand, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="clerk", permissions=["event::record"])))
    clerk_body, clerk = world.new_agent(BRAND, "clerk-0", ["clerk"])
    world.ok(brand, clerk_body)
    # The clerk rotates its own key without key::manage; the admin adds one to the weaker clerk.
    world.ok(clerk, world.add_key(clerk.agent_id, AccountSigner.generate(CHAIN, clerk.agent_id)))
    world.ok(brand, world.add_key(clerk.agent_id, AccountSigner.generate(CHAIN, clerk.agent_id)))
    world.refused(clerk, world.add_key(brand.agent_id, AccountSigner.generate(CHAIN, brand.agent_id)), DENIED)
    world.refused(clerk, world.add_key(clerk.agent_id, AccountSigner.generate(CHAIN, clerk.agent_id), txpb.KEY_PURPOSE_LABELS), DENIED)
    world.refused(brand, world.add_key(f"{BRAND}/person-0", AccountSigner.generate(CHAIN, f"{BRAND}/person-0")), DENIED)
    world.refused(brand, world.add_key(f"{RETAILER}/admin-0", AccountSigner.generate(CHAIN, f"{RETAILER}/admin-0")), DENIED)
    # A person rotates its own approvals key with that key.
    person = world.agent(BRAND, "person-0")
    world.ok(person, world.add_key(person.agent_id, AccountSigner.generate(CHAIN, person.agent_id), txpb.KEY_PURPOSE_APPROVALS))


def test_row_revoke_key_records_height_and_reason_and_stays_in_scope(world):
    brand = world.agent(BRAND, "admin-0")
    world.ok(brand, body(define_role=txpb.DefineRole(organization_gln=BRAND, role="keys", permissions=["key::manage"])))
    manager_body, manager = world.new_agent(BRAND, "keys-0", ["keys"])
    world.ok(brand, manager_body)
    world.refused(manager, body(revoke_key=txpb.RevokeKey(agent_id=brand.agent_id, key_id=brand.key_id)), DENIED)
    world.refused(brand, body(revoke_key=txpb.RevokeKey(agent_id=f"{RETAILER}/admin-0", key_id=world.agent(RETAILER, "admin-0").key_id)), DENIED)
    target = world.agent(BRAND, "admin-3")
    world.ok(brand, body(revoke_key=txpb.RevokeKey(agent_id=target.agent_id, key_id=target.key_id)))
    key = world.read("agents", target.agent_id, st.AgentRecord).keys[0]
    assert (key.revoked, key.revoked_height, key.revocation_reason) == (True, world.app.height, txpb.REVOCATION_REASON_COMPROMISED)


def test_row_register_location_only_glns_of_the_signers_prefix(world):
    distributor = world.agent(DISTRIBUTOR, "admin-0")
    world.ok(distributor, body(register_location=txpb.RegisterLocation(gln=DC, organization_gln=DISTRIBUTOR, name="DC")))
    world.refused(distributor, body(register_location=txpb.RegisterLocation(gln=STORE2_SHOP, organization_gln=DISTRIBUTOR, name="x")), DENIED)
    world.refused(distributor, body(register_location=txpb.RegisterLocation(gln=DC, organization_gln=RETAILER, name="x")), DENIED)


def test_row_register_product_only_gtins_of_the_signers_prefix(world):
    world.ok(world.agent(BRAND, "admin-0"), world.product("00614141123469"))
    world.refused(world.agent(SUPPLIER, "admin-0"), world.product("00614141123476"), DENIED)


def test_row_update_product_only_by_its_brand(world):
    update = body(update_product=txpb.UpdateProduct(product=txpb.RegisterProduct(gtin=GTIN, name="Renamed"), update_paths=["name"]))
    world.refused(world.agent(RETAILER, "admin-0"), update, DENIED)
    world.ok(world.agent(BRAND, "admin-0"), update)


def test_row_commission_batch_only_by_its_brand(world):
    world.refused(world.agent(DISTRIBUTOR, "admin-0"), world.commission("B9", "L9"), DENIED)
    world.ok(world.agent(BRAND, "admin-0"), world.commission("B9", "L9"))
    assert world.read("products", GTIN, st.ProductRecord).batches_commissioned == 2


def test_row_record_event_own_items_anywhere_others_only_in_custody_at_own_sites(world):
    brand, distributor, retailer = (world.agent(o, "admin-0") for o in (BRAND, DISTRIBUTOR, RETAILER))
    world.ok(brand, world.event("shipping", "in_transit", ["S1", "S2"], read_point=PLANT))
    # The distributor receives the items in transit at its own DC, then ships them on.
    world.ok(distributor, world.event("receiving", "in_progress", ["S1", "S2"], location=DC, read_point=DC))
    world.ok(distributor, world.event("shipping", "in_transit", ["S1"], read_point=DC))
    # S2 is in the distributor's custody, not the retailer's; S3 never left the brand.
    world.refused(retailer, world.event("receiving", "in_progress", ["S2"], location=STORE), DENIED)
    world.refused(distributor, world.event("receiving", "in_progress", ["S3"], location=DC), DENIED)
    world.refused(distributor, world.event("receiving", "in_progress", ["S2"], location=PLANT), DENIED)
    world.refused(distributor, world.event("inspecting", "", [], location=STORE), DENIED)
    world.ok(retailer, world.event("receiving", "in_progress", ["S1"], location=STORE))
    world.ok(retailer, world.event("retail_selling", "retail_sold", ["S1"], location=STORE))
    assert world.read("items", f"{GTIN}/S1", st.ItemRecord).disposition == "retail_sold"


def test_row_recall_lot_only_by_its_brand(world):
    recall = body(recall_lot=txpb.RecallLot(gtin=GTIN, lot="L1", reason="glass"))
    world.refused(world.agent(RETAILER, "admin-0"), recall, DENIED)
    world.ok(world.agent(BRAND, "admin-0"), recall)


def test_row_void_labels_only_by_its_brand(world):
    void = body(void_labels=txpb.VoidLabels(gtin=GTIN, serials=["S1"], reason="misprint"))
    world.refused(world.agent(DISTRIBUTOR, "admin-0"), void, DENIED)
    world.ok(world.agent(BRAND, "admin-0"), void)


def test_row_change_price_only_at_the_signers_glns(world):
    world.ok(world.agent(STORE2, "admin-0"), world.price(STORE2_SHOP))
    world.refused(world.agent(STORE2, "admin-0"), world.price(STORE, 700), DENIED)
    world.refused(world.agent(BRAND, "admin-0"), world.price(STORE, 700), DENIED)


def test_row_create_promotion_only_at_the_signers_glns(world):
    promotion = txpb.CreatePromotion(promotion_id="p1", location_gln=STORE, gtins=[GTIN], discount_bps=500, start_unix_s=T0, end_unix_s=T0 + 60)
    world.refused(world.agent(STORE2, "admin-0"), body(create_promotion=promotion), DENIED)
    world.ok(world.agent(RETAILER, "admin-0"), body(create_promotion=promotion))


def test_row_set_guardrail_policy_own_organisation(world):
    world.refused(world.agent(STORE2, "admin-0"), world.policy(RETAILER, max_discount_bps=9_000), DENIED)
    world.ok(world.agent(STORE2, "admin-0"), world.policy(STORE2))


def test_row_set_replenishment_policy_own_organisation_at_own_glns(world):
    store2 = world.agent(STORE2, "admin-0")
    world.refused(store2, world.bounds(STORE2, STORE), DENIED)
    world.refused(store2, world.bounds(RETAILER, STORE), DENIED)
    world.ok(store2, world.bounds(STORE2, STORE2_SHOP))


def test_row_submit_ai_draft_own_organisation_at_own_glns(world):
    world.refused(world.agent(STORE2, "admin-0"), world.order_draft("d1", 10), DENIED)
    world.refused(world.agent(RETAILER, "person-0"), world.order_draft("d1", 10), DENIED)  # approvals key
    world.ok(world.agent(RETAILER, "admin-1"), world.order_draft("d1", 10))


def test_row_approve_draft_people_of_the_drafts_organisation(world):
    world.ok(world.agent(RETAILER, "admin-1"), world.order_draft("d1", 600))
    world.refused(world.agent(STORE2, "person-0"), world.approve("d1"), DENIED)
    world.refused(world.agent(RETAILER, "admin-0"), world.approve("d1"), DENIED)
    world.ok(world.agent(RETAILER, "person-0"), world.approve("d1"))
    assert list(world.read("drafts", "d1", st.DraftRecord).approver_persons) == ["person-0"]


def test_row_reject_draft_own_organisation(world):
    world.ok(world.agent(RETAILER, "admin-1"), world.order_draft("d1", 600))
    reject = body(reject_draft=txpb.RejectDraft(draft_id="d1", reason="not now"))
    world.refused(world.agent(STORE2, "person-0"), reject, DENIED)
    world.ok(world.agent(RETAILER, "person-1"), reject)
    assert world.read("drafts", "d1", st.DraftRecord).status == st.DRAFT_STATUS_REJECTED


def test_row_record_scans_only_the_consortium_verifier_within_the_clock_skew(world):
    verifier = world.agent(OPERATOR, "verifier-0")
    world.refused(world.agent(BRAND, "admin-0"), world.scans(T0), DENIED)
    height = world.app.height + 1
    skew = rules.MAX_SCAN_SKEW_S
    world.refused(verifier, world.scans(T0 + height + skew + 1), ResultCode.INVALID_ARGUMENT, time_s=T0 + height)
    assert world.block([world.sync_nonce(verifier).sign(world.scans(T0 + height + 1 + skew))], T0 + height + 1) == [0]
    record = world.read("scans", f"{GTIN}/S1", st.ScanRecord)
    assert (record.scans, record.last_scan_unix_s) == (1, T0 + height + 1 + skew)


def test_genesis_cannot_start_from_a_state_its_rules_forbid():
    from google.protobuf import json_format
    from tendermint.abci import types_pb2 as abci

    from shelfproof.ledger.core.app import LedgerApplication
    from shelfproof.ledger.core.codes import TxRejected
    from shelfproof.ledger.genesis import build_genesis

    overlapping = build_genesis(CHAIN, [(BRAND, "brand", ["0614141"]), (RETAILER, "squatter", ["06141415"])])
    outside = build_genesis(CHAIN, [(OPERATOR, "consortium"), (BRAND, "brand", ["0614141"])], consortium_gln=OPERATOR)
    outside.state.roles.add(organization_gln=BRAND, role="scanner", permissions=["scan::record"])
    for genesis, code in ((overlapping, ResultCode.ALREADY_EXISTS), (outside, DENIED)):
        with pytest.raises(TxRejected) as refused:
            LedgerApplication(None).init_chain(abci.RequestInitChain(
                chain_id=CHAIN, app_state_bytes=json_format.MessageToJson(genesis.state).encode()))
        assert refused.value.code == code
