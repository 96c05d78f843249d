"""Fuzzing the entry points that take bytes and text from outside (tests/security/protofuzz.py draws the
inputs; ``SHELFPROOF_FUZZ_EXAMPLES`` sets how many):

- the ledger's ABCI application: random bytes and mutations of a valid signed transaction through CheckTx
  and FinalizeBlock, and hostile transaction bodies *signed by a member* (so they reach every rule): every
  one answered in-band with a result code, never INTERNAL_ERROR, never an exception;
- the Digital Link parser: parsed, or refused with ``InvalidDigitalLink``, nothing else, quickly;
- the verify page over HTTP (a real server on loopback): any path and query answered below 500.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st
from shelfproof.gs1.digital_link import InvalidDigitalLink, parse_digital_link
from shelfproof.ledger.core import rules
from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.core.state import Overlay
from shelfproof.ledger.v1 import state_pb2 as stpb
from shelfproof.ledger.v1 import transaction_pb2 as txpb

from tests.conftest import fresh_database
from tests.integration.verify_harness import VerifyStack
from tests.security.ledger_nodes import GTIN, block, check, genesis, node, product, signers
from tests.security.protofuzz import FUZZ_EXAMPLES, HOSTILE_STRINGS, fuzz_settings, messages, text
from tests.security.test_fuzz_grpc import StackThread

GENESIS = genesis()
SIGNERS = signers(GENESIS)
KNOWN_CODES = {code.value for code in ResultCode}


def _valid_tx() -> bytes:
    signer = SIGNERS[next(a for a in SIGNERS if a.endswith("/admin-0") and a.startswith(GENESIS.state.organizations[1].gln))]
    return signer.sign(product(GTIN), nonce=1)


VALID = _valid_tx()


def _mutations() -> st.SearchStrategy[bytes]:
    flip = st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)).map(
        lambda p: VALID[: p[0]] + bytes([VALID[p[0]] ^ p[1]]) + VALID[p[0] + 1:]
    )
    cut = st.integers(0, len(VALID) - 1).map(lambda n: VALID[:n])
    splice = st.tuples(st.integers(0, len(VALID)), st.binary(max_size=64)).map(lambda p: VALID[: p[0]] + p[1] + VALID[p[0]:])
    return st.one_of(flip, cut, splice, st.binary(max_size=4096))


def _answered(codes: list[int]) -> None:
    assert all(code in KNOWN_CODES for code in codes), codes
    for code in codes:
        event(f"result {ResultCode(code).name}")  # shown by --hypothesis-show-statistics (make fuzz)
    assert ResultCode.INTERNAL_ERROR not in codes, codes


@fuzz_settings(FUZZ_EXAMPLES * 10)
@given(st.lists(_mutations(), min_size=1, max_size=8))
def test_random_and_mutated_bytes_are_answered_in_band(raws):
    app = node(GENESIS)
    _answered([check(app, raw) for raw in raws])
    _answered(block(app, raws))


def _nonce(app, agent_id: str) -> int:
    agent = rules.read(Overlay(app.state.latest), "agents", agent_id, stpb.AgentRecord)
    return agent.nonce if agent is not None else 0


@fuzz_settings(FUZZ_EXAMPLES * 5)
@given(st.lists(st.tuples(st.sampled_from(sorted(SIGNERS)), messages(txpb.TransactionBody.DESCRIPTOR)), min_size=1, max_size=6))
def test_hostile_bodies_signed_by_members_reach_the_rules_and_are_answered(signed_bodies):
    """Correct signatures and nonces, so authentication passes and every rule sees the hostile values."""
    app = node(GENESIS)
    raws, nonces = [], {}
    for agent_id, body in signed_bodies:
        nonces[agent_id] = nonces.get(agent_id, _nonce(app, agent_id)) + 1
        raws.append(SIGNERS[agent_id].sign(body, nonce=nonces[agent_id]))
    _answered([check(app, raw) for raw in raws])
    _answered(block(app, raws))


DIGITAL_LINKISH = st.builds(
    lambda host, parts, query: f"https://{host}/" + "/".join(parts) + (f"?{query}" if query else ""),
    st.sampled_from(["id.gs1.org", "example.com", "", "a" * 300, "127.0.0.1:1"]),
    st.lists(st.one_of(st.sampled_from(["01", "21", "10", "17", "22", "235", "8003", "414", "00", "09506000134352", "ABC"]), text), max_size=8),
    st.one_of(st.just(""), text, st.sampled_from(["17=261231", "linkType=gs1:pip", "s=AAAA&k=k1", "%zz"])),
)


@fuzz_settings(FUZZ_EXAMPLES * 50)
@given(st.one_of(DIGITAL_LINKISH, text, st.text(max_size=2000)))
def test_digital_link_parser_parses_or_refuses(uri):
    started = time.thread_time()  # CPU time: a loaded machine does not count
    try:
        parse_digital_link(uri)
    except InvalidDigitalLink:
        pass
    assert time.thread_time() - started < 0.1


@pytest.fixture(scope="module")
def verify_page(tmp_path_factory, postgres_cluster, migrated_template):
    with fresh_database(postgres_cluster, migrated_template) as dsn:
        stack = VerifyStack(tmp_path_factory.mktemp("fuzz-verify"), dsn, rate_per_s=10_000, burst=10_000)
        with StackThread(stack), httpx.Client(base_url=stack.base_url, timeout=20) as client:
            yield client


PATHS = st.one_of(
    st.builds(lambda parts: "/" + "/".join(quote(p, safe="") for p in parts), st.lists(st.one_of(text, st.sampled_from(["01", "21", "09506000134352"])), max_size=6)),
    st.builds(lambda rest: "/01/" + quote(rest, safe="/?=&%"), text),
    st.sampled_from(["/", "/healthz", "/share.js", "/01/", "/01/09506000134352/21/A1", "/01/09506000134352/21/A1?s=" + "A" * 5000]),
)


@fuzz_settings(FUZZ_EXAMPLES * 5)
@given(PATHS, st.dictionaries(st.sampled_from(["s", "k", "cell", "format", "linkType", "17", "x"] + HOSTILE_STRINGS[:6]), text, max_size=4),
       st.sampled_from(["text/html", "application/json", "*/*", "application/problem+json", ""]))
@example("////", {}, "text/html")  # found by the fuzz on a fresh clone: a path of empty segments
def test_the_verify_page_answers_any_path_and_query_below_500(verify_page, path, query, accept):
    # An absolute URL: httpx refuses a relative one whose path starts with "//" ("////" is a path a phone
    # may send) before anything reaches the page.
    url = str(verify_page.base_url).rstrip("/") + path
    reply = verify_page.get(url, params=query, headers={"Accept": accept} if accept else {})
    # 503 with Retry-After is the page's deliberate "try again" (the ledger's read ran past its deadline
    # on a loaded machine), not a failure of the page; anything else from 500 up is.
    deliberate = reply.status_code == 503 and "Retry-After" in reply.headers
    assert reply.status_code < 500 or deliberate, (path, query, reply.status_code, reply.text[:300])
