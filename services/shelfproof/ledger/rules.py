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

from shelfproof.gs1.epcis import item_of
from shelfproof.gs1.keys import CSET82_VALUE, InvalidGs1Key, normalize_gtin, validate_gln
from shelfproof.ledger.codes import ResultCode, TxRejected
from shelfproof.ledger.state import Overlay
from shelfproof.ledger.tx import key_id_for
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
_PERMISSION = re.compile(r"[a-z][a-z-]*::[a-z][a-z-]*", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_COUNTRY_CODE = re.compile(r"[A-Z]{2}", re.ASCII)
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}", re.ASCII)

# Permission each action needs (an organization's agents act on that organization's resources).
PERMISSIONS: dict[str, str] = {
    "register_organization": "org::register",
    "add_agent": "agent::add",
    "define_role": "role::define",
    "grant_role": "role::grant",
    "revoke_role": "role::grant",
    "add_key": "key::manage",
    "revoke_key": "key::manage",
    "register_location": "location::register",
    "register_product": "product::register",
    "update_product": "product::update",
    "commission_batch": "batch::commission",
    "record_event": "event::record",
    "recall_lot": "recall::create",
    "void_labels": "label::void",
    "change_price": "price::change",
    "create_promotion": "promotion::create",
    "set_guardrail_policy": "policy::set",
    "set_replenishment_policy": "policy::set",
    "submit_ai_draft": "draft::submit",
    "approve_draft": "order::approve-ai-draft",
    "reject_draft": "order::approve-ai-draft",
    "record_scans": "scan::record",
}
# Actions whose handler checks permission itself (an agent may always rotate its own keys).
SELF_SERVICE_ACTIONS = frozenset({"add_key", "revoke_key"})
# Holders may act across organizations (the consortium operator onboarding members).
CONSORTIUM_PERMISSION = "org::register"


@dataclass(frozen=True)
class TxContext:
    height: int
    time_unix_s: int
    tx_hash: bytes
    signer: st.AgentRecord
    permissions: frozenset[str]


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


def _same_org(ctx: TxContext, org_gln: str) -> None:
    if org_gln != ctx.signer.organization_gln and CONSORTIUM_PERMISSION not in ctx.permissions:
        raise TxRejected(
            ResultCode.PERMISSION_DENIED,
            f"{ctx.signer.agent_id} belongs to {ctx.signer.organization_gln}, not {org_gln}",
        )


def _require_org(state: Overlay, gln: str) -> st.OrganizationRecord:
    org = read(state, "orgs", gln, st.OrganizationRecord)
    if org is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"organization {gln} is not registered")
    return org


def _owned_product(state: Overlay, ctx: TxContext, gtin: str) -> st.ProductRecord:
    product = read(state, "products", _gtin(gtin), st.ProductRecord)
    if product is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"product {gtin} is not registered")
    _same_org(ctx, product.brand_owner_gln)
    return product


def _policy(state: Overlay, org_gln: str) -> st.GuardrailPolicy | None:
    return read(state, "policies", org_gln, txpb.GuardrailPolicy)


def _guardrail(message: str) -> TxRejected:
    return TxRejected(ResultCode.GUARDRAIL_VIOLATED, message)


# --- organizations, agents, roles, keys ---------------------------------------------------------


def register_organization(state: Overlay, ctx: TxContext, a: txpb.RegisterOrganization) -> None:
    gln = _gln(a.gln)
    _text(a.name, "name")
    if read(state, "orgs", gln, st.OrganizationRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"organization {gln} is already registered")
    write(state, "orgs", gln, st.OrganizationRecord(gln=gln, name=a.name, registered_height=ctx.height))


