"""What the model is asked and the shape its answer must take: prompt templates, JSON schemas, and the
canonical hashes a decision record names.

Arrays have ``maxItems`` and strings ``maxLength``: a small model can otherwise loop inside an array
until its token limit and leave invalid JSON. The token limits below fit the longest valid answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# Lines the model explains per request: small requests run concurrently in the engine's batch.
LINES_PER_REQUEST = 4
REASON_MAX_CHARS = 60
# (xgrammar takes a pattern or length bounds on a string, not both.)
GTIN = {"type": "string", "pattern": "^[0-9]{14}$"}
_FIXED_LENGTH = re.compile(r"^\^\[[^\]]+\]\{(\d+)\}\$$")

RESTOCK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": LINES_PER_REQUEST,
            "items": {
                "type": "object",
                "properties": {
                    "gtin": GTIN,
                    "quantity": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
                    "reason": {"type": "string", "minLength": 1, "maxLength": REASON_MAX_CHARS},
                },
                "required": ["gtin", "quantity", "reason"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["lines"],
    "additionalProperties": False,
}

PROMOTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "gtins": {"type": "array", "minItems": 1, "maxItems": 5, "items": GTIN},
        "discount_bps": {"type": "integer", "minimum": 1, "maximum": 9999},
        "start_in_days": {"type": "integer", "minimum": 0, "maximum": 14},
        "duration_days": {"type": "integer", "minimum": 1, "maximum": 28},
        "customer_copy": {"type": "string", "minLength": 1, "maxLength": 120},
        "rationale": {"type": "string", "minLength": 1, "maxLength": 160},
    },
    "required": ["gtins", "discount_bps", "start_in_days", "duration_days", "customer_copy", "rationale"],
    "additionalProperties": False,
}



def longest_json_chars(schema: dict[str, Any]) -> int:
    """Characters of the longest valid answer in compact JSON (the engine emits no optional whitespace).
    A token is at least one character of ASCII text, so this many tokens always fit the whole answer:
    an answer cut short by the token limit would be invalid JSON."""
    kind = schema["type"]
    if kind == "object":
        props = schema["properties"]
        return 2 + sum(len(json.dumps(k)) + 1 + longest_json_chars(v) for k, v in props.items()) + len(props) - 1
    if kind == "array":
        n = schema["maxItems"]
        return 2 + n * longest_json_chars(schema["items"]) + n - 1
    if kind == "string":
        if "pattern" in schema:
            return 2 + int(_FIXED_LENGTH.match(schema["pattern"]).group(1))
        return 2 + schema["maxLength"]
    if kind == "integer":
        return max(len(str(schema["maximum"])), len(str(schema["minimum"])))
    raise ValueError(f"no length bound for {kind!r}")


RESTOCK_MAX_TOKENS = longest_json_chars(RESTOCK_SCHEMA)
PROMOTION_MAX_TOKENS = longest_json_chars(PROMOTION_SCHEMA)

SYSTEM = (
    "You are a retail replenishment planner. Answer with JSON only. Quantities must respect each line's "
    "minimum, maximum and case pack. Reasons are short and cite the numbers."
)

RESTOCK_TEMPLATE = (
    "Location {location}. Budget left {budget_left} {currency} minor units.\n"
    "For each line propose an order quantity and a one-sentence reason.\n"
    "Lines (gtin, name, on hand, daily demand, days of cover, policy quantity, min, max, case pack):\n"
    "{lines}"
)

# One line of the restock table, and of the promotion's product list: they shape the prompt as much as
# the templates do, so the template hash covers them too.
RESTOCK_LINE = (
    "{gtin}, {name}, {on_hand}, {mean_daily_demand:.2f}, {days_of_cover:.1f}, {quantity}, {min_order_qty}, "
    "{max_order_qty}, {case_pack}"
)
PROMOTION_LINE = "{gtin}, {name}, {price_minor}, {cost_minor}, {days_of_cover:.1f}"
# Characters of a product name a line shows.
LINE_NAME_CHARS = 40

PROMOTION_TEMPLATE = (
    "Location {location}. Maximum discount {max_discount_bps} basis points; no price may fall below cost "
    "plus {margin_floor_bps} basis points.\n"
    "Slow-moving products (gtin, name, price, cost, days of cover):\n{products}\n"
    "Propose one promotion: products, discount in basis points, start and length in days, a short "
    "customer-facing text and your rationale."
)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def messages(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
