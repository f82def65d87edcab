"""Commands (imperative: what someone asks) and events (past tense: what was decided).

Both are small frozen dataclasses. A command carries its time (`at`, epoch
milliseconds) so that deciding it needs no clock. A refused command becomes an
event with a reason (`EntryDenied`, `CloseDenied`, `CommandRejected`), never an
exception: refusals are journaled like everything else.

Every event that moves money carries its postings: (chain, asset, debit
account, credit account, amount). Assets are "quote" (what positions are paid
in) and "native" (the coin that pays network fees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import NamedTuple


class TradingState(str, Enum):
    ACTIVE = "active"
    REDUCING = "reducing"  # `pause`: exits only
    HALTED = "halted"  # `halt`: nothing automatic

    @property
    def word(self) -> str:
        """How an operator says it: pause -> "paused"."""
        return "paused" if self is TradingState.REDUCING else self.value


class Posting(NamedTuple):
    chain: str
    asset: str
    dr: str
    cr: str
    amount: int


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Deposit:
    chain: str
    asset: str
    amount: int
    ref: str  # taken once: a repeated deposit with the same ref is refused
    at: int


@dataclass(frozen=True, slots=True)
class ReserveEntry:
    chain: str
    token: str
    amount: int | None  # quote base units; None lets the risk rules size it
    fee_reserve: int  # native base units: the most the transaction may cost
    at: int
    signal_id: str | None = None
    source: str = "engine"
    refused: str | None = None  # the chain cannot take a transaction now (why): denied, no nonce taken


@dataclass(frozen=True, slots=True)
class RecordSubmission:
    """Write-ahead: the signed bytes are committed before they are broadcast."""

    order_id: int
    tx_id: str
    raw: bytes
    expiry: int | None  # block height after which it can never land (None: nonce-bound)
    quoted_out: int
    min_out: int
    at: int
    fees: str | None = None  # EVM: the attempt's fee fields, JSON (see engine/core/book.py Attempt)


@dataclass(frozen=True, slots=True)
class ReplaceSubmission:
    """Write-ahead of a new attempt at a sent order's nonce: a replacement with both fees raised,
    or (`cancel`) a zero-value transfer to ourselves. Committed before it is broadcast; the earlier
    attempts are kept, since any of them may still be the one that is mined."""

    order_id: int
    tx_id: str
    raw: bytes
    fees: str
    at: int
    cancel: bool = False


@dataclass(frozen=True, slots=True)
class MarkBroadcast:
    order_id: int
    at: int


@dataclass(frozen=True, slots=True)
class RecordFill:
    order_id: int
    amount_in: int
    amount_out: int
    fee: int  # quote units paid to the venue
    network_fee: int  # native units
    at: int


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """Definite failure on evidence: reverted, rejected before broadcast, expired."""

    order_id: int
    reason: str
    network_fee: int
    at: int
    # The node refused the bytes before accepting them: the nonce is still unused on
    # chain and must be filled (by a no-op) so that later nonces can land.
    nonce_unused: bool = False
    refill_fee_reserve: int = 0


@dataclass(frozen=True, slots=True)
class RecordUnknown:
    order_id: int
    reason: str
    at: int


@dataclass(frozen=True, slots=True)
class AbandonOrder:
    """An order that never got signed bytes: its nonce and funds can come back."""

    order_id: int
    reason: str
    at: int
    refill_fee_reserve: int = 0  # native units for the no-op that fills its nonce (EVM)


@dataclass(frozen=True, slots=True)
class RequestClose:
    position_id: int
    reason: str
    fee_reserve: int
    at: int
    by: str = "engine"
    refused: str | None = None  # the chain cannot be reached to price the exit (why): denied, nothing reserved


@dataclass(frozen=True, slots=True)
class MarkPrices:
    chain: str
    prices: tuple[tuple[str, Decimal], ...]
    at: int


@dataclass(frozen=True, slots=True)
class SetTradingState:
    state: TradingState
    reason: str
    at: int
    by: str = "operator"
    force: bool = False  # leaving HALTED needs it
    close_all: bool = False  # a halt that closes every position, also those its entries in flight open later


@dataclass(frozen=True, slots=True)
class RaiseNonceFloor:
    """The chain's pending count is a floor: raise the local counter, never lower it."""

    chain: str
    address: str
    floor: int
    at: int
    foreign: int = 0  # how many of them are transactions from our key that botctl did not send


@dataclass(frozen=True, slots=True)
class RecordMarket:
    """A live chain's market as read from the chain at start (token symbols and decimals): kept in
    the book, so that commands that start no engine read amounts as the engine traded them."""

    chain: str
    policy: str  # JSON (engine/venues/choose.py policy_json)
    at: int


Difference = tuple[str, str, int, int]  # (chain, asset, venue says, book says)


@dataclass(frozen=True, slots=True)
class RecordReconciliation:
    """The result of comparing the venue's balances with the book after settling orders."""

    differences: tuple[Difference, ...]
    resolved: int
    at: int
    by: str = "engine"


