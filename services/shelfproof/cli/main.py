"""`shelfproof`: run the platform, check it, benchmark it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from shelfproof.runtime.log import configure_logging
from shelfproof.runtime.settings import CommonSettings, PostgresSettings, TlsSettings


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line; a benchmark's own flags (and its module) only when ``argv`` asks for it."""
    from shelfproof.bench import BENCHMARKS, load

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="shelfproof", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start PostgreSQL and every service; Ctrl-C stops them all")
    commands.add_parser("status", help="print each component's health; exit 1 unless all SERVING")
    verify = commands.add_parser(
        "verify", help="check a product code's verdict trusting only the validators' signatures, not the server"
    )
    verify.add_argument("url", help="the URL in the product's QR code")
    verify.add_argument(
        "--validators-hash", default="",
        help="trusted validator set hash(es), hex, comma-separated (default: the local ledger's validator files)",
    )
    verify.add_argument("--chain-id", default="", help="the chain to pin, with --validators-hash (default: the local ledger's genesis)")
    verify.add_argument("--ledger-home", default=None, help="ledger home holding the trusted validator and genesis files")
    verify.add_argument(
        "--max-age", type=float, default=None,
        help="refuse evidence whose header is older than this many seconds by this machine's clock (default 120)",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.add_argument("--timeout", type=float, default=10.0, help="seconds for the HTTP request")
    planner = commands.add_parser("planner", help="the planner's AI drafts")
    planner_commands = planner.add_subparsers(dest="planner_command", required=True)
    replay = planner_commands.add_parser(
        "replay", help="re-run a recorded draft on this machine's engine; exit 0 when the output hash matches"
    )
    replay.add_argument("draft_id")
    replay.add_argument("--ledger-address", default="127.0.0.1:50051")
    prepare = planner_commands.add_parser(
        "prepare", help="convert the planner's model into its folder once (make deps does); print the folder and digest"
    )
    prepare.add_argument("--verify", action="store_true", help="recompute the weights digest of a ready folder; exit 1 if it changed")
    db = commands.add_parser("db", help="query-model database")
    db.add_argument("action", choices=["upgrade"], help="apply Alembic migrations to SHELFPROOF_PG_DSN")

    bench = commands.add_parser("bench", help="run one benchmark and print one JSON object")
    benches = bench.add_subparsers(dest="benchmark", required=True)
    everything = benches.add_parser("all", help="every benchmark with its defaults, one JSON line each")
    everything.add_argument("--json", action="store_true")
    for name, (summary, _) in BENCHMARKS.items():
        sub = benches.add_parser(name, help=summary)
        sub.add_argument("--json", action="store_true", help="print one JSON object (the default)")
        if argv[:2] == ["bench", name] or argv[:2] == ["bench", "all"]:
            load(name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    common = CommonSettings()
    configure_logging(common.log_level, common.log_format)
    pg_settings = PostgresSettings()

    if args.command == "up":
        from shelfproof.cli.stack import run_up

        return asyncio.run(run_up(common, pg_settings))
    if args.command == "status":
        from shelfproof.cli.stack import run_status

        return asyncio.run(run_status(common, pg_settings))
    if args.command == "verify":
        from pathlib import Path

        from shelfproof.verify.check import DEFAULT_MAX_AGE_S, EXIT_UNVERIFIABLE, VerifierPolicy, check_url
        from shelfproof.verify.trust import TrustError, trust_root_from_options

        try:
            trust = trust_root_from_options(args.chain_id, args.validators_hash, Path(args.ledger_home or common.state_dir / "ledger"))
        except TrustError as err:
            print(f"no trust root: {err}", file=sys.stderr)
            return EXIT_UNVERIFIABLE
        policy = VerifierPolicy(max_age_s=DEFAULT_MAX_AGE_S if args.max_age is None else args.max_age)
        result = check_url(args.url, trust, policy, timeout_s=args.timeout)
        print(result.as_json() if args.json else "\n".join(result.lines))
        return result.exit_code
    if args.command == "planner" and args.planner_command == "prepare":
        from shelfproof.planner.model import prepare_model

        try:
            prepared = prepare_model(verify=args.verify)
        except (FileNotFoundError, RuntimeError) as err:
            print(err, file=sys.stderr)
            return 1
        print(json.dumps({"model": prepared.name, "path": str(prepared.path), "weights_digest": prepared.weights_digest}))
        return 0
    if args.command == "planner":
        from shelfproof.cli.stack import local_tools_tls
        from shelfproof.planner.replay import replay_with_local_engine

        # the local tools' certificate of the stack running here (SHELFPROOF_TLS_* given win)
        tls = TlsSettings() if TlsSettings().enabled else local_tools_tls(common.state_dir)
        report = asyncio.run(replay_with_local_engine(args.ledger_address, args.draft_id, tls))
        print(json.dumps(report, indent=2))
        return 0 if report["output_matches"] else 1
    if args.command == "db":
        from shelfproof.db.migrate import upgrade

        if not pg_settings.dsn:
            print("set SHELFPROOF_PG_DSN", file=sys.stderr)
            return 2
        upgrade(pg_settings.dsn)
        return 0
    if args.command == "bench":
        from shelfproof.bench import BENCHMARKS, load
        from shelfproof.runtime.machine import calibration

        names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
        for name in names:
            bench_args = _parser(["bench", name]).parse_args(["bench", name]) if args.benchmark == "all" else args
            # measured before the benchmark starts anything; a benchmark may relate its result to it
            bench_args.calibration = calibration()
            result = asyncio.run(load(name).run(bench_args))
            print(json.dumps({**result, "calibration": bench_args.calibration}), flush=True)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
