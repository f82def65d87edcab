"""The operator's log: committed events -> one JSON line each, with the ids they concern.

A subscriber of the sequencer (called after each COMMIT with the batch's events), never on its hot
path: what is logged has happened. Logging a line is cheap but not free, so events an operator
does not read (price marks, heartbeats) are DEBUG, and nothing is formatted for a level that is off.

Events carry ids but not always their chain and token, and the book forgets an order once it is
settled and a position once it is closed (before this runs: the overlay is merged first). So this
keeps its own small index of what is live - primed from the book, fed by the events in order, each
entry dropped with the event that ends it - to name chain, token, position and tx on every line.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Callable

from engine.core import messages as m
from engine.core.money import from_units

log = logging.getLogger("botctl.events")
log.addHandler(logging.NullHandler())  # for the log file only: with none set up, never Python's stderr fallback

DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING


class _Order:
    __slots__ = ("intent", "chain", "token", "position", "tx")

    def __init__(self, intent: str, chain: str, token: str, position: int | None, tx: str | None = None):
        self.intent, self.chain, self.token, self.position, self.tx = intent, chain, token, position, tx


class _Position:
    __slots__ = ("chain", "token", "reason")

    def __init__(self, chain: str, token: str, reason: str | None = None):
        self.chain, self.token, self.reason = chain, token, reason


def subscribe(sequencer, settings=None) -> Callable[[], None]:
    """Log `sequencer`'s committed events from now on; mask the endpoints of `settings` in every
    line (they may carry API keys). Returns the unsubscribe function."""
    if settings is not None:
        from engine import logs

        chains = getattr(settings, "chains", None) or {}
        logs.protect(logs.secret_values({}, [url for chain in chains.values()
                                             for url in (chain.rpc_url, chain.jupiter_url)]))
    return sequencer.subscribe(EventLog(sequencer.book))


class EventLog:
    def __init__(self, book, logger: logging.Logger = log):
        self.book = book
        self.log = logger
        self.orders = {o.id: _Order(o.intent, o.chain, o.token, o.position_id, o.tx_id) for o in book.live_orders()}
        self.positions = {p.id: _Position(p.chain, p.token, p.close_reason) for p in book.open_positions()}
        self.loss_breaker = self._losses_tripped()

    def __call__(self, events: list) -> None:
        logger = self.log
        if not logger.isEnabledFor(WARNING):  # nothing to write: only keep the index right
            for event in events:
                self._forget(event)
            return
        self.info = logger.isEnabledFor(INFO)
        self.debug = logger.isEnabledFor(DEBUG)
        closed = False
        for event in events:
            kind = type(event)
            handler = _HANDLERS.get(kind)
            if handler is not None:
                handler(self, event)
            closed = closed or kind is m.PositionClosed or kind is m.TradingStateChanged
        if closed:
            self._check_loss_breaker()

    # ---- writing

    def _emit(self, level: int, kind: str, text: str, ids: dict) -> None:
        """The level is checked by the caller; no caller lookup either (a stack walk per line): the
        event names what happened, the code that logged it is always this module."""
        ids["event"] = kind
        logger = self.log
        logger.handle(logger.makeRecord(logger.name, level, __file__, 0, text, (), None, None, ids))

    def _order_ids(self, order_id: int, **more) -> tuple[dict, _Order | None]:
        order = self.orders.get(order_id)
        if order is None:  # not seen by this log (an older run): the book may still know it
            live = self.book.orders.get(order_id)
            if live is not None:
                order = _Order(live.intent, live.chain, live.token, live.position_id, live.tx_id)
        ids = {"order": order_id}
        if order is not None:
            ids["chain"] = order.chain
            if order.token:
                ids["token"] = order.token
            if order.position is not None:
                ids["position"] = order.position
            if order.tx:
                ids["tx"] = order.tx
        ids.update(more)
        return ids, order

    def _position_ids(self, position_id: int, **more) -> tuple[dict, _Position | None]:
        position = self.positions.get(position_id)
        if position is None:
            live = self.book.positions.get(position_id)
            if live is not None:
                position = _Position(live.chain, live.token, live.close_reason)
        ids = {"position": position_id}
        if position is not None:
            ids["chain"], ids["token"] = position.chain, position.token
        ids.update(more)
        return ids, position

    # ---- amounts, exact, in whole units

    def _quote(self, chain: str | None, units: int) -> str:
        spec = self.book.policy.chains.get(chain)
        return _whole(units, spec.quote_decimals if spec else 0, 2)

    def _native(self, chain: str | None, units: int) -> str:
        spec = self.book.policy.chains.get(chain)
        return _whole(units, spec.native_decimals if spec else 0)

    def _tokens(self, chain: str | None, token: str | None, units: int) -> str:
        spec = self.book.policy.chains.get(chain)
        decimals = spec.tokens.get(token) if spec else None
        return f"{_whole(units, decimals)} {token}" if decimals is not None else f"{units} base units of {token}"

    # ---- the index (kept whether or not anything is written)

    def _forget(self, event) -> None:
        kind = type(event)
        if kind is m.EntryReserved:
            self.orders[event.order_id] = _Order("entry", event.chain, event.token, None)
        elif kind is m.CloseRequested:
            position = self.positions.get(event.position_id)
            if position is not None:
                position.reason = event.reason
                self.orders[event.order_id] = _Order("exit", position.chain, position.token, event.position_id)
        elif kind is m.NoopRequested:
            self.orders[event.order_id] = _Order("noop", event.chain, "", None)
        elif kind is m.ApprovalRequested:
            self.orders[event.order_id] = _Order("approve", event.chain, event.asset, None)
        elif kind is m.OrderSigned:
            order = self.orders.get(event.order_id)
            if order is not None:
                order.tx = event.tx_id
        elif kind is m.PositionOpened:
            self.positions[event.position_id] = _Position(event.chain, event.token)
        elif kind is m.PositionClosed:
            self.positions.pop(event.position_id, None)
        elif kind in (m.OrderFilled, m.OrderFailed, m.OrderAbandoned):
            self.orders.pop(event.order_id, None)

    # ---- one handler per event an operator reads

    def _deposited(self, e: m.Deposited) -> None:
        if self.info:
            asset = e.asset
            amount = (self._quote(e.chain, e.amount) if asset == "quote" else
                      self._native(e.chain, e.amount) + " native" if asset == "native" else
                      self._tokens(e.chain, asset, e.amount))
            self._emit(INFO, "Deposited", f"deposit of {amount} on {e.chain} ({e.ref})", {"chain": e.chain})

    def _reserved(self, e: m.EntryReserved) -> None:
        self._forget(e)
        if self.info:
            extra = f", signal {e.signal_id}" if e.signal_id else ""
            extra += f", nonce {e.nonce}" if e.nonce is not None else ""
            ids, _ = self._order_ids(e.order_id, signal=e.signal_id)
            self._emit(INFO, "EntryReserved",
                       f"order {e.order_id}: entry reserved: {self._quote(e.chain, e.amount)} for {e.token} on "
                       f"{e.chain} (network fee up to {self._native(e.chain, e.fee_reserve)} native{extra})", ids)

    def _entry_denied(self, e: m.EntryDenied) -> None:
        if self.info:
            self._emit(INFO, "EntryDenied", f"entry for {e.token} on {e.chain} denied: {e.reason}",
                       {"chain": e.chain, "token": e.token, "signal": e.signal_id, "reason": e.reason})

    def _close_requested(self, e: m.CloseRequested) -> None:
        self._forget(e)
        if self.info:
            ids, _ = self._position_ids(e.position_id, order=e.order_id, by=e.by, reason=e.reason)
            if e.by == "retry":
                text = f"position {e.position_id}: exit tried again as order {e.order_id} ({e.reason})"
            else:
                text = f"position {e.position_id}: close requested by {e.by} ({e.reason}): exit order {e.order_id}"
            self._emit(INFO, "CloseRequested", text, ids)

    def _close_denied(self, e: m.CloseDenied) -> None:
        if self.info:
            ids, _ = self._position_ids(e.position_id, reason=e.reason)
            self._emit(INFO, "CloseDenied", f"position {e.position_id}: close refused: {e.reason}", ids)

    def _signed(self, e: m.OrderSigned) -> None:
        self._forget(e)
        if self.info:
            ids, order = self._order_ids(e.order_id)
            intent = f"{order.intent} " if order else ""
            until = f", valid until block {e.expiry}" if e.expiry is not None else ""
            self._emit(INFO, "OrderSigned", f"order {e.order_id}: {intent}signed as tx {e.tx_id} (write-ahead{until})",
                       ids)

    def _replaced(self, e: m.OrderReplaced) -> None:
        ids, _order = self._order_ids(e.order_id)
        what = "cancelled by a zero-value transfer to ourselves" if e.cancel else "replaced with both fees raised"
        self._emit(WARNING, "OrderReplaced", f"order {e.order_id}: not mined in time, {what} as tx {e.tx_id} "
                   f"(fees {e.fees}; every earlier attempt is kept and may still be the one mined)", ids)

    def _submitted(self, e: m.OrderSubmitted) -> None:
        if self.info:
            ids, order = self._order_ids(e.order_id)
            tx = f" (tx {order.tx})" if order and order.tx else ""
            self._emit(INFO, "OrderSubmitted", f"order {e.order_id}: broadcast{tx}", ids)

    def _filled(self, e: m.OrderFilled) -> None:
        if self.info:
            ids, order = self._order_ids(e.order_id)
            if order is not None and order.intent in ("noop", "approve"):
                what = "no-op landed, its nonce is used" if order.intent == "noop" else "approval landed"
                self._emit(INFO, "OrderFilled", f"order {e.order_id}: {what} (network fee "
                           f"{self._native(ids.get('chain'), e.network_fee)} native)", ids)
            else:
                chain, token = ids.get("chain"), ids.get("token")
                ids["position"] = e.position_id
                fees = (f"fee {self._quote(chain, e.fee)}, network fee {self._native(chain, e.network_fee)} native")
                if order is not None and order.intent == "exit":
                    text = (f"sold {self._tokens(chain, token, e.amount_in)} for {self._quote(chain, e.amount_out)} at "
                            f"{_price(e.price)}")
                else:
                    text = (f"bought {self._tokens(chain, token, e.amount_out)} for {self._quote(chain, e.amount_in)}"
                            f" at {_price(e.price)}")
                self._emit(INFO, "OrderFilled", f"order {e.order_id}: filled: {text} ({fees})", ids)
        self._forget(e)

    def _failed(self, e: m.OrderFailed) -> None:
        ids, _ = self._order_ids(e.order_id, reason=e.reason)
        how = "refused by the node" if e.rejected else "failed"
        self._emit(WARNING, "OrderFailed", f"order {e.order_id}: {how}: {e.reason} (network fee "
                   f"{self._native(ids.get('chain'), e.network_fee)} native); its reservation is released", ids)
        self._forget(e)

    def _breaker(self, e: m.BreakerTripped) -> None:
        self._emit(WARNING, "BreakerTripped", f"rejection breaker tripped on {e.chain}: its node refused {e.refused} "
                   f"broadcasts in a row; no new entries on {e.chain} until a transaction lands there or "
                   "`botctl resume`", {"chain": e.chain})

    def _unknown(self, e: m.OrderOutcomeUnknown) -> None:
        ids, _ = self._order_ids(e.order_id, reason=e.reason)
        self._emit(WARNING, "OrderOutcomeUnknown", f"order {e.order_id}: outcome unknown ({e.reason}); its funds "
                   "stay held until the venue says what happened", ids)

    def _abandoned(self, e: m.OrderAbandoned) -> None:
        ids, _ = self._order_ids(e.order_id, reason=e.reason)
        self._emit(WARNING, "OrderAbandoned", f"order {e.order_id}: abandoned before signing: {e.reason}; its "
                   "reservation is released", ids)
        self._forget(e)

    def _noop(self, e: m.NoopRequested) -> None:
        self._forget(e)
        if self.info:
            ids, _ = self._order_ids(e.order_id)
            self._emit(INFO, "NoopRequested", f"order {e.order_id}: a no-op at nonce {e.nonce} on {e.chain} fills the "
                       f"nonce order {e.replaces} left unused", ids)

    def _approval(self, e: m.ApprovalRequested) -> None:
        self._forget(e)
        if self.info:
            ids, _ = self._order_ids(e.order_id)
            self._emit(INFO, "ApprovalRequested", f"order {e.order_id}: approve the router for {e.amount} base units "
                       f"of {e.asset} at nonce {e.nonce} on {e.chain}, for order {e.for_order}", ids)

    def _opened(self, e: m.PositionOpened) -> None:
        self._forget(e)
        if self.info:
            self._emit(INFO, "PositionOpened",
                       f"position {e.position_id} opened: {self._tokens(e.chain, e.token, e.size)} on {e.chain} for "
                       f"{self._quote(e.chain, e.cost)} at {_price(e.entry_price)} (order {e.order_id})",
                       {"position": e.position_id, "order": e.order_id, "chain": e.chain, "token": e.token})

    def _closed(self, e: m.PositionClosed) -> None:
        if self.info:
            ids, position = self._position_ids(e.position_id, order=e.order_id)
            why = f" ({position.reason})" if position and position.reason else ""
            chain = ids.get("chain")
            pnl = self._quote(chain, e.pnl)
            self._emit(INFO, "PositionClosed",
                       f"position {e.position_id} closed{why}: pnl {'+' if e.pnl >= 0 else ''}{pnl} (proceeds "
                       f"{self._quote(chain, e.proceeds)}, exit at {_price(e.exit_price)}, order {e.order_id})", ids)
        self._forget(e)

    def _marked(self, e: m.PricesMarked) -> None:
        if self.debug:
            self._emit(DEBUG, "PricesMarked", f"{len(e.prices)} prices marked on {e.chain}", {"chain": e.chain})

    def _state(self, e: m.TradingStateChanged) -> None:
        level = WARNING if e.state is m.TradingState.HALTED else INFO
        if self.info or level == WARNING:
            text = (f"trading {e.previous.word} -> {e.state.word} by {e.by}: {e.reason}" if e.state is not e.previous
                    else f"trading stays {e.state.word} by {e.by}: {e.reason}")
            self._emit(level, "TradingStateChanged", text, {"by": e.by, "reason": e.reason})

    def _floor(self, e: m.NonceFloorRaised) -> None:
        if e.foreign:
            self._emit(WARNING, "NonceFloorRaised", f"{e.foreign} transaction(s) from our key {e.address} on {e.chain} "
                       f"that botctl did not send: our nonces continue at {e.floor}, above them", {"chain": e.chain})
        elif self.info:
            self._emit(INFO, "NonceFloorRaised", f"nonce floor of {e.address} on {e.chain} raised to {e.floor}",
                       {"chain": e.chain})

    def _reconciled(self, e: m.Reconciled) -> None:
        settled = f"{e.resolved} order{'s' if e.resolved != 1 else ''} settled"
        if e.differences:
            self._emit(WARNING, "Reconciled", f"reconciliation by {e.by}: {settled}; {len(e.differences)} balance "
                       f"difference(s): {self._differences(e.differences)}; new entries wait for "
                       "`botctl reconcile --accept`", {"by": e.by})
        elif self.info:
            self._emit(INFO, "Reconciled", f"reconciliation by {e.by}: {settled}; venue and book balances agree",
                       {"by": e.by})

    def _accepted(self, e: m.ReconciliationAccepted) -> None:
        self._emit(WARNING, "ReconciliationAccepted", f"reconciliation differences accepted by {e.by}: the book "
                   f"adopts the venue's amounts ({self._differences(e.differences)})", {"by": e.by})

    def _differences(self, differences) -> str:
        return "; ".join(f"{chain} {asset}: venue {venue}, book {held} (base units)"
                         for chain, asset, venue, held in differences)

    def _answered(self, e: m.InboxAnswered) -> None:
        level = WARNING if e.state == "failed" else INFO
        if self.info or level == WARNING:
            try:
                result = json.loads(e.result)
                said = "; ".join([*result.get("ok", ()), *result.get("refused", ())])
            except (ValueError, AttributeError, TypeError):
                said = e.result
            sender = f" from {e.by}" if e.by else ""
            self._emit(level, "InboxAnswered", f"command {e.inbox_id}{sender}: {e.state}: {said}",
                       {"command": e.inbox_id, "by": e.by or None})

    def _stage(self, e: m.StageChanged) -> None:
        self._emit(WARNING, "StageChanged", f"stage {e.previous} -> {e.stage} by {e.by}: {e.reason}",
                   {"stage": e.stage, "by": e.by, "reason": e.reason})

    def _attested(self, e: m.AttestationRecorded) -> None:
        if self.info:
            self._emit(INFO, "AttestationRecorded", f"attested for stage {e.stage} by {e.by}: {e.item}: {e.text}",
                       {"stage": e.stage, "by": e.by})

    def _drill(self, e: m.DrillRecorded) -> None:
        level = INFO if e.passed else WARNING
        if self.info or level == WARNING:
            self._emit(level, "DrillRecorded", f"drill {e.kind} {'passed' if e.passed else 'FAILED'} on {e.network} "
                       f"(stage {e.stage}, by {e.by}): {e.detail}", {"stage": e.stage, "by": e.by})

    def _run_started(self, e: m.RunStarted) -> None:
        if self.info:
            purpose = " (a drill)" if e.purpose == "drill" else ""
            self._emit(INFO, "RunStarted", f"run {e.run} started{purpose}: {e.mode} mode on {e.network}, stage "
                       f"{e.stage}, by `{e.command}`", {"run": e.run, "stage": e.stage})

    def _beat(self, e: m.Heartbeat) -> None:
        if self.debug:
            self._emit(DEBUG, "Heartbeat", f"run {e.run} is alive", {"run": e.run})

    def _rejected(self, e: m.CommandRejected) -> None:
        about_order = e.ref.isdigit() and e.command not in ("Deposit",)
        level = WARNING if about_order else INFO
        if self.info or level == WARNING:
            ids = self._order_ids(int(e.ref))[0] if about_order else {}
            ids["reason"] = e.reason
            self._emit(level, "CommandRejected", f"{e.command} refused: {e.reason}", ids)

    # ---- the loss breaker has no event of its own: it trips when a losing close reaches the limit

    def _losses_tripped(self) -> bool:
        limit = self.book.policy.limits.max_consecutive_losses
        return bool(limit) and self.book.meta.get("consecutive_losses") >= limit

    def _check_loss_breaker(self) -> None:
        tripped = self._losses_tripped()
        if tripped and not self.loss_breaker:
            losses = self.book.meta.get("consecutive_losses")
            self._emit(WARNING, "LossBreaker", f"loss breaker tripped after {losses} consecutive losing trades: no "
                       "new entries until `botctl resume`", {})
        self.loss_breaker = tripped


def _whole(units: int, decimals: int | None, places: int = 0) -> str:
    """Base units in whole units, exactly, with at least `places` decimals."""
    if decimals is None:
        return str(units)
    value = from_units(units, decimals)
    if places and value == value.quantize(Decimal(1).scaleb(-places)):
        return f"{value:.{places}f}"
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _price(value) -> str:
    """Ten significant digits: a price is read, not added up."""
    if not isinstance(value, Decimal) or not value.is_finite() or not value:
        return str(value)
    return f"{value.quantize(Decimal(1).scaleb(value.adjusted() - 9)).normalize():f}"


_HANDLERS = {
    m.Deposited: EventLog._deposited,
    m.EntryReserved: EventLog._reserved,
    m.EntryDenied: EventLog._entry_denied,
    m.CloseRequested: EventLog._close_requested,
    m.CloseDenied: EventLog._close_denied,
    m.OrderSigned: EventLog._signed,
    m.OrderSubmitted: EventLog._submitted,
    m.OrderFilled: EventLog._filled,
    m.OrderFailed: EventLog._failed,
    m.BreakerTripped: EventLog._breaker,
    m.OrderOutcomeUnknown: EventLog._unknown,
    m.OrderAbandoned: EventLog._abandoned,
    m.NoopRequested: EventLog._noop,
    m.OrderReplaced: EventLog._replaced,
    m.ApprovalRequested: EventLog._approval,
    m.PositionOpened: EventLog._opened,
    m.PositionClosed: EventLog._closed,
    m.PricesMarked: EventLog._marked,
    m.TradingStateChanged: EventLog._state,
    m.NonceFloorRaised: EventLog._floor,
    m.Reconciled: EventLog._reconciled,
    m.ReconciliationAccepted: EventLog._accepted,
    m.InboxAnswered: EventLog._answered,
    m.StageChanged: EventLog._stage,
    m.AttestationRecorded: EventLog._attested,
    m.DrillRecorded: EventLog._drill,
    m.RunStarted: EventLog._run_started,
    m.Heartbeat: EventLog._beat,
    m.CommandRejected: EventLog._rejected,
}