def add_agent(state: Overlay, ctx: TxContext | None, a: txpb.AddAgent) -> None:
    """Also used by InitChain (ctx None) for the genesis agents."""
    agent_id = _identifier(a.agent_id, "agent_id")
    _require_org(state, _gln(a.organization_gln))
    if ctx is not None:
        _same_org(ctx, a.organization_gln)
    if read(state, "agents", agent_id, st.AgentRecord) is not None:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"agent {agent_id} exists")
    if len(a.public_key) != 32:
        raise _invalid("public_key must be a 32-byte Ed25519 key")
    roles = sorted(set(a.roles))
    for role in roles:
        if read(state, "roles", f"{a.organization_gln}/{role}", st.RoleRecord) is None:
            raise TxRejected(ResultCode.NOT_FOUND, f"role {role} is not defined in {a.organization_gln}")
    write(
        state,
        "agents",
        agent_id,
        st.AgentRecord(
            agent_id=agent_id,
            organization_gln=a.organization_gln,
            keys=[st.AgentKey(key_id=_identifier(a.key_id, "key_id"), public_key=a.public_key)],
            roles=roles,
        ),
    )
    _index_key(state, agent_id, a.organization_gln, a.key_id, a.public_key)


def _index_key(state: Overlay, agent_id: str, org_gln: str, key_id: str, public_key: bytes, revoked: bool = False) -> None:
    """The ``keys`` store: a key by its fingerprint, so a label's ``kid`` proves whose key signed it."""
    fingerprint = key_id_for(public_key)
    known = read(state, "keys", fingerprint, st.KeyRecord)
    if known is not None and known.agent_id != agent_id:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"public key {fingerprint} belongs to another agent")
    write(
        state,
        "keys",
        fingerprint,
        st.KeyRecord(
            fingerprint=fingerprint, agent_id=agent_id, organization_gln=org_gln, public_key=public_key,
            key_id=key_id, revoked=revoked,
        ),
    )


def define_role(state: Overlay, ctx: TxContext | None, a: txpb.DefineRole) -> None:
    _require_org(state, _gln(a.organization_gln))
    if ctx is not None:
        _same_org(ctx, a.organization_gln)
    _identifier(a.role, "role")
    for permission in a.permissions:
        if not _PERMISSION.fullmatch(permission):
            raise _invalid(f"permission {permission!r} is not of the form 'noun::verb'")
    write(
        state,
        "roles",
        f"{a.organization_gln}/{a.role}",
        st.RoleRecord(organization_gln=a.organization_gln, role=a.role, permissions=sorted(set(a.permissions))),
    )


def _agent_in_org(state: Overlay, ctx: TxContext, agent_id: str) -> st.AgentRecord:
    agent = read(state, "agents", agent_id, st.AgentRecord)
    if agent is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"agent {agent_id} does not exist")
    _same_org(ctx, agent.organization_gln)
    return agent


def grant_role(state: Overlay, ctx: TxContext, a: txpb.GrantRole) -> None:
    agent = _agent_in_org(state, ctx, a.agent_id)
    if read(state, "roles", f"{agent.organization_gln}/{a.role}", st.RoleRecord) is None:
        raise TxRejected(ResultCode.NOT_FOUND, f"role {a.role} is not defined in {agent.organization_gln}")
    roles = sorted(set(agent.roles) | {a.role})
    del agent.roles[:]
    agent.roles.extend(roles)
    write(state, "agents", agent.agent_id, agent)


def revoke_role(state: Overlay, ctx: TxContext, a: txpb.RevokeRole) -> None:
    agent = _agent_in_org(state, ctx, a.agent_id)
    if a.role not in agent.roles:
        raise TxRejected(ResultCode.NOT_FOUND, f"{a.agent_id} does not hold role {a.role}")
    roles = [r for r in agent.roles if r != a.role]
    del agent.roles[:]
    agent.roles.extend(roles)
    write(state, "agents", agent.agent_id, agent)


def _self_or_manager(state: Overlay, ctx: TxContext, agent_id: str) -> st.AgentRecord:
    if agent_id == ctx.signer.agent_id:
        return read(state, "agents", agent_id, st.AgentRecord)
    if PERMISSIONS["add_key"] not in ctx.permissions:
        raise TxRejected(ResultCode.PERMISSION_DENIED, "only the agent itself or a key manager may change keys")
    return _agent_in_org(state, ctx, agent_id)


