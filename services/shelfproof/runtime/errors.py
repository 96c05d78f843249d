"""Domain exceptions that carry their gRPC status, and their google.rpc.Status encoding (AIP-193).

Services raise these; one interceptor (``shelfproof.runtime.interceptors``) turns them into statuses,
and clients turn statuses back into them with ``error_from_rpc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "shelfproof.dev"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error a shelfproof service answers on purpose."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    default_reason: ClassVar[str] = "ERROR_REASON_UNSPECIFIED"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)

    def to_status(self) -> status_pb2.Status:
        details = [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        ]
        if self.field_violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in self.field_violations
                    ]
                )
            )
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return status


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "ERROR_REASON_INVALID_FIELD"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "ERROR_REASON_NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ERROR_REASON_ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "ERROR_REASON_FAILED_PRECONDITION"


class LedgerRejected(FailedPrecondition):
    """The ledger answered a non-zero result code; ``metadata['ledger_code']`` carries it."""

    default_reason = "ERROR_REASON_LEDGER_REJECTED"

    def __init__(self, message: str, *, ledger_code: int, **kwargs) -> None:
        metadata = {**kwargs.pop("metadata", {}), "ledger_code": str(ledger_code)}
        super().__init__(message, metadata=metadata, **kwargs)
        self.ledger_code = ledger_code


class GuardrailViolated(FailedPrecondition):
    default_reason = "ERROR_REASON_GUARDRAIL_VIOLATED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "ERROR_REASON_PERMISSION_DENIED"


class Internal(DomainError):
    """A bug, ours or a dependency's (the ledger's INTERNAL_ERROR included): never bad input."""

    default_reason = "ERROR_REASON_INTERNAL"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "ERROR_REASON_UNAUTHENTICATED"


class Overloaded(DomainError):
    """Over a limit; ``retry_after_s``, when known, travels as google.rpc.RetryInfo."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "ERROR_REASON_OVERLOADED"

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s

    def to_status(self) -> status_pb2.Status:
        status = super().to_status()
        if self.retry_after_s is not None:
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromNanoseconds(max(int(self.retry_after_s * 1e9), 1))
            status.details.add().Pack(info)
        return status


class DependencyUnavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "ERROR_REASON_DEPENDENCY_UNAVAILABLE"


_BY_CODE: dict[grpc.StatusCode, type[DomainError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Internal,
        Unauthenticated,
        Overloaded,
        DependencyUnavailable,
    )
}
_BY_REASON: dict[str, type[DomainError]] = {
    "ERROR_REASON_LEDGER_REJECTED": LedgerRejected,
    "ERROR_REASON_GUARDRAIL_VIOLATED": GuardrailViolated,
}


def error_from_rpc(error: grpc.RpcError) -> DomainError:
    """Rebuild the domain error a shelfproof server sent (or a generic one for other failures)."""
    status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    reason, metadata, violations, retry_after_s = None, {}, [], None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after_s = retry.retry_delay.ToNanoseconds() / 1e9
    cls = _BY_REASON.get(reason or "") or _BY_CODE.get(code, DomainError)
    if cls is LedgerRejected:
        ledger_code = int(metadata.pop("ledger_code", "0"))
        return LedgerRejected(message or "", ledger_code=ledger_code, metadata=metadata, reason=reason)
    if cls is Overloaded:
        return Overloaded(message or "", retry_after_s=retry_after_s, reason=reason, metadata=metadata)
    err = cls(message or "", reason=reason, metadata=metadata, field_violations=violations)
    if cls is DomainError:
        err.code = code  # type: ignore[misc]  # keep e.g. INTERNAL/DEADLINE_EXCEEDED as received
    return err

