"""Reads scoped as trading partners expect, through the planner's real gRPC server with mTLS: the buyer's system
sees its drafts and orders, the supplier's system the orders it supplies (not the buyer's internal drafts),
and another retailer's system (a stolen certificate) nothing, not even whether a draft or order exists."""

from __future__ import annotations

import asyncio

import grpc

from shelfproof.ledger.genesis import DEMO_SECOND_STORE_GLN
from shelfproof.planner.runner import RestockRunner
from shelfproof.planner.v1 import planner_pb2 as pb
from shelfproof.planner.v1 import planner_pb2_grpc
from shelfproof.runtime.client import service_channel
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings, TlsSettings
from shelfproof.runtime.tls import DevCertificateAuthority
from tests.integration.planner_harness import BRAND, RETAILER, STORE
from tests.integration.test_orders_loop import NOW, _loop_stack


def _tls(ca: DevCertificateAuthority, name: str) -> TlsSettings:
    return TlsSettings(cert_file=ca.directory / f"{name}.pem", key_file=ca.directory / f"{name}.key",
                       ca_file=ca.ca_file, crl_file=ca.crl_file)


async def test_drafts_and_orders_are_read_by_their_parties_only(tmp_path, database_dsn):
    ca = DevCertificateAuthority.create_or_load(tmp_path / "ca")
    for name, gln, role in [("planner", RETAILER, "planner"), ("buyer", RETAILER, "system"), ("supplier", BRAND, "system"),
                            ("other-retailer", DEMO_SECOND_STORE_GLN, "system"), ("operator", "0000000000017", "operator")]:
        ca.issue(name, gln, role)
    stack = await _loop_stack(tmp_path, database_dsn, auto_approve_below=5_000_000)
    server = GrpcServer(GrpcServerSettings(port=0), [stack.service.binding()], tls=_tls(ca, "planner"), signing_organization=RETAILER)
    try:
        run, = await RestockRunner(stack.service, stack.pool, [STORE], cadence_s=7 * 86_400, clock=lambda: NOW).check()
        address = f"127.0.0.1:{await server.start()}"

        async def seen_by(caller: str) -> dict:
            async with service_channel(address, _tls(ca, caller)) as channel:
                stub = planner_pb2_grpc.PlannerServiceStub(channel)
                drafts = [d.draft_id for d in (await stub.ListDrafts(pb.ListDraftsRequest(), timeout=10)).drafts]
                orders = list((await stub.ListPurchaseOrders(pb.ListPurchaseOrdersRequest(), timeout=10)).purchase_orders)
                codes = {}
                for name, call in [("draft", stub.GetDraft(pb.GetDraftRequest(draft_id=run.draft_id), timeout=10)),
                                   ("order", stub.GetPurchaseOrder(pb.GetPurchaseOrderRequest(order_id=(orders or [order])[0].order_id), timeout=10))]:
                    try:
                        await call
                        codes[name] = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as error:
                        codes[name] = error.code()
                streamed = []
                try:
                    async for change in stub.StreamPurchaseOrders(pb.StreamPurchaseOrdersRequest(), timeout=1.5):
                        streamed.append(change.purchase_order.order_id)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                return {"drafts": drafts, "orders": [o.order_id for o in orders], **codes, "streamed": sorted(set(streamed))}

        async with service_channel(address, _tls(ca, "operator")) as channel:  # the platform's own tools see everything
            order, = (await planner_pb2_grpc.PlannerServiceStub(channel).ListPurchaseOrders(pb.ListPurchaseOrdersRequest(), timeout=10)).purchase_orders
        assert (order.buyer_gln, order.supplier_gln) == (RETAILER, BRAND)
        ok, hidden = grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND
        buyer, supplier, other = await asyncio.gather(seen_by("buyer"), seen_by("supplier"), seen_by("other-retailer"))
        assert buyer == {"drafts": [run.draft_id], "orders": [order.order_id], "draft": ok, "order": ok, "streamed": [order.order_id]}
        assert supplier == {"drafts": [], "orders": [order.order_id], "draft": hidden, "order": ok, "streamed": [order.order_id]}
        assert other == {"drafts": [], "orders": [], "draft": hidden, "order": hidden, "streamed": []}
    finally:
        await server.stop()
        await stack.__aexit__(None, None, None)
