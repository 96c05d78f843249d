"""Signed QR labels, sheets and voids over the real stack."""

from __future__ import annotations

import re

import grpc
import pytest

from shelfproof.gs1 import labels
from tests.qr import decode_qr_png
from shelfproof.gs1.digital_link import parse_digital_link
from shelfproof.ledger.genesis import DEMO_BRAND_GLN
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.product.v1 import labels_pb2 as pb
from shelfproof.product.v1 import product_pb2 as ppb
from tests.integration.harness import RESOLVER, Registry

GTIN = "00614141123452"


async def test_labels_are_signed_by_a_ledger_key_printed_and_voided(tmp_path, database_dsn):
    async with Registry(tmp_path, database_dsn) as registry:
        await registry.stub.CreateProduct(ppb.CreateProductRequest(product=ppb.Product(gtin=GTIN, name="oil")), timeout=20)
        batch = None
        async for reply in registry.stub.CommissionItems(ppb.CommissionItemsRequest(gtin=GTIN, lot="L1", count=45), timeout=60):
            batch = reply.batch if reply.HasField("batch") else batch
        ledger = ledger_pb2_grpc.LedgerServiceStub(registry.ledger_channel)
        serial = None
        sheet = await registry.labels.PrintLabelSheet(pb.PrintLabelSheetRequest(batch_id=batch.batch_id, page=2), timeout=20)
        assert sheet.page_count == 2 and sheet.pdf.startswith(b"%PDF") and len(re.findall(rb"/Type /Page[^s]", sheet.pdf)) == 1

        # One item's label: the QR code decodes to the signed URI, which verifies with the key the
        # ledger holds for the brand's agent under the label's key id.
        import psycopg

        with psycopg.connect(registry.dsn) as conn:
            serial = conn.execute("SELECT serial FROM items ORDER BY leaf_index LIMIT 1").fetchone()[0]
        label = await registry.labels.GetItemLabel(pb.GetItemLabelRequest(gtin=GTIN, serial=serial, format=pb.LABEL_FORMAT_PNG), timeout=10)
        assert decode_qr_png(label.content) == label.uri
        link = parse_digital_link(label.uri)
        assert (link.gtin, link.serial, link.key_id, link.resolver) == (GTIN, serial, label.key_id, RESOLVER)
        agent = st.AgentRecord.FromString(
            (await ledger.Query(lpb.QueryRequest(store="agents", key=f"{DEMO_BRAND_GLN}/admin-0".encode()), timeout=10)).value
        )
        key = next(k for k in agent.keys if k.key_id == label.key_id)
        assert labels.verify_label(link, key.public_key) and not key.revoked
        again = await registry.labels.GetItemLabel(pb.GetItemLabelRequest(gtin=GTIN, serial=serial, format=pb.LABEL_FORMAT_URI), timeout=10)
        assert again.uri == label.uri  # a reprint is the same label

        voided = await registry.labels.VoidLabels(pb.VoidLabelsRequest(gtin=GTIN, serials=[serial], reason="damaged"), timeout=20)
        assert voided.voided == 1
        status = await ledger.Query(lpb.QueryRequest(store="status", key=f"{GTIN}/{serial}".encode(), height=voided.ledger_ref.height, prove=True), timeout=10)
        assert st.StatusRecord.FromString(status.value).status == "voided" and len(status.proof_ops) == 3
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.labels.GetItemLabel(pb.GetItemLabelRequest(gtin=GTIN, serial=serial), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        for request, code in (
            (pb.GetItemLabelRequest(gtin=GTIN, serial="NEVERISSUED1"), grpc.StatusCode.NOT_FOUND),
            (pb.GetItemLabelRequest(gtin="00614141123453", serial=serial), grpc.StatusCode.INVALID_ARGUMENT),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await registry.labels.GetItemLabel(request, timeout=10)
            assert caught.value.code() == code
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.labels.VoidLabels(pb.VoidLabelsRequest(gtin=GTIN, serials=["NEVERISSUED1"], reason="x"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.labels.PrintLabelSheet(pb.PrintLabelSheetRequest(batch_id=batch.batch_id, page=3), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
