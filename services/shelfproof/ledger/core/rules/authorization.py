"""The authorization table: what each action needs, its scope, and who may grant it."""

from __future__ import annotations

from dataclasses import dataclass

from nacl.signing import SigningKey

from shelfproof.ledger.core.rules.common import TxContext, _denied, read
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

# --- the authorization table ------------------------------------------------------------------
#
# Every action: the permission it needs, the scope its handler enforces, and who may grant the
# permission. Permissions reach an agent only through roles of its own organisation; roles and
# agents are never granted beyond the granter's own permissions, so nothing here can be escalated
# by a member. The README's "Trust model" section reproduces this table.

CONSORTIUM = "the consortium organisation only"
ORGANISATION = "each organisation, within its own permissions"
# Permissions a role may carry only in the consortium organisation.
CONSORTIUM_PERMISSIONS = frozenset({"org::register", "scan::record"})

TRANSACTIONS = txpb.KEY_PURPOSE_TRANSACTIONS
APPROVALS = txpb.KEY_PURPOSE_APPROVALS


@dataclass(frozen=True)
class Authorization:
    permission: str
    scope: str
    granted_by: str
    # Purposes of the signing key this action accepts (label keys sign no transaction).
    key_purposes: frozenset[int] = frozenset({TRANSACTIONS})
    # The agent itself may act without the permission (its own key rotation and revocation).
    self_service: bool = False


AUTHORIZATION: dict[str, Authorization] = {
    "register_organization": Authorization(
        "org::register", "proposes admitting an organisation with its GS1 Company Prefixes (never overlapping a claimed one); "
        "applied once a majority of active member organisations approved (the consortium's proposal is the first vote)", CONSORTIUM),
    "remove_organization": Authorization(
        "org::register", "proposes removing an active member (not the consortium); applied at the same quorum; "
        "a removed organisation's agents sign nothing more", CONSORTIUM),
    "approve_membership": Authorization(
        "membership::approve", "one vote per active member organisation per proposal; none on its own removal", ORGANISATION),
    "define_role": Authorization(
        "role::define", "own organisation; new and replaced permissions within the signer's; an existing role only with "
        "replace (its version goes up); consortium permissions only in the consortium", ORGANISATION),
    "grant_role": Authorization(
        "role::grant", "agents of own organisation, never the signer itself nor another agent of the signer's person; "
        "the role's permissions within the signer's", ORGANISATION),
    "revoke_role": Authorization(
        "role::grant", "agents of own organisation; the role's permissions within the signer's", ORGANISATION),
    "add_agent": Authorization(
        "agent::add", "own organisation, agent id under its GLN; roles within the signer's permissions; the key proves "
        "possession; a person is bound by person_id", ORGANISATION),
    "add_key": Authorization(
        "key::manage", "own organisation, target's permissions within the signer's, no approvals key for another agent; "
        "or without the permission the agent's own rotation (same purpose as the signing key); always proof of "
        "possession; a public key once registered (revoked included) is never added again", ORGANISATION,
        frozenset({TRANSACTIONS, APPROVALS}), self_service=True),
    "revoke_key": Authorization(
        "key::manage", "own organisation, target's permissions within the signer's; or the agent's own key; records "
        "height and reason (COMPROMISED or ROTATED)", ORGANISATION, frozenset({TRANSACTIONS, APPROVALS}), self_service=True),
    "register_location": Authorization(
        "location::register", "own organisation; the GLN carries one of its company prefixes", ORGANISATION),
    "register_product": Authorization(
        "product::register", "the GTIN (after its indicator digit) carries one of the signer organisation's prefixes", ORGANISATION),
    "update_product": Authorization("product::update", "products of the signer organisation", ORGANISATION),
    "commission_batch": Authorization("batch::commission", "products of the signer organisation", ORGANISATION),
    "record_event": Authorization(
        "event::record", "the signer organisation's own items anywhere; other items only at one of its own GLNs "
        "(bizLocation or readPoint) and only while in its custody (last seen at one of its GLNs) or in transit; naming a "
        "purchase order (bizTransactionList, type po), a shipping event only by its supplier, a receiving event only by "
        "its buyer at its ship-to GLN", ORGANISATION),
    "recall_lot": Authorization("recall::create", "products of the signer organisation", ORGANISATION),
    "void_labels": Authorization("label::void", "products of the signer organisation", ORGANISATION),
    "change_price": Authorization("price::change", "GLNs of the signer organisation (its company prefixes)", ORGANISATION),
    "create_promotion": Authorization("promotion::create", "GLNs of the signer organisation", ORGANISATION),
    "set_guardrail_policy": Authorization("policy::set", "own organisation", ORGANISATION),
    "set_replenishment_policy": Authorization("policy::set", "own organisation at its own GLNs", ORGANISATION),
    "submit_ai_draft": Authorization("draft::submit", "own organisation at its own GLNs", ORGANISATION),
    "approve_draft": Authorization(
        "order::approve-ai-draft", "drafts of own organisation; only PERSON agents signing with an approvals key; the "
        "quorum counts distinct persons, never the submitting agent or its person; limits re-checked", ORGANISATION,
        frozenset({APPROVALS})),
    "reject_draft": Authorization(
        "order::approve-ai-draft", "drafts of own organisation", ORGANISATION, frozenset({TRANSACTIONS, APPROVALS})),
    "schedule_price_change": Authorization(
        "price::change", "GLNs of the signer organisation; due after the block time, within a year; guardrails checked "
        "when scheduled and again when due", ORGANISATION),
    "record_promotion_redemptions": Authorization(
        "promotion::redeem", "promotions at the signer organisation's GLNs; ends one whose budget is reached", ORGANISATION),
    "end_promotion": Authorization("promotion::create", "promotions at the signer organisation's GLNs", ORGANISATION),
    "record_scans": Authorization(
        "scan::record", "the consortium's verifier; commissioned products only; scan time at most "
        "MAX_SCAN_SKEW_S after block time", CONSORTIUM),
    # clones
    "declare_markets": Authorization(
        "market::declare", "products of the signer organisation (the brand owning the GTIN)", ORGANISATION),
    "clear_compromise": Authorization(
        "clone::clear", "codes of products of the signer organisation, with a reason; only a code the ledger holds "
        "compromised", ORGANISATION),
    "acknowledge_purchase_order": Authorization(
        "order::acknowledge", "orders whose supplier is the signer's organisation; only PERSON agents signing with an "
        "approvals key; once, while issued; quantities only cut, dates not before the order", ORGANISATION,
        frozenset({APPROVALS})),
    "close_purchase_order": Authorization(
        "order::close", "orders whose buyer is the signer's organisation, while open; open lines close short",
        ORGANISATION, frozenset({TRANSACTIONS, APPROVALS})),
}
# Permission each action needs (genesis builds its roles from these).
PERMISSIONS: dict[str, str] = {action: rule.permission for action, rule in AUTHORIZATION.items()}
KNOWN_PERMISSIONS = frozenset(PERMISSIONS.values())
MAX_PERMISSIONS_PER_ROLE = 64
MAX_ROLES_PER_AGENT = 32
MAX_KEYS_PER_AGENT = 32
# A scan may be stamped at most this far after the block's time (clocks differ a little).
MAX_SCAN_SKEW_S = 300
KEY_POSSESSION_STATEMENT = "shelfproof key possession v1"

