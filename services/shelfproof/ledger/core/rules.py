"""The state machine's domain rules: who may do what, and the guardrails every validator enforces.

Each handler reads and writes through an ``Overlay`` and raises ``TxRejected`` to refuse; it may use
only the transaction, the committed state and the block's height and time (never the wall clock,
randomness or floats), so every validator reaches the same result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, TypeVar

from google.protobuf.message import Message
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from shelfproof.gs1.epcis import item_of
from shelfproof.gs1.keys import CSET82_VALUE, InvalidGs1Key, normalize_gtin, validate_gln
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.core.tx import key_id_for
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

R = TypeVar("R", bound=Message)

BPS = 10_000
MAX_EPCS_PER_EVENT = 1_000
MAX_SCANS_PER_TX = 1_000
MAX_SERIALS_PER_VOID = 1_000
MAX_CUSTODY_STEPS = 16
# Consensus-path patterns: ASCII only and used with fullmatch ("$" would also accept a trailing
# newline, "\d" other scripts' digits); none backtracks (no nested or adjacent overlapping repeats).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", re.ASCII)
_EVENT_HASH = re.compile(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_COUNTRY_CODE = re.compile(r"[A-Z]{2}", re.ASCII)
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}", re.ASCII)

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
        "(bizLocation or readPoint) and only while in its custody (last seen at one of its GLNs) or in transit", ORGANISATION),
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
    "record_scans": Authorization(
        "scan::record", "the consortium's verifier; commissioned products only; scan time at most "
        "MAX_SCAN_SKEW_S after block time", CONSORTIUM),
}
# Permission each action needs (genesis builds its roles from these).
PERMISSIONS: dict[str, str] = {action: rule.permission for action, rule in AUTHORIZATION.items()}
KNOWN_PERMISSIONS = frozenset(PERMISSIONS.values())
MAX_PERMISSIONS_PER_ROLE = 64
MAX_ROLES_PER_AGENT = 32
MAX_KEYS_PER_AGENT = 32
MAX_PREFIXES_PER_ORG = 16
# A scan may be stamped at most this far after the block's time (clocks differ a little).
MAX_SCAN_SKEW_S = 300
KEY_POSSESSION_STATEMENT = "shelfproof key possession v1"


@dataclass(frozen=True)
class TxContext:
    height: int
    time_unix_s: int
    tx_hash: bytes
    signer: st.AgentRecord
    permissions: frozenset[str]
    # The key that signed (one of signer.keys) and the chain, for proofs of possession.
    key_id: str = ""
    chain_id: str = ""

    @property
    def key(self) -> st.AgentKey | None:
        return next((k for k in self.signer.keys if k.key_id == self.key_id), None)


def _denied(message: str) -> TxRejected:
    return TxRejected(ResultCode.PERMISSION_DENIED, message)


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


# --- state access ------------------------------------------------------------------------------


def encode(record: Message) -> bytes:
    return record.SerializeToString(deterministic=True)


def read(state: Overlay, store: str, key: str, record_type: type[R]) -> R | None:
    raw = state.get(store, key.encode())
    if raw is None:
        return None
    record = record_type()
    record.ParseFromString(raw)
    return record


def write(state: Overlay, store: str, key: str, record: Message) -> None:
    state.set(store, key.encode(), encode(record))


def permissions_of(state: Overlay, agent: st.AgentRecord) -> frozenset[str]:
    granted: set[str] = set()
    for role in agent.roles:
        record = read(state, "roles", f"{agent.organization_gln}/{role}", st.RoleRecord)
        if record is not None:
            granted.update(record.permissions)
    return frozenset(granted)


# --- validation helpers ------------------------------------------------------------------------


def _invalid(message: str) -> TxRejected:
    return TxRejected(ResultCode.INVALID_ARGUMENT, message)


def _gtin(value: str) -> str:
    try:
        gtin = normalize_gtin(value)
    except InvalidGs1Key as err:
        raise _invalid(str(err)) from None
    if gtin != value:
        raise _invalid(f"GTIN must be sent as GTIN-14 ({gtin}), got {value}")
    return gtin


def _gln(value: str) -> str:
    try:
        return validate_gln(value)
    except InvalidGs1Key as err:
        raise _invalid(str(err)) from None


def _identifier(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise _invalid(f"{what} must be 1-128 of [A-Za-z0-9._:/-], got {value!r}")
    return value


def _text(value: str, what: str, limit: int = 256, required: bool = True) -> str:
    if required and not value.strip():
        raise _invalid(f"{what} is required")
    if len(value) > limit:
        raise _invalid(f"{what} is longer than {limit} characters")
    return value


def _policy(state: Overlay, org_gln: str) -> st.GuardrailPolicy | None:
    return read(state, "policies", org_gln, txpb.GuardrailPolicy)


def _guardrail(message: str) -> TxRejected:
    return TxRejected(ResultCode.GUARDRAIL_VIOLATED, message)


def _same_org(ctx: TxContext, org_gln: str) -> None:
    """Every write is scoped to the signer's organisation (the consortium included: it has no
    powers over members' records)."""
    if org_gln != ctx.signer.organization_gln:
        raise _denied(f"{ctx.signer.agent_id} belongs to {ctx.signer.organization_gln}, not {org_gln}")


def _require_org(state: Overlay, gln: str) -> st.OrganizationRecord:
    org = read(state, "orgs", gln, st.OrganizationRecord)
    if org is None or org.status != st.ORGANIZATION_STATUS_ACTIVE:
        raise TxRejected(ResultCode.NOT_FOUND, f"organization {gln} is not an active member")
    return org


def _owned_product(state: Overlay, ctx: TxContext, gtin: str) -> st.ProductRecord:
    product = read(state, "products", _gtin(gtin), st.ProductRecord)
    if product is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"product {gtin} is not registered")
    _same_org(ctx, product.brand_owner_gln)
    return product


# --- GS1 company prefixes: who owns a GTIN or a GLN ----------------------------------------------

_PREFIX = re.compile(r"[0-9]{6,12}", re.ASCII)
MIN_PREFIX_DIGITS, MAX_PREFIX_DIGITS = 6, 12


def _prefix_key(digits: str) -> str:
    return f"prefix/{digits}"


def _prefixes(values) -> list[str]:
    if len(values) > MAX_PREFIXES_PER_ORG:
        raise _invalid(f"at most {MAX_PREFIXES_PER_ORG} company prefixes")
    for value in values:
        if not _PREFIX.fullmatch(value):
            raise _invalid(f"company prefix {value!r} must be 6-12 digits")
    return sorted(set(values))


