"""A lying verify server against `shelfproof verify`'s checks, with real signed evidence.

The stack is the real one (embedded ledger, adapter, PostgreSQL, registry, verify service on
loopback). Each lie starts from evidence the ledger really signed and changes what a dishonest server
could: leave a key out, answer from an old height, name another chain, send its own clone rules and
scan time, forge an absence proof from real leaves of the recall store. The verifier must refuse
(exit 2, saying why) or recompute the true verdict (exit 1 when the server's disagrees).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import time

import pytest
from tendermint.crypto import proof_pb2

from shelfproof.cli.main import main as shelfproof_main
from shelfproof.ledger.proofs.merkle import PROOF_OP_ABSENT
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.product.v1 import product_pb2 as ppb
from shelfproof.verify import evidence as ev
from shelfproof.verify.check import (
    DEFAULT_MAX_AGE_S,
    EXIT_AGREES,
    EXIT_DISAGREES,
    EXIT_UNVERIFIABLE,
    VerifierPolicy,
    check_fetched,
)
from shelfproof.verify.trust import TrustRoot
from tests.integration.harness import CHAIN
from tests.integration.test_verify import BERLIN, GTIN, NEW_YORK, _commission, _get, _label
from tests.integration.verify_harness import VerifyStack

pytestmark = pytest.mark.security


def _proofs(report: dict) -> dict[str, dict]:
    return {p["store"]: p for p in report["evidence"]["proofs"]}


def _without(report: dict, *stores: str, verdict: str = "GENUINE") -> dict:
    lie = copy.deepcopy(report)
    lie["evidence"]["proofs"] = [p for p in lie["evidence"]["proofs"] if p["store"] not in stores]
    lie["verdict"] = verdict
    return lie


def _refused(result, *words: str) -> None:
    assert result.exit_code == EXIT_UNVERIFIABLE, result.lines
    assert all(w in result.lines[0] for w in words), result.lines


async def _at_one_height(stack: VerifyStack, report: dict, extra: list[tuple[str, bytes]]) -> tuple[dict, dict]:
    """The report's keys and ``extra`` read in one QueryMany (one header, one app hash): the evidence
    JSON for the report's keys, and every value by (store, key) to forge with."""
    keys = [(p["store"], p["key"].encode()) for p in report["evidence"]["proofs"]] + extra
    reply = await stack.ledger.QueryMany(lpb.QueryManyRequest(keys=[lpb.StoreKey(store=s, key=k) for s, k in keys], prove=True), timeout=10)
    header = ev.check_header(CHAIN, reply.height, reply.signed_header, reply.validator_set, stack.trusted)
    values = {(v.store, v.key): v for v in reply.values}
    *_, membership = ev.parse_evidence_json(report["evidence"])
    own = [values[k] for k in keys[: len(report["evidence"]["proofs"])]]
    return dict(report, evidence=ev.evidence_json(header, own, membership)), values


def _neighbour(value: lpb.StoreValue) -> lpb.AbsenceNeighbour:
    """A real leaf of the store, from its presence proof: what a forger has to build with."""
    proof = proof_pb2.ValueOp.FromString(value.proof_ops[0].data).proof
    return lpb.AbsenceNeighbour(key=value.key, value_hash=hashlib.sha256(value.value).digest(), index=proof.index, aunts=proof.aunts)


def _replace_recall(report: dict, key: bytes, absence: lpb.AbsenceProof | bytes, above: list[lpb.ProofOp]) -> dict:
    """The report with its recall entry replaced by a claimed absence of ``key`` (the absent op, then the
    ops ``above`` it) and the verdict GENUINE."""
    data = absence if isinstance(absence, bytes) else absence.SerializeToString()
    forged = lpb.StoreValue(
        store="recalls", key=key, found=False, proof_ops=[lpb.ProofOp(type=PROOF_OP_ABSENT, key=key, data=data), *above]
    )
    lie = copy.deepcopy(report)
    lie["verdict"] = "GENUINE"
    recall = next(p for p in lie["evidence"]["proofs"] if p["store"] == "recalls")
    recall.update(
        found=False, value="",
        proof_ops=[{"type": op.type, "key": ev._b64(op.key), "data": ev._b64(op.data)} for op in forged.proof_ops],
    )
    return lie


