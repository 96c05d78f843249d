"""The planner's model measured: tokens/s of a bare ``LanguageEngine`` (vLLM's AsyncLLM in this process)
per dtype, what Ray Serve costs (the same schema-constrained restock prompts bare and through the
``LLMServer`` deployment handle), and schema validity over varied drafter inputs.

Runs are paired (bare then served, the order alternating from run to run) and the ratio is the median of
the per-run ratios. Greedy sampling makes both paths generate the same tokens for the same prompt.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from typing import Any, Awaitable, Callable

import jsonschema

from shelfproof.planner import prompts
from shelfproof.planner.guard import PriceFacts, RestockCandidate
from shelfproof.planner.llm import LanguageEngine, LLMConfig, LocalLLM

Generate = Callable[[list[dict[str, str]], dict, dict[str, Any]], Awaitable[dict[str, Any]]]
Batch = tuple[list[dict], float]


def bench_prompts(count: int) -> list[list[dict[str, str]]]:
    """``count`` different restock requests in the planner's own prompt format (deterministic)."""
    out = []
    for i in range(count):
        lines = []
        for j in range(1 + i % prompts.LINES_PER_REQUEST):
            gtin = f"{4_000_000_000_000 + 1_013 * i + 7 * j:014d}"
            on_hand = (37 * i + 11 * j) % 60
            demand = 0.5 + ((i * 3 + j) % 9) * 0.75
            quantity = max(12, int(demand * 14) // 6 * 6)
            lines.append(
                f"{gtin}, Item {i}-{j}, {on_hand}, {demand:.2f}, {on_hand / demand:.1f}, {quantity}, 6, 600, 6"
            )
        user = prompts.RESTOCK_TEMPLATE.format(
            location=f"{4012345000009 + i:013d}", budget_left=50_000 + 1_000 * i, currency="EUR", lines="\n".join(lines)
        )
        out.append(prompts.messages(user))
    return out


def _gtin(n: int) -> str:
    from shelfproof.gs1.keys import check_digit

    body = f"0401234{n:06d}"
    return body + str(check_digit(body))


def varied_candidates(rng: random.Random, n: int) -> list[RestockCandidate]:
    """Restock candidates as the inventory policy makes them (0, or whole cases between the minimum and
    the maximum), with varied names, stock, demand and packs."""
    out = []
    for k in range(n):
        pack = rng.choice([1, 4, 6, 12, 24])
        moq = pack * rng.randint(1, 4)
        max_qty = moq + pack * rng.randint(10, 100)
        demand = rng.choice([0.0, 0.2, 1.5, 4.0, 12.5, 40.0])
        quantity = rng.choice([0, moq, moq * 2, min(max_qty, pack * rng.randint(5, 40))]) if k else moq
        out.append(RestockCandidate(
            gtin=_gtin(rng.randint(1, 999_999)),
            name=rng.choice(["Olive oil 1 l", "Pasta 500 g", "Coffee beans", "Rice 2 kg", "Tea"]) + f" #{k}",
            on_hand=rng.randint(-5, 300), mean_daily_demand=demand, days_of_cover=round(rng.uniform(-2, 90), 1),
            urgency=rng.random(), quantity=max(quantity, moq) if quantity else 0, min_order_qty=moq,
            max_order_qty=max_qty, case_pack=pack, unit_cost_minor=rng.randint(50, 5000),
            reason_code="reorder_point_reached",
        ))
    return out


def varied_drafts(drafter: Any, count: int, seed: int = 7) -> list[Awaitable]:
    """``count`` drafter calls over varied inputs, four restocks to one promotion."""
    rng = random.Random(seed)
    calls = []
    for k in range(count):
        if k % 5 == 4:
            products = [
                PriceFacts(_gtin(rng.randint(1, 999_999)), f"Item {k}-{j}", rng.randint(200, 5000), rng.randint(100, 199), rng.uniform(5, 200))
                for j in range(rng.randint(1, 6))
            ]
            calls.append(drafter.promotion(
                "0614141000036", products, max_discount_bps=rng.choice([500, 1500, 3000]), margin_floor_bps=rng.choice([0, 1000]),
            ))
        else:
            calls.append(drafter.restock(
                f"{4012345000000 + k:013d}", varied_candidates(rng, rng.randint(1, 5)), rng.randint(0, 10**7), rng.choice(["EUR", "USD"]),
            ))
    return calls


# A warm-up compiles the schema's grammar and runs the first batch shapes; a few tokens do that as well as
# a whole answer, which takes 50-85 s on one thread of an AVX2-only core.
WARM_UP = {"max_tokens": 8, "temperature": 0.0}


async def _batch(generate: Generate, batch: list, schema: dict, sampling: dict[str, Any]) -> Batch:
    started = time.perf_counter()
    answers = await asyncio.gather(*(generate(p, schema, sampling) for p in batch))
    return list(answers), time.perf_counter() - started


def _tokens(answers: list[dict]) -> int:
    return sum(a["completion_tokens"] for a in answers)


def _rate(results: list[Batch]) -> float:
    return round(statistics.median(_tokens(a) / s for a, s in results), 2)


async def bare_tokens_per_s(config: LLMConfig, *, prompts_per_run: int, runs: int, max_tokens: int) -> dict[str, Any]:
    """One bare engine in ``config.dtype``: started, warmed, ``runs`` batches, stopped."""
    engine = await asyncio.to_thread(LanguageEngine, config)
    try:
        batch, sampling = bench_prompts(prompts_per_run), {"max_tokens": max_tokens, "temperature": 0.0}
        await _batch(engine.generate, batch[:2], prompts.RESTOCK_SCHEMA, WARM_UP)
        results = [await _batch(engine.generate, batch, prompts.RESTOCK_SCHEMA, sampling) for _ in range(runs)]
        return {"tokens_per_s": _rate(results), "engine_start_s": round(engine.start_s, 2)}
    finally:
        engine.shutdown()


async def bare_vs_serve(
    bare: LanguageEngine, local: LocalLLM, *, prompts_per_run: int, runs: int, max_tokens: int, schema: dict | None = None
) -> dict[str, Any]:
    """The same batches on the bare engine and through Serve, paired; tokens/s, ratio, schema validity."""
    schema = schema if schema is not None else prompts.RESTOCK_SCHEMA
    validator = jsonschema.Draft202012Validator(schema)
    sampling = {"max_tokens": max_tokens, "temperature": 0.0}
    batch = bench_prompts(prompts_per_run)

    async def served(prompt, schema, sampling):
        return await local.handle.generate.remote(prompt, schema, sampling)

    paths: dict[str, Generate] = {"bare": bare.generate, "serve": served}
    for generate in paths.values():
        await _batch(generate, batch[:2], schema, WARM_UP)
    results: dict[str, list[Batch]] = {"bare": [], "serve": []}
    for i in range(runs):
        for name in ("bare", "serve") if i % 2 == 0 else ("serve", "bare"):
            results[name].append(await _batch(paths[name], batch, schema, sampling))

    def valid(answer: dict) -> bool:
        try:
            return validator.is_valid(json.loads(answer["text"]))
        except ValueError:
            return False

    every = [a for name in results for answers, _ in results[name] for a in answers]
    bare_rates = [_tokens(a) / s for a, s in results["bare"]]
    serve_rates = [_tokens(a) / s for a, s in results["serve"]]
    return {
        "runs": runs,
        "prompts_per_run": prompts_per_run,
        "bare_tokens_per_s": _rate(results["bare"]),
        "serve_tokens_per_s": _rate(results["serve"]),
        "serve_vs_bare": round(statistics.median(s / b for s, b in zip(serve_rates, bare_rates)), 3),
        "schema_valid_fraction": round(sum(map(valid, every)) / len(every), 3),
        "generated_tokens": sum(_tokens(a) for name in results for a, _ in results[name]),
        "same_tokens_both_paths": all(
            [x["text"] for x in ab] == [x["text"] for x in as_]
            for (ab, _), (as_, _) in zip(results["bare"], results["serve"])
        ),
    }


async def drafts_schema_validity(drafter: Any, count: int, concurrency: int = 16) -> dict[str, Any]:
    """``count`` varied drafter inputs through Serve, ``concurrency`` at a time (the engine batches 16
    sequences; more only queue, and past the Drafter's ``max_ongoing_requests`` Serve rejects and
    retries): the fraction of model calls whose answer parses against its schema and stopped by itself."""
    from shelfproof.planner.drafter import parse

    gate = asyncio.Semaphore(concurrency)

    async def gated(call: Awaitable) -> Any:
        async with gate:
            return await call

    started = time.perf_counter()
    results = await asyncio.gather(*(gated(c) for c in varied_drafts(drafter, count)))
    calls = [call for output, _ in results for call in output.calls]
    valid = [c for c in calls if parse(c.schema, c.generation.text)[0] is not None and c.generation.finish_reason == "stop"]
    return {
        "drafts": count,
        "draft_model_calls": len(calls),
        "drafts_schema_valid_fraction": round(len(valid) / max(1, len(calls)), 3),
        "drafts_s": round(time.perf_counter() - started, 2),
    }