def _claim_prefix(state: Overlay, prefix: str, org_gln: str) -> None:
    """Claim ``prefix`` for ``org_gln``; refused when it or any of its heads is claimed, or it is the
    head of a claim (no organisation's keys may fall inside another's prefix)."""
    if read(state, "consortium", _prefix_key(prefix), st.PrefixRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"company prefix {prefix} overlaps a claimed prefix")
    for length in range(MIN_PREFIX_DIGITS, len(prefix)):
        head = read(state, "consortium", _prefix_key(prefix[:length]), st.PrefixRecord)
        if head is not None and head.organization_gln:
            raise TxRejected(ResultCode.ALREADY_EXISTS, f"company prefix {prefix} lies inside claimed prefix {head.prefix}")
    write(state, "consortium", _prefix_key(prefix), st.PrefixRecord(prefix=prefix, organization_gln=org_gln))
    for length in range(MIN_PREFIX_DIGITS, len(prefix)):
        if read(state, "consortium", _prefix_key(prefix[:length]), st.PrefixRecord) is None:
            write(state, "consortium", _prefix_key(prefix[:length]), st.PrefixRecord(prefix=prefix[:length]))


def _prefix_owner(state: Overlay, digits: str) -> str | None:
    for length in range(MIN_PREFIX_DIGITS, min(len(digits), MAX_PREFIX_DIGITS) + 1):
        claim = read(state, "consortium", _prefix_key(digits[:length]), st.PrefixRecord)
        if claim is not None and claim.organization_gln:
            return claim.organization_gln
    return None


def gtin_owner(state: Overlay, gtin14: str) -> str | None:
    """The organisation whose company prefix the GTIN-14 carries (after the indicator digit)."""
    return _prefix_owner(state, gtin14[1:13])


def gln_owner(state: Overlay, gln: str) -> str | None:
    return _prefix_owner(state, gln[:12])


def _own_gln(state: Overlay, ctx: TxContext, gln: str, what: str) -> str:
    gln = _gln(gln)
    if gln_owner(state, gln) != ctx.signer.organization_gln:
        raise _denied(f"{what} {gln} does not carry a company prefix of {ctx.signer.organization_gln}")
    return gln


# --- the consortium and its membership ------------------------------------------------------------

MEMBERS_KEY = "members"


def _consortium(state: Overlay) -> st.ConsortiumRecord:
    record = read(state, "consortium", MEMBERS_KEY, st.ConsortiumRecord)
    if record is None:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, "this network's genesis names no consortium")
    return record


def _consortium_signer(state: Overlay, ctx: TxContext) -> st.ConsortiumRecord:
    consortium = _consortium(state)
    if ctx.signer.organization_gln != consortium.consortium_gln:
        raise _denied("only the consortium organisation proposes membership changes")
    return consortium


def _open_proposal(state: Overlay, gln: str) -> st.MembershipProposal | None:
    proposal = read(state, "consortium", f"proposal/{gln}", st.MembershipProposal)
    return proposal if proposal is not None and not proposal.settled_height else None


def _settle(state: Overlay, ctx: TxContext, proposal: st.MembershipProposal, consortium: st.ConsortiumRecord) -> None:
    """Apply the change once enough members approved; either way store the proposal."""
    gln = proposal.organization.gln
    if len(proposal.approvals) >= proposal.approvals_required:
        proposal.settled_height = ctx.height
        if proposal.remove:
            org = _require_org(state, gln)
            org.status = st.ORGANIZATION_STATUS_REMOVED
            org.removed_height = ctx.height
            consortium.active_members -= 1
        else:
            a = proposal.organization
            org = st.OrganizationRecord(
                gln=gln, name=a.name, registered_height=ctx.height, company_prefixes=a.company_prefixes,
                status=st.ORGANIZATION_STATUS_ACTIVE,
            )
            consortium.active_members += 1
        write(state, "orgs", gln, org)
        write(state, "consortium", MEMBERS_KEY, consortium)
    write(state, "consortium", f"proposal/{gln}", proposal)


def _propose(state: Overlay, ctx: TxContext, consortium: st.ConsortiumRecord, organization: txpb.RegisterOrganization, remove: bool) -> None:
    if _open_proposal(state, organization.gln) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"a membership change of {organization.gln} is already proposed")
    proposal = st.MembershipProposal(
        organization=organization, remove=remove, proposed_height=ctx.height,
        approvals=[ctx.signer.organization_gln], approvals_required=consortium.active_members // 2 + 1,
    )
    _settle(state, ctx, proposal, consortium)


def register_organization(state: Overlay, ctx: TxContext, a: txpb.RegisterOrganization) -> None:
    consortium = _consortium_signer(state, ctx)
    gln = _gln(a.gln)
    _text(a.name, "name")
    prefixes = _prefixes(a.company_prefixes)
    if read(state, "orgs", gln, st.OrganizationRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"organization {gln} is already registered")
    if _open_proposal(state, gln) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"organization {gln} is already proposed")
    # Claimed (reserved) at proposal time, so two pending proposals can never overlap.
    for prefix in prefixes:
        _claim_prefix(state, prefix, gln)
    _propose(state, ctx, consortium, txpb.RegisterOrganization(gln=gln, name=a.name, company_prefixes=prefixes), remove=False)


def remove_organization(state: Overlay, ctx: TxContext, a: txpb.RemoveOrganization) -> None:
    consortium = _consortium_signer(state, ctx)
    org = _require_org(state, _gln(a.gln))
    if org.consortium:
        raise _denied("the consortium organisation cannot be removed")
    _propose(state, ctx, consortium, txpb.RegisterOrganization(gln=org.gln, name=org.name), remove=True)


def approve_membership(state: Overlay, ctx: TxContext, a: txpb.ApproveMembership) -> None:
    consortium = _consortium(state)
    proposal = _open_proposal(state, _gln(a.gln))
    if proposal is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"no membership change of {a.gln} is proposed")
    voter = ctx.signer.organization_gln
    if proposal.remove and voter == a.gln:
        raise _denied("an organisation does not vote on its own removal")
    if voter in proposal.approvals:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"{voter} already approved the change of {a.gln}")
    approvals = sorted([*proposal.approvals, voter])
    del proposal.approvals[:]
    proposal.approvals.extend(approvals)
    _settle(state, ctx, proposal, consortium)


