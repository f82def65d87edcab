"""The book: the engine's in-memory state, and the overlay a batch is decided on.

The committed book only changes after COMMIT. The sequencer decides a batch of
commands on `book.overlay()`: every table of the overlay reads through to the
committed book and writes into its own `local` dict. If the transaction fails,
the overlay is dropped and memory still equals disk; if it commits,
`overlay.merge()` folds the changes in. The `local` dicts double as the set of
rows the transaction must write, so persistence never has to diff anything.

Only live things stay in memory (open positions, held reservations, orders in
flight); a closed position is written to the database and then forgotten here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator

from engine.core.messages import TradingState
from engine.core.stages import Stage

# --------------------------------------------------------------------------- entities


MAX_EXIT_ATTEMPTS = 10  # exits tried per close request; then the position is open again, for the operator


@dataclass(frozen=True, slots=True)
class Position:
    id: int
    chain: str
    token: str
    state: str  # open | closing | closed
    size: int  # token base units
    cost: int  # quote base units paid, venue fee included (the cost basis)
    entry_price: Decimal
    opened_at: int
    entry_order: int
    exit_order: int | None = None
    close_reason: str | None = None
    closed_at: int | None = None
    proceeds: int | None = None  # quote received, venue fee deducted
    pnl: int | None = None
    exit_price: Decimal | None = None
    exit_attempts: int = 0


@dataclass(frozen=True, slots=True)
class Reservation:
    id: int
    kind: str  # entry | exit | noop | approve
    chain: str
    token: str
    amount: int  # quote base units (0 for an exit)
    fee_amount: int  # native base units
    state: str  # held | posted | voided
    order_id: int
    position_id: int | None
    created_at: int
    settled_at: int | None = None


LIVE_ORDER_STATES = frozenset({"new", "signed", "submitted", "unknown"})


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    intent: str  # entry | exit | noop (a zero-value self-transfer that fills a nonce) | approve (see ApprovalRequested)
    chain: str
    token: str
    reservation_id: int
    position_id: int | None
    state: str  # new | signed | submitted | unknown | filled | failed | abandoned
    amount_in: int  # quote units for an entry, token units for an exit
    nonce: int | None
    address: str | None
    created_at: int
    updated_at: int
    tx_id: str | None = None
    raw: bytes | None = None
    expiry: int | None = None
    quoted_out: int | None = None
    min_out: int | None = None
    reason: str | None = None
    fees: str | None = None  # the current attempt's fee fields (EVM), JSON: {"max_fee", "tip", "cancel"}
    attempts: str | None = None  # every earlier attempt at this nonce, JSON list (see Attempt)

    def all_attempts(self) -> list["Attempt"]:
        """Every signed attempt at this order's nonce, the current one last: any may be mined."""
        earlier = [Attempt(**a) for a in json.loads(self.attempts)] if self.attempts else []
        if self.tx_id is None:
            return earlier
        fees = json.loads(self.fees) if self.fees else {}
        return earlier + [Attempt(self.tx_id, self.raw.hex() if self.raw else "", fees.get("max_fee"),
                                  fees.get("tip"), bool(fees.get("cancel")), self.updated_at)]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One signed transaction at an order's nonce: kept for as long as the order is in flight."""

    tx_id: str
    raw: str  # hex
    max_fee: int | None
    tip: int | None
    cancel: bool
    at: int


@dataclass(frozen=True, slots=True)
class Fill:
    id: int
    position_id: int
    order_id: int
    side: str  # buy | sell
    chain: str
    token: str
    amount: int  # token base units
    quote_amount: int
    price: Decimal
    fee: int
    network_fee: int
    tx_id: str | None
    at: int


@dataclass(frozen=True, slots=True)
class NonceState:
    """Per (chain, address): the next nonce we hand out, and the chain's pending count last seen.

    A nonce is never handed back. One that will not be used by its order (abandoned
    before signing, or refused before the node accepted it) is filled by a no-op
    transaction at that nonce, so later nonces can never wait on a gap.
    """

    next: int = 0
    floor: int = 0


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class ChainPolicy:
    name: str
    kind: str  # evm | solana
    address: str
    quote_decimals: int = 6
    native_decimals: int = 18
    tokens: dict[str, int] = field(default_factory=dict)  # token -> decimals
    quote_native: bool = False  # the quote asset is the chain's own coin (no approval to spend it)
    approvals: bool = False  # an ERC20 spend needs an approve transaction first (live EVM routers)
    quote_usd: Decimal = Decimal(1)  # USD per whole quote unit: the limits and ceilings are in USD

    @property
    def uses_nonces(self) -> bool:
        return self.kind == "evm"

    def approves(self, asset: str) -> bool:
        """Does spending `asset` ("quote" or a token) need an approve transaction first?"""
        return self.approvals and not (asset == "quote" and self.quote_native)


@dataclass(frozen=True, slots=True)
class Limits:
    """Risk ceilings in whole quote units (Decimal); the decider converts per chain."""

    max_position: Decimal = Decimal(100)
    default_position: Decimal = Decimal(50)
    min_position: Decimal = Decimal(1)
    max_open_positions: int = 10
    max_exposure: Decimal = Decimal(1000)
    cooldown_ms: int = 300_000
    max_consecutive_losses: int = 5
    # Broadcasts refused in a row on one chain before its entries stop (0: never). A node that
    # refuses everything would otherwise cost an order (and a no-op for its nonce) per attempt.
    max_consecutive_rejections: int = 5
    # A tripped rejection breaker lets one entry through this long after the last refusal (a
    # probe: a chain with no no-ops, like Solana, could otherwise never show that it is back).
    rejection_probe_ms: int = 300_000


