"""gRPC failures as sentences: what happened and what to do, from the status code and the
google.rpc details the services send (``shelfproof.runtime.errors`` is the one decoder)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc
from grpc_status import rpc_status

from shelfproof.ledger.core.codes import ResultCode
from shelfproof.ledger.core.rules.price_computation import (
    RULE_MARGIN_FLOOR, RULE_MAX_CHANGE, RULE_MAX_DISCOUNT, RULE_MIN_PRICE, RULE_PRICE_ENDINGS,
)
from shelfproof.runtime.errors import DomainError, GuardrailViolated, LedgerRejected, error_from_rpc

WHAT_TO_DO: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: "Correct the highlighted input and try again.",
    grpc.StatusCode.NOT_FOUND: "Check the code or identifier; it may not be registered yet.",
    grpc.StatusCode.ALREADY_EXISTS: "Nothing to do: it is already recorded.",
    grpc.StatusCode.FAILED_PRECONDITION: "The current state does not allow this; refresh the page to see it.",
    grpc.StatusCode.PERMISSION_DENIED: "Your role or organisation may not do this; ask someone who may.",
    grpc.StatusCode.UNAUTHENTICATED: "Log in again.",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "The service is busy; wait a moment and try again.",
    grpc.StatusCode.UNAVAILABLE: "A service is not reachable; check `shelfproof status` and try again.",
    grpc.StatusCode.DEADLINE_EXCEEDED: "The service took too long; try again in a moment.",
}
LEDGER_WHAT_TO_DO = "The ledger refused the transaction; nothing was written. Refresh and check the item's state."
# The ledger names a refused guardrail as "<rule>: <what and the limit>" (price_computation).
GUARDRAIL_RULES = {
    RULE_MARGIN_FLOOR: "the margin floor", RULE_MAX_DISCOUNT: "the largest discount", RULE_MAX_CHANGE: "the largest price change a day",
    RULE_MIN_PRICE: "the minimum price", RULE_PRICE_ENDINGS: "the price endings",
}
GUARDRAIL_WHAT_TO_DO = ("Nothing was changed: every validator checks the guardrails. Choose a value within the limit, "
                        "or ask who sets your organisation's guardrail policy.")
_GUARDRAIL = re.compile(rf"(?:^|.*?: )({'|'.join(GUARDRAIL_RULES)}): (.*)$", re.S)
LEDGER_PREFIX = "ledger rejected the transaction"  # how the ledger client words every refusal
_BPS = re.compile(r"(\d+) bps")
_MINOR = re.compile(r"\b(price|cost|minimum of|from|to|fixed price) (\d+)\b")


@dataclass(frozen=True)
class Problem:
    """An error as the console shows it."""

    what_happened: str
    what_to_do: str
    fields: tuple[str, ...] = ()

    def sentence(self) -> str:
        fields = f" ({'; '.join(self.fields)})" if self.fields else ""
        return f"{self.what_happened}{fields}. {self.what_to_do}"


def _cap(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] if text else "The request failed"


def guardrail_problem(message: str) -> Problem | None:
    """A guardrail refusal as a sentence naming the rule and its limit (amounts in the price's currency,
    basis points as per cent); None when the message names no guardrail."""
    found = _GUARDRAIL.match(message.strip())
    if found is None:
        return None
    rule, detail = found.groups()
    subject = message.strip()[:found.start(1)].rstrip(": ").removeprefix(LEDGER_PREFIX).lstrip(": ")
    detail = _BPS.sub(lambda m: f"{int(m.group(1)) / 100:g} %", detail.rstrip("."))
    detail = _MINOR.sub(lambda m: f"{m.group(1)} {int(m.group(2)) / 100:.2f}", detail)
    where = f" ({subject})" if subject else ""
    return Problem(f"A guardrail refused this: {GUARDRAIL_RULES[rule]}{where}, {detail}", GUARDRAIL_WHAT_TO_DO)


def _transport_failure(error: grpc.RpcError) -> Problem | None:
    """A call that never reached a shelfproof server (those always answer with a google.rpc.Status):
    the channel's own words ("failed to connect to all addresses ...") are not for people."""
    try:
        code, from_a_service = error.code(), rpc_status.from_call(error) is not None
    except (AttributeError, ValueError):
        return None
    if from_a_service or code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return None
    what = "A service is not reachable" if code == grpc.StatusCode.UNAVAILABLE else "A service did not answer in time"
    return Problem(what, WHAT_TO_DO[code])


def problem_of(error: BaseException) -> Problem:
    if isinstance(error, grpc.RpcError):
        if (problem := _transport_failure(error)) is not None:
            return problem
        error = error_from_rpc(error)
    guarded = (isinstance(error, LedgerRejected) and error.ledger_code == ResultCode.GUARDRAIL_VIOLATED) or isinstance(error, GuardrailViolated)
    if guarded and (problem := guardrail_problem(error.message)) is not None:
        return problem
    if isinstance(error, LedgerRejected):
        return Problem(_cap(error.message), LEDGER_WHAT_TO_DO)
    if isinstance(error, DomainError):
        code = error.code
        fields = tuple(f"{v.field}: {v.description}" for v in error.field_violations[:5])
        if code == grpc.StatusCode.UNAVAILABLE and not error.message.strip():
            return Problem("A service is not reachable", WHAT_TO_DO[code])
        return Problem(_cap(error.message), WHAT_TO_DO.get(code, "Try again; if it keeps failing, tell an administrator."), fields)
    return Problem(_cap(str(error)), "Try again; if it keeps failing, tell an administrator.")
