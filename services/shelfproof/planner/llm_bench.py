"""What Ray Serve costs the planner's model: the same schema-constrained restock prompts run on a bare
``LanguageEngine`` (vLLM's AsyncLLM in this process) and through the ``LLMServer`` deployment handle.

``measure_llm()`` returns one flat dict for the team's benchmark. Runs are paired (bare then served,
the order alternating from run to run) and the ratio is the median of the per-run ratios. Greedy
sampling makes both paths generate the same tokens for the same prompt.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import jsonschema

from shelfproof.planner import prompts
from shelfproof.planner.llm import LanguageEngine, LLMConfig, LLMSettings, start_local_llm, stop_local_llm

Generate = Callable[[list[dict[str, str]], dict, dict[str, Any]], Awaitable[dict[str, Any]]]


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


async def _batch(generate: Generate, batch: list, schema: dict, sampling: dict[str, Any]) -> tuple[list[dict], float]:
    started = time.perf_counter()
    answers = await asyncio.gather(*(generate(p, schema, sampling) for p in batch))
    return list(answers), time.perf_counter() - started


def measure_llm(
    config: LLMConfig | None = None,
    *,
    prompts_per_run: int = 8,
    runs: int = 5,
    max_tokens: int = prompts.RESTOCK_MAX_TOKENS,
    schema: dict[str, Any] | None = None,
    state_dir: Path = Path(".local"),
) -> dict[str, Any]:
    """Start a bare engine and the Serve app (its own local Ray), run ``runs`` paired batches of
    ``prompts_per_run`` concurrent requests (the drafter's restock schema unless ``schema`` is given),
    stop both, and return the numbers."""
    if runs < 1 or prompts_per_run < 1:
        raise ValueError("runs and prompts_per_run must be at least 1")
    config = (config or LLMSettings().llm_config()).resolved()
    schema = schema if schema is not None else prompts.RESTOCK_SCHEMA
    validator = jsonschema.Draft202012Validator(schema)
    sampling = {"max_tokens": max_tokens, "temperature": 0.0}
    batch = bench_prompts(prompts_per_run)

    started = time.monotonic()
    bare = LanguageEngine(config)
    bare_start_s = time.monotonic() - started
    try:
        local = start_local_llm(config, state_dir=state_dir)
        try:
            async def served(prompt, schema, sampling):
                return await local.handle.generate.remote(prompt, schema, sampling)

            paths: dict[str, Generate] = {"bare": bare.generate, "serve": served}

            async def run_all() -> dict[str, list[tuple[list[dict], float]]]:
                for generate in paths.values():  # warm-up: grammar compile, first batch shapes
                    await _batch(generate, batch[:2], schema, sampling)
                results: dict[str, list[tuple[list[dict], float]]] = {"bare": [], "serve": []}
                for i in range(runs):
                    order = ("bare", "serve") if i % 2 == 0 else ("serve", "bare")
                    for name in order:
                        results[name].append(await _batch(paths[name], batch, schema, sampling))
                return results

            results = asyncio.run(run_all())
            serve_start_s = local.serve_start_s
        finally:
            stop_local_llm()
    finally:
        bare.shutdown()

    def tokens(answers: list[dict]) -> int:
        return sum(a["completion_tokens"] for a in answers)

    def valid(answer: dict) -> bool:
        try:
            return validator.is_valid(json.loads(answer["text"]))
        except ValueError:
            return False

    bare_rates = [tokens(a) / s for a, s in results["bare"]]
    serve_rates = [tokens(a) / s for a, s in results["serve"]]
    every = [a for name in results for answers, _ in results[name] for a in answers]
    info = bare.info()
    return {
        "engine": info["engine"],
        "engine_version": info["engine_version"],
        "model": info["model"],
        "weights_digest": info["weights_digest"],
        "engine_start_s": round(bare.start_s, 2),
        "engine_start_with_import_s": round(bare_start_s, 2),
        "serve_start_s": round(serve_start_s, 2),
        "runs": runs,
        "prompts_per_run": prompts_per_run,
        "bare_tokens_per_s": round(statistics.median(bare_rates), 2),
        "serve_tokens_per_s": round(statistics.median(serve_rates), 2),
        "serve_vs_bare": round(statistics.median(s / b for s, b in zip(serve_rates, bare_rates)), 3),
        "schema_valid_fraction": round(sum(map(valid, every)) / len(every), 3),
        "generated_tokens": sum(tokens(a) for name in results for a, _ in results[name]),
        "same_tokens_both_paths": all(
            [x["text"] for x in ab] == [x["text"] for x in as_]
            for (ab, _), (as_, _) in zip(results["bare"], results["serve"])
        ),
    }


if __name__ == "__main__":  # vLLM starts worker processes: keep the entry point guarded
    print(json.dumps(measure_llm()))
