"""``shelfproof.product.v1.LabelService``: signed QR labels, label sheets, voids."""

from __future__ import annotations

import asyncio
import math

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shelfproof.common.v1 import common_pb2
from shelfproof.gs1 import labels
from shelfproof.gs1.keys import CSET82_VALUE
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.product.v1 import labels_pb2 as pb
from shelfproof.product.v1 import labels_pb2_grpc
from shelfproof.runtime.fields import gtin_field
from shelfproof.registry.projector import RegistryProjector
from shelfproof.ledger.client import ledger_error
from shelfproof.runtime.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LedgerRejected,
    NotFound,
)
from shelfproof.runtime.server import ServiceBinding

MAX_LABELS_PER_PAGE = 40
MAX_VOIDS = 1_000


class LabelService(labels_pb2_grpc.LabelServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, ledger: LedgerClient, projector: RegistryProjector, resolver: str) -> None:
        self.pool = pool
        self.ledger = ledger
        self.projector = projector
        self.resolver = resolver

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            pb.DESCRIPTOR.services_by_name["LabelService"].full_name,
            lambda server: labels_pb2_grpc.add_LabelServiceServicer_to_server(self, server),
        )

    def _sign(self, gtin: str, serial: str):
        # The registry's agent key is the brand's label key: its id is registered on the ledger.
        return labels.sign_label(self.ledger.signer.signing_key, gtin, serial, self.resolver)

    async def GetItemLabel(self, request: pb.GetItemLabelRequest, context) -> pb.GetItemLabelResponse:
        gtin = gtin_field(request.gtin, "gtin")
        if not CSET82_VALUE.match(request.serial):
            raise InvalidArgument("serial is invalid", field_violations=[FieldViolation("serial", "1-20 GS1 CSET 82 characters")])
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT voided_height FROM items WHERE gtin = %s AND serial = %s", (gtin, request.serial))
            ).fetchone()
        if row is None:
            raise NotFound(f"item {gtin}/{request.serial} was never commissioned")
        if row[0] is not None:
            raise FailedPrecondition(f"the label of {gtin}/{request.serial} was voided at height {row[0]}")
        link = self._sign(gtin, request.serial)
        uri = link.to_uri()
        response = pb.GetItemLabelResponse(uri=uri, key_id=link.key_id)
        if request.format == pb.LABEL_FORMAT_PNG:
            response.content, response.content_type = await asyncio.to_thread(labels.qr_png, uri), "image/png"
        elif request.format == pb.LABEL_FORMAT_SVG:
            response.content, response.content_type = (await asyncio.to_thread(labels.qr_svg, uri)).encode(), "image/svg+xml"
        return response

    async def PrintLabelSheet(self, request: pb.PrintLabelSheetRequest, context) -> pb.PrintLabelSheetResponse:
        per_page = request.labels_per_page or MAX_LABELS_PER_PAGE
        violations = []
        if not 1 <= per_page <= MAX_LABELS_PER_PAGE:
            violations.append(FieldViolation("labels_per_page", f"1 to {MAX_LABELS_PER_PAGE}"))
        if request.page < 1:
            violations.append(FieldViolation("page", ">= 1"))
        if violations:
            raise InvalidArgument("sheet request is invalid", field_violations=violations)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT gtin, count FROM batches WHERE batch_id = %s", (request.batch_id,))
            batch = await cur.fetchone()
            if batch is None:
                raise NotFound(f"batch {request.batch_id} does not exist")
            await cur.execute(
                "SELECT serial FROM items WHERE batch_id = %s AND voided_height IS NULL ORDER BY leaf_index"
                " OFFSET %s LIMIT %s",
                (request.batch_id, (request.page - 1) * per_page, per_page),
            )
            serials = [row["serial"] for row in await cur.fetchall()]
        page_count = max(1, math.ceil(batch["count"] / per_page))
        if not serials:
            raise NotFound(f"batch {request.batch_id} has {page_count} page(s); page {request.page} is empty")
        links = [self._sign(batch["gtin"], serial) for serial in serials]
        pdf = await asyncio.to_thread(
            labels.label_sheet_pdf, links, page=request.page, per_page=per_page, title=f"batch {request.batch_id}"
        )
        return pb.PrintLabelSheetResponse(pdf=pdf, page=request.page, page_count=page_count)

    async def VoidLabels(self, request: pb.VoidLabelsRequest, context) -> pb.VoidLabelsResponse:
        gtin = gtin_field(request.gtin, "gtin")
        violations = []
        if not 1 <= len(request.serials) <= MAX_VOIDS:
            violations.append(FieldViolation("serials", f"1 to {MAX_VOIDS} serials"))
        violations += [FieldViolation(f"serials[{i}]", "1-20 GS1 CSET 82 characters") for i, s in enumerate(request.serials) if not CSET82_VALUE.match(s)]
        if not request.reason.strip() or len(request.reason) > 512:
            violations.append(FieldViolation("reason", "required, at most 512 characters"))
        if violations:
            raise InvalidArgument("void request is invalid", field_violations=violations)
        serials = sorted(set(request.serials))
        async with self.pool.connection() as conn:
            known = {row[0] for row in await (await conn.execute(
                "SELECT serial FROM items WHERE gtin = %s AND serial = ANY(%s)", (gtin, serials))).fetchall()}
        missing = [s for s in serials if s not in known]
        if missing:
            raise NotFound(f"{len(missing)} serial(s) were never commissioned, e.g. {missing[0]}")
        try:
            result = await self.ledger.submit(
                txpb.TransactionBody(void_labels=txpb.VoidLabels(gtin=gtin, serials=serials, reason=request.reason))
            )
        except LedgerRejected as err:
            raise ledger_error(err) from err
        if not await self.projector.wait_for(result.height, result.index):
            raise DependencyUnavailable("committed on the ledger, but the query model is behind")
        return pb.VoidLabelsResponse(voided=len(serials), ledger_ref=common_pb2.LedgerRef(height=result.height, tx_hash=result.tx_hash))
