"""``shelfproof.planner.v1.PlannerService``: the thin gRPC service in front of the drafting deployment.

It gathers what a draft needs (the policies committed on the ledger, sales and stock from the query
model), computes quantities with the forecast and the inventory policy, asks the drafter (the model,
on Ray Serve) for proposals and text, bounds them, stores prompt, input snapshot and output in the
content store, and commits the draft with its AI decision record. Approvals and rejections are
transactions the people themselves signed; this service relays them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from typing import Callable, Protocol

import numpy as np
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shelfproof.common.v1 import common_pb2
from shelfproof.ledger.client import LedgerClient, ledger_error
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner import prompts
from shelfproof.planner.demand import load_daily_sales
from shelfproof.planner.drafter import POLICY_ONLY, DraftOutput, schemas_sha256, template_sha256
from shelfproof.planner.forecast import PLANNER_METHOD, forecast_demand, scaled_error
from shelfproof.planner.guard import Adjustment, PriceFacts, RestockCandidate, bound_promotion, bound_restock
from shelfproof.planner.policy import ReplenishmentLines, ReplenishmentPolicy, plan_replenishment
from shelfproof.planner import purchase_orders
from shelfproof.planner.projector import DraftProjector
from shelfproof.planner.v1 import planner_pb2 as pb
from shelfproof.planner.v1 import planner_pb2_grpc
from shelfproof.runtime.client import call
from shelfproof.runtime.errors import DependencyUnavailable, FailedPrecondition, FieldViolation, InvalidArgument, LedgerRejected, NotFound
from shelfproof.runtime.fields import gln_field, gtin_field, next_page_token, page_request, timestamp_of
from shelfproof.runtime.identity import reader_organization
from shelfproof.runtime.server import ServiceBinding

log = logging.getLogger(__name__)

STATE_OF = {
    st.DRAFT_STATUS_PENDING: pb.DRAFT_STATE_PENDING_APPROVAL,
    st.DRAFT_STATUS_APPROVED: pb.DRAFT_STATE_APPROVED,
    st.DRAFT_STATUS_REJECTED: pb.DRAFT_STATE_REJECTED,
    st.DRAFT_STATUS_EXPIRED: pb.DRAFT_STATE_EXPIRED,
}
STATUS_OF_STATE = {
    pb.DRAFT_STATE_PENDING_APPROVAL: "PENDING", pb.DRAFT_STATE_APPROVED: "APPROVED", pb.DRAFT_STATE_REJECTED: "REJECTED",
}
ADJUSTED = "Adjusted: "
MODEL_NOT_ASKED = "Model not asked: "


class NothingToOrder(FailedPrecondition):
    """Stock and what is on order cover the forecast of every line."""


@dataclass(frozen=True)
class RestockResult:
    draft: pb.Draft
    # The forecast's mean absolute scaled error on held-out days (None: too little history).
    forecast_mase: float | None
    # Why the model was not asked ("" when it was).
    not_asked: str


class DraftingBackend(Protocol):
    """The drafter as the service reaches it (a Ray Serve handle in production, a local object in tests)."""

    async def restock(self, location_gln: str, candidates: list[RestockCandidate], budget_left_minor: int, currency: str): ...

    async def promotion(self, location_gln: str, products: list[PriceFacts], *, max_discount_bps: int, margin_floor_bps: int): ...


def draft_from_record(record: st.DraftRecord, now: float | None = None) -> pb.Draft:
    """The API's view of the ledger's draft record (a pending draft past its time reads as expired)."""
    now = time.time() if now is None else now
    a = record.draft
    state = STATE_OF[record.status]
    if state == pb.DRAFT_STATE_PENDING_APPROVAL and now >= record.expires_unix_s:
        state = pb.DRAFT_STATE_EXPIRED
    draft = pb.Draft(
        draft_id=a.draft_id, state=state, location_gln=a.location_gln, rationale=a.rationale,
        decision_record_hash=hashlib.sha256(a.decision_record.SerializeToString(deterministic=True)).hexdigest(),
        ledger_ref=common_pb2.LedgerRef(height=record.submitted_height),
        create_time=timestamp_of(datetime.fromtimestamp(record.submitted_unix_s, timezone.utc)),
        expire_time=timestamp_of(datetime.fromtimestamp(record.expires_unix_s, timezone.utc)),
        approvals_required=record.approvals_required, approvers=list(record.approvers), submitted_by=record.submitted_by,
        adjustments=[line[len(ADJUSTED):] for line in a.rationale.splitlines() if line.startswith(ADJUSTED)],
    )
    if a.HasField("promotion"):
        p = a.promotion
        draft.kind = pb.DRAFT_KIND_PROMOTION
        draft.promotion.CopyFrom(pb.PromotionTerms(
            gtins=list(p.gtins), discount_bps=p.discount_bps, customer_copy=p.customer_copy,
            start_time=timestamp_of(datetime.fromtimestamp(p.start_unix_s, timezone.utc)),
            end_time=timestamp_of(datetime.fromtimestamp(p.end_unix_s, timezone.utc)),
        ))
    else:
        draft.kind = pb.DRAFT_KIND_RESTOCK_ORDER
        currency = a.order_lines[0].unit_cost.currency_code if a.order_lines else ""
        draft.order_lines.extend(
            pb.OrderLine(gtin=l.gtin, quantity=l.quantity, unit_cost=common_pb2.Money(currency_code=l.unit_cost.currency_code, amount_minor=l.unit_cost.amount_minor))
            for l in a.order_lines
        )
        draft.total.CopyFrom(common_pb2.Money(currency_code=currency, amount_minor=record.total_minor))
    return draft


class PurchaseOrderRpcs:
    """The purchase order RPCs of ``PlannerService`` (a mixin: the service's pool, ledger and projector)."""

    pool: AsyncConnectionPool
    ledger: LedgerClient
    projector: DraftProjector

    async def _order(self, order_id: str) -> pb.PurchaseOrder:
        if not order_id or len(order_id) > 160:
            raise InvalidArgument("order_id is required (at most 160 characters)", field_violations=[FieldViolation("order_id", "1-160 characters")])
        reply = await call(self.ledger.stub.Query, lpb.QueryRequest(store="orders", key=order_id.encode()), idempotent=True)
        if not reply.found or order_id.startswith("@"):
            raise NotFound(f"purchase order {order_id} does not exist")
        order = purchase_orders.purchase_order_from_record(st.PurchaseOrderRecord.FromString(reply.value))
        if (reader := reader_organization()) and reader not in (order.buyer_gln, order.supplier_gln):
            raise NotFound(f"purchase order {order_id} does not exist")  # another buyer's: not even its existence
        return order

    async def GetPurchaseOrder(self, request: pb.GetPurchaseOrderRequest, context) -> pb.GetPurchaseOrderResponse:
        return pb.GetPurchaseOrderResponse(purchase_order=await self._order(request.order_id))

    async def ListPurchaseOrders(self, request: pb.ListPurchaseOrdersRequest, context) -> pb.ListPurchaseOrdersResponse:
        def check(after: str, field: str) -> None:
            if not after or len(after) > 160:
                raise InvalidArgument("bad page token")

        filters = {
            name: gln_field(value, f"{name}_gln") if value else ""
            for name, value in (("buyer", request.buyer_gln), ("supplier", request.supplier_gln), ("ship_to", request.ship_to_gln))
        }
        if request.state and request.state not in purchase_orders.STATUS_OF_ORDER_STATE:
            raise InvalidArgument("state is not a purchase order state", field_violations=[FieldViolation("state", "a declared value")])
        size, after = page_request(request.page_size, request.page_token, check)
        rows = await purchase_orders.list_orders(
            self.pool, after, size, status=purchase_orders.STATUS_OF_ORDER_STATE.get(request.state, ""), **filters,
            party=reader_organization() or "",
        )
        return pb.ListPurchaseOrdersResponse(
            purchase_orders=[purchase_orders.purchase_order_from_record(st.PurchaseOrderRecord.FromString(r["record"])) for r in rows[:size]],
            next_page_token=next_page_token(rows, size, "order_id"),
        )

    async def AcknowledgePurchaseOrder(self, request: pb.AcknowledgePurchaseOrderRequest, context) -> pb.AcknowledgePurchaseOrderResponse:
        await self._relay_signed(request.signed_transaction, "acknowledge_purchase_order", "order_id", request.order_id)
        return pb.AcknowledgePurchaseOrderResponse(purchase_order=await self._order(request.order_id))

    async def ListRestockRuns(self, request: pb.ListRestockRunsRequest, context) -> pb.ListRestockRunsResponse:
        def check(after: str, field: str) -> None:
            start, _, run_id = after.partition("|")
            datetime.fromisoformat(start)
            if not run_id:
                raise ValueError("no run id")

        location = gln_field(request.location_gln, "location_gln") if request.location_gln else ""
        size, after = page_request(request.page_size, request.page_token, check)
        where, args = ["TRUE"], []
        if location:
            where.append("r.location_gln = %s")
            args.append(location)
        if after:
            start, _, run_id = after.partition("|")
            where.append("(r.start_time, r.run_id) < (%s, %s)")
            args += [datetime.fromisoformat(start), run_id]
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"""SELECT r.*, d.record FROM restock_runs r LEFT JOIN drafts d ON d.draft_id = r.draft_id
                    WHERE {' AND '.join(where)} ORDER BY r.start_time DESC, r.run_id DESC LIMIT %s""",
                (*args, size + 1),
            )
            rows = await cur.fetchall()
        runs = []
        for r in rows[:size]:
            run = pb.RestockRun(
                run_id=r["run_id"], location_gln=r["location_gln"], trigger=r["trigger"], outcome=r["outcome"],
                draft_id=r["draft_id"] or "", reason=r["reason"],
                forecast_mase=-1.0 if r["forecast_mase"] is None else r["forecast_mase"], start_time=timestamp_of(r["start_time"]),
            )
            if r["end_time"] is not None:
                run.end_time.CopyFrom(timestamp_of(r["end_time"]))
            if r["record"] is not None:
                run.draft.CopyFrom(draft_from_record(st.DraftRecord.FromString(r["record"])))
            runs.append(run)
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = base64.urlsafe_b64encode(f"{last['start_time'].isoformat()}|{last['run_id']}".encode()).decode()
        return pb.ListRestockRunsResponse(runs=runs, next_page_token=token)

    async def StreamPurchaseOrders(self, request: pb.StreamPurchaseOrdersRequest, context):
        if request.after_height < 0 or request.after_index < 0 or len(request.after_order_id) > 160:
            raise InvalidArgument("the position to resume after is (height >= 0, index >= 0, order id)",
                                  field_violations=[FieldViolation("after_height", ">= 0")])
        buyer = gln_field(request.buyer_gln, "buyer_gln") if request.buyer_gln else ""
        supplier = gln_field(request.supplier_gln, "supplier_gln") if request.supplier_gln else ""
        position = (request.after_height, request.after_index, request.after_order_id)
        party = reader_organization() or ""
        while True:
            seen = self.projector.position
            rows = await purchase_orders.changes_after(self.pool, position, buyer=buyer, supplier=supplier, party=party)
            for height, index, order_id, action, record in rows:
                yield pb.StreamPurchaseOrdersResponse(
                    purchase_order=purchase_orders.purchase_order_from_record(st.PurchaseOrderRecord.FromString(record)),
                    height=height, index=index, action=action,
                )
                position = (height, index, order_id)
            if not rows:
                # Wait for the projection to pass what it had applied before the read (or a while).
                await self.projector.wait_for(seen[0], seen[1] + 1, timeout_s=5.0)


