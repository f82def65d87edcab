"""The order driver: moves every order in flight one step, through its executor.

It is IO (the executor) around commands (the sequencer); it holds no state of
its own beyond the book, so the same `advance` serves the live loop and the
reconciliation after a restart. The write-ahead rule lives here: signed bytes
are committed (RecordSubmission) before `broadcast` is ever called, and
nothing releases funds without evidence (Rejected before acceptance, or an
Outcome from the chain).

Its one piece of state is pacing: after a chain's node refuses a broadcast, new
orders on that chain wait a backoff that doubles with each refusal in a row, so
a node that refuses everything costs a bounded number of orders, not one per
order per block. Trades wait at most MAX_BACKOFF_MS (an operator's close keeps
trying); no-ops that fill a gap wait up to MAX_NOOP_BACKOFF_MS, so a node that
refuses for a day costs a few dozen of them. The first broadcast the node
accepts again ends every wait on its chain at once. Pacing is not durable and
need not be: after a restart the first attempt goes at once.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Callable

from engine.core.book import Order
from engine.core.messages import (
    AbandonOrder,
    MarkBroadcast,
    RecordFailure,
    RecordFill,
    RecordSubmission,
    RecordUnknown,
    ReplaceSubmission,
)
from engine.redact import said
from engine.sequencer import Sequencer
from engine.venues.port import Accepted, Executor, ExecutorError, Quote, Rejected, Unknown

log = logging.getLogger("botctl.driver")

BACKOFF_MS = 1_000  # after the first refusal; doubles per refusal in a row
MAX_BACKOFF_MS = 8_000  # entries and exits
MAX_NOOP_BACKOFF_MS = 3_600_000  # no-ops: a gap only matters once the node takes transactions again


def backoff_ms(refused: int, cap: int = MAX_BACKOFF_MS) -> int:
    """How long new orders on a chain wait after its node refused `refused` broadcasts in a row."""
    return 0 if refused <= 0 else min(BACKOFF_MS << min(refused - 1, 40), cap)


class OrderDriver:
    def __init__(self, sequencer: Sequencer, executors: dict[str, Executor], slippage_bps: int,
                 clock: Callable[[], int], crash: Callable[[str], None] = lambda point: None):
        self.sequencer = sequencer
        self.executors = executors
        self.slippage_bps = slippage_bps
        self.clock = clock
        self.crash = crash
        self._refused: dict[str, int] = {}  # chain -> broadcasts its node refused in a row (pacing only)
        self._resume_at: dict[tuple[str, bool], int] = {}  # (chain, no-op?) -> clock ms before which new ones wait
        self.reconcile_after: set[str] = set()  # chains whose node gave an answer nobody could classify

    def _current(self, order_id: int) -> Order | None:
        return self.sequencer.book.orders.get(order_id)

    async def advance_all(self, at_once: int = 1, only_new: bool = False) -> None:
        """Every order in flight (or only the new ones) one step, `at_once` of them at a time: a live
        chain's round trips overlap, so fifty orders do not wait on each other's RPC; paper takes
        them one by one, so that a seed replays exactly."""
        orders = [o for o in self.sequencer.book.live_orders() if not only_new or o.state == "new"]
        if at_once == 1:
            for order in orders:
                await self.advance(order)
            return
        # A sliding window: an order starts as soon as one of the `at_once` before it is done (fixed
        # batches would make the 17th wait for the slowest of the first 16).
        waiting, running, failed = list(reversed(orders)), set(), None
        try:
            while waiting or running:
                while waiting and len(running) < at_once:
                    running.add(asyncio.ensure_future(self.advance(waiting.pop())))
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None and failed is None:
                        failed = task.exception()
                if failed is not None:
                    waiting.clear()  # start nothing more; let those running finish, then raise
        except BaseException:  # cancelled (as gather would be): so are the orders' steps under way
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        if failed is not None:
            raise failed

    async def advance(self, order: Order) -> str:
        """One step for one order; returns what happened, in a few words."""
        executor = self.executors[order.chain]
        submit = self.sequencer.submit
        if order.state == "new":
            if self.clock() < self._resume_at.get((order.chain, order.intent == "noop"), 0):
                return "waiting: the node refused the last broadcasts"
            try:
                if order.intent == "noop":
                    quote, signed = Quote(0, 0, Decimal(0)), await executor.sign_noop(order)
                elif order.intent == "approve":
                    quote, signed = Quote(order.amount_in, 0, Decimal(0)), await executor.sign_approve(order)
                else:
                    quote = await executor.quote(order)
                    signed = await executor.sign(order, quote, self.slippage_bps)
            except ExecutorError as exc:
                if order.intent == "noop":  # its nonce must be filled whatever happens: it waits, never gives up
                    self._resume_at[(order.chain, True)] = self.clock() + MAX_BACKOFF_MS
                    return f"waiting: {exc}"
                refill = await executor.fee_reserve() if order.nonce is not None else 0
                await submit(AbandonOrder(order.id, str(exc), self.clock(), refill))
                return f"abandoned: {exc}"
            result = await submit(RecordSubmission(order.id, signed.tx_id, signed.raw, signed.expiry,
                                                   quote.quoted_out, signed.min_out, self.clock(), signed.fees))
            if not result.accepted:
                log.warning("order %s: submission refused: %s", order.id, result.reason)
                return f"refused: {result.reason}"
            self.crash(f"after_submit_commit:{order.intent}")
            order = self._current(order.id)
        if order.state == "signed":
            sent = await self._broadcast(executor, order)
            if sent == "sent" and getattr(executor, "look_up_after_send", False):
                # a chain that may already hold the receipt (a dev node mines on arrival; a fast chain
                # within the round trip): looked up now rather than a step later. Pending costs one read.
                current = self._current(order.id)
                if current is not None and current.state == "submitted":
                    return "sent, " + await self._settle(executor, current)
            return sent
        if order.state in ("submitted", "unknown"):
            return await self._settle(executor, order)
        return order.state

    async def _broadcast(self, executor: Executor, order: Order) -> str:
        submit = self.sequencer.submit
        try:
            sent = await executor.broadcast(order)
        except Exception as exc:  # trouble nobody classified, after the bytes may have left
            sent = Unknown(f"broadcast error: {said(exc)}", unexplained=True)
        self.crash(f"after_broadcast:{order.intent}")
        if isinstance(sent, Accepted):
            if self._refused.pop(order.chain, 0):  # the node takes transactions again: nobody waits
                self._resume_at.pop((order.chain, False), None)
                self._resume_at.pop((order.chain, True), None)
            await submit(MarkBroadcast(order.id, self.clock()))
            return "sent"
        if isinstance(sent, Rejected) and order.state == "signed":
            refill = await executor.fee_reserve() if order.nonce is not None else 0
            await submit(RecordFailure(order.id, sent.reason, 0, self.clock(), nonce_unused=True,
                                       refill_fee_reserve=refill))
            refused = self._refused[order.chain] = self._refused.get(order.chain, 0) + 1
            now = self.clock()
            self._resume_at[(order.chain, False)] = now + backoff_ms(refused)
            self._resume_at[(order.chain, True)] = now + backoff_ms(refused, MAX_NOOP_BACKOFF_MS)
            return f"failed: {sent.reason}"
        reason = sent.reason if isinstance(sent, (Rejected, Unknown)) else "unknown"
        await submit(RecordUnknown(order.id, reason, self.clock()))
        if isinstance(sent, Unknown) and sent.unexplained:
            self.reconcile_after.add(order.chain)  # the kernel reconciles once the chain has settled
        return f"unknown: {reason}"

    async def _settle(self, executor: Executor, order: Order) -> str:
        submit = self.sequencer.submit
        try:
            outcome = await executor.lookup(order)
        except Exception as exc:
            log.warning("order %s: lookup failed, still unknown: %s", order.id, said(exc))
            return f"unknown: lookup failed: {said(exc)}"
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
        stuck_after = getattr(executor, "stuck_after_ms", None)
        if stuck_after is not None and order.nonce is not None and self.clock() - order.updated_at >= stuck_after:
            return await self._unstick(executor, order)
        return "pending"

    async def _unstick(self, executor: Executor, order: Order) -> str:
        """A transaction not mined in time: replaced at its nonce with both fees raised, within the
        cap; when that cannot go, cancelled at its nonce (its own cap), so later nonces are not
        blocked. Each attempt is committed before it is sent, and every earlier one is kept."""
        cancel = False
        signed = await executor.replace(order)
        if signed is None:
            signed, cancel = await executor.cancel(order), True
        if signed is None:
            return "pending: stuck, and no replacement fits the caps"
        result = await self.sequencer.submit(ReplaceSubmission(order.id, signed.tx_id, signed.raw, signed.fees or "{}",
                                                               self.clock(), cancel))
        if not result.accepted:
            return f"pending: replacement refused: {result.reason}"
        current = self._current(order.id)
        try:
            sent = await executor.broadcast(current)
        except Exception as exc:  # the earlier attempts stand; the next look-up decides
            sent = Unknown(f"broadcast error: {said(exc)}")
        what = "cancelled" if cancel else "replaced"
        log.info("order %s: %s at nonce %s with %s (%s)", order.id, what, order.nonce, signed.tx_id,
                 type(sent).__name__)
        return f"{what}: {type(sent).__name__.lower()}"