@dataclass(frozen=True, slots=True)
class AcceptReconciliation:
    """The operator accepts the recorded differences: the book adopts the venue's amounts."""

    at: int
    by: str = "operator"


@dataclass(frozen=True, slots=True)
class FromInbox:
    """An operator command from the inbox. With `last`, the row's answer is written in the
    same transaction as the command's own events."""

    inbox_id: int
    command: object
    prior: str  # the row's result so far (JSON), for rows that need several commands
    last: bool
    at: int


@dataclass(frozen=True, slots=True)
class AnswerInbox:
    inbox_id: int
    state: str  # done | refused | failed
    result: str  # JSON
    at: int
    by: str = ""  # who sent the command


@dataclass(frozen=True, slots=True)
class ChangeStage:
    """Promote (to the next stage) or demote (to any earlier one). `previous` is the stage the
    sender saw (a stage changed meanwhile refuses); `missing` is the promotion evidence the
    owner measured as missing just before (a promotion with anything missing is refused).
    The direction is explicit: a demotion never moves forward, whatever its target says."""

    stage: str
    previous: str
    missing: tuple[str, ...]
    evidence: str  # JSON: what was measured, kept with the event
    reason: str
    at: int
    by: str = "operator"
    promote: bool = True


@dataclass(frozen=True, slots=True)
class RecordAttestation:
    stage: str
    item: str  # the attestation's key (the word before its colon)
    at: int
    by: str = "operator"


@dataclass(frozen=True, slots=True)
class RecordDrill:
    kind: str  # failure | crash | halt
    passed: bool
    detail: str
    network: str  # paper | testnet | mainnet: where it ran
    at: int
    by: str = "drill"


@dataclass(frozen=True, slots=True)
class StartRun:
    """An engine started owning the book: evidence of where it trades, and of hours run."""

    run: str
    mode: str
    network: str
    command: str
    at: int
    purpose: str = "trade"  # trade | drill: a drill's hours and trades are not promotion evidence


@dataclass(frozen=True, slots=True)
class Beat:
    run: str
    at: int


Command = (
    Deposit
    | ReserveEntry
    | RecordSubmission
    | MarkBroadcast
    | RecordFill
    | RecordFailure
    | RecordUnknown
    | AbandonOrder
    | RequestClose
    | MarkPrices
    | SetTradingState
    | RaiseNonceFloor
    | RecordMarket
    | ReplaceSubmission
    | RecordReconciliation
    | AcceptReconciliation
    | FromInbox
    | AnswerInbox
    | ChangeStage
    | RecordAttestation
    | RecordDrill
    | StartRun
    | Beat
)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Deposited:
    chain: str
    asset: str
    amount: int
    ref: str
    at: int
    postings: tuple[Posting, ...] = ()


@dataclass(frozen=True, slots=True)
class EntryReserved:
    reservation_id: int
    order_id: int
    chain: str
    token: str
    amount: int
    fee_reserve: int
    nonce: int | None
    address: str | None
    signal_id: str | None
    at: int
    postings: tuple[Posting, ...] = ()


@dataclass(frozen=True, slots=True)
class EntryDenied:
    chain: str
    token: str
    reason: str
    signal_id: str | None
    at: int


@dataclass(frozen=True, slots=True)
class CloseRequested:
    position_id: int
    order_id: int
    reservation_id: int
    fee_reserve: int
    nonce: int | None
    address: str | None
    reason: str
    by: str
    at: int
    postings: tuple[Posting, ...] = ()


@dataclass(frozen=True, slots=True)
class CloseDenied:
    position_id: int
    reason: str
    at: int


@dataclass(frozen=True, slots=True)
class OrderSigned:
    order_id: int
    tx_id: str
    raw: bytes
    expiry: int | None
    quoted_out: int
    min_out: int
    at: int
    fees: str | None = None


@dataclass(frozen=True, slots=True)
class OrderReplaced:
    order_id: int
    tx_id: str
    raw: bytes
    fees: str
    replaced: str  # the attempt before it, as kept (JSON)
    at: int
    cancel: bool = False


@dataclass(frozen=True, slots=True)
class OrderSubmitted:
    order_id: int
    at: int


