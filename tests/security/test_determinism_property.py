"""Deliverable 5: random transaction sequences give the same results and app hash on every node,
whatever each node saw in CheckTx, and never raise.

Three instances of the real application get the same blocks: one checks every transaction in CheckTx
first and rechecks after each block (a validator that gossiped them), one never sees CheckTx (a
validator replaying from its block store), one runs a random schedule of CheckTx and RECHECK calls
before each block. The two that check also see mempool-only transactions that compete with the
block's for the same nonces (what a proposer may leave out). Transactions mix valid actions by a few
agents with wrong nonces, bad signatures, keys added (one key id, two possible public keys) and
revoked in flight, overflowing integers, re-encodings and garbage.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from tendermint.abci import types_pb2 as abci

from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.core.rules import prove_possession
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import state_pb2 as state
from shelfproof.ledger.v1 import transaction_pb2 as txpb

from tests.security.ledger_nodes import (
    BRAND, CHAIN, GTIN, OPERATOR, OTHER_GTIN, RETAILER, STORE_GLN, block, body, check, draft, genesis, node, policy,
    product, relayer_copies, replenishment, signers,
)

GENESIS = genesis()
ACCOUNTS = signers(GENESIS)
AGENTS = [f"{BRAND}/admin-0", f"{BRAND}/admin-1", f"{RETAILER}/admin-0", f"{RETAILER}/admin-1"]
# Only people approve and only the consortium's verifiers record scans: those actions are signed by
# them (the agent index picks which), every other action by one of AGENTS.
PEOPLE = [f"{RETAILER}/person-0", f"{RETAILER}/person-1"]
VERIFIERS = [f"{OPERATOR}/verifier-0", f"{OPERATOR}/verifier-1"]
SIGNERS = [*AGENTS, *PEOPLE, *VERIFIERS]
# Key id "alt" of each agent: added as one of two public keys by the random actions, and signed
# with the first, so whether a transaction verifies depends on which "add key" committed.
ALT_KEYS = {agent: [SigningKey(bytes([n + 1, k]) * 16) for k in range(2)] for n, agent in enumerate(SIGNERS)}
GTINS = [GTIN, OTHER_GTIN]


def _price(agent: str, p: int) -> txpb.TransactionBody:
    money = lambda amount: txpb.Money(currency_code="EUR", amount_minor=amount)  # noqa: E731
    return body(change_price=txpb.ChangePrice(gtin=GTINS[p % 2], location_gln=STORE_GLN, price=money(600 + 150 * p), unit_cost=money(500)))


def _add_alt_key(agent: str, p: int) -> txpb.TransactionBody:
    """The agent's own rotation to key id "alt", with a valid proof of possession of either key."""
    new, purpose = ALT_KEYS[agent][p % 2], txpb.KEY_PURPOSE_TRANSACTIONS
    return body(add_key=txpb.AddKey(
        agent_id=agent, key_id="alt", public_key=bytes(new.verify_key), purpose=purpose,
        possession_signature=prove_possession(new, CHAIN, agent, "alt", purpose),
    ))


PRODUCT, APPROVE, SCANS, ADD_KEY, COMMISSION = 0, 6, 7, 8, 10
ACTIONS = [
    lambda agent, p: product(GTINS[p % 2]),
    _price,
    lambda agent, p: body(recall_lot=txpb.RecallLot(gtin=GTINS[p % 2], lot=f"L{p}", reason="glass")),
    lambda agent, p: policy(draft_ttl_s=60 * (p + 1), auto_approve_below_minor=500 * p),
    lambda agent, p: replenishment(quantity_max=100 * (p + 1)),
    lambda agent, p: draft(f"d{p}", quantity=10 * (p + 1)),
    lambda agent, p: body(approve_draft=txpb.ApproveDraft(draft_id=f"d{p}")),
    lambda agent, p: body(record_scans=txpb.RecordScans(scans=[txpb.Scan(gtin=GTINS[p % 2], serial=f"S{p}", scan_unix_s=1_780_000_000 + p)])),
    _add_alt_key,
    lambda agent, p: body(revoke_key=txpb.RevokeKey(agent_id=agent, key_id="alt" if p < 3 else ACCOUNTS[agent].key_id)),
    lambda agent, p: body(commission_batch=txpb.CommissionBatch(
        batch_id=f"B{p}", gtin=GTINS[p % 2], lot=f"L{p}", count=3, serials_merkle_root=bytes(32), serials_content_hash=bytes(32),
    )),
]
OVERFLOWS = [
    lambda p: policy(draft_ttl_s=2**63 - 1),
    lambda p: txpb.TransactionBody(created_unix_ms=2**62, approve_draft=txpb.ApproveDraft(draft_id="d0")),
    lambda p: draft("dx", quantity=2**62),
    lambda p: policy(max_discount_bps=2**31 - 1),
]
MUTATIONS = ["none"] * 6 + ["nonce-1", "nonce+1", "bad-signature", "alt-key", "overflow", "reencode", "garbage", "resend"]