def load_genesis(state: Overlay, genesis: st.GenesisState) -> None:
    """InitChain: the first members (active at height 0), their prefixes, roles and agents. A genesis
    that breaks a rule (overlapping prefixes, consortium permissions outside the consortium) is
    refused: a network must not start from a state its own rules forbid."""
    glns = [org.gln for org in genesis.organizations]
    if genesis.consortium_gln and genesis.consortium_gln not in glns:
        raise _invalid(f"the consortium {genesis.consortium_gln} is not among the organizations")
    for org in genesis.organizations:
        gln = _gln(org.gln)
        _text(org.name, "name")
        if read(state, "orgs", gln, st.OrganizationRecord) is not None:
            raise TxRejected(ResultCode.ALREADY_EXISTS, f"organization {gln} appears twice")
        prefixes = _prefixes(org.company_prefixes)
        for prefix in prefixes:
            _claim_prefix(state, prefix, gln)
        write(state, "orgs", gln, st.OrganizationRecord(
            gln=gln, name=org.name, company_prefixes=prefixes, status=st.ORGANIZATION_STATUS_ACTIVE,
            consortium=gln == genesis.consortium_gln,
        ))
    if genesis.consortium_gln:
        write(state, "consortium", MEMBERS_KEY, st.ConsortiumRecord(consortium_gln=genesis.consortium_gln, active_members=len(glns)))
    for role in genesis.roles:
        define_role(state, None, role)
    for agent in genesis.agents:
        add_agent(state, None, agent)


# --- agents, roles, keys ---------------------------------------------------------------------------


def _purpose(value: int) -> int:
    if value not in (txpb.KEY_PURPOSE_TRANSACTIONS, txpb.KEY_PURPOSE_LABELS, txpb.KEY_PURPOSE_APPROVALS):
        raise _invalid("purpose must be TRANSACTIONS, LABELS or APPROVALS")
    return value


def _public_key(value: bytes) -> bytes:
    if len(value) != 32:
        raise _invalid("public_key must be a 32-byte Ed25519 key")
    return value


def _check_possession(ctx: TxContext, agent_id: str, key_id: str, purpose: int, public_key: bytes, signature: bytes) -> None:
    if len(signature) != 64:
        raise TxRejected(ResultCode.BAD_SIGNATURE, "possession_signature must be the new key's 64-byte signature")
    try:
        VerifyKey(public_key).verify(key_possession_bytes(ctx.chain_id, agent_id, key_id, purpose), signature)
    except (CryptoError, ValueError, TypeError):
        raise TxRejected(
            ResultCode.BAD_SIGNATURE, "possession_signature does not verify: the new key must sign (chain, agent, key id, purpose)"
        ) from None


def _role_permissions(state: Overlay, org_gln: str, roles) -> set[str]:
    granted: set[str] = set()
    for role in roles:
        record = read(state, "roles", f"{org_gln}/{role}", st.RoleRecord)
        if record is None:
            raise TxRejected(ResultCode.NOT_FOUND, f"role {role} is not defined in {org_gln}")
        granted.update(record.permissions)
    return granted


def _within_signer(ctx: TxContext, permissions, what: str) -> None:
    beyond = sorted(set(permissions) - ctx.permissions)
    if beyond:
        raise _denied(f"{what} would carry {', '.join(beyond)}, beyond {ctx.signer.agent_id}'s own permissions")


def add_agent(state: Overlay, ctx: TxContext | None, a: txpb.AddAgent) -> None:
    """Also used by InitChain (ctx None) for the genesis agents."""
    agent_id = _identifier(a.agent_id, "agent_id")
    org_gln = _gln(a.organization_gln)
    _require_org(state, org_gln)
    if ctx is not None:
        _same_org(ctx, org_gln)
    if not agent_id.startswith(f"{org_gln}/"):
        raise _invalid(f"agent ids of {org_gln} start with '{org_gln}/'")
    if read(state, "agents", agent_id, st.AgentRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"agent {agent_id} exists")
    if a.kind == txpb.AGENT_KIND_PERSON:
        _identifier(a.person_id, "person_id")
    elif a.kind != txpb.AGENT_KIND_SERVICE or a.person_id:
        raise _invalid("kind must be SERVICE (no person_id) or PERSON (with person_id)")
    purpose = _purpose(a.purpose)
    if purpose == APPROVALS and a.kind != txpb.AGENT_KIND_PERSON:
        raise _invalid("approvals keys belong to PERSON agents")
    key_id = _identifier(a.key_id, "key_id")
    public_key = _public_key(a.public_key)
    roles = sorted(set(a.roles))
    if len(roles) > MAX_ROLES_PER_AGENT:
        raise _invalid(f"at most {MAX_ROLES_PER_AGENT} roles")
    granted = _role_permissions(state, org_gln, roles)
    if ctx is not None:
        _within_signer(ctx, granted, f"agent {agent_id}")
        _check_possession(ctx, agent_id, key_id, purpose, public_key, a.possession_signature)
    height = ctx.height if ctx is not None else 0
    _index_key(state, agent_id, org_gln, key_id, public_key, purpose)
    write(
        state,
        "agents",
        agent_id,
        st.AgentRecord(
            agent_id=agent_id, organization_gln=org_gln, roles=roles, kind=a.kind, person_id=a.person_id,
            keys=[st.AgentKey(key_id=key_id, public_key=public_key, purpose=purpose, added_height=height)],
        ),
    )


def _index_key(state: Overlay, agent_id: str, org_gln: str, key_id: str, public_key: bytes, purpose: int) -> None:
    """The ``keys`` store: a key by its fingerprint, so a label's ``kid`` proves whose key signed it.
    A fingerprint is written once: a public key is never registered again, revoked ones included."""
    fingerprint = key_id_for(public_key)
    known = read(state, "keys", fingerprint, st.KeyRecord)
    if known is not None:
        why = "was revoked" if known.revoked else f"belongs to {known.agent_id}"
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"public key {fingerprint} {why}; a key is never registered twice")
    write(
        state,
        "keys",
        fingerprint,
        st.KeyRecord(
            fingerprint=fingerprint, agent_id=agent_id, organization_gln=org_gln, public_key=public_key,
            key_id=key_id, purpose=purpose,
        ),
    )