def add_key(state: Overlay, ctx: TxContext, a: txpb.AddKey) -> None:
    agent = _self_or_manager(state, ctx, a.agent_id)
    _identifier(a.key_id, "key_id")
    if len(a.public_key) != 32:
        raise _invalid("public_key must be a 32-byte Ed25519 key")
    if any(k.key_id == a.key_id for k in agent.keys):
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"key {a.key_id} exists (key ids are never reused)")
    agent.keys.add(key_id=a.key_id, public_key=a.public_key)
    write(state, "agents", agent.agent_id, agent)
    _index_key(state, agent.agent_id, agent.organization_gln, a.key_id, a.public_key)


def revoke_key(state: Overlay, ctx: TxContext, a: txpb.RevokeKey) -> None:
    agent = _self_or_manager(state, ctx, a.agent_id)
    for key in agent.keys:
        if key.key_id == a.key_id:
            if key.revoked:
                raise TxRejected(ResultCode.FAILED_PRECONDITION, f"key {a.key_id} is already revoked")
            key.revoked = True
            write(state, "agents", agent.agent_id, agent)
            _index_key(state, agent.agent_id, agent.organization_gln, key.key_id, key.public_key, revoked=True)
            return
    raise TxRejected(ResultCode.NOT_FOUND, f"{a.agent_id} has no key {a.key_id}")


def register_location(state: Overlay, ctx: TxContext, a: txpb.RegisterLocation) -> None:
    gln = _gln(a.gln)
    _require_org(state, _gln(a.organization_gln))
    _same_org(ctx, a.organization_gln)
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


def record_event(state: Overlay, ctx: TxContext, a: txpb.RecordEvent) -> None:
    if not _EVENT_HASH.fullmatch(a.event_hash):
        raise _invalid("event_hash must be a CBV 2.0 event hash id (ni:///sha-256;<hex>?ver=CBV2.0)")
    if a.event_type not in {"ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"}:
        raise _invalid(f"unknown EPCIS event type {a.event_type!r}")
    if len(a.epcs) > MAX_EPCS_PER_EVENT:
        raise _invalid(f"at most {MAX_EPCS_PER_EVENT} EPCs per event")
    if a.biz_location_gln:
        _gln(a.biz_location_gln)
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
    for epc in sorted(set(a.epcs)):
        if (item := item_of(epc)) is not None:
            _record_custody(state, item, step)


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
    location = _gln(a.location_gln)
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
    _gln(p.location_gln)
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
    location = _gln(a.location_gln)
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
        bounds_record = read(state, "replenishment", f"{org}/{location}", txpb.ReplenishmentPolicy)
        if bounds_record is None:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, f"no replenishment policy for {org} at {location}")
        bounds = {item.gtin: item for item in bounds_record.items}
        seen: set[str] = set()
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
    draft = _pending_draft(state, ctx, a.draft_id)
    approver = ctx.signer.agent_id
    if approver == draft.submitted_by:
        raise TxRejected(ResultCode.PERMISSION_DENIED, "the submitter of a draft cannot approve it")
    if approver in draft.approvers:
        raise TxRejected(ResultCode.ALREADY_EXISTS, f"{approver} already approved {a.draft_id}")
    approvers = sorted([*draft.approvers, approver])
    del draft.approvers[:]
    draft.approvers.extend(approvers)
    if len(approvers) >= draft.approvals_required:
        policy = _policy(state, draft.draft.organization_gln)
        if policy is None:
            raise TxRejected(ResultCode.FAILED_PRECONDITION, "the guardrail policy is gone")
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
    if not 1 <= len(a.scans) <= MAX_SCANS_PER_TX:
        raise _invalid(f"between 1 and {MAX_SCANS_PER_TX} scans per transaction")
    for scan in a.scans:
        _gtin(scan.gtin)
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
assert set(HANDLERS) == set(PERMISSIONS)