tx_spec = st.tuples(
    st.integers(0, len(AGENTS) - 1),
    st.integers(0, len(ACTIONS) - 1),
    st.integers(0, 3),
    st.sampled_from(MUTATIONS),
    st.binary(max_size=48),
)
block_spec = st.tuples(
    st.lists(tx_spec, max_size=8),
    # Mempool-only transactions, built on the same nonces as the block's.
    st.lists(tx_spec, max_size=4),
    # Node C's CheckTx schedule before the block: (index into mempool-only + block txs, as RECHECK?).
    st.lists(st.tuples(st.integers(0, 11), st.booleans()), max_size=12),
)


def _opening() -> list[bytes]:
    """The first block of every example: the brand's GTIN registered and commissioned, the retailer's
    policies, price at its store and a pending draft "d0", so random sequences act on live state
    (OTHER_GTIN and drafts d1-d3 stay free)."""
    brand, retailer = ACCOUNTS[f"{BRAND}/admin-0"], ACCOUNTS[f"{RETAILER}/admin-0"]
    return [
        brand.sign(product(GTIN), nonce=1),
        brand.sign(ACTIONS[COMMISSION](brand.agent_id, 0), nonce=2),
        retailer.sign(policy(), nonce=1),
        retailer.sign(replenishment(), nonce=2),
        retailer.sign(_price(retailer.agent_id, 0), nonce=3),
        retailer.sign(draft("d0"), nonce=4),
    ]


OPENING = _opening()


def _committed_nonce(app, agent: str) -> int:
    record = app.state.latest.get("agents", agent.encode())
    return state.AgentRecord.FromString(record).nonce if record else 0


def _signer_of(agent_index: int, action: int) -> str:
    if action == APPROVE:
        return PEOPLE[agent_index % len(PEOPLE)]
    if action == SCANS:
        return VERIFIERS[agent_index % len(VERIFIERS)]
    return AGENTS[agent_index]


def _build(app, specs, sent: list[bytes], actions: list[str | None]) -> list[bytes]:
    """The block's transaction bytes; nonces follow the committed state, so most are in sequence.
    ``actions`` gets, per transaction, the action of an unmutated one (None for the others)."""
    nonces = {agent: _committed_nonce(app, agent) + 1 for agent in SIGNERS}
    txs = []
    for agent_index, action, p, mutation, garbage in specs:
        agent = _signer_of(agent_index, action)
        if mutation == "garbage":
            txs.append(garbage)
            actions.append(None)
            continue
        if mutation == "resend" and sent:
            txs.append(sent[p % len(sent)])
            actions.append(None)
            continue
        tx_body = OVERFLOWS[p](p) if mutation == "overflow" else ACTIONS[action](agent, p)
        key = ALT_KEYS[agent][0] if mutation == "alt-key" else ACCOUNTS[agent].signing_key
        signer = AccountSigner(CHAIN, agent, key, key_id="alt" if mutation == "alt-key" else "")
        nonce = nonces[agent] + {"nonce-1": -1, "nonce+1": 1}.get(mutation, 0)
        raw = signer.sign(tx_body, nonce=max(nonce, 0))
        if mutation in ("none", "alt-key"):
            nonces[agent] += 1
        if mutation == "bad-signature":
            signed = txpb.SignedTransaction.FromString(raw)
            signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
            raw = signed.SerializeToString()
        if mutation == "reencode":
            raw = relayer_copies(raw)["duplicated field" if p % 2 else "non-minimal nonce varint"]
        txs.append(raw)
        actions.append(tx_body.WhichOneof("action") if mutation == "none" else None)
    sent.extend(txs)
    return txs