class PlannerService(PurchaseOrderRpcs, planner_pb2_grpc.PlannerServiceServicer):
    def __init__(
        self, pool: AsyncConnectionPool, ledger: LedgerClient, drafter: DraftingBackend, projector: DraftProjector, *,
        service_level: float = 0.95, review_period_days: int = 7, history_days: int = 56,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.drafter = drafter
        self.projector = projector
        self.organization_gln = ledger.signer.agent_id.split("/")[0]
        self.service_level = service_level
        self.review_period_days = review_period_days
        self.history_days = history_days
        # The last day of the sales history a restock draft forecasts from (a simulation moves it).
        self.today = today or (lambda: datetime.now(timezone.utc).date())
        self._agent_orgs: dict[str, str] = {}

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            pb.DESCRIPTOR.services_by_name["PlannerService"].full_name,
            lambda server: planner_pb2_grpc.add_PlannerServiceServicer_to_server(self, server),
        )

    # --- inputs -------------------------------------------------------------------------------------

    async def _ledger_values(self, *keys: tuple[str, str]) -> list[bytes | None]:
        reply = await call(
            self.ledger.stub.QueryMany,
            lpb.QueryManyRequest(keys=[lpb.StoreKey(store=s, key=k.encode()) for s, k in keys]), idempotent=True,
        )
        return [v.value if v.found else None for v in reply.values]

    async def _policies(self, location: str) -> tuple[txpb.GuardrailPolicy, txpb.ReplenishmentPolicy | None, int]:
        """The guardrail policy, the location's replenishment policy, and the budget left this period."""
        org = self.organization_gln
        guard, bounds, budget = await self._ledger_values(("policies", org), ("replenishment", f"{org}/{location}"), ("budgets", org))
        if guard is None:
            raise FailedPrecondition(f"{org} has no guardrail policy on the ledger; a person with policy::set must commit one")
        policy = txpb.GuardrailPolicy.FromString(guard)
        spent = 0
        if budget is not None:
            record = st.BudgetRecord.FromString(budget)
            now = int(time.time())
            if record.period_start_unix_s == now - now % policy.budget_period_s:
                spent = record.spent_minor
        return policy, txpb.ReplenishmentPolicy.FromString(bounds) if bounds else None, max(0, policy.budget_minor - spent)

    async def _stock_and_names(self, location: str, gtins: list[str]) -> tuple[dict[str, int], dict[str, str]]:
        async with self.pool.connection() as conn:
            stock = dict(await (await conn.execute(
                "SELECT gtin, quantity FROM inventory_positions WHERE location_gln = %s AND gtin = ANY(%s)", (location, gtins)
            )).fetchall())
            names = dict(await (await conn.execute("SELECT gtin, name FROM products WHERE gtin = ANY(%s)", (gtins,))).fetchall())
        return stock, names

    async def _forecast(self, location: str, gtins: list[str]):
        sales = await load_daily_sales(
            self.pool, last_day=datetime.now(timezone.utc).date(), days=self.history_days, series=[(g, location) for g in gtins]
        )
        return forecast_demand(sales.units)

    # --- drafting -----------------------------------------------------------------------------------

    def _draft_id(self, request_id: str, kind: str) -> str:
        if not request_id:
            return f"{kind}-{hashlib.sha256(str(time.time_ns()).encode() + self.organization_gln.encode()).hexdigest()[:24]}"
        if len(request_id) > 100:
            raise InvalidArgument("request_id is at most 100 characters", field_violations=[FieldViolation("request_id", "<= 100 characters")])
        # The same request id names the same draft: a retry finds the first attempt's draft.
        return f"{kind}-{hashlib.sha256(f'{self.organization_gln}/{request_id}'.encode()).hexdigest()[:24]}"

    async def _existing(self, draft_id: str) -> pb.Draft | None:
        value, = await self._ledger_values(("drafts", draft_id))
        return draft_from_record(st.DraftRecord.FromString(value)) if value else None

    async def _commit(self, draft: txpb.SubmitAiDraft, output: DraftOutput, snapshot: dict) -> pb.Draft:
        info = output.info
        put = self.ledger.put_content
        prompt_hash, snapshot_hash, output_hash = await asyncio.gather(
            put(output.prompt_document()), put(prompts.canonical_json(snapshot)), put(output.output_document())
        )
        sampling = {c.sampling.canonical_json() for c in output.calls}
        draft.decision_record.CopyFrom(txpb.AiDecisionRecord(
            model=info.model, weights_digest=info.weights_digest, engine=info.engine, engine_version=info.engine_version,
            dtype=info.dtype, prompt_template_sha256=template_sha256(), json_schema_sha256=schemas_sha256(),
            prompt_sha256=prompt_hash.hex(), input_snapshot_sha256=snapshot_hash.hex(), output_sha256=output_hash.hex(),
            sampling_params_json=sampling.pop() if len(sampling) == 1 else "[" + ",".join(sorted(sampling)) + "]",
            seed=output.calls[0].sampling.seed if output.calls else 0,
        ))
        try:
            result = await self.ledger.submit(txpb.TransactionBody(created_unix_ms=int(time.time() * 1000), submit_ai_draft=draft))
        except LedgerRejected as err:
            raise ledger_error(err) from err
        await self.projector.wait_for(result.height, result.index)
        existing = await self._existing(draft.draft_id)
        assert existing is not None
        existing.ledger_ref.tx_hash = result.tx_hash
        return existing

    async def DraftRestock(self, request: pb.DraftRestockRequest, context) -> pb.DraftRestockResponse:
        location = gln_field(request.location_gln, "location_gln")
        wanted = [gtin_field(g, f"gtins[{n}]") for n, g in enumerate(request.gtins)]
        draft_id = self._draft_id(request.request_id, "restock")
        if (existing := await self._existing(draft_id)) is not None:
            return pb.DraftRestockResponse(draft=existing)
        return pb.DraftRestockResponse(draft=(await self.draft_restock(location, wanted, draft_id)).draft)

    async def draft_restock(self, location: str, wanted: list[str], draft_id: str, *, model_fallback: bool = False) -> "RestockResult":
        """Draft, bound and commit a restock order for ``location``. With ``model_fallback`` (the
        autonomous runs), a model that cannot be reached leaves the policy's quantities, and the
        rationale says the model was not asked and why (otherwise that is UNAVAILABLE), and drafts still
        waiting for people count as on order."""
        policy, bounds, budget_left = await self._policies(location)
        if bounds is None:
            raise FailedPrecondition(f"no replenishment policy for {location} on the ledger")
        items = [i for i in bounds.items if not wanted or i.gtin in wanted]
        missing = set(wanted) - {i.gtin for i in items}
        if missing:
            raise InvalidArgument(f"{sorted(missing)[0]} is not in the location's replenishment policy",
                                  field_violations=[FieldViolation("gtins", "GTINs of the replenishment policy")])
        candidates, mase = await self.restock_candidates(location, items, budget_left, with_accuracy=True, pending_drafts=model_fallback)
        if not any(c.quantity > 0 for c in candidates):
            raise NothingToOrder("stock covers the forecast for every product: nothing to order")
        not_asked = ""
        try:
            output, proposals = await self.drafter.restock(location, candidates, budget_left, policy.currency_code)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever broke the model, the run goes on without it
            if not model_fallback:
                raise DependencyUnavailable(f"the planner's model did not answer: {type(err).__name__}") from err
            not_asked = f"{MODEL_NOT_ASKED}the model was unavailable ({type(err).__name__}: {str(err)[:160]}); quantities are the policy's"
            log.warning("restock drafted without the model", extra={"location_gln": location, "error": str(err)[:200]})
            output, proposals = DraftOutput(POLICY_ONLY), {}
        bounded = bound_restock(candidates, proposals, budget_left)
        rationale = [not_asked] if not_asked else []
        rationale += [f"{c.gtin}: {bounded.reasons.get(c.gtin) or c.reason_code.replace('_', ' ')}" for c, _ in bounded.lines]
        rationale += [_adjustment_line(a) for a in bounded.adjustments]
        draft = txpb.SubmitAiDraft(
            draft_id=draft_id, organization_gln=self.organization_gln, location_gln=location,
            order_lines=[
                txpb.DraftOrderLine(gtin=c.gtin, quantity=q, unit_cost=txpb.Money(currency_code=policy.currency_code, amount_minor=c.unit_cost_minor))
                for c, q in bounded.lines
            ],
            rationale=_fit("\n".join(rationale), 4096),
        )
        snapshot = {
            "kind": "restock", "organization_gln": self.organization_gln, "location_gln": location,
            "budget_left_minor": budget_left, "currency": policy.currency_code, "service_level": self.service_level,
            "review_period_days": self.review_period_days, "history_days": self.history_days, "forecast": PLANNER_METHOD.value,
            "forecast_mase": mase, "model_asked": not not_asked, "candidates": [asdict(c) for c in candidates],
        }
        return RestockResult(await self._commit(draft, output, snapshot), mase, not_asked)

    async def restock_candidates(
        self, location: str, items: list[txpb.ItemBounds], budget_left: int, *, with_accuracy: bool = False,
        with_reorder_points: bool = False, pending_drafts: bool = False,
    ):
        """Quantities for every line from the forecast and the inventory policy (vectorized), the stock on
        order counted in the inventory position. ``with_accuracy``: also the forecast's scaled error on
        the last days of the history (``forecast.scaled_error``), as (candidates, error);
        ``with_reorder_points``: also whether each line's inventory position is at or below its reorder
        point, as (candidates, flags). ``pending_drafts``: restock drafts waiting for people count as on
        order (the autonomous runs; a person asking for a draft gets one whatever else waits)."""
        gtins = [i.gtin for i in items]
        stock, names = await self._stock_and_names(location, gtins)
        ordered = await purchase_orders.on_order(self.pool, location, gtins, pending_drafts=pending_drafts)
        sales = await load_daily_sales(self.pool, last_day=self.today(), days=self.history_days, series=[(g, location) for g in gtins])
        forecast = forecast_demand(sales.units)
        n = len(items)
        plan = plan_replenishment(
            ReplenishmentLines(
                mean_daily_demand=forecast.mean, demand_sigma=forecast.sigma,
                on_hand=np.array([stock.get(g, 0) for g in gtins], dtype=np.int64), on_order=np.array([ordered.get(g, 0) for g in gtins], dtype=np.int64),
                lead_time_days=np.array([i.lead_time_days for i in items], dtype=np.int64),
                review_period_days=np.full(n, self.review_period_days, dtype=np.int64),
                unit_cost=np.array([i.unit_cost.amount_minor for i in items], dtype=np.int64),
                min_order_qty=np.array([i.min_order_quantity for i in items], dtype=np.int64),
                case_pack=np.array([max(1, i.case_pack) for i in items], dtype=np.int64),
                max_order_qty=np.array([i.max_order_quantity for i in items], dtype=np.int64),
            ),
            ReplenishmentPolicy(cycle_service_level=self.service_level, budget=budget_left),
        )
        candidates = [
            RestockCandidate(
                gtin=g, name=names.get(g, ""), on_hand=int(stock.get(g, 0)), mean_daily_demand=round(float(forecast.mean[k]), 4),
                days_of_cover=_finite(plan.days_of_cover[k]), urgency=round(float(plan.urgency[k]), 6), quantity=int(plan.quantity[k]),
                min_order_qty=items[k].min_order_quantity, max_order_qty=items[k].max_order_quantity,
                case_pack=max(1, items[k].case_pack), unit_cost_minor=items[k].unit_cost.amount_minor, reason_code=str(plan.reason[k]),
            )
            for k, g in enumerate(gtins)
        ]
        if with_reorder_points:
            return candidates, [bool(p <= r) for p, r in zip(plan.inventory_position, plan.reorder_point)]
        return (candidates, scaled_error(sales.units)) if with_accuracy else candidates

    async def DraftPromotion(self, request: pb.DraftPromotionRequest, context) -> pb.DraftPromotionResponse:
        location = gln_field(request.location_gln, "location_gln")
        wanted = [gtin_field(g, f"gtins[{n}]") for n, g in enumerate(request.gtins)]
        draft_id = self._draft_id(request.request_id, "promotion")
        if (existing := await self._existing(draft_id)) is not None:
            return pb.DraftPromotionResponse(draft=existing)
        policy, _, _ = await self._policies(location)
        if not wanted:
            async with self.pool.connection() as conn:
                wanted = [r[0] for r in await (await conn.execute(
                    "SELECT gtin FROM inventory_positions WHERE location_gln = %s AND quantity > 0 ORDER BY gtin LIMIT 100", (location,)
                )).fetchall()]
        if not wanted:
            raise FailedPrecondition(f"no stocked products at {location} to promote")
        prices = await self._ledger_values(*(("prices", f"{g}/{location}") for g in wanted))
        priced = {g: st.PriceRecord.FromString(v) for g, v in zip(wanted, prices) if v}
        if not priced:
            raise FailedPrecondition(f"none of the products has a price at {location} on the ledger")
        stock, names = await self._stock_and_names(location, list(priced))
        forecast = await self._forecast(location, list(priced))
        products = {
            g: PriceFacts(g, names.get(g, ""), r.price.amount_minor, r.unit_cost.amount_minor,
                          _finite(stock.get(g, 0) / forecast.mean[k]) if forecast.mean[k] > 0 else 9999.0)
            for k, (g, r) in enumerate(priced.items())
        }
        ranked = sorted(products.values(), key=lambda p: -p.days_of_cover)  # slowest movers first
        output, proposal = await self.drafter.promotion(
            location, ranked, max_discount_bps=policy.max_discount_bps, margin_floor_bps=policy.margin_floor_bps
        )
        adjustments: list[Adjustment] = []
        if proposal is None:
            slowest = ranked[0]
            proposal = {"gtins": [slowest.gtin], "discount_bps": policy.max_discount_bps, "start_in_days": 1, "duration_days": 7,
                        "customer_copy": f"Save on {slowest.name or slowest.gtin}", "rationale": "the slowest-moving product"}
            adjustments.append(Adjustment(slowest.gtin, "invalid answer", "the slowest mover", "the model's answer did not match the schema"))
        terms = bound_promotion(proposal, products, max_policy_discount_bps=policy.max_discount_bps, margin_floor_bps=policy.margin_floor_bps)
        start = (int(time.time()) // 3600 + 1) * 3600 + terms.start_in_days * 86_400
        draft = txpb.SubmitAiDraft(
            draft_id=draft_id, organization_gln=self.organization_gln, location_gln=location,
            promotion=txpb.CreatePromotion(
                promotion_id=draft_id, location_gln=location, gtins=terms.gtins, discount_bps=terms.discount_bps,
                start_unix_s=start, end_unix_s=start + terms.duration_days * 86_400, customer_copy=_fit(terms.customer_copy, 1024),
            ),
            rationale=_fit("\n".join([terms.rationale, *(_adjustment_line(a) for a in adjustments + terms.adjustments)]), 4096),
        )
        snapshot = {
            "kind": "promotion", "organization_gln": self.organization_gln, "location_gln": location,
            "max_discount_bps": policy.max_discount_bps, "margin_floor_bps": policy.margin_floor_bps,
            "products": [asdict(p) for p in ranked], "history_days": self.history_days, "forecast": PLANNER_METHOD.value,
        }
        return pb.DraftPromotionResponse(draft=await self._commit(draft, output, snapshot))

    # --- reading and deciding ----------------------------------------------------------------------------

    async def GetDraft(self, request: pb.GetDraftRequest, context) -> pb.GetDraftResponse:
        if not request.draft_id:
            raise InvalidArgument("draft_id is required", field_violations=[FieldViolation("draft_id", "required")])
        draft = await self._existing(request.draft_id)
        if draft is None or not await self._readable_draft(request.draft_id):
            raise NotFound(f"draft {request.draft_id} does not exist")
        return pb.GetDraftResponse(draft=draft)

    async def _readable_draft(self, draft_id: str) -> bool:
        """Whether the caller may read the draft: a caller scoped to its organisation reads only its own."""
        if (reader := reader_organization()) is None:
            return True
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT organization_gln FROM drafts WHERE draft_id = %s", (draft_id,))).fetchone()
        return row is not None and row[0] == reader

    async def _org_of(self, agent_id: str) -> str:
        if agent_id not in self._agent_orgs:
            value, = await self._ledger_values(("agents", agent_id))
            if value is None:
                raise NotFound(f"agent {agent_id} does not exist")
            self._agent_orgs[agent_id] = st.AgentRecord.FromString(value).organization_gln
        return self._agent_orgs[agent_id]

    async def ListDrafts(self, request: pb.ListDraftsRequest, context) -> pb.ListDraftsResponse:
        def check(after: str, field: str) -> None:
            if not after or len(after) > 128:
                raise InvalidArgument("bad page token")

        size, after = page_request(request.page_size, request.page_token, check)
        where, args = ["draft_id > %s"], [after]
        if (reader := reader_organization()) is not None:
            where.append("organization_gln = %s")
            args.append(reader)
        if request.approver_agent_id:
            where += ["organization_gln = %s", "status = 'PENDING'", "expire_time > now()", "submitted_by <> %s", "NOT (%s = ANY(approvers))"]
            args += [await self._org_of(request.approver_agent_id), request.approver_agent_id, request.approver_agent_id]
        if request.state == pb.DRAFT_STATE_EXPIRED:
            where += ["status = 'PENDING'", "expire_time <= now()"]
        elif request.state == pb.DRAFT_STATE_PENDING_APPROVAL:
            where += ["status = 'PENDING'", "expire_time > now()"]
        elif request.state in STATUS_OF_STATE:
            where.append("status = %s")
            args.append(STATUS_OF_STATE[request.state])
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT draft_id, record FROM drafts WHERE {' AND '.join(where)} ORDER BY draft_id LIMIT %s", (*args, size + 1))
            rows = await cur.fetchall()
        drafts = [draft_from_record(st.DraftRecord.FromString(r["record"])) for r in rows[:size]]
        return pb.ListDraftsResponse(drafts=drafts, next_page_token=next_page_token(rows, size, "draft_id"))

    async def _relay(self, draft_id: str, raw: bytes, action: str) -> pb.Draft:
        await self._relay_signed(raw, action, "draft_id", draft_id)
        draft = await self._existing(draft_id)
        assert draft is not None
        return draft

    async def _relay_signed(self, raw: bytes, action: str, key_field: str, key: str) -> None:
        """Submit a transaction a person signed (never this service), once it is the action it claims
        for the resource named, and wait until the projection has it."""
        if not key:
            raise InvalidArgument(f"{key_field} is required", field_violations=[FieldViolation(key_field, "required")])
        try:
            signed = txpb.SignedTransaction.FromString(raw)
            body = txpb.TransactionBody.FromString(signed.body)
        except Exception:  # noqa: BLE001 - any decode failure is the caller's malformed input
            signed = body = None
        if body is None or body.WhichOneof("action") != action or getattr(getattr(body, action), key_field) != key:
            raise InvalidArgument(
                f"signed_transaction must be the person's own signed {action} for {key}",
                field_violations=[FieldViolation("signed_transaction", f"a SignedTransaction with {action}")],
            )
        try:
            reply = await call(
                self.ledger.stub.SubmitTransaction, lpb.SubmitTransactionRequest(transaction=raw, wait_for_commit=True),
                idempotent=True, deadline_s=20,
            )
        except LedgerRejected as err:
            raise ledger_error(err) from err
        await self.projector.wait_for(reply.result.height, reply.result.index)

    async def ApproveDraft(self, request: pb.ApproveDraftRequest, context) -> pb.ApproveDraftResponse:
        return pb.ApproveDraftResponse(draft=await self._relay(request.draft_id, request.signed_transaction, "approve_draft"))

    async def RejectDraft(self, request: pb.RejectDraftRequest, context) -> pb.RejectDraftResponse:
        return pb.RejectDraftResponse(draft=await self._relay(request.draft_id, request.signed_transaction, "reject_draft"))


def _adjustment_line(a: Adjustment) -> str:
    return f"{ADJUSTED}{a.gtin}: the model proposed {a.proposed}, {a.why}; used {a.used}"


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(value: float) -> float:
    return round(float(value), 3) if math.isfinite(value) else 9999.0