@dataclass(frozen=True, slots=True)
class Policy:
    chains: dict[str, ChainPolicy] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    live: bool = False  # executors that move real funds (never in paper mode)
    stages: dict[str, Stage] = field(default_factory=dict)  # each stage's ceiling and criteria (engine/stages.py)


# --------------------------------------------------------------------------- tables


def _always(_value: Any) -> bool:
    return True


def _never(_value: Any) -> bool:
    return False


class Table:
    """A dict that reads through to a committed base and writes to `local`."""

    __slots__ = ("base", "local", "live")

    def __init__(self, base: dict | None = None, live: Callable[[Any], bool] = _always):
        self.base = {} if base is None else base
        self.local: dict = {}
        self.live = live

    def get(self, key, default=None):
        local = self.local
        if key in local:
            value = local[key]
            return default if value is None else value
        return self.base.get(key, default)

    def put(self, key, value) -> None:
        self.local[key] = value

    def drop(self, key) -> None:
        self.local[key] = None

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def items(self) -> Iterator[tuple[Any, Any]]:
        local = self.local
        for key, value in self.base.items():
            if key not in local:
                yield key, value
        for key, value in local.items():
            if value is not None:
                yield key, value

    def values(self) -> Iterator[Any]:
        for _key, value in self.items():
            yield value

    def child(self) -> "Table":
        if self.local:
            raise RuntimeError("an overlay of an overlay is not supported")
        return Table(self.base, self.live)

    def merge(self) -> None:
        base, live = self.base, self.live
        for key, value in self.local.items():
            if value is None or not live(value):
                base.pop(key, None)
            else:
                base[key] = value
        self.local = {}

    def snapshot(self) -> dict:
        return {k: v for k, v in self.items() if self.live(v)}


TABLES = (
    "meta",
    "balances",
    "positions",
    "reservations",
    "orders",
    "fills",
    "nonces",
    "cooldowns",
    "marks",
    "signals",
    "deposits",
    "slots",
    "inbox",
)

def market_key(chain: str) -> str:
    """Meta key: a live chain's market as last read from the chain (JSON; see RecordMarket)."""
    return f"market:{chain}"


def rejections_key(chain: str) -> str:
    """Meta key: broadcasts the node refused in a row on `chain` (the rejection breaker's count)."""
    return f"rejected:{chain}"


def rejected_at_key(chain: str) -> str:
    """Meta key: when the node of `chain` last refused a broadcast (ms)."""
    return f"rejected_at:{chain}"


def nonce_gap(chain_nonce: int | None, in_flight: list[int]) -> tuple[int, int] | None:
    """The nonces below our lowest in flight that the chain has not seen a transaction for: while
    they are missing, none of ours above them can be mined."""
    if chain_nonce is None or not in_flight or min(in_flight) <= chain_nonce:
        return None
    return chain_nonce, min(in_flight) - 1


META_DEFAULTS: dict[str, Any] = {
    "seq": 0,
    "next_position": 1,
    "next_reservation": 1,
    "next_order": 1,
    "next_fill": 1,
    "trading_state": TradingState.ACTIVE,
    "closing_all": 0,  # 1 while a `halt --close-all` holds: positions that open later are closed too
    "consecutive_losses": 0,
    "open_slots": 0,
    "review": (),  # reconciliation differences waiting for the operator
    "stage": "paper",  # the rollout stage (engine/stages.py): its ceilings are risk rules
}


class Book:
    """State and policy. Decide on `overlay()`; merge after the commit."""

    __slots__ = TABLES + ("policy",)

    def __init__(self, policy: Policy | None = None, tables: dict[str, Table] | None = None):
        self.policy = policy or Policy()
        if tables is None:
            tables = {
                "meta": Table(dict(META_DEFAULTS)),
                "balances": Table(),
                "positions": Table(live=lambda p: p.state != "closed"),
                "reservations": Table(live=lambda r: r.state == "held"),
                "orders": Table(live=lambda o: o.state in LIVE_ORDER_STATES),
                "fills": Table(live=_never),
                "nonces": Table(),
                "cooldowns": Table(),
                "marks": Table(),
                "signals": Table(),
                "deposits": Table(),
                "slots": Table(),  # (chain, token) -> "p<id>" | "r<id>": the one-per-token index
                "inbox": Table(live=_never),  # answers to inbox rows: written, then forgotten
            }
        for name in TABLES:
            object.__setattr__(self, name, tables[name])

    def overlay(self) -> "Book":
        return Book(self.policy, {name: getattr(self, name).child() for name in TABLES})

    def merge(self) -> None:
        for name in TABLES:
            getattr(self, name).merge()

    # ---- reading helpers (pure)

    def balance(self, chain: str, asset: str, account: str) -> int:
        return self.balances.get((chain, asset, account), 0)

    @property
    def trading_state(self) -> TradingState:
        return self.meta.get("trading_state")

    def open_positions(self) -> list[Position]:
        return sorted(self.positions.values(), key=lambda p: p.id)

    def live_orders(self) -> list[Order]:
        return sorted(self.orders.values(), key=lambda o: o.id)

    def held_reservations(self) -> list[Reservation]:
        return sorted(self.reservations.values(), key=lambda r: r.id)

    def snapshot(self) -> dict[str, dict]:
        """Everything live, as plain dicts: two books are equal iff snapshots are."""
        return {name: getattr(self, name).snapshot() for name in TABLES if name not in ("fills", "inbox")}