def define_role(state: Overlay, ctx: TxContext | None, a: txpb.DefineRole) -> None:
    org = _require_org(state, _gln(a.organization_gln))
    if ctx is not None:
        _same_org(ctx, a.organization_gln)
    _identifier(a.role, "role")
    permissions = sorted(set(a.permissions))
    if len(permissions) > MAX_PERMISSIONS_PER_ROLE:
        raise _invalid(f"at most {MAX_PERMISSIONS_PER_ROLE} permissions")
    for permission in permissions:
        if permission not in KNOWN_PERMISSIONS:
            raise _invalid(f"unknown permission {permission!r}")
    consortium_only = sorted(CONSORTIUM_PERMISSIONS.intersection(permissions))
    if consortium_only and not org.consortium:
        raise _denied(f"{', '.join(consortium_only)} can be held only in the consortium organisation")
    key = f"{org.gln}/{a.role}"
    existing = read(state, "roles", key, st.RoleRecord)
    if existing is not None and not a.replace:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"role {a.role} exists; redefine it with replace")
    if existing is None and a.replace:
        raise TxRejected(ResultCode.NOT_FOUND, f"role {a.role} does not exist; nothing to replace")
    if ctx is not None:
        _within_signer(ctx, permissions, f"role {a.role}")
        if existing is not None:
            _within_signer(ctx, existing.permissions, f"the replaced role {a.role}")
    version = existing.version + 1 if existing is not None else 1
    write(state, "roles", key, st.RoleRecord(organization_gln=org.gln, role=a.role, permissions=permissions, version=version))


def _agent_in_org(state: Overlay, ctx: TxContext, agent_id: str) -> st.AgentRecord:
    agent = read(state, "agents", agent_id, st.AgentRecord)
    if agent is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"agent {agent_id} does not exist")
    _same_org(ctx, agent.organization_gln)
    return agent


def grant_role(state: Overlay, ctx: TxContext, a: txpb.GrantRole) -> None:
    agent = _agent_in_org(state, ctx, a.agent_id)
    if agent.agent_id == ctx.signer.agent_id:
        raise _denied("an agent cannot grant roles to itself")
    if ctx.signer.person_id and agent.person_id == ctx.signer.person_id:
        raise _denied("an agent cannot grant roles to another agent of its own person")
    _within_signer(ctx, _role_permissions(state, agent.organization_gln, [a.role]), f"role {a.role}")
    if a.role in agent.roles:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"{agent.agent_id} already holds role {a.role}")
    if len(agent.roles) >= MAX_ROLES_PER_AGENT:
        raise _invalid(f"at most {MAX_ROLES_PER_AGENT} roles")
    roles = sorted({*agent.roles, a.role})
    del agent.roles[:]
    agent.roles.extend(roles)
    write(state, "agents", agent.agent_id, agent)


def revoke_role(state: Overlay, ctx: TxContext, a: txpb.RevokeRole) -> None:
    agent = _agent_in_org(state, ctx, a.agent_id)
    if a.role not in agent.roles:
        raise TxRejected(ResultCode.NOT_FOUND, f"{a.agent_id} does not hold role {a.role}")
    record = read(state, "roles", f"{agent.organization_gln}/{a.role}", st.RoleRecord)
    if record is not None:
        _within_signer(ctx, record.permissions, f"role {a.role}")
    roles = [r for r in agent.roles if r != a.role]
    del agent.roles[:]
    agent.roles.extend(roles)
    write(state, "agents", agent.agent_id, agent)


KEY_MANAGE = "key::manage"


def _self_or_manager(state: Overlay, ctx: TxContext, agent_id: str) -> st.AgentRecord:
    """The agent itself, or a key manager of its organisation who holds every permission it holds
    (adding a key to a stronger agent would be an escalation)."""
    if agent_id == ctx.signer.agent_id:
        return read(state, "agents", agent_id, st.AgentRecord)
    if ctx.key.purpose == APPROVALS:
        raise _denied("an approvals key changes only its own agent's keys")
    if KEY_MANAGE not in ctx.permissions:
        raise _denied("only the agent itself or a key manager may change keys")
    agent = _agent_in_org(state, ctx, agent_id)
    _within_signer(ctx, permissions_of(state, agent), f"managing {agent_id}'s keys")
    return agent


def add_key(state: Overlay, ctx: TxContext, a: txpb.AddKey) -> None:
    agent = _self_or_manager(state, ctx, a.agent_id)
    own = agent.agent_id == ctx.signer.agent_id
    key_id = _identifier(a.key_id, "key_id")
    purpose = _purpose(a.purpose)
    public_key = _public_key(a.public_key)
    signing_purpose = ctx.key.purpose
    if purpose == APPROVALS or signing_purpose == APPROVALS:
        # A person's approvals keys descend only from the key the organisation bound to the person.
        if not own or purpose != signing_purpose:
            raise _denied("approvals keys are added only by the same agent's approvals key")
    if not own and agent.kind == txpb.AGENT_KIND_PERSON:
        raise _denied("a person's keys are added by that person")
    if own and KEY_MANAGE not in ctx.permissions and purpose != signing_purpose:
        raise _denied("an agent's own rotation keeps the signing key's purpose (other purposes need key::manage)")
    if purpose == APPROVALS and agent.kind != txpb.AGENT_KIND_PERSON:
        raise _invalid("approvals keys belong to PERSON agents")
    if any(k.key_id == key_id for k in agent.keys):
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"key {key_id} exists (key ids are never reused)")
    if len(agent.keys) >= MAX_KEYS_PER_AGENT:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"{agent.agent_id} has {MAX_KEYS_PER_AGENT} keys")
    _check_possession(ctx, agent.agent_id, key_id, purpose, public_key, a.possession_signature)
    _index_key(state, agent.agent_id, agent.organization_gln, key_id, public_key, purpose)
    agent.keys.add(key_id=key_id, public_key=public_key, purpose=purpose, added_height=ctx.height)
    write(state, "agents", agent.agent_id, agent)


def revoke_key(state: Overlay, ctx: TxContext, a: txpb.RevokeKey) -> None:
    agent = _self_or_manager(state, ctx, a.agent_id)
    reason = a.reason or txpb.REVOCATION_REASON_COMPROMISED
    if reason not in (txpb.REVOCATION_REASON_COMPROMISED, txpb.REVOCATION_REASON_ROTATED):
        raise _invalid("reason must be COMPROMISED or ROTATED")
    for key in agent.keys:
        if key.key_id == a.key_id:
            if key.revoked:
                raise TxRejected(ResultCode.FAILED_PRECONDITION, f"key {a.key_id} is already revoked")
            key.revoked, key.revoked_height, key.revocation_reason = True, ctx.height, reason
            write(state, "agents", agent.agent_id, agent)
            fingerprint = key_id_for(key.public_key)
            record = read(state, "keys", fingerprint, st.KeyRecord)
            record.revoked, record.revoked_height, record.revocation_reason = True, ctx.height, reason
            write(state, "keys", fingerprint, record)
            return
    raise TxRejected(ResultCode.NOT_FOUND, f"{a.agent_id} has no key {a.key_id}")


