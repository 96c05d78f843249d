"""gRPC failures as sentences: what happened and what to do, from the status code and the
google.rpc details the services send (``shelfproof.runtime.errors`` is the one decoder)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from shelfproof.runtime.errors import DomainError, LedgerRejected, error_from_rpc

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


def problem_of(error: BaseException) -> Problem:
    if isinstance(error, grpc.RpcError):
        error = error_from_rpc(error)
    if isinstance(error, LedgerRejected):
        return Problem(_cap(error.message), LEDGER_WHAT_TO_DO)
    if isinstance(error, DomainError):
        code = error.code
        fields = tuple(f"{v.field}: {v.description}" for v in error.field_violations[:5])
        if code == grpc.StatusCode.UNAVAILABLE and not error.message.strip():
            return Problem("A service is not reachable", WHAT_TO_DO[code])
        return Problem(_cap(error.message), WHAT_TO_DO.get(code, "Try again; if it keeps failing, tell an administrator."), fields)
    return Problem(_cap(str(error)), "Try again; if it keeps failing, tell an administrator.")
