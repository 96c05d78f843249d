"""The state machine's domain rules: who may do what, and the guardrails every validator enforces.

Each handler reads and writes through an ``Overlay`` and raises ``TxRejected`` to refuse; it may use
only the transaction, the committed state and the block's height and time (never the wall clock,
randomness or floats), so every validator reaches the same result.

One module per domain (``membership``, ``catalogue``, ``pricing``, ``drafts``, ``orders``, ``scans``), the one
``AUTHORIZATION`` table in ``authorization``, and ``HANDLERS`` here: the action each body names → its rule.
"""

from __future__ import annotations

from typing import Callable

from google.protobuf.message import Message

from shelfproof.ledger.core.rules.authorization import (
    AUTHORIZATION,
    CONSORTIUM_PERMISSIONS,
    MAX_SCAN_SKEW_S,
    PERMISSIONS,
    authorize,
    key_possession_bytes,
    prove_possession,
)
from shelfproof.ledger.core.rules.catalogue import (
    commission_batch,
    recall_lot,
    record_event,
    register_product,
    update_product,
    void_labels,
)
from shelfproof.ledger.core.rules.common import BPS, TxContext, permissions_of, read, write
from shelfproof.ledger.core.rules.drafts import approve_draft, reject_draft, set_replenishment_policy, submit_ai_draft
from shelfproof.ledger.core.rules.membership import (
    add_agent,
    add_key,
    approve_membership,
    define_role,
    grant_role,
    load_genesis,
    register_location,
    register_organization,
    remove_organization,
    revoke_key,
    revoke_role,
)
from shelfproof.ledger.core.rules.orders import acknowledge_purchase_order, close_purchase_order
from shelfproof.ledger.core.rules.pricing import (
    change_price,
    create_promotion,
    end_promotion,
    margin_floor_ok,
    record_promotion_redemptions,
    run_price_schedule,
    schedule_price_change,
    set_guardrail_policy,
)
from shelfproof.ledger.core.rules.scans import clear_compromise, declare_markets, record_scans
from shelfproof.ledger.core.state import Overlay

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
    "declare_markets": declare_markets,
    "clear_compromise": clear_compromise,
    "acknowledge_purchase_order": acknowledge_purchase_order,
    "close_purchase_order": close_purchase_order,
    "schedule_price_change": schedule_price_change,
    "record_promotion_redemptions": record_promotion_redemptions,
    "end_promotion": end_promotion,
}
assert set(HANDLERS) == set(AUTHORIZATION)

__all__ = [
    "AUTHORIZATION", "BPS", "CONSORTIUM_PERMISSIONS", "HANDLERS", "MAX_SCAN_SKEW_S", "PERMISSIONS", "TxContext",
    "authorize", "key_possession_bytes", "load_genesis", "margin_floor_ok", "permissions_of", "prove_possession",
    "read", "run_price_schedule", "write",
]
