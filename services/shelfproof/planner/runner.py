"""The restock loop running by itself: per store, once every cadence period and whenever committed
sales (the inventory positions the registry projects from the ledger) take a product's inventory
position (on hand plus on order) to its reorder point, the planner drafts a restock order and commits it
with its decision record. Below the guardrail policy's auto-approval threshold the ledger approves it on
submission and issues the purchase orders; above it the draft waits for people.

Runs are idempotent: a run is named by its store, trigger and cadence period, and its draft id is derived
from that name, so a planner that restarts mid-run resumes the same run and finds the draft it had
committed (the ledger refuses a second draft of that id) instead of ordering twice. A model that cannot
be reached does not stop a run: the policy's quantities are drafted, and the rationale says the model was
not asked and why. Every run is a row of ``restock_runs`` (``ListRestockRuns``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from psycopg_pool import AsyncConnectionPool

from shelfproof.planner.service import NothingToOrder, PlannerService
from shelfproof.runtime.errors import DomainError

log = logging.getLogger(__name__)

CADENCE, REORDER_POINT = "cadence", "reorder_point"
DRAFTED, NOTHING_TO_ORDER, FAILED, RUNNING = "drafted", "nothing_to_order", "failed", "running"
# Outcomes a run ends with; a failed run is tried again at the next check (same draft id).
FINAL = (DRAFTED, NOTHING_TO_ORDER)


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    location_gln: str
    trigger: str
    outcome: str
    draft_id: str
    reason: str
    forecast_mase: float | None = None


def run_id_for(location_gln: str, trigger: str, period: int) -> str:
    return f"{location_gln}/{trigger}/{period}"


def draft_id_for(organization_gln: str, run_id: str) -> str:
    return f"auto-{hashlib.sha256(f'{organization_gln}/{run_id}'.encode()).hexdigest()[:24]}"


class RestockRunner:
    """Checks each store every ``check_interval_s`` through the planner's service (its policies, candidates
    and drafting)."""

    def __init__(
        self, service: PlannerService, pool: AsyncConnectionPool, locations: list[str], *, cadence_s: int = 86_400,
        check_interval_s: float = 60.0, clock: Callable[[], float] = time.time,
    ) -> None:
        if cadence_s <= 0 or check_interval_s <= 0:
            raise ValueError("the cadence and the check interval are positive")
        self.service = service
        self.pool = pool
        self.locations = locations
        self.cadence_s = cadence_s
        self.check_interval_s = check_interval_s
        self.clock = clock
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="restock-runner")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad check must not end the loop
                log.exception("restock check failed; trying again at the next one")
            await asyncio.sleep(self.check_interval_s)

    async def check(self) -> list[RunOutcome]:
        """One pass over the stores: the period's cadence run, and a reorder-point run where one is due."""
        period = int(self.clock() // self.cadence_s)
        outcomes = []
        for location in self.locations:
            for trigger in (CADENCE, REORDER_POINT):
                if trigger == REORDER_POINT and not await self.reorder_point_reached(location):
                    continue
                outcome = await self.run(location, trigger, period)
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    async def reorder_point_reached(self, location: str) -> bool:
        """Whether any product's inventory position is at or below its reorder point, with something to
        order (the policy's own verdict over the committed stock, sales and open orders)."""
        try:
            _, bounds, budget_left = await self.service._policies(location)
        except DomainError:
            return False
        if bounds is None or not bounds.items:
            return False
        candidates, due = await self.service.restock_candidates(location, list(bounds.items), budget_left, with_reorder_points=True, pending_drafts=True)
        return any(c.quantity > 0 and at_point for c, at_point in zip(candidates, due))

    async def run(self, location: str, trigger: str, period: int) -> RunOutcome | None:
        """The run of (store, trigger, period), unless it already ended; None when it had."""
        run_id = run_id_for(location, trigger, period)
        draft_id = draft_id_for(self.service.organization_gln, run_id)
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT outcome FROM restock_runs WHERE run_id = %s", (run_id,))).fetchone()
            if row is not None and row[0] in FINAL:
                return None
            if row is None:
                await conn.execute(
                    """INSERT INTO restock_runs (run_id, location_gln, trigger, outcome, draft_id, reason, start_time)
                       VALUES (%s, %s, %s, %s, %s, '', %s) ON CONFLICT (run_id) DO NOTHING""",
                    (run_id, location, trigger, RUNNING, draft_id, now),
                )
        mase = None
        try:
            existing = await self.service._existing(draft_id)
            if existing is not None:
                outcome, reason = DRAFTED, "resumed: the run's draft was committed before the planner restarted"
            else:
                result = await self.service.draft_restock(location, [], draft_id, model_fallback=True)
                outcome, reason, mase = DRAFTED, result.not_asked or "drafted with the model", result.forecast_mase
        except asyncio.CancelledError:
            raise
        except DomainError as err:
            outcome, reason = (NOTHING_TO_ORDER if isinstance(err, NothingToOrder) else FAILED), str(err)[:1000]
        except Exception as err:  # noqa: BLE001 - recorded on the run; the next check tries again
            log.exception("restock run failed", extra={"run_id": run_id})
            outcome, reason = FAILED, f"{type(err).__name__}: {str(err)[:1000]}"
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE restock_runs SET outcome = %s, reason = %s, forecast_mase = %s, end_time = %s WHERE run_id = %s",
                (outcome, reason, mase, datetime.fromtimestamp(self.clock(), timezone.utc), run_id),
            )
        log.info("restock run", extra={"run_id": run_id, "outcome": outcome, "draft_id": draft_id, "reason": reason[:200]})
        return RunOutcome(run_id, location, trigger, outcome, draft_id, reason, mase)

