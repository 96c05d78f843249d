"""The model proposes; the guards and the schema decide. A fake model forces out-of-bound numbers."""

from __future__ import annotations

import json

import pytest

from shelfproof.ledger.core.rules import BPS, margin_floor_ok
from shelfproof.planner import prompts
from shelfproof.planner.drafter import Drafter, EngineInfo, Generation, parse
from shelfproof.planner.guard import PriceFacts, RestockCandidate, bound_promotion, bound_restock, max_discount_bps
from shelfproof.runtime.errors import GuardrailViolated

pytestmark = pytest.mark.unit


def _candidate(gtin: str, quantity: int, *, urgency: float = 0.5, case_pack: int = 6, moq: int = 12, max_qty: int = 120, cost: int = 250) -> RestockCandidate:
    return RestockCandidate(gtin, f"p{gtin}", 3, 2.5, 1.2, urgency, quantity, moq, max_qty, case_pack, cost, "reorder_point_reached")


class ScriptedModel:
    """Answers every request with what ``answer`` returns for its user prompt (a fake, for unit tests)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.requests: list[list[dict]] = []

    async def info(self) -> EngineInfo:
        return EngineInfo("fake", "0" * 64, "fake", "0")

    async def generate(self, messages, json_schema, sampling) -> Generation:
        self.requests.append(messages)
        return Generation(self.answer(messages[-1]["content"]), 42, "stop")


def _gtins_in(prompt: str) -> list[str]:
    return [line.split(",")[0] for line in prompt.splitlines() if line[:1].isdigit() and "," in line]


async def test_out_of_bound_proposals_are_replaced_by_the_policys_quantities():
    candidates = [_candidate(f"0000000000{n:04d}", 24, urgency=n / 100) for n in range(12)]
    silly = {0: 10**6, 1: 7, 2: 13, 3: 0, 4: 36}  # above max, below MOQ, not whole cases, zero, fine

    def answer(prompt: str) -> str:
        lines = [{"gtin": g, "quantity": silly.get(int(g[-4:]), 24), "reason": "stock is low"} for g in _gtins_in(prompt)]
        lines.append({"gtin": "99999999999999", "quantity": 48, "reason": "not a candidate"})
        return json.dumps({"lines": lines[: prompts.LINES_PER_REQUEST]})

    model = ScriptedModel(answer)
    output, proposals = await Drafter(model, urgent_lines=50).restock("0614141000029", candidates, 10**9, "EUR")
    assert len(model.requests) == 3 and output.schema_valid == 3 and output.generated_tokens == 126
    bounded = bound_restock(candidates, proposals, budget_left_minor=10**9)
    quantities = {c.gtin: q for c, q in bounded.lines}
    for n, proposed in silly.items():
        expected = 36 if proposed == 36 else 24
        assert quantities[f"0000000000{n:04d}"] == expected
    for c, q in bounded.lines:  # every line is orderable whatever the model said
        assert c.min_order_qty <= q <= c.max_order_qty and q % c.case_pack == 0
    assert {a.gtin for a in bounded.adjustments if a.why.startswith(("above", "below", "not a multiple"))} == {
        "00000000000000", "00000000000001", "00000000000002", "00000000000003"
    }


async def test_model_increases_that_break_the_budget_fall_back_to_the_policy():
    candidates = [_candidate("00000000000001", 24), _candidate("00000000000002", 24)]
    proposals = {"00000000000001": (120, "more"), "00000000000002": (120, "more")}
    bounded = bound_restock(candidates, proposals, budget_left_minor=2 * 24 * 250)
    assert [q for _, q in bounded.lines] == [24, 24] and bounded.total_minor == 12_000
    assert bound_restock(candidates, proposals, budget_left_minor=10**9).total_minor == 240 * 250


async def test_the_most_urgent_lines_are_the_ones_the_model_explains():
    candidates = [_candidate(f"0000000000{n:04d}", 24 if n % 2 else 0, urgency=n / 200) for n in range(200)]
    model = ScriptedModel(lambda p: json.dumps({"lines": [{"gtin": g, "quantity": 24, "reason": "r"} for g in _gtins_in(p)]}))
    _, proposals = await Drafter(model, urgent_lines=50).restock("0614141000029", candidates, 10**9, "EUR")
    assert len(proposals) == 50 and min(int(g) for g in proposals) == 101  # the 50 odd (ordering) lines 101..199


def test_invalid_answers_are_caught_by_the_schema():
    assert parse("restock", '{"lines": [{"gtin": "123", "quantity": 1, "reason": "x"}]}')[0] is None
    assert parse("restock", '{"lines": [') == (None, parse("restock", '{"lines": [')[1]) and "not JSON" in parse("restock", "{")[1]
    assert parse("restock", '{"lines": []}')[0] is None  # minItems
    ok, _ = parse("promotion", json.dumps({"gtins": ["00614141123452"], "discount_bps": 500, "start_in_days": 1,
                                           "duration_days": 7, "customer_copy": "5% off", "rationale": "slow"}))
    assert ok is not None


def test_max_discount_is_exact_at_the_ledgers_integer_margin_floor():
    for price, cost, floor in [(999, 500, 1000), (1000, 1000, 0), (12345, 7000, 2500), (200, 199, 0)]:
        d = max_discount_bps(price, cost, floor)
        assert margin_floor_ok(price * (BPS - d) // BPS, cost, floor)
        assert d == BPS - 1 or not margin_floor_ok(price * (BPS - d - 1) // BPS, cost, floor)
    assert max_discount_bps(500, 600, 0) == 0


def test_promotion_discount_is_cut_to_what_every_product_and_the_policy_allow():
    products = {
        "00000000000001": PriceFacts("00000000000001", "a", 1000, 500, 40.0),
        "00000000000002": PriceFacts("00000000000002", "b", 1000, 800, 30.0),  # room: 1000*(1-d) >= 880 -> d <= 1200
        "00000000000003": PriceFacts("00000000000003", "c", 1000, 1000, 90.0),  # no room at a 10 % floor
    }
    proposal = {"gtins": ["00000000000001", "00000000000002", "00000000000003", "42424242424242"], "discount_bps": 9000,
                "start_in_days": 2, "duration_days": 7, "customer_copy": "Big sale", "rationale": "slow movers"}
    bounded = bound_promotion(proposal, products, max_policy_discount_bps=3000, margin_floor_bps=1000)
    assert bounded.gtins == ["00000000000001", "00000000000002"] and bounded.discount_bps == 1200
    assert {a.why for a in bounded.adjustments} == {"not a candidate of this draft", "no room above the margin floor", "above the largest allowed discount"}
    with pytest.raises(GuardrailViolated):
        bound_promotion(dict(proposal, gtins=["00000000000003"]), products, max_policy_discount_bps=3000, margin_floor_bps=1000)


def test_token_limits_fit_the_longest_valid_answer():
    longest_line = {"gtin": "9" * 14, "quantity": 10_000_000, "reason": "r" * prompts.REASON_MAX_CHARS}
    restock = {"lines": [longest_line] * prompts.LINES_PER_REQUEST}
    promotion = {"gtins": ["9" * 14] * 5, "discount_bps": 9999, "start_in_days": 14, "duration_days": 28,
                 "customer_copy": "c" * 120, "rationale": "r" * 160}
    for schema, answer, limit in (("restock", restock, prompts.RESTOCK_MAX_TOKENS), ("promotion", promotion, prompts.PROMOTION_MAX_TOKENS)):
        text = json.dumps(answer, separators=(",", ":"))
        assert parse(schema, text)[0] is not None and len(text) == limit
        assert limit <= 512  # the engine's per-request cap (LLMConfig.max_tokens)
