"""The benchmark report builder (shelfproof/bench/report.py) over sample per-benchmark JSON files."""

from __future__ import annotations

import json

import pytest

from shelfproof.bench.report import REPORT_JSON, REPORT_MD, build_report, main, render_markdown

pytestmark = pytest.mark.unit

CALIBRATION = {"cpu_model": "Example CPU @ 2.0GHz", "cores": 2, "native_bf16": False, "memory_gib": 7.8,
               "ed25519_verify_per_s_per_core": 9876, "sha256_1k_mb_per_s": 543.2}


def _write(directory, name: str, result: dict, *, preamble: str = "") -> None:
    (directory / f"{name}.json").write_text(preamble + json.dumps({**result, "calibration": CALIBRATION}) + "\n")


def _figures(report: dict, bench: str) -> dict[str, dict]:
    entry = next(b for b in report["benchmarks"] if b["benchmark"] == bench)
    return {row["figure"]: row for row in entry["figures"]}


def test_figures_targets_and_verdicts_from_sample_results(tmp_path):
    _write(tmp_path, "grpc", {"benchmark": "grpc", "rps": 4321.5, "p50_ms": 1.2, "p99_ms": 7.5})
    _write(tmp_path, "pricing", {
        "benchmark": "pricing", "price_lookups_per_s": 9100.0, "p99_ms": 4.1, "basket_lines_per_s": 50_000.0,
        "stream_fanout_p99_ms": 140.0, "targets": {"price_lookups_per_s": 8000, "stream_fanout_p99_ms": 100},
    })
    _write(tmp_path, "state", {"benchmark": "state", "results": [
        {"keys": 100_000, "commit_cpu_ms_max": 30.0, "max_rss_mb": 300},
        {"keys": 1_000_000, "commit_cpu_ms_max": 120.0, "max_rss_mb": 900},
    ], "targets": {"cpu_ms": 100, "rss_mb": 2048}})
    # A smaller run than the one the target is for: reported, not judged.
    _write(tmp_path, "verify", {"benchmark": "verify", "engine": "embedded", "offered_rate": 200,
                                "verifications_per_s": 199.0, "p50_ms": 30.0, "p99_ms": 90.0, "errors": 0},
           preamble="a log line a benchmark printed first\n")
    (tmp_path / "clones.json").write_text("")  # the benchmark died before printing
    report = build_report(tmp_path)

    assert [b["benchmark"] for b in report["benchmarks"]] == ["grpc", "verify", "clones", "pricing", "state"]
    assert report["machine"] == {"cpu_model": "Example CPU @ 2.0GHz", "cores": 2, "memory_gib": 7.8, "native_bf16": False}
    grpc = _figures(report, "grpc")
    assert grpc["rps"] == {"figure": "rps", "value": 4321.5}  # no target: nothing judged
    pricing = _figures(report, "pricing")
    # The benchmark's own targets object is the target.
    assert (pricing["price_lookups_per_s"]["target"], pricing["price_lookups_per_s"]["met"]) == (">= 8000", True)
    assert (pricing["stream_fanout_p99_ms"]["target"], pricing["stream_fanout_p99_ms"]["met"]) == ("<= 100", False)
    state = _figures(report, "state")
    assert state["results.-1.keys"]["value"] == 1_000_000  # the largest state measured
    assert state["results.-1.commit_cpu_ms_max"]["met"] is False and state["results.-1.max_rss_mb"]["met"] is True
    verify = _figures(report, "verify")
    assert verify["p50_ms"]["met"] == "not judged (smaller run)" and "CometBFT" in verify["p50_ms"]["target"]
    assert verify["errors"]["met"] is True
    clones = next(b for b in report["benchmarks"] if b["benchmark"] == "clones")
    assert clones["log"] == "clones.log" and "no result" in clones["failed"]

    markdown = render_markdown(report)
    assert "Example CPU @ 2.0GHz, 2 cores, 7.8 GiB memory" in markdown
    assert "| pricing | price_lookups_per_s | 9,100 | >= 8000 | yes | 9,876, 543.2 |" in markdown
    assert "|  | stream_fanout_p99_ms | 140 | <= 100 | no |  |" in markdown
    assert "| clones | failed |" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert all(line.count("|") == 7 for line in table), table  # every row has the header's six columns


def test_main_writes_both_files_and_fails_when_a_benchmark_failed(tmp_path, capsys):
    _write(tmp_path, "grpc", {"benchmark": "grpc", "rps": 10.0, "p50_ms": 1.0, "p99_ms": 2.0})
    assert main([str(tmp_path)]) == 0
    written = json.loads((tmp_path / REPORT_JSON).read_text())
    assert written["benchmarks"][0]["result"]["rps"] == 10.0
    assert (tmp_path / REPORT_MD).read_text() == capsys.readouterr().out
    # The report itself is never read back as a benchmark's result.
    assert [b["benchmark"] for b in build_report(tmp_path)["benchmarks"]] == ["grpc"]
    (tmp_path / "ledger.json").write_text("Traceback (most recent call last):\n")
    assert main([str(tmp_path)]) == 1
    assert "| ledger | failed |" in (tmp_path / REPORT_MD).read_text()


def test_a_benchmark_that_lists_errors_is_not_a_pass(tmp_path):
    """The ledger bench once exited 0 with every transaction refused: its errors make the report fail."""
    _write(tmp_path, "ledger", {"benchmark": "ledger", "committed_tx_per_s": 0.0, "lost": 0,
                                "errors": ["rejected: code 11: no purchase order PO1", "commits not all seen"]})
    assert main([str(tmp_path)]) == 1
    markdown = (tmp_path / REPORT_MD).read_text()
    assert "|  | errors | 2 (first: rejected: code 11: no purchase order PO1) | none | no |  |" in markdown
    assert all(line.count("|") == 7 for line in markdown.splitlines() if line.startswith("|"))

