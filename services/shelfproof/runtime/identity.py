"""Who is calling, and may they: the one place each server decides it.

With TLS on, the handshake already refused a caller without a certificate from our CA, or with an expired
one (UNAVAILABLE to the caller). This interceptor reads the certificate gRPC verified, refuses a revoked one
(UNAUTHENTICATED), looks the RPC up in ``AUTHORIZATION`` (a role that is not listed: PERMISSION_DENIED,
before any handler runs, so nothing changes), charges write RPCs to the caller organisation's token
bucket (RESOURCE_EXHAUSTED with RetryInfo), and binds the caller to the request context for the handler.
The domain exceptions it raises are turned into statuses by the one error interceptor around it.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import grpc
from cryptography import x509

from shelfproof.runtime.errors import Overloaded, PermissionDenied, Unauthenticated
from shelfproof.runtime.request_context import bind_caller, current_caller
from shelfproof.runtime.settings import TlsSettings
from shelfproof.runtime.tls import Identity, RevocationList, identity_of
from shelfproof.verify.ratelimit import RateLimiter

# Roles a certificate can carry. The platform's own services each hold one for the calls they make; an
# organisation's own system (a retailer's, brand's, supplier's ERP) holds "system"; the console and the
# local tools (`shelfproof status`, the demo seed) are run by the deployment's operator; an auditor reads.
SERVICE_ROLES = frozenset({"ledger", "registry", "pricing", "planner", "verify"})
ROLES = SERVICE_ROLES | {"system", "console", "operator", "auditor"}
# Who may write through a service that signs with its own agent's key (registry, planner, pricing): people
# at the console, the operator's tools, and the system of the organisation the service signs for.
PEOPLE_AND_SYSTEMS = frozenset({"system", "console", "operator"})
# Who may submit signed transactions and content to the ledger: anyone holding a ledger key (the ledger
# checks the signature, the signer's role and organisation itself).
SIGNERS = frozenset({"registry", "pricing", "planner", "verify"}) | PEOPLE_AND_SYSTEMS


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    write: bool = False


READ = Rule(frozenset(ROLES))


def _writes(roles: frozenset[str], *methods: str) -> dict[str, Rule]:
    return {m: Rule(roles, write=True) for m in methods}


def _reads(*methods: str) -> dict[str, Rule]:
    return {m: READ for m in methods}


# Service → RPC → rule. An RPC that is not here is refused (a new RPC must be given its row).
AUTHORIZATION: dict[str, dict[str, Rule]] = {
    "shelfproof.ledger.v1.LedgerService": {
        **_writes(SIGNERS, "SubmitTransaction", "SubmitTransactions", "PutContent"),
        **_reads("GetTransaction", "GetBlock", "Query", "QueryMany", "StreamCommittedTransactions", "GetLedgerStatus", "GetContent"),
    },
    "shelfproof.product.v1.ProductService": {
        **_writes(PEOPLE_AND_SYSTEMS, "CreateOrganization", "CreateLocation", "CreateProduct", "UpdateProduct", "CommissionItems", "RecallLot"),
        **_reads("GetOrganization", "GetLocation", "ListLocations", "GetProduct", "ListProducts", "StreamRecalls"),
    },
    "shelfproof.product.v1.EventService": {
        **_writes(PEOPLE_AND_SYSTEMS, "CaptureEvents"),
        **_reads("ListEvents", "ExportEvents", "ListInventoryPositions"),
    },
    "shelfproof.product.v1.LabelService": {
        **_writes(PEOPLE_AND_SYSTEMS, "PrintLabelSheet", "VoidLabels"),
        **_reads("GetItemLabel"),
    },
    "shelfproof.product.v1.AlertService": {
        **_writes(PEOPLE_AND_SYSTEMS, "DeclareMarkets", "ClearCompromise"),
        **_reads("StreamAlerts"),
    },
    "shelfproof.planner.v1.PlannerService": {
        **_writes(PEOPLE_AND_SYSTEMS, "DraftRestock", "DraftPromotion", "ApproveDraft", "RejectDraft", "AcknowledgePurchaseOrder"),
        **_reads("ListDrafts", "GetDraft", "ListPurchaseOrders", "GetPurchaseOrder", "StreamPurchaseOrders", "ListRestockRuns"),
    },
    "shelfproof.pricing.v1.PricingService": {
        **_writes(PEOPLE_AND_SYSTEMS, "ProposePriceChange", "SchedulePriceChange"),
        **_reads("GetPrice", "GetPrices", "ListPrices", "ListPriceHistory", "StreamPriceChanges"),
    },
    # Health and reflection answer any authenticated caller (probes, grpcurl with a certificate).
    "grpc.health.v1.Health": _reads("Check", "Watch"),
    "grpc.reflection.v1alpha.ServerReflection": _reads("ServerReflectionInfo"),
}


def rule_for(method: str) -> Rule | None:
    """The rule of ``/package.Service/Method``, or None for an RPC the table does not name."""
    service, _, name = method.lstrip("/").rpartition("/")
    return AUTHORIZATION.get(service, {}).get(name)


class CallerAuthorization:
    """The decision for one server: its revocation list, the organisation it signs for (a "system" caller
    of another organisation may read but not write through it), and the write budgets per organisation."""

    def __init__(
        self, revocations: RevocationList, *, signing_organization: str = "", write_rate_per_s: float, write_burst: int
    ) -> None:
        self.revocations = revocations
        self.signing_organization = signing_organization
        self.write_rates = RateLimiter(write_rate_per_s, write_burst, max_clients=100_000)

    def admit(self, method: str, context: grpc.aio.ServicerContext) -> Identity:
        return self.admit_caller(method, _caller_of(context))

    def admit_caller(self, method: str, caller: Identity) -> Identity:
        """The decision for a caller whose certificate the TLS handshake verified (gRPC or HTTP)."""
        if self.revocations.is_revoked(caller.serial):
            raise Unauthenticated("the caller's certificate is revoked", reason="ERROR_REASON_CERTIFICATE_REVOKED")
        if caller.not_after is not None and datetime.now(timezone.utc) > caller.not_after:
            raise Unauthenticated("the caller's certificate has expired", reason="ERROR_REASON_CERTIFICATE_EXPIRED")
        rule = rule_for(method)
        if rule is None or caller.role not in rule.roles:
            raise PermissionDenied(
                f"role {caller.role} may not call {method}", metadata={"role": caller.role, "method": method}
            )
        if rule.write:
            if caller.role == "system" and self.signing_organization and caller.organization_gln != self.signing_organization:
                raise PermissionDenied(
                    f"this service writes for organisation {self.signing_organization}, not {caller.organization_gln}",
                    metadata={"organization": caller.organization_gln},
                )
            wait_s = self.write_rates.acquire(caller.organization_gln)
            if wait_s > 0:
                raise Overloaded(
                    f"organisation {caller.organization_gln} is over its write rate; retry in {wait_s:.2f} s",
                    retry_after_s=wait_s, metadata={"organization": caller.organization_gln},
                )
        return caller


@functools.lru_cache(maxsize=4096)
def _identity_of_pem(pem: bytes) -> Identity | None:
    """Parsed once per certificate, not once per call (a connection presents the same one every time)."""
    try:
        return identity_of(x509.load_pem_x509_certificate(pem))
    except ValueError:
        return None


def _caller_of(context: grpc.aio.ServicerContext) -> Identity:
    """The identity in the peer certificate gRPC verified in the handshake."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if len(pems) != 1:
        raise Unauthenticated("no client certificate")
    caller = _identity_of_pem(pems[0])
    if caller is None:
        raise Unauthenticated("the client certificate names no shelfproof identity")
    return caller


