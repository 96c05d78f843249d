"""The benchmark report: `make bench` writes each benchmark's JSON object to ``<dir>/<name>.json`` and then
runs ``python -m shelfproof.bench.report <dir>``, which writes ``report.json`` and ``report.md`` beside them.

The report names each benchmark's key figures, the target where the project set one (the benchmark's own
``targets`` object wins over the value here; a target that holds only for a full-size run says so and
is not judged on a smaller one), whether it is met, and the machine it ran on (the ``calibration``
object every benchmark carries: CPU model, cores, memory, per-core speed). A benchmark whose file is
missing or not JSON is listed as failed with its log, never dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from shelfproof.bench import BENCHMARKS

REPORT_JSON, REPORT_MD = "report.json", "report.md"


@dataclass(frozen=True)
class Figure:
    """A key figure at ``path`` (dots; a list index may be negative) and how it is judged: ``op`` against
    ``target``, or against the number at ``target_path`` in the same result (e.g. ``targets.cpu_ms``);
    ``applies`` says whether the run was the size the target is for."""

    path: str
    op: str = ""  # ">=", "<=", "==" or "" (reported, not judged)
    target: float | None = None
    target_path: str = ""
    applies: Callable[[dict], bool] = lambda result: True
    condition: str = ""  # what ``applies`` asks, for the table


def _full_verify_run(result: dict) -> bool:
    return result.get("engine") == "cometbft" and (result.get("offered_rate") or 0) >= 1000


VERIFY_CONDITION = "at 1,000/s on CometBFT"

# Key figures per benchmark; targets as the README states them ("Authenticity", "Benchmarks").
FIGURES: dict[str, list[Figure]] = {
    "grpc": [Figure("rps"), Figure("p50_ms"), Figure("p99_ms"), Figure("bare_grpc_aio.rps")],
    "ledger": [Figure("committed_tx_per_s"), Figure("latency_p50_s"), Figure("latency_p99_s"), Figure("lost", "==", 0)],
    "commission": [Figure("items_per_s"), Figure("count")],
    "registry": [Figure("get_product_rps"), Figure("p50_ms"), Figure("p99_ms")],
    "epcis": [Figure("events_per_s"), Figure("events")],
    "epcis-rest": [Figure("all_queries.p50_ms"), Figure("all_queries.p99_ms"), Figure("capture_events_per_s")],
    "verify": [
        Figure("verifications_per_s"),
        Figure("p50_ms", "<=", 10, applies=_full_verify_run, condition=VERIFY_CONDITION),
        Figure("p99_ms", "<=", 25, applies=_full_verify_run, condition=VERIFY_CONDITION),
        Figure("errors", "==", 0),
    ],
    "clones": [
        Figure("clones_detected_fraction", ">=", 0.95),
        Figure("copy_scans_flagged_fraction", ">=", 0.90),
        Figure("genuine_false_positive_fraction", "==", 0),
        Figure("forgeries_detected_fraction", "==", 1.0),
        Figure("verdict_latency_p99_ms"),
    ],
    "pricing": [
        Figure("price_lookups_per_s", ">=", target_path="targets.price_lookups_per_s"),
        Figure("fraction_of_grpc_ceiling"),
        Figure("p99_ms"),
        Figure("basket_lines_per_s"),
        Figure("stream_fanout_p99_ms", "<=", target_path="targets.stream_fanout_p99_ms"),
    ],
    "state": [
        Figure("results.-1.keys"),
        Figure("results.-1.commit_cpu_ms_max", "<=", target_path="targets.cpu_ms"),
        Figure("results.-1.max_rss_mb", "<=", target_path="targets.rss_mb"),
    ],
    "planner": [
        Figure("bare_tokens_per_s"), Figure("serve_tokens_per_s"), Figure("serve_vs_bare"),
        Figure("schema_valid_fraction", "==", 1.0), Figure("drafts_schema_valid_fraction", "==", 1.0),
    ],
    "forecast-reference": [
        Figure("tsb.ours_mase"), Figure("tsb.statsforecast_mase"), Figure("tsb.more_accurate"),
        Figure("croston_sba.ours_mase"), Figure("croston_sba.statsforecast_mase"), Figure("croston_sba.more_accurate"),
    ],
    "restock-loop": [
        Figure("fill_rate", ">=", target_path="service_level"),
        Figure("avg_inventory_value", "<=", target_path="baseline_avg_inventory_value"),
        Figure("stockout_days", "<=", target_path="baseline_stockout_days"),
        Figure("orders_on_ledger_with_record", ">=", target_path="orders"),
    ],
}

_MISSING = object()


def lookup(result: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``results.-1.keys``), or _MISSING."""
    value = result
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _judge(value: Any, op: str, target: Any) -> bool | None:
    if not isinstance(value, (int, float)) or not isinstance(target, (int, float)) or isinstance(value, bool):
        return None
    return {">=": value >= target, "<=": value <= target, "==": value == target}[op]


