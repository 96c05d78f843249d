"""AlertService: the counterfeit alerts the ledger derived from committed scans, streamed to brands'
systems and the console.

Served by the registry process because it already follows the ledger's committed stream (as
StreamRecalls does) and holds no state of its own: the alerts are ledger state (store ``alerts``,
keyed by height and the scans transaction's hash), so a stream resumes from any height and a brand
can ask the ledger for a proof of any alert it received.
"""

from __future__ import annotations

from shelfproof.common.v1 import common_pb2
from shelfproof.gs1.keys import CSET82_VALUE
from shelfproof.ledger.client import LedgerClient, ledger_error
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.product.v1 import alerts_pb2 as pb
from shelfproof.product.v1 import alerts_pb2_grpc
from shelfproof.runtime.client import call
from shelfproof.runtime.errors import FieldViolation, InvalidArgument, LedgerRejected
from shelfproof.runtime.fields import gln_field, gtin_field
from shelfproof.runtime.server import ServiceBinding


def alerts_key(height: int, tx_hash: bytes) -> bytes:
    """Where the ledger keeps the alerts one transaction raised (``rules.scans._AlertSink``)."""
    return f"{height:012d}/{tx_hash.hex()}".encode()


class AlertService(alerts_pb2_grpc.AlertServiceServicer):
    def __init__(self, ledger: ledger_pb2_grpc.LedgerServiceStub, writer: LedgerClient) -> None:
        self.ledger = ledger
        # Signs as the registry's organisation (the brand): the ledger scopes both writes to its GTINs.
        self.writer = writer

    async def _commit(self, body: txpb.TransactionBody) -> common_pb2.LedgerRef:
        try:
            result = await self.writer.submit(body)
        except LedgerRejected as err:
            raise ledger_error(err) from err
        return common_pb2.LedgerRef(height=result.height, tx_hash=result.tx_hash)

    async def DeclareMarkets(self, request: pb.DeclareMarketsRequest, context) -> pb.DeclareMarketsResponse:
        gtin = gtin_field(request.gtin, "gtin")
        body = txpb.TransactionBody(declare_markets=txpb.DeclareMarkets(gtin=gtin, cells=list(request.cells)))
        return pb.DeclareMarketsResponse(ledger_ref=await self._commit(body))

    async def ClearCompromise(self, request: pb.ClearCompromiseRequest, context) -> pb.ClearCompromiseResponse:
        gtin = gtin_field(request.gtin, "gtin")
        violations = []
        if not CSET82_VALUE.fullmatch(request.serial):
            violations.append(FieldViolation("serial", "1-20 GS1 CSET 82 characters"))
        if not request.reason.strip() or len(request.reason) > 512:
            violations.append(FieldViolation("reason", "required, at most 512 characters"))
        if violations:
            raise InvalidArgument("clearing is invalid", field_violations=violations)
        body = txpb.TransactionBody(clear_compromise=txpb.ClearCompromise(gtin=gtin, serial=request.serial, reason=request.reason))
        return pb.ClearCompromiseResponse(ledger_ref=await self._commit(body))

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            pb.DESCRIPTOR.services_by_name["AlertService"].full_name,
            lambda server: alerts_pb2_grpc.add_AlertServiceServicer_to_server(self, server),
        )

    async def StreamAlerts(self, request: pb.StreamAlertsRequest, context):
        if request.from_height < 0:
            raise InvalidArgument("from_height must be >= 0", field_violations=[FieldViolation("from_height", ">= 0")])
        brand = gln_field(request.brand_owner_gln, "brand_owner_gln") if request.brand_owner_gln else ""
        declared = set(st.AlertKind.values()) - {st.ALERT_KIND_UNSPECIFIED}
        if any(k not in declared for k in request.kinds):
            raise InvalidArgument("unknown alert kind", field_violations=[FieldViolation("kinds", "declared AlertKind values")])
        kinds = set(request.kinds)
        stream = self.ledger.StreamCommittedTransactions(lpb.StreamCommittedTransactionsRequest(from_height=request.from_height))
        try:
            async for item in stream:
                result = item.result
                body = txpb.TransactionBody.FromString(txpb.SignedTransaction.FromString(result.transaction).body)
                if body.WhichOneof("action") != "record_scans":
                    continue
                reply = await call(
                    self.ledger.Query, lpb.QueryRequest(store="alerts", key=alerts_key(result.height, result.tx_hash)),
                    idempotent=True, deadline_s=10,
                )
                if not reply.found:
                    continue
                ref = common_pb2.LedgerRef(height=result.height, tx_hash=result.tx_hash)
                for alert in st.AlertBatch.FromString(reply.value).alerts:
                    if (brand and alert.brand_owner_gln != brand) or (kinds and alert.kind not in kinds):
                        continue
                    yield pb.StreamAlertsResponse(alert=pb.Alert(record=alert, alert_time=result.block_time, ledger_ref=ref))
        finally:
            stream.cancel()