@dataclass(frozen=True, slots=True)
class OrderFilled:
    order_id: int
    fill_id: int
    position_id: int
    amount_in: int
    amount_out: int
    fee: int
    network_fee: int
    price: Decimal
    at: int
    postings: tuple[Posting, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderFailed:
    order_id: int
    reason: str
    network_fee: int
    at: int
    postings: tuple[Posting, ...] = ()
    rejected: bool = False  # refused by the node before acceptance: the chain's rejection breaker counts it


@dataclass(frozen=True, slots=True)
class OrderOutcomeUnknown:
    order_id: int
    reason: str
    at: int


@dataclass(frozen=True, slots=True)
class OrderAbandoned:
    order_id: int
    reason: str
    at: int
    postings: tuple[Posting, ...] = ()


@dataclass(frozen=True, slots=True)
class NoopRequested:
    """A zero-value self-transfer at `nonce`, in place of order `replaces`."""

    order_id: int
    reservation_id: int
    chain: str
    address: str
    nonce: int
    fee_reserve: int
    replaces: int
    at: int
    postings: tuple[Posting, ...] = ()


@dataclass(frozen=True, slots=True)
class MarketRecorded:
    chain: str
    policy: str
    at: int


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """An ERC20 approve of the router for exactly what the swap at the next nonce spends.

    Decided together with that swap, at the nonce right before its own, so an approval and
    the swap it is for are never interleaved with another pair: approve SETS an allowance,
    and the swap after it spends exactly that."""

    order_id: int
    reservation_id: int
    chain: str
    address: str
    nonce: int
    asset: str  # "quote", or the token the swap sells
    amount: int
    fee_reserve: int
    for_order: int
    at: int
    postings: tuple[Posting, ...] = ()


@dataclass(frozen=True, slots=True)
class PositionOpened:
    position_id: int
    order_id: int
    chain: str
    token: str
    size: int
    cost: int
    entry_price: Decimal
    at: int


@dataclass(frozen=True, slots=True)
class PositionClosed:
    position_id: int
    order_id: int
    proceeds: int  # gross quote received, before the venue fee
    pnl: int  # proceeds - cost
    exit_price: Decimal
    cooldown_until: int
    at: int
    postings: tuple[Posting, ...] = ()


@dataclass(frozen=True, slots=True)
class PricesMarked:
    chain: str
    prices: tuple[tuple[str, Decimal], ...]
    at: int


@dataclass(frozen=True, slots=True)
class TradingStateChanged:
    state: TradingState
    previous: TradingState
    reason: str
    by: str
    at: int
    close_all: bool = False  # halted to close everything: a position opened later is closed too


@dataclass(frozen=True, slots=True)
class NonceFloorRaised:
    chain: str
    address: str
    floor: int
    at: int
    foreign: int = 0  # nonces used by transactions from our key that botctl did not send


@dataclass(frozen=True, slots=True)
class BreakerTripped:
    """The node of `chain` refused `refused` broadcasts in a row: entries there stop until a
    transaction lands on it or the operator resumes."""

    chain: str
    refused: int
    at: int


@dataclass(frozen=True, slots=True)
class Reconciled:
    differences: tuple[Difference, ...]
    resolved: int
    by: str
    at: int


@dataclass(frozen=True, slots=True)
class ReconciliationAccepted:
    """Quote and native differences become deposits (or withdrawals); token differences
    become offsets the next comparison allows for."""

    differences: tuple[Difference, ...]
    by: str
    at: int
    postings: tuple[Posting, ...] = ()


@dataclass(frozen=True, slots=True)
class InboxAnswered:
    inbox_id: int
    state: str
    result: str  # JSON
    at: int
    by: str = ""  # who sent the command (the log names them beside the answer)


@dataclass(frozen=True, slots=True)
class StageChanged:
    stage: str
    previous: str
    reason: str
    evidence: str  # JSON
    by: str
    at: int


@dataclass(frozen=True, slots=True)
class AttestationRecorded:
    stage: str
    item: str
    text: str
    by: str
    at: int


@dataclass(frozen=True, slots=True)
class DrillRecorded:
    kind: str
    passed: bool
    detail: str
    network: str
    stage: str
    by: str
    at: int


@dataclass(frozen=True, slots=True)
class RunStarted:
    run: str
    mode: str
    network: str
    stage: str
    command: str
    at: int
    purpose: str = "trade"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    run: str
    at: int


@dataclass(frozen=True, slots=True)
class CommandRejected:
    command: str
    reason: str
    at: int
    ref: str = ""


Event = (
    Deposited
    | EntryReserved
    | EntryDenied
    | CloseRequested
    | CloseDenied
    | OrderSigned
    | OrderSubmitted
    | OrderFilled
    | OrderFailed
    | BreakerTripped
    | OrderOutcomeUnknown
    | OrderAbandoned
    | NoopRequested
    | ApprovalRequested
    | MarketRecorded
    | OrderReplaced
    | PositionOpened
    | PositionClosed
    | PricesMarked
    | TradingStateChanged
    | NonceFloorRaised
    | Reconciled
    | ReconciliationAccepted
    | InboxAnswered
    | StageChanged
    | AttestationRecorded
    | DrillRecorded
    | RunStarted
    | Heartbeat
    | CommandRejected
)

DENIALS = (EntryDenied, CloseDenied, CommandRejected)


def denial(events) -> str | None:
    """The reason a decided command was refused, or None if it was accepted."""
    events = [e for e in events if not isinstance(e, InboxAnswered)]
    if len(events) == 1 and isinstance(events[0], DENIALS):
        return events[0].reason
    return None


@dataclass(frozen=True, slots=True)
class Result:
    """What the caller of `Sequencer.submit` gets back, after COMMIT."""

    events: tuple = field(default_factory=tuple)

    @property
    def accepted(self) -> bool:
        return denial(self.events) is None

    @property
    def reason(self) -> str | None:
        return denial(self.events)

    def first(self, kind):
        for event in self.events:
            if isinstance(event, kind):
                return event
        return None
