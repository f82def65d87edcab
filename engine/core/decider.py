"""decide(book, command) -> events and evolve(book, event) -> book. No IO, no clock.

`decide` reads the book and returns the events a command produces (a refusal
is a one-event list with a reason). `evolve` applies one event to an overlay of
the book (see engine.book) and returns it. Replaying the journal through
`evolve` rebuilds the book exactly: that is what `botctl audit` checks.

Ledger conventions (double entry, per chain and asset, debit minus credit):
  reserve      dr reserved   cr cash
  fill (buy)   dr positions  cr reserved     amount paid, venue fee included
  unused       dr cash       cr reserved
  close        dr cash       cr positions    cost basis back ...
               dr cash       cr pnl          ... plus a gain (or dr pnl cr cash for a loss)
  network fee  dr fees       cr reserved
  deposit      dr cash       cr deposits
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

from engine.core.book import (
    MAX_EXIT_ATTEMPTS,
    Book,
    ChainPolicy,
    Fill,
    NonceState,
    Order,
    Position,
    Reservation,
    market_key,
    rejected_at_key,
    rejections_key,
)
from engine.core.messages import (
    AbandonOrder,
    AcceptReconciliation,
    AnswerInbox,
    ApprovalRequested,
    AttestationRecorded,
    Beat,
    BreakerTripped,
    ChangeStage,
    CloseDenied,
    CloseRequested,
    CommandRejected,
    Deposit,
    Deposited,
    DrillRecorded,
    EntryDenied,
    EntryReserved,
    FromInbox,
    Heartbeat,
    InboxAnswered,
    MarkBroadcast,
    MarketRecorded,
    MarkPrices,
    NonceFloorRaised,
    NoopRequested,
    OrderAbandoned,
    OrderFailed,
    OrderFilled,
    OrderOutcomeUnknown,
    OrderReplaced,
    OrderSigned,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    Posting,
    PricesMarked,
    RaiseNonceFloor,
    Reconciled,
    ReconciliationAccepted,
    RecordAttestation,
    RecordDrill,
    RecordFailure,
    RecordFill,
    RecordMarket,
    RecordReconciliation,
    RecordSubmission,
    RecordUnknown,
    ReplaceSubmission,
    RequestClose,
    ReserveEntry,
    RunStarted,
    SetTradingState,
    StageChanged,
    StartRun,
    TradingState,
    TradingStateChanged,
)
from engine.core.money import price_of
from engine.core.operator import outcome, row_state
from engine.core.risk import Denied, check_entry

ASSETS = ("quote", "native")
ACCOUNTS = ("cash", "reserved", "positions", "fees", "pnl", "deposits")


_FIELDS: dict[type, tuple[str, ...]] = {}


def replace(obj, **changes):
    """dataclasses.replace without its per-call introspection (measured: -1 us a call)."""
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return cls(*[changes[n] if n in changes else getattr(obj, n) for n in names])


def _reject(cmd, reason: str, ref: str = "") -> list:
    return [CommandRejected(type(cmd).__name__, reason, cmd.at, ref)]


def _next_nonce(book: Book, chain: str, address: str) -> int:
    state = book.nonces.get((chain, address)) or NonceState()
    return max(state.next, state.floor)


def _refill(book: Book, order: Order, fee_reserve: int, at: int, native_back: int) -> list:
    """A no-op at the nonce `order` will never use, so later nonces do not wait on a gap.

    `native_back` is what the failing order returns to native cash in the same batch."""
    if order.nonce is None:
        return []
    fee = fee_reserve or book.reservations.get(order.reservation_id).fee_amount
    if fee > book.balance(order.chain, "native", "cash") + native_back:
        fee = 0  # not enough to reserve: the no-op still goes out; the chain charges what it charges
    postings = (Posting(order.chain, "native", "reserved", "cash", fee),) if fee else ()
    return [NoopRequested(book.meta.get("next_order"), book.meta.get("next_reservation"), order.chain,
                          order.address, order.nonce, fee, order.id, at, postings)]


SIDE = frozenset({"noop", "approve"})  # orders that move no funds, only spend their gas


def _approval(book: Book, chain: ChainPolicy, asset: str, amount: int, fee: int, at: int, taken: int = 0) -> list:
    """The approve before a swap that spends `asset`, when the chain needs one. It takes the next
    ids and nonce; the swap takes the ones right after (so pairs never interleave)."""
    if not chain.approves(asset):
        return []
    order_id = book.meta.get("next_order") + taken
    postings = (Posting(chain.name, "native", "reserved", "cash", fee),) if fee else ()
    return [ApprovalRequested(order_id, book.meta.get("next_reservation") + taken, chain.name, chain.address,
                              _next_nonce(book, chain.name, chain.address), asset, amount, fee, order_id + 1, at,
                              postings)]


def _release(chain: str, quote: int, native: int, fee_paid: int) -> tuple[Posting, ...]:
    """Void a reservation, posting only the network fee the chain says was paid."""
    postings = []
    if quote:
        postings.append(Posting(chain, "quote", "cash", "reserved", quote))
    if fee_paid and native:
        postings.append(Posting(chain, "native", "fees", "reserved", min(fee_paid, native)))
        if fee_paid > native:  # paid more than held: evidence wins, the audit will show it
            postings.append(Posting(chain, "native", "fees", "cash", fee_paid - native))
    if native > fee_paid:
        postings.append(Posting(chain, "native", "cash", "reserved", native - fee_paid))
    return tuple(postings)


# --------------------------------------------------------------------------- decide


def decide(book: Book, cmd) -> list:
    handler = _DECIDERS.get(type(cmd))
    if handler is None:
        raise TypeError(f"not a command: {cmd!r}")
    return handler(book, cmd)


def _decide_deposit(book: Book, cmd: Deposit) -> list:
    if cmd.chain not in book.policy.chains:
        return _reject(cmd, f"unknown chain {cmd.chain!r}", cmd.ref)
    if cmd.asset not in ASSETS:
        return _reject(cmd, f"unknown asset {cmd.asset!r}", cmd.ref)
    if cmd.amount <= 0:
        return _reject(cmd, "deposit must be positive", cmd.ref)
    if cmd.ref in book.deposits:
        return _reject(cmd, f"deposit {cmd.ref} already recorded", cmd.ref)
    posting = Posting(cmd.chain, cmd.asset, "cash", "deposits", cmd.amount)
    return [Deposited(cmd.chain, cmd.asset, cmd.amount, cmd.ref, cmd.at, (posting,))]


def _decide_reserve(book: Book, cmd: ReserveEntry) -> list:
    if cmd.refused:  # decided once (the signal is taken), and nothing is reserved or numbered for it
        return [EntryDenied(cmd.chain, cmd.token, cmd.refused, cmd.signal_id, cmd.at)]
    try:
        amount = check_entry(book, cmd)
    except Denied as denied:
        return [EntryDenied(cmd.chain, cmd.token, str(denied), cmd.signal_id, cmd.at)]
    chain = book.policy.chains[cmd.chain]
    approval = _approval(book, chain, "quote", amount, cmd.fee_reserve, cmd.at)
    if approval and 2 * cmd.fee_reserve > book.balance(cmd.chain, "native", "cash"):
        return [EntryDenied(cmd.chain, cmd.token, f"insufficient native balance on {cmd.chain} for network fees "
                            "(a swap and its approval)", cmd.signal_id, cmd.at)]
    taken = len(approval)
    nonce = _next_nonce(book, chain.name, chain.address) + taken if chain.uses_nonces else None
    postings = [Posting(cmd.chain, "quote", "reserved", "cash", amount)]
    if cmd.fee_reserve:
        postings.append(Posting(cmd.chain, "native", "reserved", "cash", cmd.fee_reserve))
    return approval + [
        EntryReserved(
            reservation_id=book.meta.get("next_reservation") + taken,
            order_id=book.meta.get("next_order") + taken,
            chain=cmd.chain,
            token=cmd.token,
            amount=amount,
            fee_reserve=cmd.fee_reserve,
            nonce=nonce,
            address=chain.address if chain.uses_nonces else None,
            signal_id=cmd.signal_id,
            at=cmd.at,
            postings=tuple(postings),
        )
    ]


def _decide_close(book: Book, cmd: RequestClose) -> list:
    position = book.positions.get(cmd.position_id)
    if position is None or position.state == "closed":  # closed in this very batch, or long ago
        if 0 < cmd.position_id < book.meta.get("next_position"):
            return [CloseDenied(cmd.position_id, f"position {cmd.position_id} is already closed", cmd.at)]
        return [CloseDenied(cmd.position_id, f"no position {cmd.position_id}", cmd.at)]
    if position.state == "closing":
        return [CloseDenied(cmd.position_id, f"position {cmd.position_id} is already closing", cmd.at)]
    if cmd.fee_reserve < 0:
        return [CloseDenied(cmd.position_id, "fee reserve must not be negative", cmd.at)]
    if cmd.refused:
        return [CloseDenied(cmd.position_id, f"position {cmd.position_id} stays open: {cmd.refused}", cmd.at)]
    if cmd.by == "engine" and book.trading_state is TradingState.HALTED:
        return [CloseDenied(cmd.position_id, "trading is halted: no automatic exits", cmd.at)]
    chain = book.policy.chains[position.chain]
    approval = _approval(book, chain, position.token, position.size, cmd.fee_reserve, cmd.at)
    if cmd.fee_reserve * (1 + len(approval)) > book.balance(position.chain, "native", "cash"):
        return [CloseDenied(cmd.position_id, f"insufficient native balance on {position.chain} for network fees",
                            cmd.at)]
    taken = len(approval)
    nonce = _next_nonce(book, chain.name, chain.address) + taken if chain.uses_nonces else None
    postings = ()
    if cmd.fee_reserve:
        postings = (Posting(position.chain, "native", "reserved", "cash", cmd.fee_reserve),)
    return approval + [
        CloseRequested(
            position_id=position.id,
            order_id=book.meta.get("next_order") + taken,
            reservation_id=book.meta.get("next_reservation") + taken,
            fee_reserve=cmd.fee_reserve,
            nonce=nonce,
            address=chain.address if chain.uses_nonces else None,
            reason=cmd.reason,
            by=cmd.by,
            at=cmd.at,
            postings=postings,
        )
    ]


def _decide_submission(book: Book, cmd: RecordSubmission) -> list:
    order = book.orders.get(cmd.order_id)
    if order is None:
        return _reject(cmd, f"no order {cmd.order_id} in flight", str(cmd.order_id))
    if order.state != "new":
        if order.tx_id == cmd.tx_id:
            return []  # a retry of what is already recorded
        return _reject(cmd, f"order {order.id} is {order.state}: already signed as {order.tx_id}", str(order.id))
    return [OrderSigned(order.id, cmd.tx_id, cmd.raw, cmd.expiry, cmd.quoted_out, cmd.min_out, cmd.at, cmd.fees)]


def _decide_replace(book: Book, cmd: ReplaceSubmission) -> list:
    """A new attempt at a sent order's nonce. Only an order that was broadcast (or may have been)
    has one: a signed one not yet sent needs no replacement, it needs sending."""
    order = book.orders.get(cmd.order_id)
    if order is None or order.state not in ("submitted", "unknown"):
        return _settled(cmd, order) if order is None or order.state not in SENT else \
            _reject(cmd, f"order {order.id} is {order.state}: broadcast it before replacing it", str(order.id))
    if order.nonce is None:
        return _reject(cmd, f"order {order.id} has no nonce to replace at", str(order.id))
    if any(a.tx_id == cmd.tx_id for a in order.all_attempts()):
        return []  # this attempt is already recorded
    current = order.all_attempts()[-1]
    replaced = json.dumps({"tx_id": current.tx_id, "raw": current.raw, "max_fee": current.max_fee,
                           "tip": current.tip, "cancel": current.cancel, "at": current.at}, sort_keys=True)
    return [OrderReplaced(order.id, cmd.tx_id, cmd.raw, cmd.fees, replaced, cmd.at, cmd.cancel)]


SENT = frozenset({"signed", "submitted", "unknown"})  # signed bytes exist, outcome not recorded


def _settled(cmd, order) -> list:
    state = "not in flight" if order is None else order.state
    return _reject(cmd, f"order {cmd.order_id} is {state}: no signed transaction awaits an outcome",
                   str(cmd.order_id))


def _decide_broadcast(book: Book, cmd: MarkBroadcast) -> list:
    order = book.orders.get(cmd.order_id)
    if order is None or order.state not in SENT:
        return _reject(cmd, f"order {cmd.order_id} has no signed transaction in flight", str(cmd.order_id))
    if order.state == "submitted":
        return []
    return [OrderSubmitted(order.id, cmd.at)]


def _decide_fill(book: Book, cmd: RecordFill) -> list:
    order = book.orders.get(cmd.order_id)
    if order is None or order.state not in SENT:
        return _settled(cmd, order)
    side = order.intent in SIDE
    if cmd.amount_in > order.amount_in or (cmd.amount_in <= 0 and not side) or cmd.amount_out < 0 \
            or cmd.network_fee < 0:
        return _reject(cmd, f"fill of order {order.id} does not match the order", str(order.id))
    reservation = book.reservations.get(order.reservation_id)
    chain = book.policy.chains[order.chain]
    token_decimals = chain.tokens.get(order.token, 18)
    c = order.chain
    native = _release(c, 0, reservation.fee_amount, cmd.network_fee)
    if side:
        return [OrderFilled(order.id, 0, 0, 0, 0, 0, cmd.network_fee, Decimal(0), cmd.at, native)]
    if order.intent == "entry":
        position_id = book.meta.get("next_position")
        price = price_of(cmd.amount_in, cmd.amount_out, chain.quote_decimals, token_decimals)
        postings = [Posting(c, "quote", "positions", "reserved", cmd.amount_in)]
        if reservation.amount > cmd.amount_in:
            postings.append(Posting(c, "quote", "cash", "reserved", reservation.amount - cmd.amount_in))
        filled = OrderFilled(order.id, book.meta.get("next_fill"), position_id, cmd.amount_in, cmd.amount_out,
                             cmd.fee, cmd.network_fee, price, cmd.at, tuple(postings) + native)
        opened = PositionOpened(position_id, order.id, c, order.token, cmd.amount_out, cmd.amount_in, price, cmd.at)
        return [filled, opened]
    position = book.positions.get(order.position_id)
    proceeds = cmd.amount_out - cmd.fee
    pnl = proceeds - position.cost
    price = price_of(cmd.amount_out, cmd.amount_in, chain.quote_decimals, token_decimals)
    postings = [Posting(c, "quote", "cash", "positions", position.cost)]
    if pnl > 0:
        postings.append(Posting(c, "quote", "cash", "pnl", pnl))
    elif pnl < 0:
        postings.append(Posting(c, "quote", "pnl", "cash", -pnl))
    filled = OrderFilled(order.id, book.meta.get("next_fill"), position.id, cmd.amount_in, cmd.amount_out,
                         cmd.fee, cmd.network_fee, price, cmd.at, native)
    closed = PositionClosed(position.id, order.id, proceeds, pnl, price,
                            cmd.at + book.policy.limits.cooldown_ms, cmd.at, tuple(postings))
    return [filled, closed]


def _decide_failure(book: Book, cmd: RecordFailure) -> list:
    order = book.orders.get(cmd.order_id)
    if order is None or order.state not in SENT:
        return _settled(cmd, order)
    if cmd.network_fee < 0:
        return _reject(cmd, "network fee must not be negative", str(order.id))
    reservation = book.reservations.get(order.reservation_id)
    postings = _release(order.chain, reservation.amount, reservation.fee_amount, cmd.network_fee)
    rejected = cmd.nonce_unused and order.state == "signed"  # the node refused it: its nonce is still free
    failed = [OrderFailed(order.id, cmd.reason, cmd.network_fee, cmd.at, postings, rejected=rejected)]
    limit = book.policy.limits.max_consecutive_rejections
    if rejected and limit and book.meta.get(rejections_key(order.chain), 0) + 1 == limit:
        failed.append(BreakerTripped(order.chain, limit, cmd.at))
    native_back = reservation.fee_amount - cmd.network_fee
    retry = _retry_exit(book, order, reservation.fee_amount, cmd.at, native_back, 0,
                        order.nonce if rejected else None) if order.intent == "exit" else []
    if rejected and not retry:  # nobody else will use this nonce: fill it, so later ones can land
        failed += _refill(book, order, cmd.refill_fee_reserve, cmd.at, native_back)
    return failed + retry



def _retry_exit(book: Book, order: Order, fee: int, at: int, native_back: int, taken: int,
                free_nonce: int | None = None) -> list:
    """A requested close stays requested: a failed exit is followed by a fresh one (re-quoted),
    up to MAX_EXIT_ATTEMPTS per request; after that the position is open again and the operator
    decides. A retry takes the failed exit's own nonce when the node refused it (`free_nonce`):
    no gap is left, so no no-op is needed to fill one."""
    position = book.positions.get(order.position_id)
    if position is None or position.exit_attempts >= MAX_EXIT_ATTEMPTS:
        return []
    chain = book.policy.chains[order.chain]
    # A refused exit's retry takes its free nonce: the approve before it stands (or failed and
    # the swap fails too, and the retry after that comes with a fresh approval).
    approval = [] if free_nonce is not None else _approval(book, chain, position.token, position.size, fee, at, taken)
    if fee * (1 + len(approval)) > book.balance(order.chain, "native", "cash") + native_back:
        return []
    taken += len(approval)
    if not chain.uses_nonces:
        nonce = None
    elif free_nonce is not None:
        nonce = free_nonce
    else:
        nonce = _next_nonce(book, chain.name, chain.address) + len(approval)
    postings = (Posting(order.chain, "native", "reserved", "cash", fee),) if fee else ()
    return approval + [CloseRequested(position.id, book.meta.get("next_order") + taken,
                           book.meta.get("next_reservation") + taken, fee, nonce,
                           chain.address if chain.uses_nonces else None,
                           position.close_reason or "retry", "retry", at, postings)]


def _decide_unknown(book: Book, cmd: RecordUnknown) -> list:
    order = book.orders.get(cmd.order_id)
    if order is None or order.state not in SENT:
        return _settled(cmd, order)
    if order.state == "unknown":
        return []
    return [OrderOutcomeUnknown(order.id, cmd.reason, cmd.at)]


def _decide_abandon(book: Book, cmd: AbandonOrder) -> list:
    order = book.orders.get(cmd.order_id)
    if order is None or order.state in ("filled", "failed", "abandoned"):
        return _settled(cmd, order)
    if order.state != "new":
        # Signed bytes exist: only evidence from the chain may settle it now.
        return _reject(cmd, f"order {order.id} is {order.state}: signed bytes exist", str(order.id))
    reservation = book.reservations.get(order.reservation_id)
    postings = _release(order.chain, reservation.amount, reservation.fee_amount, 0)
    return [OrderAbandoned(order.id, cmd.reason, cmd.at, postings)] + _refill(
        book, order, cmd.refill_fee_reserve, cmd.at, reservation.fee_amount)


def _decide_marks(book: Book, cmd: MarkPrices) -> list:
    """Only prices that moved are recorded: an unchanged mark is no news (a live chain is priced every
    second, and the journal keeps what it is told for good)."""
    if cmd.chain not in book.policy.chains:
        return _reject(cmd, f"unknown chain {cmd.chain!r}")
    moved = tuple((token, price) for token, price in cmd.prices
                  if (book.marks.get((cmd.chain, token)) or (None,))[0] != price)
    return [PricesMarked(cmd.chain, moved, cmd.at)] if moved else []


def tripped_breakers(book: Book) -> list[str]:
    """The breakers that stop new entries now, in words (resume re-arms them)."""
    limits, meta = book.policy.limits, book.meta
    out = []
    losses = meta.get("consecutive_losses")
    if limits.max_consecutive_losses and losses >= limits.max_consecutive_losses:
        out.append(f"loss breaker after {losses} consecutive losses")
    for chain in sorted(book.policy.chains):
        refused = meta.get(rejections_key(chain), 0)
        if limits.max_consecutive_rejections and refused >= limits.max_consecutive_rejections:
            out.append(f"{chain} rejection breaker after {refused} refused broadcasts")
    return out


def _decide_state(book: Book, cmd: SetTradingState) -> list:
    """Asking for the state the book is already in changes nothing and is not an error (an emergency
    `halt` on a halted bot must not fail): no events; the inbox answers "already halted"."""
    previous = book.trading_state
    arming = cmd.state is TradingState.HALTED and cmd.close_all and not book.meta.get("closing_all")
    if cmd.state is previous and not arming:
        tripped = tripped_breakers(book) if cmd.state is TradingState.ACTIVE else []
        if tripped:  # a breaker stopped entries: resuming re-arms it
            return [TradingStateChanged(cmd.state, previous, f"{cmd.reason} ({'; '.join(tripped)} reset)",
                                        cmd.by, cmd.at)]
        return []
    if previous is TradingState.HALTED and cmd.state is not previous and not cmd.force:
        return _reject(cmd, "trading is halted: leaving a halt needs `botctl resume --force`")
    return [TradingStateChanged(cmd.state, previous, cmd.reason, cmd.by, cmd.at, close_all=arming)]


def _decide_from_inbox(book: Book, cmd: FromInbox) -> list:
    events = decide(book, cmd.command)
    if not cmd.last:
        return events
    result = outcome(json.loads(cmd.prior) if cmd.prior else None, events, cmd.command)
    return events + [InboxAnswered(cmd.inbox_id, row_state(result), json.dumps(result, sort_keys=True), cmd.at,
                                   getattr(cmd.command, "by", ""))]


def _decide_answer(book: Book, cmd: AnswerInbox) -> list:
    return [InboxAnswered(cmd.inbox_id, cmd.state, cmd.result, cmd.at, cmd.by)]


def _decide_market(book: Book, cmd: RecordMarket) -> list:
    if book.meta.get(market_key(cmd.chain)) == cmd.policy:
        return []  # the same market as last time: nothing to record
    return [MarketRecorded(cmd.chain, cmd.policy, cmd.at)]


def _decide_floor(book: Book, cmd: RaiseNonceFloor) -> list:
    state = book.nonces.get((cmd.chain, cmd.address)) or NonceState()
    if cmd.floor <= state.floor:
        return []
    return [NonceFloorRaised(cmd.chain, cmd.address, cmd.floor, cmd.at, cmd.foreign)]


def _decide_reconciliation(book: Book, cmd: RecordReconciliation) -> list:
    return [Reconciled(tuple(cmd.differences), cmd.resolved, cmd.by, cmd.at)]


def _decide_accept(book: Book, cmd: AcceptReconciliation) -> list:
    pending = book.meta.get("review")
    if not pending:
        return _reject(cmd, "no reconciliation difference is waiting for review")
    postings = []
    for chain, asset, venue, held in pending:
        if asset in ASSETS and venue != held:
            if venue > held:
                postings.append(Posting(chain, asset, "cash", "deposits", venue - held))
            else:
                postings.append(Posting(chain, asset, "deposits", "cash", held - venue))
    return [ReconciliationAccepted(tuple(pending), cmd.by, cmd.at, tuple(postings))]


def _decide_stage(book: Book, cmd: ChangeStage) -> list:
    from engine.core.stages import ORDER

    current = book.meta.get("stage")
    if cmd.previous != current:
        return _reject(cmd, f"the stage changed meanwhile: it is {current}, not {cmd.previous}")
    if cmd.stage not in ORDER:
        return _reject(cmd, f"unknown stage {cmd.stage!r}")
    if cmd.stage == current:
        return _reject(cmd, f"the stage is already {current}")
    forward = ORDER.index(cmd.stage) > ORDER.index(current)
    if not cmd.promote:
        if forward:
            return _reject(cmd, f"a demotion goes back, not from {current} to {cmd.stage}")
    else:
        following = book.policy.stages[current].next
        if cmd.stage != following:
            return _reject(cmd, f"{current} promotes to {following} only, one stage at a time")
        if cmd.missing:
            return _reject(cmd, f"promotion to {cmd.stage} refused, missing: " + "; ".join(cmd.missing))
    return [StageChanged(cmd.stage, current, cmd.reason, cmd.evidence, cmd.by, cmd.at)]


def _decide_attestation(book: Book, cmd: RecordAttestation) -> list:
    current = book.meta.get("stage")
    if cmd.stage != current:
        return _reject(cmd, f"the stage is {current}, not {cmd.stage}: attest for the stage you are in")
    asks = book.policy.stages[current]
    text = asks.attestation(cmd.item)
    if text is None:
        keys = [t.split(":", 1)[0] for t in asks.promotion.attestations]
        return _reject(cmd, f"stage {current} asks no attestation {cmd.item!r}"
                            + (f" (it asks: {', '.join(keys)})" if keys else ""))
    return [AttestationRecorded(current, cmd.item, text, cmd.by, cmd.at)]


def _decide_drill(book: Book, cmd: RecordDrill) -> list:
    from engine.core.stages import DRILLS

    if cmd.kind not in DRILLS:
        return _reject(cmd, f"unknown drill {cmd.kind!r}")
    return [DrillRecorded(cmd.kind, cmd.passed, cmd.detail, cmd.network, book.meta.get("stage"), cmd.by, cmd.at)]


def _decide_run(book: Book, cmd: StartRun) -> list:
    return [RunStarted(cmd.run, cmd.mode, cmd.network, book.meta.get("stage"), cmd.command, cmd.at, cmd.purpose)]


def _decide_beat(book: Book, cmd: Beat) -> list:
    return [Heartbeat(cmd.run, cmd.at)]


_DECIDERS = {
    ChangeStage: _decide_stage,
    RecordAttestation: _decide_attestation,
    RecordDrill: _decide_drill,
    StartRun: _decide_run,
    Beat: _decide_beat,
    Deposit: _decide_deposit,
    ReserveEntry: _decide_reserve,
    RequestClose: _decide_close,
    RecordSubmission: _decide_submission,
    MarkBroadcast: _decide_broadcast,
    RecordFill: _decide_fill,
    RecordFailure: _decide_failure,
    RecordUnknown: _decide_unknown,
    AbandonOrder: _decide_abandon,
    MarkPrices: _decide_marks,
    SetTradingState: _decide_state,
    RaiseNonceFloor: _decide_floor,
    RecordMarket: _decide_market,
    ReplaceSubmission: _decide_replace,
    RecordReconciliation: _decide_reconciliation,
    AcceptReconciliation: _decide_accept,
    FromInbox: _decide_from_inbox,
    AnswerInbox: _decide_answer,
}


# --------------------------------------------------------------------------- evolve


def evolve(book: Book, event) -> Book:
    postings = getattr(event, "postings", None)
    if postings:
        balances = book.balances
        for chain, asset, dr, cr, amount in postings:
            kdr, kcr = (chain, asset, dr), (chain, asset, cr)
            balances.put(kdr, balances.get(kdr, 0) + amount)
            balances.put(kcr, balances.get(kcr, 0) - amount)
    handler = _EVOLVERS.get(type(event))
    if handler is not None:
        handler(book, event)
    return book


def _bump(book: Book, key: str, by: int = 1) -> None:
    book.meta.put(key, book.meta.get(key) + by)


def _take_nonce(book: Book, chain: str, address: str | None, nonce: int | None) -> None:
    if nonce is None:
        return
    key = (chain, address)
    state = book.nonces.get(key) or NonceState()
    book.nonces.put(key, replace(state, next=max(state.next, nonce + 1)))


def _evolve_deposited(book: Book, e: Deposited) -> None:
    book.deposits.put(e.ref, e.amount)


def _evolve_reserved(book: Book, e: EntryReserved) -> None:
    book.reservations.put(e.reservation_id, Reservation(
        e.reservation_id, "entry", e.chain, e.token, e.amount, e.fee_reserve, "held", e.order_id, None, e.at))
    book.orders.put(e.order_id, Order(
        e.order_id, "entry", e.chain, e.token, e.reservation_id, None, "new", e.amount, e.nonce, e.address, e.at, e.at))
    book.slots.put((e.chain, e.token), f"r{e.reservation_id}")
    if e.signal_id is not None:
        book.signals.put(e.signal_id, e.reservation_id)
    _take_nonce(book, e.chain, e.address, e.nonce)
    meta = book.meta
    meta.put("next_reservation", e.reservation_id + 1)
    meta.put("next_order", e.order_id + 1)
    meta.put("open_slots", meta.get("open_slots") + 1)


def _evolve_entry_denied(book: Book, e: EntryDenied) -> None:
    if e.signal_id is not None and e.signal_id not in book.signals:
        book.signals.put(e.signal_id, 0)  # decided once, even when refused


def _evolve_close_requested(book: Book, e: CloseRequested) -> None:
    position = book.positions.get(e.position_id)
    attempts = position.exit_attempts + 1 if e.by == "retry" else 1  # each request gets the whole budget
    book.positions.put(position.id, replace(position, state="closing", exit_order=e.order_id, close_reason=e.reason,
                                            exit_attempts=attempts))
    book.reservations.put(e.reservation_id, Reservation(
        e.reservation_id, "exit", position.chain, position.token, 0, e.fee_reserve, "held", e.order_id,
        position.id, e.at))
    book.orders.put(e.order_id, Order(
        e.order_id, "exit", position.chain, position.token, e.reservation_id, position.id, "new", position.size,
        e.nonce, e.address, e.at, e.at))
    _take_nonce(book, position.chain, e.address, e.nonce)
    book.meta.put("next_reservation", e.reservation_id + 1)
    book.meta.put("next_order", e.order_id + 1)


def _evolve_signed(book: Book, e: OrderSigned) -> None:
    order = book.orders.get(e.order_id)
    book.orders.put(order.id, replace(order, state="signed", tx_id=e.tx_id, raw=e.raw, expiry=e.expiry,
                                      quoted_out=e.quoted_out, min_out=e.min_out, updated_at=e.at, fees=e.fees))


def _evolve_replaced(book: Book, e: OrderReplaced) -> None:
    order = book.orders.get(e.order_id)
    earlier = json.loads(order.attempts) if order.attempts else []
    earlier.append(json.loads(e.replaced))
    fees = json.loads(e.fees)
    fees["cancel"] = e.cancel
    book.orders.put(order.id, replace(order, tx_id=e.tx_id, raw=e.raw, fees=json.dumps(fees, sort_keys=True),
                                      attempts=json.dumps(earlier, sort_keys=True), updated_at=e.at))


def _evolve_submitted(book: Book, e: OrderSubmitted) -> None:
    order = book.orders.get(e.order_id)
    book.orders.put(order.id, replace(order, state="submitted", updated_at=e.at))


def _evolve_unknown(book: Book, e: OrderOutcomeUnknown) -> None:
    order = book.orders.get(e.order_id)
    book.orders.put(order.id, replace(order, state="unknown", reason=e.reason, updated_at=e.at))


def _settle(book: Book, order: Order, state: str, at: int) -> None:
    reservation = book.reservations.get(order.reservation_id)
    book.reservations.put(reservation.id, replace(reservation, state=state, settled_at=at))


def _evolve_filled(book: Book, e: OrderFilled) -> None:
    order = book.orders.get(e.order_id)
    book.orders.put(order.id, replace(order, state="filled", updated_at=e.at))
    if book.meta.get(rejections_key(order.chain), 0):  # a transaction landed: the chain takes ours again
        book.meta.put(rejections_key(order.chain), 0)
    _settle(book, order, "posted", e.at)
    if order.intent in SIDE:
        return
    buy = order.intent == "entry"
    book.fills.put(e.fill_id, Fill(
        e.fill_id, e.position_id, order.id, "buy" if buy else "sell", order.chain, order.token,
        e.amount_out if buy else e.amount_in, e.amount_in if buy else e.amount_out, e.price, e.fee,
        e.network_fee, order.tx_id, e.at))
    book.meta.put("next_fill", e.fill_id + 1)


def _evolve_opened(book: Book, e: PositionOpened) -> None:
    book.positions.put(e.position_id, Position(
        e.position_id, e.chain, e.token, "open", e.size, e.cost, e.entry_price, e.at, e.order_id))
    book.slots.put((e.chain, e.token), f"p{e.position_id}")
    book.meta.put("next_position", e.position_id + 1)


def _evolve_closed(book: Book, e: PositionClosed) -> None:
    position = book.positions.get(e.position_id)
    book.positions.put(position.id, replace(
        position, state="closed", closed_at=e.at, proceeds=e.proceeds, pnl=e.pnl, exit_price=e.exit_price))
    book.slots.drop((position.chain, position.token))
    book.cooldowns.put((position.chain, position.token), e.cooldown_until)
    _bump(book, "open_slots", -1)
    book.meta.put("consecutive_losses", book.meta.get("consecutive_losses") + 1 if e.pnl < 0 else 0)


def _unwind(book: Book, order: Order) -> None:
    """An order that did not happen: an entry frees its token, an exit reopens its position."""
    if order.intent in SIDE:
        return
    if order.intent == "entry":
        book.slots.drop((order.chain, order.token))
        _bump(book, "open_slots", -1)
    else:
        position = book.positions.get(order.position_id)
        book.positions.put(position.id, replace(position, state="open", exit_order=None, close_reason=None))


def _evolve_failed(book: Book, e: OrderFailed) -> None:
    order = book.orders.get(e.order_id)
    if e.rejected:
        key = rejections_key(order.chain)
        book.meta.put(key, book.meta.get(key, 0) + 1)
        book.meta.put(rejected_at_key(order.chain), e.at)
    book.orders.put(order.id, replace(order, state="failed", reason=e.reason, updated_at=e.at))
    _settle(book, order, "voided", e.at)
    _unwind(book, order)


def _evolve_abandoned(book: Book, e: OrderAbandoned) -> None:
    order = book.orders.get(e.order_id)
    book.orders.put(order.id, replace(order, state="abandoned", reason=e.reason, updated_at=e.at))
    _settle(book, order, "voided", e.at)
    _unwind(book, order)


def _evolve_noop(book: Book, e: NoopRequested) -> None:
    book.reservations.put(e.reservation_id, Reservation(
        e.reservation_id, "noop", e.chain, "", 0, e.fee_reserve, "held", e.order_id, None, e.at))
    book.orders.put(e.order_id, Order(
        e.order_id, "noop", e.chain, "", e.reservation_id, None, "new", 0, e.nonce, e.address, e.at, e.at))
    book.meta.put("next_reservation", e.reservation_id + 1)
    book.meta.put("next_order", e.order_id + 1)


def _evolve_market(book: Book, e: MarketRecorded) -> None:
    book.meta.put(market_key(e.chain), e.policy)


def _evolve_approval(book: Book, e: ApprovalRequested) -> None:
    book.reservations.put(e.reservation_id, Reservation(
        e.reservation_id, "approve", e.chain, "", 0, e.fee_reserve, "held", e.order_id, None, e.at))
    book.orders.put(e.order_id, Order(
        e.order_id, "approve", e.chain, e.asset, e.reservation_id, None, "new", e.amount, e.nonce, e.address, e.at,
        e.at))
    _take_nonce(book, e.chain, e.address, e.nonce)
    book.meta.put("next_reservation", e.reservation_id + 1)
    book.meta.put("next_order", e.order_id + 1)


def _evolve_marked(book: Book, e: PricesMarked) -> None:
    marks = book.marks
    for token, price in e.prices:
        marks.put((e.chain, token), (price, e.at))


def _evolve_state(book: Book, e: TradingStateChanged) -> None:
    book.meta.put("trading_state", e.state)
    if e.close_all:
        book.meta.put("closing_all", 1)
    elif e.state is not TradingState.HALTED and book.meta.get("closing_all"):
        book.meta.put("closing_all", 0)  # leaving the halt ends it
    if e.state is TradingState.ACTIVE:  # resuming re-arms every breaker
        book.meta.put("consecutive_losses", 0)
        for chain in sorted(book.policy.chains):
            if book.meta.get(rejections_key(chain), 0):
                book.meta.put(rejections_key(chain), 0)


def _evolve_floor(book: Book, e: NonceFloorRaised) -> None:
    key = (e.chain, e.address)
    state = book.nonces.get(key) or NonceState()
    book.nonces.put(key, replace(state, floor=e.floor, next=max(state.next, e.floor)))


def _evolve_reconciled(book: Book, e: Reconciled) -> None:
    book.meta.put("review", tuple(e.differences) if e.differences else ())


def _evolve_accepted(book: Book, e: ReconciliationAccepted) -> None:
    for chain, asset, venue, held in e.differences:
        if asset not in ASSETS:
            key = f"offset:{chain}:{asset}"
            book.meta.put(key, book.meta.get(key, 0) + venue - held)
    book.meta.put("review", ())


def _evolve_stage(book: Book, e: StageChanged) -> None:
    book.meta.put("stage", e.stage)


def _evolve_answered(book: Book, e: InboxAnswered) -> None:
    book.inbox.put(e.inbox_id, (e.state, e.result, e.at))


_EVOLVERS = {
    Deposited: _evolve_deposited,
    EntryReserved: _evolve_reserved,
    EntryDenied: _evolve_entry_denied,
    CloseRequested: _evolve_close_requested,
    OrderSigned: _evolve_signed,
    OrderSubmitted: _evolve_submitted,
    OrderReplaced: _evolve_replaced,
    OrderOutcomeUnknown: _evolve_unknown,
    OrderFilled: _evolve_filled,
    PositionOpened: _evolve_opened,
    PositionClosed: _evolve_closed,
    OrderFailed: _evolve_failed,
    OrderAbandoned: _evolve_abandoned,
    NoopRequested: _evolve_noop,
    ApprovalRequested: _evolve_approval,
    MarketRecorded: _evolve_market,
    PricesMarked: _evolve_marked,
    TradingStateChanged: _evolve_state,
    NonceFloorRaised: _evolve_floor,
    Reconciled: _evolve_reconciled,
    ReconciliationAccepted: _evolve_accepted,
    InboxAnswered: _evolve_answered,
    StageChanged: _evolve_stage,
}


def apply(book: Book, events) -> Book:
    for event in events:
        evolve(book, event)
    return book


__all__ = ["decide", "evolve", "apply", "ACCOUNTS", "ASSETS", "Decimal"]