def register_location(state: Overlay, ctx: TxContext, a: txpb.RegisterLocation) -> None:
    gln = _gln(a.gln)
    _require_org(state, _gln(a.organization_gln))
    _same_org(ctx, a.organization_gln)
    _own_gln(state, ctx, gln, "location")
    _text(a.name, "name")
    for field in ("street", "city", "postal_code"):
        _text(getattr(a, field), field, 128, required=False)
    if a.country_code and not _COUNTRY_CODE.fullmatch(a.country_code):
        raise _invalid("country_code must be ISO 3166-1 alpha-2")
    if read(state, "locations", gln, st.LocationRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"location {gln} is already registered")
    write(state, "locations", gln, st.LocationRecord(location=a, registered_height=ctx.height))


# --- products, batches, events, recalls ---------------------------------------------------------


def _validate_product(a: txpb.RegisterProduct) -> None:
    _gtin(a.gtin)
    _text(a.name, "name")
    _text(a.brand, "brand", required=False)
    _text(a.category, "category", required=False)
    _text(a.net_content, "net_content", 64, required=False)
    keys = [attr.key for attr in a.attributes]
    if keys != sorted(set(keys)):
        raise _invalid("attributes must be sorted by key without duplicates")
    if len(keys) > 64:
        raise _invalid("at most 64 attributes")


def register_product(state: Overlay, ctx: TxContext, a: txpb.RegisterProduct) -> None:
    _validate_product(a)
    if gtin_owner(state, a.gtin) != ctx.signer.organization_gln:
        raise _denied(f"GTIN {a.gtin} does not carry a company prefix of {ctx.signer.organization_gln}")
    if read(state, "products", a.gtin, st.ProductRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"product {a.gtin} is already registered")
    write(
        state,
        "products",
        a.gtin,
        st.ProductRecord(product=a, brand_owner_gln=ctx.signer.organization_gln, registered_height=ctx.height),
    )


UPDATABLE_PRODUCT_FIELDS = {"name", "brand", "category", "net_content", "attributes"}


def update_product(state: Overlay, ctx: TxContext, a: txpb.UpdateProduct) -> None:
    record = _owned_product(state, ctx, a.product.gtin)
    unknown = set(a.update_paths) - UPDATABLE_PRODUCT_FIELDS
    if unknown or not a.update_paths:
        raise _invalid(f"update_paths must name some of {sorted(UPDATABLE_PRODUCT_FIELDS)}")
    for path in a.update_paths:
        if path == "attributes":
            del record.product.attributes[:]
            record.product.attributes.extend(a.product.attributes)
        else:
            setattr(record.product, path, getattr(a.product, path))
    _validate_product(record.product)
    write(state, "products", a.product.gtin, record)


def commission_batch(state: Overlay, ctx: TxContext, a: txpb.CommissionBatch) -> None:
    product = _owned_product(state, ctx, a.gtin)
    _identifier(a.batch_id, "batch_id")
    if not CSET82_VALUE.fullmatch(a.lot):
        raise _invalid("lot must be 1-20 GS1 CSET 82 characters")
    if a.expiry and not _DATE.fullmatch(a.expiry):
        raise _invalid("expiry must be YYYY-MM-DD")
    if not 1 <= a.count <= 10_000_000:
        raise _invalid("count must be between 1 and 10,000,000")
    if len(a.serials_merkle_root) != 32 or len(a.serials_content_hash) != 32:
        raise _invalid("serials_merkle_root and serials_content_hash must be SHA-256 digests")
    if read(state, "batches", a.batch_id, st.BatchRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"batch {a.batch_id} exists")
    write(state, "batches", a.batch_id, st.BatchRecord(batch=a, brand_owner_gln=product.brand_owner_gln, height=ctx.height))
    product.batches_commissioned += 1
    write(state, "products", product.product.gtin, product)


def record_event(state: Overlay, ctx: TxContext, a: txpb.RecordEvent) -> None:
    if not _EVENT_HASH.fullmatch(a.event_hash):
        raise _invalid("event_hash must be a CBV 2.0 event hash id (ni:///sha-256;<hex>?ver=CBV2.0)")
    if a.event_type not in {"ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"}:
        raise _invalid(f"unknown EPCIS event type {a.event_type!r}")
    if len(a.epcs) > MAX_EPCS_PER_EVENT:
        raise _invalid(f"at most {MAX_EPCS_PER_EVENT} EPCs per event")
    places = [_gln(gln) for gln in (a.biz_location_gln, a.read_point_gln) if gln]
    items = sorted({item for epc in a.epcs if (item := item_of(epc)) is not None})
    _may_record_event(state, ctx, places, items)
    if read(state, "events", a.event_hash, st.EventRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"event {a.event_hash} is already recorded")
    write(
        state,
        "events",
        a.event_hash,
        st.EventRecord(
            event_hash=a.event_hash,
            event_type=a.event_type,
            biz_step=a.biz_step,
            disposition=a.disposition,
            biz_location_gln=a.biz_location_gln,
            recorded_by=ctx.signer.agent_id,
            height=ctx.height,
            tx_hash=ctx.tx_hash,
        ),
    )
    step = st.CustodyStep(
        event_hash=a.event_hash, biz_step=cbv_word(a.biz_step), disposition=cbv_word(a.disposition),
        biz_location_gln=a.biz_location_gln, height=ctx.height, block_unix_s=ctx.time_unix_s,
    )
    for item in items:
        _record_custody(state, item, step)


def _may_record_event(state: Overlay, ctx: TxContext, places: list[str], items: list[tuple[str, str]]) -> None:
    """A brand records events about its own items anywhere; anyone else only at its own GLN (the
    bizLocation or readPoint) and only about items in its custody there or in transit to it."""
    org = ctx.signer.organization_gln
    at_own_place = any(gln_owner(state, gln) == org for gln in places)
    owners: dict[str, str | None] = {}  # an event's items mostly share a few GTINs
    for gtin, serial in items:
        if gtin not in owners:
            owners[gtin] = gtin_owner(state, gtin)
        if owners[gtin] == org:
            continue
        if not at_own_place:
            raise _denied(f"{gtin}/{serial} is not {org}'s item and the event names none of {org}'s locations")
        record = read(state, "items", f"{gtin}/{serial}", st.ItemRecord)
        in_custody = record is not None and (
            record.disposition == "in_transit"
            or (record.biz_location_gln and gln_owner(state, record.biz_location_gln) == org)
        )
        if not in_custody:
            raise _denied(f"{gtin}/{serial} is neither in {org}'s custody nor in transit")
    if not items and not at_own_place:
        raise _denied(f"an event without serialized items must name one of {org}'s locations")


def cbv_word(value: str) -> str:
    """A CBV value's short name: "https://ref.gs1.org/cbv/BizStep-shipping" and "shipping" -> "shipping"."""
    tail = value.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.split("-", 1)[1] if tail.startswith(("BizStep-", "Disp-")) else tail


