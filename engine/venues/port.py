"""The venue port: everything the kernel knows of a chain, which paper, EVM and Solana each implement.

A `World` is the set of chains one engine trades and the clock they share:
paper steps a simulated world one block at a time (a seed replays it exactly);
a live world's clock is the wall clock and its step waits for the next thing
to do. Each chain is a `ChainPort`: its height, our balances on it (what
reconciliation compares the book with), marks for open positions (live: a
quote of selling them), the chain's own count of our transactions (the EVM
nonce floor), and its executor.

The executor protocol is the order driver's only way to a chain, each call a
step of DESIGN section 2, taken outside the sequencer:

  fee_reserve()        native units one transaction may cost (gasLimit x maxFeePerGas,
                       or signature + capped priority fee): reserved beside the quote amount
  quote(order)         expected output now; raises ExecutorError when it cannot quote (definite)
  sign(order, quote)   signed bytes with an id fixed before broadcast (EVM: the order's
                       nonce, allocated by the sequencer; Solana: lastValidBlockHeight)
  sign_noop(order)     a zero-value transfer to ourselves at the order's nonce: fills a
                       nonce that its own order will never use (EVM only)
  sign_approve(order)  an ERC20 approve of the router for the order's amount, at its nonce
                       (EVM routers only: a chain whose policy says `approvals`)
  broadcast(order)     send the order's stored bytes: Accepted | Rejected | Unknown
  lookup(order)        what the chain says about the order's transaction, for the
                       driver and for reconciliation after a crash

Rules every implementation keeps: never re-sign an intent whose earlier bytes
might still land; a rebroadcast sends the same bytes; an answer the executor
cannot prove is `Unknown`/`Pending`, never a guess.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Protocol

from engine.core.book import Order


class VenueError(Exception):
    """The venue cannot be used as configured (a foreign or missing world, an endpoint on the wrong
    chain): the engine does not start, and says why in one line."""


class VenueUnreachable(VenueError):
    """The venue's node did not answer (refused, timed out, rate-limited): the engine does not start,
    and the same command may get past it later, unlike a setting that is wrong."""


class ExecutorError(Exception):
    """A definite failure before anything was signed or sent (safe to abandon the order)."""


@dataclass(frozen=True, slots=True)
class Quote:
    amount_in: int
    quoted_out: int  # what we expect to receive (tokens for a buy, net quote for a sell)
    price: Decimal


@dataclass(frozen=True, slots=True)
class Signed:
    tx_id: str
    raw: bytes
    expiry: int | None  # block height after which it can never land (None: nonce-bound)
    min_out: int
    fees: str | None = None  # EVM: {"max_fee", "tip"} as JSON, kept with the attempt


@dataclass(frozen=True, slots=True)
class Accepted:
    tx_id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused before acceptance: it can never land. The reservation may be released."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """Timeout or transport error after sending: it may land. Funds stay held. `unexplained`: an
    answer nobody could classify: once the order settles, the balances are reconciled (DESIGN 8)."""

    reason: str
    unexplained: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the chain says. `status`: filled | failed | pending | missing | expired."""

    status: str
    amount_in: int = 0
    amount_out: int = 0
    fee: int = 0
    network_fee: int = 0
    reason: str = ""

    @property
    def settled(self) -> bool:
        return self.status in ("filled", "failed", "expired")


class Executor(Protocol):
    chain: str

    async def fee_reserve(self) -> int: ...

    async def quote(self, order: Order) -> Quote: ...

    async def sign(self, order: Order, quote: Quote, slippage_bps: int) -> Signed: ...

    async def sign_noop(self, order: Order) -> Signed: ...

    async def sign_approve(self, order: Order) -> Signed: ...

    async def broadcast(self, order: Order) -> Accepted | Rejected | Unknown: ...

    async def lookup(self, order: Order) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class Opening:
    """Funds found on a chain the book has not recorded yet, deposited once under `ref`."""

    chain: str
    asset: str  # quote | native | a token
    amount: int
    ref: str


class Market(Protocol):
    """What signals may name on a chain: its tokens (by symbol, mint or address) and its quote's decimals."""

    name: str
    quote_decimals: int

    def resolve(self, token: str) -> str | None: ...


class ChainPort(Protocol):
    chain: str
    executor: Executor

    async def height(self) -> int: ...

    async def balances(self) -> dict[str, int]:
        """Our holdings on the chain by asset (quote, native, each token), in base units."""

    async def marks(self, tokens: Iterable[str]) -> dict[str, Decimal]:
        """A price for each token we hold (paper: every listed token's), for exits and the console."""

    async def pending_nonce(self, address: str) -> int | None:
        """The chain's count of our transactions, mined or pooled (None: a chain without nonces)."""


class World(Protocol):
    ports: dict[str, ChainPort]
    concurrency: int  # orders the driver advances at once (paper: 1, so that a seed replays exactly)

    def now_ms(self) -> int:
        """The engine's clock: every event is dated by it, every rule takes its time from it."""

    @property
    def height(self) -> int | None:
        """The world's block height for display (paper: its block; live: None, each chain has its own)."""

    def describe(self) -> str:
        """One phrase for the start-up line: which world this is (`paper venue, seed 4`)."""

    async def step(self, wake: asyncio.Event | None = None) -> int:
        """Move to the next moment the engine acts at, and return its height (paper: mine a block).

        Live, that moment comes at the next poll interval or as soon as `wake` is set (a signal
        line or an operator's command arrived), whichever is first; paper ignores it (a seed
        replays the same blocks however fast its lines arrive)."""

    async def openings(self) -> list[Opening]:
        """Funds to deposit into the book once, the first time it meets this world."""

    async def close(self) -> None: ...
