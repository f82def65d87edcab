"""The order driver: moves every order in flight one step, through its executor.

It is IO (the executor) around commands (the sequencer); it holds no state of
its own beyond the book, so the same `advance` serves the live loop and the
reconciliation after a restart. The write-ahead rule lives here: signed bytes
are committed (RecordSubmission) before `broadcast` is ever called, and
nothing releases funds without evidence (Rejected before acceptance, or an
Outcome from the chain).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Callable

from engine.book import Order
from engine.executors.base import Accepted, Executor, ExecutorError, Quote, Rejected, Unknown
from engine.messages import AbandonOrder, MarkBroadcast, RecordFailure, RecordFill, RecordSubmission, RecordUnknown
from engine.sequencer import Sequencer

log = logging.getLogger("botctl.driver")


class OrderDriver:
    def __init__(self, sequencer: Sequencer, executors: dict[str, Executor], slippage_bps: int,
                 clock: Callable[[], int], crash: Callable[[str], None] = lambda point: None):
        self.sequencer = sequencer
        self.executors = executors
        self.slippage_bps = slippage_bps
        self.clock = clock
        self.crash = crash

    def _current(self, order_id: int) -> Order | None:
        return self.sequencer.book.orders.get(order_id)

    async def advance_all(self) -> None:
        for order in self.sequencer.book.live_orders():
            await self.advance(order)

    async def advance(self, order: Order) -> str:
        """One step for one order; returns what happened, in a few words."""
        executor = self.executors[order.chain]
        submit = self.sequencer.submit
        if order.state == "new":
            try:
                if order.intent == "noop":
                    quote, signed = Quote(0, 0, Decimal(0)), await executor.sign_noop(order)
                else:
                    quote = await executor.quote(order)
                    signed = await executor.sign(order, quote, self.slippage_bps)
            except ExecutorError as exc:
                refill = await executor.fee_reserve() if order.nonce is not None else 0
                await submit(AbandonOrder(order.id, str(exc), self.clock(), refill))
                return f"abandoned: {exc}"
            result = await submit(RecordSubmission(order.id, signed.tx_id, signed.raw, signed.expiry,
                                                   quote.quoted_out, signed.min_out, self.clock()))
            if not result.accepted:
                log.warning("order %s: submission refused: %s", order.id, result.reason)
                return f"refused: {result.reason}"
            self.crash(f"after_submit_commit:{order.intent}")
            order = self._current(order.id)
        if order.state == "signed":
            return await self._broadcast(executor, order)
        if order.state in ("submitted", "unknown"):
            return await self._settle(executor, order)
        return order.state

    async def _broadcast(self, executor: Executor, order: Order) -> str:
        submit = self.sequencer.submit
        try:
            sent = await executor.broadcast(order)
        except Exception as exc:  # transport trouble after the bytes may have left
            sent = Unknown(f"broadcast error: {exc}")
        self.crash(f"after_broadcast:{order.intent}")
        if isinstance(sent, Accepted):
            await submit(MarkBroadcast(order.id, self.clock()))
            return "sent"
        if isinstance(sent, Rejected) and order.state == "signed":
            refill = await executor.fee_reserve() if order.nonce is not None else 0
            await submit(RecordFailure(order.id, sent.reason, 0, self.clock(), nonce_unused=True,
                                       refill_fee_reserve=refill))
            return f"failed: {sent.reason}"
        reason = sent.reason if isinstance(sent, (Rejected, Unknown)) else "unknown"
        await submit(RecordUnknown(order.id, reason, self.clock()))
        return f"unknown: {reason}"

    async def _settle(self, executor: Executor, order: Order) -> str:
        submit = self.sequencer.submit
        try:
            outcome = await executor.lookup(order)
        except Exception as exc:
            log.warning("order %s: lookup failed, still unknown: %s", order.id, exc)
            return f"unknown: lookup failed: {exc}"
        if outcome.status == "filled":
            self.crash(f"before_fill_commit:{order.intent}")
            await submit(RecordFill(order.id, outcome.amount_in, outcome.amount_out, outcome.fee,
                                    outcome.network_fee, self.clock()))
            return "filled"
        if outcome.status in ("failed", "expired"):
            await submit(RecordFailure(order.id, outcome.reason or outcome.status, outcome.network_fee,
                                       self.clock()))
            return f"failed: {outcome.reason or outcome.status}"
        if outcome.status == "missing":
            # Not on the chain and not provably dead: send the same bytes again.
            return "rebroadcast, " + await self._broadcast(executor, order)
        return "pending"