def _record_custody(state: Overlay, item: tuple[str, str], step: st.CustodyStep) -> None:
    """The item's provable status: its latest disposition and location and its newest custody steps."""
    gtin, serial = item
    key = f"{gtin}/{serial}"
    record = read(state, "items", key, st.ItemRecord) or st.ItemRecord(gtin=gtin, serial=serial)
    if step.disposition:
        record.disposition = step.disposition
        if step.disposition == "retail_sold":
            record.sold_unix_s = step.block_unix_s
    if step.biz_location_gln:
        record.biz_location_gln = step.biz_location_gln
    record.custody.append(step)
    if len(record.custody) > MAX_CUSTODY_STEPS:
        del record.custody[: len(record.custody) - MAX_CUSTODY_STEPS]
    write(state, "items", key, record)


def recall_lot(state: Overlay, ctx: TxContext, a: txpb.RecallLot) -> None:
    _owned_product(state, ctx, a.gtin)
    _text(a.lot, "lot", 20)
    _text(a.reason, "reason", 512)
    key = f"{a.gtin}/{a.lot}"
    if read(state, "recalls", key, st.StatusRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"lot {a.lot} of {a.gtin} is already recalled")
    write(state, "recalls", key, st.StatusRecord(status="recalled", reason=a.reason, recorded_by=ctx.signer.agent_id, height=ctx.height))


def void_labels(state: Overlay, ctx: TxContext, a: txpb.VoidLabels) -> None:
    _owned_product(state, ctx, a.gtin)
    if not 1 <= len(a.serials) <= MAX_SERIALS_PER_VOID:
        raise _invalid(f"between 1 and {MAX_SERIALS_PER_VOID} serials per transaction")
    for serial in a.serials:
        if not CSET82_VALUE.fullmatch(serial):
            raise _invalid(f"serial {serial!r} is not 1-20 GS1 CSET 82 characters")
        write(state, "status", f"{a.gtin}/{serial}", st.StatusRecord(status="voided", reason=a.reason, recorded_by=ctx.signer.agent_id, height=ctx.height))


# --- prices, promotions, policies ---------------------------------------------------------------


def _money(m: txpb.Money, what: str, currency: str | None = None) -> int:
    if len(m.currency_code) != 3 or not m.currency_code.isalpha() or not m.currency_code.isupper():
        raise _invalid(f"{what}.currency_code must be an ISO 4217 code")
    if currency and m.currency_code != currency:
        raise _invalid(f"{what} is in {m.currency_code}, the policy is in {currency}")
    if m.amount_minor < 0:
        raise _invalid(f"{what} must not be negative")
    return m.amount_minor


def margin_floor_ok(price_minor: int, cost_minor: int, margin_floor_bps: int) -> bool:
    """The margin floor, in the integers every validator uses (the planner checks with the same)."""
    return price_minor * BPS >= cost_minor * (BPS + margin_floor_bps)


def change_price(state: Overlay, ctx: TxContext, a: txpb.ChangePrice) -> None:
    gtin = _gtin(a.gtin)
    location = _own_gln(state, ctx, a.location_gln, "location")
    if read(state, "products", gtin, st.ProductRecord) is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"product {gtin} is not registered")
    policy = _policy(state, ctx.signer.organization_gln)
    currency = policy.currency_code if policy else None
    price = _money(a.price, "price", currency)
    cost = _money(a.unit_cost, "unit_cost", a.price.currency_code)
    if price == 0:
        raise _invalid("price must be positive")
    day = ctx.time_unix_s // 86_400
    key = f"{gtin}/{location}"
    current = read(state, "prices", key, st.PriceRecord)
    day_open = price
    if current is not None:
        day_open = current.day_open_minor if current.day == day else current.price.amount_minor
    if policy is not None:
        if not margin_floor_ok(price, cost, policy.margin_floor_bps):
            raise _guardrail(
                f"price {price} is below the margin floor of {policy.margin_floor_bps} bps over cost {cost}"
            )
        if current is not None and abs(price - day_open) * BPS > day_open * policy.max_price_change_bps_per_day:
            raise _guardrail(
                f"price change from {day_open} to {price} exceeds {policy.max_price_change_bps_per_day} bps today"
            )
    write(
        state,
        "prices",
        key,
        st.PriceRecord(gtin=gtin, location_gln=location, price=a.price, unit_cost=a.unit_cost, height=ctx.height, day=day, day_open_minor=day_open),
    )


def _check_promotion(state: Overlay, a: txpb.CreatePromotion, policy: txpb.GuardrailPolicy | None) -> None:
    _identifier(a.promotion_id, "promotion_id")
    location = _gln(a.location_gln)
    if not 1 <= len(a.gtins) <= 100:
        raise _invalid("a promotion names 1 to 100 GTINs")
    if not 0 < a.discount_bps < BPS:
        raise _invalid("discount_bps must be between 1 and 9999")
    if a.end_unix_s <= a.start_unix_s:
        raise _invalid("the promotion must end after it starts")
    _text(a.customer_copy, "customer_copy", 1024, required=False)
    if policy is None:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, "no guardrail policy: promotions need one")
    if a.discount_bps > policy.max_discount_bps:
        raise _guardrail(f"discount {a.discount_bps} bps exceeds the maximum of {policy.max_discount_bps} bps")
    for gtin in a.gtins:
        price = read(state, "prices", f"{_gtin(gtin)}/{location}", st.PriceRecord)
        if price is None:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, f"{gtin} has no price at {location}")
        discounted = price.price.amount_minor * (BPS - a.discount_bps) // BPS
        if not margin_floor_ok(discounted, price.unit_cost.amount_minor, policy.margin_floor_bps):
            raise _guardrail(f"{gtin} at {discounted} would be below the margin floor")


def create_promotion(state: Overlay, ctx: TxContext, a: txpb.CreatePromotion) -> None:
    _own_gln(state, ctx, a.location_gln, "location")
    _check_promotion(state, a, _policy(state, ctx.signer.organization_gln))
    if read(state, "promotions", a.promotion_id, st.PromotionRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"promotion {a.promotion_id} exists")
    write(state, "promotions", a.promotion_id, st.PromotionRecord(promotion=a, created_by=ctx.signer.agent_id, height=ctx.height))


