"""The executor protocol: what paper, EVM and Solana executors all provide.

The engine never talks to a chain except through these five calls, each a
step of DESIGN section 2 that the order driver takes outside the sequencer:

  fee_reserve()        native units one transaction may cost (gasLimit x maxFeePerGas,
                       or signature + capped priority fee): reserved beside the quote amount
  quote(order)         expected output now; `None` price means "cannot quote" (definite)
  sign(order, quote)   signed bytes with an id fixed before broadcast (EVM: the order's
                       nonce, allocated by the sequencer; Solana: lastValidBlockHeight)
  sign_noop(order)     a zero-value transfer to ourselves at the order's nonce: fills a
                       nonce that its own order will never use (EVM only)
  broadcast(order)     send the order's stored bytes: Accepted | Rejected | Unknown
  lookup(order)        what the chain says about the order's transaction, for the
                       driver and for reconciliation after a crash

Rules every implementation keeps: never re-sign an intent whose earlier bytes
might still land; a rebroadcast sends the same bytes; an answer the executor
cannot prove is `Unknown`/`Pending`, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from engine.core.book import Order


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


@dataclass(frozen=True, slots=True)
class Accepted:
    tx_id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused before acceptance: it can never land. The reservation may be released."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """Timeout or transport error after sending: it may land. Funds stay held."""

    reason: str


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

    async def broadcast(self, order: Order) -> Accepted | Rejected | Unknown: ...

    async def lookup(self, order: Order) -> Outcome: ...
