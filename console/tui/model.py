"""What the panels show, computed from the engine's committed book (pure: no textual, no IO).

The book is the sequencer's committed in-memory state (`book.positions.base`
and friends): it only changes between two awaits on the event loop, after a
COMMIT, so reading it from the loop is always consistent.

A cell is either text or `(text, style)`; the table turns styles into colours.
Money stays integer base units until it is turned into text here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable

from console.tui.format import age, amount, clock_time, compact_price, money, price, short, signed
from engine.core.book import Book, Order, Position, Reservation, nonce_gap
from engine.core.decider import tripped_breakers
from engine.core.exits import marked_value
from engine.core.messages import (
    ApprovalRequested,
    AttestationRecorded,
    BreakerTripped,
    CloseDenied,
    CloseRequested,
    CommandRejected,
    Deposited,
    DrillRecorded,
    EntryDenied,
    EntryReserved,
    InboxAnswered,
    NonceFloorRaised,
    NoopRequested,
    OrderAbandoned,
    OrderFailed,
    OrderFilled,
    OrderOutcomeUnknown,
    OrderSigned,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    PricesMarked,
    Reconciled,
    ReconciliationAccepted,
    StageChanged,
    TradingState,
    TradingStateChanged,
)
from engine.core.money import from_units

Cell = Any  # str | tuple[str, str]

GREEN, RED, YELLOW, DIM = "green", "red", "yellow", "dim"


def _pnl_cell(value: Decimal | None) -> Cell:
    if value is None:
        return "-"
    style = GREEN if value > 0 else RED if value < 0 else ""
    return (signed(value), style) if style else signed(value)


# --------------------------------------------------------------------------- changes


@dataclass
class Changes:
    """What the events published since the last repaint touched (cheap to fill: O(events))."""

    positions: set = field(default_factory=set)  # position ids
    marks: set = field(default_factory=set)  # (chain, token)
    orders: bool = False  # orders, reservations and nonces
    log: list = field(default_factory=list)  # notable events, in order
    dropped: int = 0  # notable events not logged (bursts beyond LOG_BURST)
    events: int = 0  # anything at all (the header shows money, counts and the block height)

    LOG_BURST = 200

    def add(self, events: Iterable) -> None:
        positions, log = self.positions, self.log
        for event in events:
            self.events += 1
            kind = type(event)
            if kind is PricesMarked:
                chain = event.chain
                self.marks.update((chain, token) for token, _price in event.prices)
                continue
            if kind is EntryDenied:  # every opportunity the risk rules turn down: too many to log
                continue
            if kind in _POSITION_EVENTS:
                positions.add(event.position_id)
            if kind in _ORDER_EVENTS:
                self.orders = True
            if kind in LOGGED:
                if len(log) < self.LOG_BURST:
                    log.append(event)
                else:
                    self.dropped += 1

    def __bool__(self) -> bool:
        return bool(self.events or self.positions or self.marks or self.orders)


_POSITION_EVENTS = frozenset({PositionOpened, PositionClosed, CloseRequested, OrderFilled})
_ORDER_EVENTS = frozenset({EntryReserved, CloseRequested, OrderSigned, OrderSubmitted, OrderFilled, OrderFailed,
                           OrderOutcomeUnknown, OrderAbandoned, NoopRequested, ApprovalRequested, NonceFloorRaised,
                           PositionClosed,
                           PositionOpened, ReconciliationAccepted})
LOGGED = frozenset({Deposited, EntryReserved, CloseRequested, CloseDenied, OrderFailed, BreakerTripped,
                    OrderOutcomeUnknown, OrderAbandoned, NoopRequested, ApprovalRequested, NonceFloorRaised,
                    PositionOpened, PositionClosed, TradingStateChanged, Reconciled,
                    ReconciliationAccepted, InboxAnswered, CommandRejected, StageChanged, AttestationRecorded,
                    DrillRecorded})


# --------------------------------------------------------------------------- positions


POSITION_SORTS = ("id", "pnl", "value", "age", "token", "chain", "state")


class PositionsModel:
    """Each open position's marked value, and per-chain totals kept up to date incrementally.

    `update(pid)` is O(1): a price tick that moves 10,000 positions costs 10,000
    small updates, never a rescan per event."""

    def __init__(self, book: Book):
        self.book = book
        self.value: dict[int, int | None] = {}
        self.where: dict[int, tuple[str, str]] = {}  # pid -> (chain, token), kept for the log after close
        self._contrib: dict[int, tuple[str, int, int, int]] = {}  # chain, open value, unrealized, cost
        self.open_value: dict[str, int] = {}
        self.unrealized: dict[str, int] = {}
        self.open_cost: dict[str, int] = {}
        self.count: dict[str, int] = {}  # open positions per chain
        self.sort_column = "id"

    def load(self) -> list[int]:
        for pid in list(self._contrib):
            self.forget(pid)
        ids = sorted(self.book.positions.base)
        for pid in ids:
            self.update(pid)
        return ids

    def update(self, pid: int) -> Position | None:
        """Recompute one position; None if it is no longer open (closed positions leave the book)."""
        position = self.book.positions.base.get(pid)
        if position is None:
            self.forget(pid)
            return None
        value = marked_value(self.book, position)
        self.value[pid] = value
        self.where[pid] = (position.chain, position.token)
        cost = position.cost
        contrib = (position.chain, cost if value is None else value, 0 if value is None else value - cost, cost)
        old = self._contrib.get(pid)
        if old != contrib:
            if old is not None:
                self._add(old, -1)
            self._add(contrib, 1)
            self._contrib[pid] = contrib
        return position

    def _add(self, contrib: tuple[str, int, int, int], sign: int) -> None:
        chain, ov, up, cost = contrib
        self.open_value[chain] = self.open_value.get(chain, 0) + sign * ov
        self.unrealized[chain] = self.unrealized.get(chain, 0) + sign * up
        self.open_cost[chain] = self.open_cost.get(chain, 0) + sign * cost
        self.count[chain] = self.count.get(chain, 0) + sign

    def forget(self, pid: int) -> None:
        self.value.pop(pid, None)
        old = self._contrib.pop(pid, None)
        if old is not None:
            self._add(old, -1)

    def ids_for_marks(self, marks: Iterable[tuple[str, str]]) -> list[int]:
        """Open positions on the tokens whose prices just moved (the book's one-per-token index)."""
        slots = self.book.slots.base
        out = []
        for key in marks:
            slot = slots.get(key)
            if slot and slot[0] == "p":
                out.append(int(slot[1:]))
        return out

    # ---- what a row shows

    def cells(self, pid: int, now: int) -> tuple[Cell, ...]:
        position = self.book.positions.base.get(pid)
        if position is None:
            return (str(pid), "", "", "", "", "", "", "", "", ("closed", DIM))
        spec = self.book.policy.chains.get(position.chain)
        qd = spec.quote_decimals if spec else 6
        td = spec.tokens.get(position.token, 18) if spec else 18
        mark = self.book.marks.base.get((position.chain, position.token))
        value = self.value.get(pid)
        pnl = None if value is None else from_units(value - position.cost, qd)
        state = position.state if position.state == "open" else (position.state, YELLOW)
        return (
            str(pid),
            position.chain,
            position.token,
            amount(from_units(position.size, td)),
            compact_price(position.entry_price),
            compact_price(mark[0]) if mark else "-",
            money(None if value is None else from_units(value, qd)),
            _pnl_cell(pnl),
            age(now - position.opened_at),
            state,
        )

    def sort_key(self, pid: int) -> Any:
        """(0, ...) for open positions; a row whose position just left the book sorts last, so keys
        of different shapes are never compared."""
        column = self.sort_column
        position = self.book.positions.base.get(pid)
        if position is None:
            return (1, pid)
        if column == "pnl":
            value = self.value.get(pid)
            return (0, value - position.cost if value is not None else 0, pid)
        if column == "value":
            return (0, self.value.get(pid) or 0, pid)
        if column == "age":
            return (0, -position.opened_at, pid)
        if column == "token":
            return (0, position.token, position.chain, pid)
        if column == "chain":
            return (0, position.chain, position.token, pid)
        if column == "state":
            return (0, position.state, pid)
        return (0, pid)


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class ChainLine:
    chain: str
    cash: str
    reserved: str
    open_value: str
    realized: Cell
    unrealized: Cell
    open_positions: int


@dataclass(frozen=True)
class HeaderView:
    mode: str  # PAPER | TESTNET | LIVE
    stage: str
    state: str  # RUNNING | PAUSED | HALTED | RECONCILING | STOPPED | STARTING
    review: bool
    height: int | None
    open_positions: int
    in_flight: int
    unknown: int
    chains: tuple[ChainLine, ...]
    breakers: tuple[str, ...] = ()  # the breakers that stop new entries now, in words


def mode_badge(settings) -> str:
    if settings.mode == "paper":
        return "PAPER"
    if settings.profile == "testnet":
        return "TESTNET"
    return "LIVE"


STATE_NAMES = {TradingState.ACTIVE: "RUNNING", TradingState.REDUCING: "PAUSED", TradingState.HALTED: "HALTED"}


def header_view(settings, book: Book | None, model: PositionsModel | None, phase: str,
                height: int | None = None) -> HeaderView:
    """`phase`: "starting" / "reconciling" before the engine is up, "stopped" after it failed."""
    mode = mode_badge(settings)
    stage = book.meta.get("stage") if book is not None else settings.profile
    if stage != settings.profile:
        stage = f"{stage} (running {settings.profile})"
    if book is None or model is None:
        return HeaderView(mode, stage, phase.upper(), False, height, 0, 0, 0, ())
    state = STATE_NAMES[book.trading_state] if phase == "running" else phase.upper()
    counts = model.count
    lines = []
    for name, spec in sorted(book.policy.chains.items()):
        qd = spec.quote_decimals

        def q(units: int) -> Decimal:
            return from_units(units, qd)

        lines.append(ChainLine(
            name,
            money(q(book.balance(name, "quote", "cash"))),
            money(q(book.balance(name, "quote", "reserved"))),
            money(q(model.open_value.get(name, 0))),
            _pnl_cell(q(-book.balance(name, "quote", "pnl"))),
            _pnl_cell(q(model.unrealized.get(name, 0))),
            counts.get(name, 0),
        ))
    orders = book.orders.base
    unknown = sum(1 for o in orders.values() if o.state == "unknown") if orders else 0
    breakers = tuple(tripped_breakers(book)) if state == "RUNNING" else ()
    return HeaderView(mode, stage, state, bool(book.meta.get("review")), height, len(book.positions.base),
                      len(orders), unknown, tuple(lines), breakers)


# --------------------------------------------------------------------------- reservations and orders


def reservation_cells(book: Book, reservation: Reservation, now: int) -> tuple[Cell, ...]:
    spec = book.policy.chains.get(reservation.chain)
    order = book.orders.base.get(reservation.order_id)
    unknown = order is not None and order.state == "unknown"
    if reservation.kind == "entry":
        held = money(from_units(reservation.amount, spec.quote_decimals if spec else 6))
    else:
        held = (reservation.kind, DIM)
    return (
        str(reservation.id),
        reservation.chain,
        reservation.token or "-",
        held,
        ("unknown outcome", YELLOW) if unknown else "held",
        age(now - reservation.created_at),
        f"#{reservation.order_id} {order.state}" if order else f"#{reservation.order_id}",
    )


def order_cells(book: Book, order: Order, now: int, height: int | None) -> tuple[Cell, ...]:
    if order.nonce is not None:
        where = f"nonce {order.nonce}"
    elif order.expiry is not None and height is not None:
        left = order.expiry - height
        where = f"{left} blk left" if left > 5 else (f"{left} blk left", RED)
    else:
        where = "-"
    state = order.state
    if state == "unknown":
        state = (state, YELLOW)
    return (
        str(order.id),
        order.intent,
        order.chain,
        order.token or "-",
        state,
        where,
        short(order.tx_id, 8, 4),
        age(now - order.created_at),
    )


# --------------------------------------------------------------------------- nonces


@dataclass(frozen=True)
class InFlightTx:
    order_id: int
    intent: str
    state: str
    tx_id: str | None
    nonce: int | None
    fee_cap: str
    age: str
    blocks_left: int | None
    gas: str = ""  # the current attempt's max fee / tip in gwei (EVM), "" before it is signed
    attempts: int = 0  # signed attempts at this nonce (replacements and a cancel included)


@dataclass(frozen=True)
class NonceAccount:
    chain: str
    kind: str  # evm | solana
    address: str
    chain_nonce: int | None  # the chain's pending nonce as last seen (EVM)
    next_nonce: int | None  # the next nonce we will hand out (EVM)
    floor: int | None
    txs: tuple[InFlightTx, ...]
    gap: tuple[int, int] | None  # missing nonces [first, last] (EVM)


def _gas(attempt) -> str:
    """An attempt's fee fields in gwei, exact: what a replacement raised (EVM only)."""
    if attempt.max_fee is None:
        return ""
    from engine.venues.evm.fees import format_gwei

    cancel = " cancel" if attempt.cancel else ""
    return f"{format_gwei(attempt.max_fee)}/{format_gwei(attempt.tip or 0)} gwei{cancel}"


def nonce_accounts(book: Book, chain_nonces: dict[tuple[str, str], int], height: int | None,
                   now: int) -> list[NonceAccount]:
    """Per EVM (chain, address): nonces and in-flight transactions; per Solana wallet: signatures
    in flight with the blocks left before their blockhash expires."""
    by_account: dict[tuple[str, str], list[Order]] = {}
    for order in book.orders.base.values():
        spec = book.policy.chains.get(order.chain)
        address = order.address or (spec.address if spec else "")
        by_account.setdefault((order.chain, address), []).append(order)
    accounts = []
    keys = {(name, spec.address) for name, spec in book.policy.chains.items()}
    keys |= set(book.nonces.base)
    keys |= set(by_account)
    for chain, address in sorted(keys):
        spec = book.policy.chains.get(chain)
        kind = spec.kind if spec else "evm"
        native = spec.native_decimals if spec else 18
        orders = sorted(by_account.get((chain, address), ()), key=lambda o: (o.nonce if o.nonce is not None else -1,
                                                                          o.id))
        txs = []
        for order in orders:
            reservation = book.reservations.base.get(order.reservation_id)
            fee_cap = amount(from_units(reservation.fee_amount, native)) if reservation else "-"
            left = order.expiry - height if (order.expiry is not None and height is not None) else None
            tried = order.all_attempts() if order.tx_id else []
            txs.append(InFlightTx(order.id, order.intent, order.state, order.tx_id, order.nonce, fee_cap,
                                  age(now - order.created_at), left, _gas(tried[-1]) if tried else "", len(tried)))
        if kind == "evm":
            state = book.nonces.base.get((chain, address))
            next_nonce = state.next if state else 0
            floor = state.floor if state else 0
            seen = chain_nonces.get((chain, address))
            chain_nonce = seen if seen is not None else floor
            gap = nonce_gap(chain_nonce, [t.nonce for t in txs if t.nonce is not None])
            accounts.append(NonceAccount(chain, kind, address, chain_nonce if seen is not None else None,
                                         next_nonce, floor, tuple(txs), gap))
        else:
            accounts.append(NonceAccount(chain, kind, address, None, None, None, tuple(txs), None))
    return accounts


# --------------------------------------------------------------------------- event log


def log_line(book: Book, event, where: dict[int, tuple[str, str]] | None = None) -> tuple[str, str] | None:
    """One line for the event log: (text, style), or None to skip it. `where` knows the chain and
    token of positions that already left the book."""
    at = clock_time(getattr(event, "at", None))
    kind = type(event)
    if kind is PositionOpened:
        return f"{at} opened #{event.position_id} {event.chain}/{event.token} at {price(event.entry_price)}", ""
    if kind is PositionClosed:
        chain, token = (where or {}).get(event.position_id, ("", ""))
        spec = book.policy.chains.get(chain)
        qd = spec.quote_decimals if spec else 6
        pnl = from_units(event.pnl, qd)
        what = f" {chain}/{token}" if chain else ""
        return (f"{at} closed #{event.position_id}{what} at {price(event.exit_price)} pnl {signed(pnl)}",
                GREEN if pnl > 0 else RED if pnl < 0 else "")
    if kind is CloseRequested:
        return f"{at} closing #{event.position_id} ({event.reason}) by {event.by}", YELLOW
    if kind is CloseDenied:
        return f"{at} close #{event.position_id} refused: {event.reason}", RED
    if kind is EntryReserved:
        spec = book.policy.chains.get(event.chain)
        held = money(from_units(event.amount, spec.quote_decimals if spec else 6))
        return f"{at} reserved {held} for {event.chain}/{event.token} (order #{event.order_id})", DIM
    if kind is OrderFailed:
        return f"{at} order #{event.order_id} failed: {event.reason}", RED
    if kind is BreakerTripped:
        return (f"{at} rejection breaker: the {event.chain} node refused {event.refused} broadcasts in a row; "
                f"no entries on {event.chain} until one lands (botctl resume re-arms)", "bold " + RED)
    if kind is OrderOutcomeUnknown:
        return f"{at} order #{event.order_id} outcome unknown: {event.reason} (funds stay held)", YELLOW
    if kind is OrderAbandoned:
        return f"{at} order #{event.order_id} abandoned: {event.reason}", YELLOW
    if kind is NoopRequested:
        return f"{at} no-op #{event.order_id} fills nonce {event.nonce} on {event.chain}", YELLOW
    if kind is ApprovalRequested:
        return f"{at} approval #{event.order_id} of {event.asset} at nonce {event.nonce} on {event.chain}", DIM
    if kind is TradingStateChanged:
        style = {TradingState.ACTIVE: GREEN, TradingState.REDUCING: YELLOW, TradingState.HALTED: RED}[event.state]
        return (f"{at} trading {event.previous.value} -> {event.state.value} by {event.by}"
                f"{': ' + event.reason if event.reason else ''}", "bold " + style)
    if kind is NonceFloorRaised and event.foreign:
        return (f"{at} {event.foreign} transaction(s) from our key on {event.chain} that botctl did not send: "
                f"nonces continue at {event.floor}", "bold " + RED)
    if kind is Reconciled:
        what = f"{len(event.differences)} difference(s) to review" if event.differences else "no differences"
        return f"{at} reconciled {event.resolved} order(s): {what}", YELLOW if event.differences else DIM
    if kind is ReconciliationAccepted:
        return f"{at} reconciliation accepted by {event.by}", YELLOW
    if kind is InboxAnswered:
        return f"{at} command #{event.inbox_id} from another terminal: {event.state} {_answer(event.result)}", \
            RED if event.state != "done" else ""
    if kind is CommandRejected:
        return f"{at} {event.command} refused: {event.reason}", RED
    if kind is Deposited:
        return f"{at} deposit {event.asset} on {event.chain} ({event.ref})", DIM
    if kind is StageChanged:
        return f"{at} stage {event.previous} -> {event.stage} by {event.by}: {event.reason}", "bold " + YELLOW
    if kind is AttestationRecorded:
        return f"{at} attested for {event.stage} by {event.by}: {event.item}", ""
    if kind is DrillRecorded:
        return (f"{at} drill {event.kind} {'passed' if event.passed else 'FAILED'}: {event.detail}",
                GREEN if event.passed else RED)
    return None


def _answer(result: str) -> str:
    import json

    try:
        data = json.loads(result)
    except ValueError:
        return ""
    parts = list(data.get("ok", [])) + list(data.get("refused", []))
    return "; ".join(parts)[:120]