def set_guardrail_policy(state: Overlay, ctx: TxContext, a: txpb.SetGuardrailPolicy) -> None:
    p = a.policy
    _require_org(state, _gln(p.organization_gln))
    _same_org(ctx, p.organization_gln)
    if len(p.currency_code) != 3:
        raise _invalid("currency_code must be an ISO 4217 code")
    if p.budget_minor < 0 or p.budget_period_s <= 0 or p.draft_ttl_s <= 0:
        raise _invalid("budget must be >= 0 and budget_period_s, draft_ttl_s > 0")
    if p.approval_quorum < 1:
        raise _invalid("approval_quorum must be at least 1")
    if not (0 <= p.max_discount_bps < BPS and 0 <= p.margin_floor_bps and 0 <= p.max_price_change_bps_per_day):
        raise _invalid("basis-point limits out of range")
    write(state, "policies", p.organization_gln, p)


def set_replenishment_policy(state: Overlay, ctx: TxContext, a: txpb.SetReplenishmentPolicy) -> None:
    p = a.policy
    _require_org(state, _gln(p.organization_gln))
    _same_org(ctx, p.organization_gln)
    _own_gln(state, ctx, p.location_gln, "location")
    seen: set[str] = set()
    for item in p.items:
        _gtin(item.gtin)
        if item.gtin in seen:
            raise _invalid(f"{item.gtin} appears twice")
        seen.add(item.gtin)
        if not 0 <= item.min_order_quantity <= item.max_order_quantity or item.case_pack < 0:
            raise _invalid(f"bounds of {item.gtin} are inconsistent")
        _money(item.unit_cost, f"unit_cost of {item.gtin}")
    write(state, "replenishment", f"{p.organization_gln}/{p.location_gln}", p)


# --- AI drafts and approvals --------------------------------------------------------------------


def _order_total(state: Overlay, a: txpb.SubmitAiDraft, policy: txpb.GuardrailPolicy) -> int:
    """The order's total, once every line is within the organisation's replenishment bounds."""
    org, location = a.organization_gln, a.location_gln
    bounds_record = read(state, "replenishment", f"{org}/{location}", txpb.ReplenishmentPolicy)
    if bounds_record is None:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"no replenishment policy for {org} at {location}")
    bounds = {item.gtin: item for item in bounds_record.items}
    seen: set[str] = set()
    total = 0
    for line in a.order_lines:
        item = bounds.get(line.gtin)
        if item is None:
            raise _guardrail(f"{line.gtin} is not in the replenishment policy")
        if line.gtin in seen:
            raise _invalid(f"{line.gtin} appears twice")
        seen.add(line.gtin)
        if not item.min_order_quantity <= line.quantity <= item.max_order_quantity:
            raise _guardrail(
                f"{line.gtin}: quantity {line.quantity} is outside "
                f"[{item.min_order_quantity}, {item.max_order_quantity}]"
            )
        if item.case_pack > 1 and line.quantity % item.case_pack:
            raise _guardrail(f"{line.gtin}: quantity {line.quantity} is not a multiple of case pack {item.case_pack}")
        if line.unit_cost.amount_minor != item.unit_cost.amount_minor or line.unit_cost.currency_code != policy.currency_code:
            raise _guardrail(f"{line.gtin}: unit cost differs from the policy's")
        total += line.quantity * item.unit_cost.amount_minor
    return total


def _budget(state: Overlay, policy: txpb.GuardrailPolicy, now: int) -> st.BudgetRecord:
    budget = read(state, "budgets", policy.organization_gln, st.BudgetRecord)
    period_start = now - now % policy.budget_period_s
    if budget is None or budget.period_start_unix_s != period_start:
        budget = st.BudgetRecord(organization_gln=policy.organization_gln, period_start_unix_s=period_start)
    return budget


def _hex_digest(value: str, what: str) -> None:
    if not _HEX_DIGEST.fullmatch(value):
        raise _invalid(f"decision_record.{what} must be a SHA-256 hex digest")


def submit_ai_draft(state: Overlay, ctx: TxContext, a: txpb.SubmitAiDraft) -> None:
    _identifier(a.draft_id, "draft_id")
    org = _gln(a.organization_gln)
    _same_org(ctx, org)
    location = _own_gln(state, ctx, a.location_gln, "location")
    if read(state, "drafts", a.draft_id, st.DraftRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"draft {a.draft_id} exists")
    record = a.decision_record
    for name in ("model", "engine", "engine_version"):
        _text(getattr(record, name), f"decision_record.{name}", 128)
    for name in ("weights_digest", "prompt_template_sha256", "json_schema_sha256", "prompt_sha256", "input_snapshot_sha256", "output_sha256"):
        _hex_digest(getattr(record, name), name)
    _text(a.rationale, "rationale", 4096, required=False)
    policy = _policy(state, org)
    if policy is None:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"{org} has no guardrail policy; drafts need one")
    has_lines, has_promotion = len(a.order_lines) > 0, a.HasField("promotion")
    if has_lines == has_promotion:
        raise _invalid("a draft carries either order lines or a promotion")
    total = 0
    if has_lines:
        total = _order_total(state, a, policy)
        budget = _budget(state, policy, ctx.time_unix_s)
        if budget.spent_minor + total > policy.budget_minor:
            raise _guardrail(
                f"order total {total} exceeds the remaining budget {policy.budget_minor - budget.spent_minor}"
            )
    else:
        if a.promotion.location_gln != location:
            raise _invalid("the promotion's location must be the draft's")
        _check_promotion(state, a.promotion, policy)
    required = policy.approval_quorum if total >= policy.quorum_threshold_minor else 1
    draft = st.DraftRecord(
        draft=a,
        submitted_by=ctx.signer.agent_id,
        submitted_by_person=ctx.signer.person_id,
        submitted_height=ctx.height,
        submitted_unix_s=ctx.time_unix_s,
        expires_unix_s=ctx.time_unix_s + policy.draft_ttl_s,
        total_minor=total,
        approvals_required=required,
        status=st.DRAFT_STATUS_PENDING,
    )
    if has_lines and total < policy.auto_approve_below_minor:
        _approve(state, ctx, draft, policy)
    write(state, "drafts", a.draft_id, draft)


def _approve(state: Overlay, ctx: TxContext, draft: st.DraftRecord, policy: txpb.GuardrailPolicy) -> None:
    if draft.total_minor:
        budget = _budget(state, policy, ctx.time_unix_s)
        if budget.spent_minor + draft.total_minor > policy.budget_minor:
            raise _guardrail("approving this draft would exceed the budget")
        budget.spent_minor += draft.total_minor
        write(state, "budgets", policy.organization_gln, budget)
    draft.status = st.DRAFT_STATUS_APPROVED
    if draft.draft.HasField("promotion"):
        promotion = draft.draft.promotion
        if read(state, "promotions", promotion.promotion_id, st.PromotionRecord) is not None:
            raise TxRejected(ResultCode.ALREADY_EXISTS, f"promotion {promotion.promotion_id} exists")
        promotion.draft_id = draft.draft.draft_id
        write(state, "promotions", promotion.promotion_id, st.PromotionRecord(promotion=promotion, created_by=draft.submitted_by, height=ctx.height))