def authorize(state: Overlay, ctx: TxContext, action: str) -> None:
    """What every transaction must pass before its handler runs: an active organisation, a key whose
    purpose fits the action, and the action's permission (the handler then enforces the scope)."""
    rule = AUTHORIZATION[action]
    org = read(state, "orgs", ctx.signer.organization_gln, st.OrganizationRecord)
    if org is None or org.status != st.ORGANIZATION_STATUS_ACTIVE:
        raise _denied(f"organisation {ctx.signer.organization_gln} is not an active member")
    key = ctx.key
    purpose = key.purpose if key is not None else txpb.KEY_PURPOSE_UNSPECIFIED
    if purpose not in rule.key_purposes:
        names = txpb.KeyPurpose.DESCRIPTOR.values_by_number
        raise _denied(
            f"a {names[purpose].name if purpose in names else purpose} key cannot sign {action} "
            f"(needs {', '.join(sorted(names[p].name for p in rule.key_purposes))})"
        )
    if rule.permission not in ctx.permissions and not rule.self_service:
        raise _denied(f"{ctx.signer.agent_id} lacks permission {rule.permission}")


def key_possession_bytes(chain_id: str, agent_id: str, key_id: str, purpose: int) -> bytes:
    """What a new key signs to prove its holder has it (all scalars: a canonical encoding)."""
    return txpb.KeyPossession(
        statement=KEY_POSSESSION_STATEMENT, chain_id=chain_id, agent_id=agent_id, key_id=key_id, purpose=purpose
    ).SerializeToString(deterministic=True)


def prove_possession(signing_key: SigningKey, chain_id: str, agent_id: str, key_id: str, purpose: int) -> bytes:
    return signing_key.sign(key_possession_bytes(chain_id, agent_id, key_id, purpose)).signature
