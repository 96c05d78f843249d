"""The consortium, its members, their agents, roles and keys."""

from __future__ import annotations

from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.core.rules.authorization import (
    APPROVALS,
    CONSORTIUM_PERMISSIONS,
    KNOWN_PERMISSIONS,
    MAX_KEYS_PER_AGENT,
    MAX_PERMISSIONS_PER_ROLE,
    MAX_ROLES_PER_AGENT,
    key_possession_bytes,
)
from shelfproof.ledger.core.rules.common import (
    _COUNTRY_CODE,
    TxContext,
    _claim_prefix,
    _denied,
    _gln,
    _identifier,
    _invalid,
    _own_gln,
    _prefixes,
    _require_org,
    _same_org,
    _text,
    permissions_of,
    read,
    write,
)
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.core.tx import key_id_for
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

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