# Successful transactions per action over every example run: the property means little if the
# sequences were all rejections (a genesis or rule change can silently make them so).
COMMITTED: Counter[str] = Counter()
# Actions random sequences commit, each reachable only through the authorization model (the brand's
# prefix, the retailer's store, a person's approval, the consortium's verifier, a proof of
# possession). Hypothesis draws in clumps, so a run may miss one or two of them (measured over runs
# of 150 examples: 8-9 of the 9, 150-250 committed transactions).
MUST_COMMIT = {
    "register_product", "commission_batch", "change_price", "set_guardrail_policy", "set_replenishment_policy",
    "submit_ai_draft", "approve_draft", "record_scans", "add_key",
}


@settings(
    # derandomize: the same 150 sequences every run, so the coverage floor below cannot flake in CI.
    max_examples=150, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(block_spec, min_size=1, max_size=5))
# Finding 2 as an example: the mempool adds key "alt" as K0 and a transaction signed with K0 passes
# CheckTx; the block adds "alt" as K1 at the same nonce, then carries that transaction.
@example([(
    [(0, ADD_KEY, 1, "none", b""), (0, PRODUCT, 1, "alt-key", b"")],  # p=1: OTHER_GTIN, still free
    [(0, ADD_KEY, 0, "none", b"")],
    [(0, False), (2, False)],
)])
def _nodes_agree(blocks):
    checks_all, never_checks, interleaves = node(GENESIS), node(GENESIS), node(GENESIS)
    for app in (checks_all, never_checks, interleaves):
        assert block(app, OPENING) == [0] * len(OPENING)
    sent: list[bytes] = []
    for specs, mempool_specs, schedule in blocks:
        mempool_only = _build(never_checks, mempool_specs, sent, [])
        actions: list[str | None] = []
        txs = _build(never_checks, specs, sent, actions)
        seen = mempool_only + txs
        for raw in seen:
            check(checks_all, raw)
        for index, recheck in schedule:
            if seen:
                check(interleaves, seen[index % len(seen)], recheck=recheck)
        # What a proposer would propose: the stateless-valid transactions (ProcessProposal accepts).
        proposal = list(never_checks.prepare_proposal(abci.RequestPrepareProposal(txs=txs, max_tx_bytes=1 << 24)).txs)
        for app in (checks_all, never_checks, interleaves):
            assert app.process_proposal(abci.RequestProcessProposal(txs=proposal, height=app.height + 1)).status == abci.ResponseProcessProposal.ACCEPT
        # Every transaction of the block goes to FinalizeBlock, stateless-invalid ones included (a
        # block replayed from the store is not re-proposed).
        codes = [block(app, txs) for app in (checks_all, never_checks, interleaves)]
        assert codes[0] == codes[1] == codes[2]
        assert ResultCode.INTERNAL_ERROR not in codes[0]
        for code, action in zip(codes[0], actions):
            event(f"result {ResultCode(code).name}")  # shown by --hypothesis-show-statistics
            if code == 0 and action is not None:
                COMMITTED[action] += 1

        assert checks_all.app_hash == never_checks.app_hash == interleaves.app_hash
        for raw in txs:
            check(checks_all, raw, recheck=True)


def test_nodes_agree_whatever_they_saw_in_checktx():
    COMMITTED.clear()
    _nodes_agree()
    committed = MUST_COMMIT & set(COMMITTED)
    assert len(committed) >= len(MUST_COMMIT) - 2, f"generated sequences committed only {dict(COMMITTED)}"
    assert sum(COMMITTED.values()) >= 50, dict(COMMITTED)