def _pending_draft(state: Overlay, ctx: TxContext, draft_id: str) -> st.DraftRecord:
    draft = read(state, "drafts", draft_id, st.DraftRecord)
    if draft is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"draft {draft_id} does not exist")
    _same_org(ctx, draft.draft.organization_gln)
    if draft.status != st.DRAFT_STATUS_PENDING:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"draft {draft_id} is {st.DraftStatus.Name(draft.status)}")
    if ctx.time_unix_s >= draft.expires_unix_s:
        raise TxRejected(ResultCode.FAILED_PRECONDITION, f"draft {draft_id} expired")
    return draft


def approve_draft(state: Overlay, ctx: TxContext, a: txpb.ApproveDraft) -> None:
    """Quorums count people: only PERSON agents approve, each person once, never the submitter."""
    draft = _pending_draft(state, ctx, a.draft_id)
    approver, person = ctx.signer.agent_id, ctx.signer.person_id
    if ctx.signer.kind != txpb.AGENT_KIND_PERSON or not person:
        raise _denied(f"{approver} is not bound to a person; only people approve drafts")
    if approver == draft.submitted_by or person == draft.submitted_by_person:
        raise _denied("the submitter of a draft cannot approve it")
    if person in draft.approver_persons:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"person {person} already approved {a.draft_id}")
    approvers = sorted([*draft.approvers, approver])
    del draft.approvers[:]
    draft.approvers.extend(approvers)
    persons = sorted([*draft.approver_persons, person])
    del draft.approver_persons[:]
    draft.approver_persons.extend(persons)
    if len(persons) >= draft.approvals_required:
        policy = _policy(state, draft.draft.organization_gln)
        if policy is None:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, "the guardrail policy is gone")
        # The limits in force now, not at submission: a tightened policy or a changed price binds.
        if draft.draft.HasField("promotion"):
            _check_promotion(state, draft.draft.promotion, policy)
        else:
            _order_total(state, draft.draft, policy)
        _approve(state, ctx, draft, policy)
    write(state, "drafts", a.draft_id, draft)


def reject_draft(state: Overlay, ctx: TxContext, a: txpb.RejectDraft) -> None:
    draft = _pending_draft(state, ctx, a.draft_id)
    draft.status = st.DRAFT_STATUS_REJECTED
    draft.rejected_by = ctx.signer.agent_id
    draft.reject_reason = _text(a.reason, "reason", 512, required=False)
    write(state, "drafts", a.draft_id, draft)


# --- consumer scans -----------------------------------------------------------------------------


def record_scans(state: Overlay, ctx: TxContext, a: txpb.RecordScans) -> None:
    if ctx.signer.organization_gln != _consortium(state).consortium_gln:
        raise _denied("only the consortium's verifier records scans")
    if not 1 <= len(a.scans) <= MAX_SCANS_PER_TX:
        raise _invalid(f"between 1 and {MAX_SCANS_PER_TX} scans per transaction")
    commissioned: dict[str, bool] = {}
    for scan in a.scans:
        gtin = _gtin(scan.gtin)
        if not 0 < scan.scan_unix_s <= ctx.time_unix_s + MAX_SCAN_SKEW_S:
            raise _invalid(f"scan time {scan.scan_unix_s} is not before block time {ctx.time_unix_s} + {MAX_SCAN_SKEW_S} s")
        if gtin not in commissioned:
            product = read(state, "products", gtin, st.ProductRecord)
            if product is None:
                raise TxRejected(ResultCode.NOT_FOUND, f"product {gtin} is not registered")
            commissioned[gtin] = product.batches_commissioned > 0
        if not commissioned[gtin]:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, f"no batch of {gtin} is commissioned")
        if not CSET82_VALUE.fullmatch(scan.serial):
            raise _invalid(f"serial {scan.serial!r} is not 1-20 GS1 CSET 82 characters")
        if len(scan.cell) > 12:
            raise _invalid("cell must be a coarse location cell of at most 12 characters")
        key = f"{scan.gtin}/{scan.serial}"
        record = read(state, "scans", key, st.ScanRecord) or st.ScanRecord()
        record.scans += 1
        if scan.cell:
            record.last_cell = scan.cell
            cells = sorted(set(record.cells) | {scan.cell})[:16]
            del record.cells[:]
            record.cells.extend(cells)
        record.last_scan_unix_s = max(record.last_scan_unix_s, scan.scan_unix_s)
        _claim_or_flag(read(state, "items", key, st.ItemRecord), record, scan)
        write(state, "scans", key, record)


def _claim_or_flag(item: st.ItemRecord | None, record: st.ScanRecord, scan: txpb.Scan) -> None:
    """After a sale, the first scan claims the item for its buyer; scans from elsewhere are counted."""
    if item is None or not item.sold_unix_s or scan.scan_unix_s < item.sold_unix_s:
        return
    if record.claimed_unix_s < item.sold_unix_s:  # never claimed since this sale
        record.claimed_unix_s = scan.scan_unix_s
        record.claimed_cell = scan.cell
        record.scans_elsewhere_after_claim = 0
    elif scan.cell and not record.claimed_cell:
        record.claimed_cell = scan.cell
    elif scan.cell and scan.cell != record.claimed_cell:
        record.scans_elsewhere_after_claim += 1


HANDLERS: dict[str, Callable[[Overlay, TxContext, Message], None]] = {
    "register_organization": register_organization,
    "remove_organization": remove_organization,
    "approve_membership": approve_membership,
    "add_agent": add_agent,
    "define_role": define_role,
    "grant_role": grant_role,
    "revoke_role": revoke_role,
    "add_key": add_key,
    "revoke_key": revoke_key,
    "register_location": register_location,
    "register_product": register_product,
    "update_product": update_product,
    "commission_batch": commission_batch,
    "record_event": record_event,
    "recall_lot": recall_lot,
    "void_labels": void_labels,
    "change_price": change_price,
    "create_promotion": create_promotion,
    "set_guardrail_policy": set_guardrail_policy,
    "set_replenishment_policy": set_replenishment_policy,
    "submit_ai_draft": submit_ai_draft,
    "approve_draft": approve_draft,
    "reject_draft": reject_draft,
    "record_scans": record_scans,
}
assert set(HANDLERS) == set(AUTHORIZATION)