def figures_of(result: dict) -> list[dict]:
    rows = []
    for figure in FIGURES.get(result.get("benchmark", ""), []):
        value = lookup(result, figure.path)
        target = lookup(result, figure.target_path) if figure.target_path else figure.target
        row: dict[str, Any] = {"figure": figure.path, "value": None if value is _MISSING else value}
        if figure.op and target is not _MISSING and target is not None:
            row["target"] = f"{figure.op} {target}" + (f" {figure.condition}" if figure.condition else "")
            if value is _MISSING:
                row["met"] = None
            elif not figure.applies(result):
                row["met"] = "not judged (smaller run)"
            else:
                row["met"] = _judge(value, figure.op, target)
        rows.append(row)
    return rows


def build_report(directory: Path, names: list[str] | None = None) -> dict:
    """The report over ``directory``'s per-benchmark JSON files; ``names`` (default: every registered
    benchmark that has a file, then any other JSON file there) in that order."""
    names = names if names is not None else _names_in(directory)
    benches, machine = [], None
    for name in names:
        path = directory / f"{name}.json"
        try:
            result = _last_json_line(path.read_text())
        except (OSError, ValueError) as err:
            benches.append({"benchmark": name, "failed": f"{type(err).__name__}: {err}", "log": f"{name}.log"})
            continue
        calibration = result.get("calibration") or {}
        machine = machine or {k: calibration.get(k) for k in ("cpu_model", "cores", "memory_gib", "native_bf16")}
        entry = {"benchmark": name, "figures": figures_of(result), "calibration": calibration, "result": result}
        # A run that exits 0 but lists errors measured something else (e.g. every transaction refused).
        if isinstance(result.get("errors"), list) and result["errors"]:
            entry["errors"] = [str(e) for e in result["errors"]]
        benches.append(entry)
    return {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "directory": directory.name,
        "machine": machine or {},
        "benchmarks": benches,
    }


def _names_in(directory: Path) -> list[str]:
    present = {p.stem for p in directory.glob("*.json") if p.name != REPORT_JSON}
    return [n for n in BENCHMARKS if n in present] + sorted(present - set(BENCHMARKS))


def _last_json_line(text: str) -> dict:
    """A benchmark prints one JSON object (its last line); anything before it is not the result."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty: the benchmark printed no result")
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise ValueError("not a JSON object")
    return result


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# shelfproof benchmarks, {report['directory']}",
        "",
        f"Machine: {m.get('cpu_model') or 'unknown CPU'}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB memory"
        f"{', native bf16' if m.get('native_bf16') else ''}. Written {report['written']}.",
        "",
        "| bench | figure | value | target | met | calibration (Ed25519 verify/s per core, SHA-256 MB/s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for bench in report["benchmarks"]:
        name = bench["benchmark"]
        if "failed" in bench:
            lines.append(f"| {name} | failed | {_cell(bench['failed'])} | | | see {bench['log']} |")
            continue
        c = bench["calibration"]
        calibration = f"{_cell(c.get('ed25519_verify_per_s_per_core'))}, {_cell(c.get('sha256_1k_mb_per_s'))}" if c else "—"
        rows = bench["figures"] or [{"figure": "(no key figures named)", "value": None}]
        for n, row in enumerate(rows):
            met = row.get("met", "")
            lines.append(
                f"| {name if n == 0 else ''} | {row['figure']} | {_cell(row['value'])} | {row.get('target', '')} "
                f"| {_cell(met) if met != '' else ''} | {calibration if n == 0 else ''} |"
            )
        if bench.get("errors"):
            lines.append(f"|  | errors | {len(bench['errors'])} (first: {_cell(bench['errors'][0])}) | none | no |  |")
    return "\n".join(lines) + "\n"


def write_report(directory: Path) -> dict:
    report = build_report(directory)
    (directory / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (directory / REPORT_MD).write_text(render_markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shelfproof.bench.report", description=__doc__)
    parser.add_argument("directory", type=Path, help="the folder holding <bench>.json files (bench-report/<date>)")
    args = parser.parse_args(argv)
    report = write_report(args.directory)
    print((args.directory / REPORT_MD).read_text(), end="")
    return 1 if any("failed" in b or b.get("errors") for b in report["benchmarks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