async def test_a_lying_server_is_refused_or_contradicted(tmp_path, database_dsn):
    async with VerifyStack(tmp_path, database_dsn) as stack:
        trust, policy = stack.trust, VerifierPolicy()
        await stack.stub.CreateProduct(ppb.CreateProductRequest(product=ppb.Product(gtin=GTIN, name="Olive oil 1 l", brand="Demo")), timeout=20)
        lots = {lot: await _commission(stack, lot, 2) for lot in ("L0", "L1", "L2", "L3", "L4", "L9")}
        recalled, serials = lots["L2"], lots["L9"]
        url = stack.local(await _label(stack, recalled[0]))

        # Before the recall: GENUINE, and "not recalled" is proven, not assumed.
        _, before = await _get(url)
        assert before["verdict"] == "GENUINE" and "not recalled — proven" in before["facts"]["proven"], before
        assert check_fetched(url, before, trust, policy).exit_code == EXIT_AGREES

        # Recall L2, and L0 and L4 around it, so the recall store has real neighbours to forge with.
        for lot in ("L0", "L2", "L4"):
            recall = await stack.stub.RecallLot(ppb.RecallLotRequest(gtin=GTIN, lot=lot, reason="glass fragments"), timeout=20)
        await stack.provable(recall.recall.ledger_ref.height)
        status, report = await _get(url)
        assert status == 200 and report["verdict"] == "RECALLED", report

        # The recalled lot now comes back RECALLED from the verifier; a server that only flips the verdict disagrees.
        honest = check_fetched(url, report, trust, policy)
        assert (honest.exit_code, honest.verdict) == (EXIT_AGREES, "RECALLED"), honest.lines
        flipped = check_fetched(url, dict(report, verdict="GENUINE"), trust, policy)
        assert (flipped.exit_code, flipped.verdict) == (EXIT_DISAGREES, "RECALLED")

        # The command itself, pinned by options: the honest server agrees (0); --max-age 0 refuses any evidence (2).
        pin = ["--chain-id", CHAIN, "--validators-hash", ",".join(h.hex() for h in trust.validator_hashes), "--json"]
        assert await asyncio.to_thread(shelfproof_main, ["verify", url, *pin]) == EXIT_AGREES
        assert await asyncio.to_thread(shelfproof_main, ["verify", url, *pin, "--max-age", "0"]) == EXIT_UNVERIFIABLE
        assert await asyncio.to_thread(shelfproof_main, ["verify", url, *pin[2:]]) == EXIT_UNVERIFIABLE  # no chain pinned

        # Lie 1: the recall entry left out (and every other verdict key in turn): refused, naming the key.
        _refused(check_fetched(url, _without(report, "recalls"), trust, policy), "leaves out", f"recalls/{GTIN}/L2")
        for store in ("keys", "products", "status", "items", "scans"):
            _refused(check_fetched(url, _without(report, store), trust, policy), "leaves out", f"{store}/")
        # ... or said absent with no proof at all.
        bare = copy.deepcopy(report)
        bare["verdict"] = "GENUINE"
        _proofs(bare)["recalls"].update(found=False, value="", proof_ops=[])
        _refused(check_fetched(url, bare, trust, policy), "without a proof")
        # Leaving out the batch as well makes the code unproven, so COUNTERFEIT, never GENUINE.
        no_batch = _without(report, "recalls", "batches")
        no_batch["evidence"]["batch_membership"] = None
        result = check_fetched(url, no_batch, trust, policy)
        assert (result.exit_code, result.verdict) == (EXIT_DISAGREES, "COUNTERFEIT"), result.lines

        # Lie 2: evidence from an old height (the pre-recall GENUINE state, replayed two minutes on).
        later = VerifierPolicy(clock=lambda: time.time() + DEFAULT_MAX_AGE_S + 5)
        _refused(check_fetched(url, before, trust, later), "s old", "at most 120 s")
        assert "at most 120 s accepted" in check_fetched(url, report, trust, policy).lines[1]
        ahead = VerifierPolicy(clock=lambda: time.time() - 600)
        _refused(check_fetched(url, report, trust, ahead), "ahead of this verifier's clock")

        # Lie 3: the chain id swapped in the evidence; or evidence of this chain shown to a verifier pinned to another.
        swapped = copy.deepcopy(report)
        swapped["evidence"]["chain_id"] = "shelfproof-other"
        _refused(check_fetched(url, swapped, trust, policy), "chain 'shelfproof-other'", f"trusts chain {CHAIN!r}")
        other_chain = TrustRoot("shelfproof-other", trust.validator_hashes)
        _refused(check_fetched(url, report, other_chain, policy), "this verifier trusts chain 'shelfproof-other'")
        swapped["evidence"]["chain_id"] = "shelfproof-other"
        _refused(check_fetched(url, swapped, other_chain, policy), "expected 'shelfproof-other'")

        # Lie 4: forged absence proofs of the L2 recall, built from real leaves, paths and bucket ops of the
        # recall store (each key sits in the bucket SHA-256 of it picks; a bucket op has an empty key).
        recall_key = f"{GTIN}/L2".encode()
        extra = [("recalls", f"{GTIN}/{lot}".encode()) for lot in ("L0", "L1", "L3", "L4")]
        fresh, values = await _at_one_height(stack, report, extra)
        assert check_fetched(url, fresh, trust, policy).verdict == "RECALLED"
        l0, l4 = values[("recalls", f"{GTIN}/L0".encode())], values[("recalls", f"{GTIN}/L4".encode())]
        l1_absent, l3_absent = values[("recalls", f"{GTIN}/L1".encode())], values[("recalls", f"{GTIN}/L3".encode())]
        l2 = values[("recalls", recall_key)]
        assert l0.found and l4.found and l2.found and not l1_absent.found and not l3_absent.found
        store_op, l2_bucket_op = l2.proof_ops[2], l2.proof_ops[1]
        left, right = _neighbour(l0), _neighbour(l4)
        total = proof_pb2.ValueOp.FromString(l0.proof_ops[0].data).proof.total
        forgeries = {
            "neighbours from other buckets": (lpb.AbsenceProof(total=total, left=left, right=right), [l0.proof_ops[1], store_op], "the key lives in"),
            "an empty bucket": (lpb.AbsenceProof(total=0), [l2_bucket_op, store_op], "leaf hash mismatch for key b''"),
            "L1's real proof for L2": (l1_absent.proof_ops[0].data, list(l1_absent.proof_ops[1:]), "the key lives in"),
            "L3's real proof under L2's bucket": (l3_absent.proof_ops[0].data, [l2_bucket_op, store_op], None),
            "no bucket op": (l1_absent.proof_ops[0].data, [store_op], "three ops"),
            "a keyed bucket op": (
                lpb.AbsenceProof(total=0), [lpb.ProofOp(type="simple:v", key=b"recalls", data=l2_bucket_op.data), store_op], "empty key",
            ),
        }
        for name, (absence, above, why) in forgeries.items():
            result = check_fetched(url, _replace_recall(fresh, recall_key, absence, above), trust, policy)
            assert result.exit_code == EXIT_UNVERIFIABLE and (why is None or why in result.lines[0]), (name, result.lines)

        # Lie 5: the server's clone rules and scan time. Scanned in Berlin, then in New York a moment later.
        travel = stack.local(await _label(stack, serials[0]))
        _, first = await _get(travel + f"&cell={BERLIN}", client="127.0.7.1")
        assert first["verdict"] == "GENUINE"
        await stack.scans_on_ledger(GTIN, serials[0], 1)
        _, second = await _get(travel + f"&cell={NEW_YORK}", client="127.0.7.2")
        assert second["verdict"] == "SUSPICIOUS"
        lie = copy.deepcopy(second)
        lie.update(verdict="GENUINE", rules={"default_expected_scans": 10**9, "max_speed_kmh": 1e12, "min_distance_km": 1e9})
        lie["scan"] = {"recorded": True, "cell": None, "time": "2026-01-01T00:00:00Z", "unix_s": 0}
        result = check_fetched(travel + f"&cell={NEW_YORK}", lie, trust, policy)
        assert (result.exit_code, result.verdict) == (EXIT_DISAGREES, "SUSPICIOUS"), result.lines
        assert any("km away" in line for line in result.lines)
        # The cell is the one in the URL scanned: the server claiming one does not move the consumer.
        lie["scan"]["cell"] = NEW_YORK
        assert check_fetched(travel, lie, trust, policy).verdict == "GENUINE"
        # And "now" is the verifier's: a day after the Berlin scan, New York is reachable.
        tomorrow = VerifierPolicy(clock=lambda: time.time() + 86_400, max_age_s=10**6)
        assert check_fetched(travel + f"&cell={NEW_YORK}", lie, trust, tomorrow).verdict == "GENUINE"