class IdentityInterceptor(grpc.aio.ServerInterceptor):
    """Runs ``CallerAuthorization.admit`` before the handler, inside the error interceptor."""

    def __init__(self, authorization: CallerAuthorization) -> None:
        self._authorization = authorization

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method, admit = handler_call_details.method, self._authorization.admit
        kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, k))
        behavior = getattr(handler, kind)

        if kind in ("unary_unary", "stream_unary"):
            async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
                bind_caller(admit(method, context))
                return await behavior(request, context)

        elif inspect.isasyncgenfunction(behavior) or inspect.isasyncgenfunction(getattr(behavior, "__func__", None)):
            async def guarded(request: Any, context: grpc.aio.ServicerContext):  # type: ignore[misc]
                bind_caller(admit(method, context))
                async for response in behavior(request, context):
                    yield response

        else:  # a streaming handler that writes with context.write()
            async def guarded(request: Any, context: grpc.aio.ServicerContext) -> None:  # type: ignore[misc]
                bind_caller(admit(method, context))
                await behavior(request, context)

        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        return factory(
            guarded, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


def refuse_development_material(environment: str, tls: TlsSettings, *, holds_private_keys: bool = False) -> None:
    """Outside development (SHELFPROOF_ENV), a service refuses to start without TLS, with the development CA,
    or from a genesis file that holds private keys (the development genesis): SystemExit says which."""
    from shelfproof.runtime.tls import is_development_ca

    if environment == "development":
        return
    if not tls.enabled or tls.ca_file is None:
        raise SystemExit(f"SHELFPROOF_ENV={environment}: TLS is required (set SHELFPROOF_TLS_CERT_FILE and the rest)")
    if is_development_ca(tls.ca_file):
        raise SystemExit(f"SHELFPROOF_ENV={environment}: {tls.ca_file} is the development CA")
    if holds_private_keys:
        raise SystemExit(f"SHELFPROOF_ENV={environment}: the genesis file holds development private keys")


# Roles that speak for one organisation from outside the platform: what they read is scoped to that
# organisation and what its trading partners shared with it. The platform's own roles read everything
# (the services each enforce their own scope on what they write).
ORGANIZATION_ROLES = frozenset({"system", "auditor"})


def reader_organization() -> str | None:
    """The GLN the current request's reads are scoped to, or None (no TLS, or a platform role)."""
    caller = current_caller()
    return caller.organization_gln if caller is not None and caller.role in ORGANIZATION_ROLES else None
