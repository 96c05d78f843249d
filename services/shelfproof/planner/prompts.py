"""What the model is asked and the shape its answer must take: prompt templates, JSON schemas, and the
canonical hashes a decision record names.

Arrays have ``maxItems`` and strings ``maxLength``: a small model can otherwise loop inside an array
until its token limit and leave invalid JSON. The token limits below fit the longest valid answer.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Lines the model explains per request: small requests run concurrently in the engine's batch.
LINES_PER_REQUEST = 5
REASON_MAX_CHARS = 80

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
                    "gtin": {"type": "string", "pattern": "^[0-9]{14}$"},
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
        "gtins": {"type": "array", "minItems": 1, "maxItems": 5, "items": {"type": "string", "pattern": "^[0-9]{14}$"}},
        "discount_bps": {"type": "integer", "minimum": 1, "maximum": 9999},
        "start_in_days": {"type": "integer", "minimum": 0, "maximum": 14},
        "duration_days": {"type": "integer", "minimum": 1, "maximum": 28},
        "customer_copy": {"type": "string", "minLength": 1, "maxLength": 200},
        "rationale": {"type": "string", "minLength": 1, "maxLength": 300},
    },
    "required": ["gtins", "discount_bps", "start_in_days", "duration_days", "customer_copy", "rationale"],
    "additionalProperties": False,
}

# Tokens for the longest valid answer (digits and JSON punctuation are about a token per one to three
# characters; text about four characters a token), with room to spare.
RESTOCK_MAX_TOKENS = 60 + LINES_PER_REQUEST * (30 + REASON_MAX_CHARS // 2)
PROMOTION_MAX_TOKENS = 80 + 5 * 12 + (200 + 300) // 2

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
