"""decide / evolve, given events (or the commands that produced them), when a command, then events.

Everything here is pure: no database, no loop. Ids are deterministic (the first order
is order 1, the first position is position 1), so the tables can name them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from engine.core.decider import decide
from engine.core.messages import (
    CloseDenied,
    CloseRequested,
    CommandRejected,
    EntryDenied,
    EntryReserved,
    NonceFloorRaised,
    OrderAbandoned,
    OrderFailed,
    OrderFilled,
    OrderOutcomeUnknown,
    OrderSigned,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    Posting,
    PricesMarked,
    TradingState,
    TradingStateChanged,
    denial,
)

from builders import (
    BASE_ADDRESS,
    FEE,
    NATIVE,
    NOW,
    abandon,
    broadcast,
    close,
    deposit,
    deposit_native,
    failure,
    fill,
    funded,
    given,
    halt,
    marks,
    native,
    pause,
    policy,
    quote,
    raise_floor,
    reserve,
    resume,
    round_trip_entry,
    sign,
    then_apply,
    unknown,
    usd,
    when,
)

TOKEN = 10**18  # one whole token of 18 decimals
COOLDOWN = 300_000  # Limits.cooldown_ms default


def exit_fill(order_id, amount_out, fee=0, network_fee=0, size=TOKEN, at=NOW):
    return fill(order_id, size, amount_out, fee=fee, network_fee=network_fee, at=at)


def closed_trip(entry_order, exit_order, position_id, token="T1", cost=usd(50), proceeds=usd(40), at=NOW):
    """Commands: open a position on `token`, then close it for `proceeds` (a loss if < cost)."""
    return round_trip_entry(entry_order, "base", token, cost, at=at) + [
        close(position_id, at=at), sign(exit_order, at=at), exit_fill(exit_order, proceeds, at=at)]


# =========================================================================== ReserveEntry: the risk rules


@dataclass
class Case:
    name: str
    when: Any
    reason: str | None = None  # substring of the denial; None: accepted
    given: list = field(default_factory=list)
    pol: Any = None
    amount: int | None = None  # expected reserved amount when accepted
    strict: bool = True  # every command of `given` must have been accepted


FUNDED = funded("base") + funded("solana")

RESERVE_CASES = [
    # ---- accepted, at the edges
    Case("accepted", reserve("base", "T1", usd(50)), None, FUNDED, amount=usd(50)),
    Case("exactly max position", reserve("base", "T1", usd(100)), None, FUNDED, amount=usd(100)),
    Case("exactly all the cash", reserve("base", "T1", usd(30)), None,
         [deposit("base", usd(30)), deposit_native("base")], amount=usd(30)),
    Case("exactly the exposure room", reserve("base", "T2", usd(50)), None,
         FUNDED + round_trip_entry(1, token="T1", amount=usd(100)), pol=policy(max_exposure=150), amount=usd(50)),
    Case("unsized entry takes the default size", reserve("base", "T1", None), None, FUNDED, amount=usd(50)),
    Case("unsized entry is capped by cash", reserve("base", "T1", None), None,
         [deposit("base", usd(30)), deposit_native("base")], amount=usd(30)),
    Case("unsized entry is capped by exposure room", reserve("base", "T2", None), None,
         FUNDED + round_trip_entry(1, token="T1", amount=usd(100)), pol=policy(max_exposure=120), amount=usd(20)),
    Case("solana entry", reserve("solana", "SOLTKN", usd(10)), None, FUNDED, amount=usd(10)),
    Case("after the cooldown", reserve("base", "T1", usd(50), at=NOW + COOLDOWN), None,
         FUNDED + closed_trip(1, 2, 1), amount=usd(50)),
    Case("a resume re-arms the loss breaker", reserve("base", "T9", usd(10), at=NOW + 1), None,
         FUNDED + closed_trip(1, 2, 1, "T1") + closed_trip(3, 4, 2, "T2") + [pause(), resume()],
         pol=policy(max_consecutive_losses=2), amount=usd(10)),
    Case("a resume alone re-arms a tripped loss breaker", reserve("base", "T9", usd(10), at=NOW + 1), None,
         FUNDED + closed_trip(1, 2, 1, "T1") + closed_trip(3, 4, 2, "T2") + [resume()],
         pol=policy(max_consecutive_losses=2), amount=usd(10)),
    Case("a failed entry frees its token", reserve("base", "T1", usd(50)), None,
         FUNDED + [reserve("base", "T1", usd(50)), sign(1), failure(1)], amount=usd(50)),
    Case("an allowed token", reserve("base", "T1", usd(50)), None, FUNDED,
         pol=policy(tokens={"base": {"T1": 18}}), amount=usd(50)),
    # ---- denied, one rule each
    Case("halted", reserve(), "trading is halted", FUNDED + [halt()]),
    Case("reducing (paused)", reserve(), "trading is reducing", FUNDED + [pause()]),
    Case("unknown chain", reserve("ethereum", "T1"), "unknown chain 'ethereum'", FUNDED),
    Case("token not on the allow-list", reserve("base", "T2"), "token T2 is not on the base allow-list",
         FUNDED, pol=policy(tokens={"base": {"T1": 18}})),
    Case("token has an open position", reserve("base", "T1", usd(10)), "base/T1 already has an open position",
         FUNDED + round_trip_entry(1)),
    Case("token has a held reservation", reserve("base", "T1", usd(10)), "base/T1 already has a held reservation",
         FUNDED + [reserve("base", "T1", usd(10))]),
    Case("token has a reservation whose outcome is unknown", reserve("base", "T1", usd(10)),
         "already has a held reservation", FUNDED + [reserve("base", "T1", usd(10)), sign(1), unknown(1)]),
    Case("token has a closing position", reserve("base", "T1", usd(10)), "already has an open position",
         FUNDED + round_trip_entry(1) + [close(1)]),
    Case("cooldown", reserve("base", "T1", usd(50), at=NOW + COOLDOWN - 1), "base/T1 is cooling down for 1s",
         FUNDED + closed_trip(1, 2, 1)),
    Case("loss breaker", reserve("base", "T9", usd(10)), "loss breaker: 2 consecutive losses",
         FUNDED + closed_trip(1, 2, 1, "T1") + closed_trip(3, 4, 2, "T2"), pol=policy(max_consecutive_losses=2)),
    Case("max open positions (reservations count)", reserve("base", "T3", usd(10)), "max open positions (2)",
         FUNDED + [reserve("base", "T1", usd(10)), reserve("solana", "T2", usd(10))],
         pol=policy(max_open_positions=2)),
    Case("max open positions (positions count)", reserve("base", "T3", usd(10)), "max open positions (2)",
         FUNDED + round_trip_entry(1, token="T1", amount=usd(10)) + round_trip_entry(2, token="T2", amount=usd(10)),
         pol=policy(max_open_positions=2)),
    Case("max position", reserve("base", "T1", usd(100) + 1), "exceeds max position 100", FUNDED),
    Case("exposure room", reserve("base", "T2", usd(50) + 1), "exceeds exposure room 50",
         FUNDED + round_trip_entry(1, token="T1", amount=usd(100)), pol=policy(max_exposure=150)),
    Case("exposure counts held reservations on every chain", reserve("base", "T2", usd(60)),
         "exceeds exposure room 50", FUNDED + [reserve("solana", "S1", usd(100))], pol=policy(max_exposure=150)),
    Case("insufficient cash", reserve("base", "T1", usd(30) + 1), "insufficient cash on base",
         [deposit("base", usd(30)), deposit_native("base")]),
    Case("cash is per chain", reserve("solana", "T1", usd(10)), "insufficient cash on solana",
         funded("base") + [deposit_native("solana")]),
    Case("unsized entry with no room", reserve("base", "T1", None), "no room for an entry on base",
         [deposit("base", usd(1) - 1), deposit_native("base")]),
    Case("zero size", reserve("base", "T1", 0), "entry size must be positive", FUNDED),
    Case("negative fee reserve", reserve("base", "T1", usd(10), fee=-1), "fee reserve must not be negative", FUNDED),
    Case("insufficient native", reserve("base", "T1", usd(10), fee=FEE + 1), "insufficient native balance on base",
         [deposit("base", usd(100)), deposit_native("base", FEE)]),
    Case("duplicate signal id", reserve("base", "T2", usd(10), signal="sig-1"), "signal sig-1 was already taken",
         FUNDED + [reserve("base", "T1", usd(10), signal="sig-1")]),
    Case("a refused signal is not retried either", reserve("base", "T1", usd(10), signal="sig-1"),
         "signal sig-1 was already taken", FUNDED + [halt(), reserve("base", "T1", usd(10), signal="sig-1"),
                                                     resume(force=True)], strict=False),
]


@pytest.mark.parametrize("case", RESERVE_CASES, ids=lambda c: c.name)
def test_reserve_entry_rules(case: Case):
    book = given(*case.given, pol=case.pol, strict=case.strict)
    cash_before = quote(book, case.when.chain)
    events = when(book, case.when)

    if case.reason is not None:
        assert len(events) == 1 and isinstance(events[0], EntryDenied), events
        assert case.reason in events[0].reason
        assert events[0].signal_id == case.when.signal_id
        then_apply(book, events)
        assert quote(book, case.when.chain) == cash_before  # a denial moves no money
        return

    assert denial(events) is None, f"denied: {denial(events)}"
    (reserved,) = events
    assert isinstance(reserved, EntryReserved)
    assert reserved.amount == case.amount
    then_apply(book, events)
    assert quote(book, case.when.chain) == cash_before - case.amount
    assert quote(book, case.when.chain, "reserved") == case.amount
    assert book.slots.get((case.when.chain, case.when.token)) == f"r{reserved.reservation_id}"


def test_accepted_entry_is_exactly_this_event():
    book = given(*FUNDED)
    events = when(book, reserve("base", "T1", usd(50), fee=FEE, signal="sig-7"))
    assert events == [EntryReserved(
        reservation_id=1, order_id=1, chain="base", token="T1", amount=usd(50), fee_reserve=FEE, nonce=0,
        address=BASE_ADDRESS, signal_id="sig-7", at=NOW,
        postings=(Posting("base", "quote", "reserved", "cash", usd(50)),
                  Posting("base", "native", "reserved", "cash", FEE)))]
    then_apply(book, events)
    assert (quote(book, "base"), quote(book, "base", "reserved")) == (usd(950), usd(50))
    assert (native(book, "base"), native(book, "base", "reserved")) == (NATIVE - FEE, FEE)
    assert book.meta.get("open_slots") == 1
    order = book.orders.get(1)
    assert (order.state, order.intent, order.amount_in, order.nonce) == ("new", "entry", usd(50), 0)


def test_solana_entry_has_no_nonce():
    book = given(*FUNDED)
    (event,) = when(book, reserve("solana", "S1", usd(5)))
    assert (event.nonce, event.address) == (None, None)


# =========================================================================== nonces
#
# What an operator needs from nonces, whatever the mechanism: sequential allocation; no
# nonce that had signed bytes is ever handed out again; no nonce below the chain's pending
# count (the floor) is handed to a new trade; and no gap: every nonce from the floor up to
# the next one to hand out is either held by an order in flight or was signed (so it lands
# or is replaced on chain). A gap stalls every later transaction ("nonce too high").


class Life:
    """A pure book plus what the tests need to know about its nonces' history."""

    def __init__(self, *cmds, pol=None):
        self.book = given(pol=pol)
        self.nonce_of: dict[int, int] = {}
        self.signed: set[int] = set()
        self.handed_out: list[int] = []
        self.do(*cmds)

    def do(self, *cmds, must_accept=True) -> list:
        got = []
        for cmd in cmds:
            events = when(self.book, cmd)
            if must_accept:
                assert denial(events) is None, (cmd, denial(events))
            then_apply(self.book, events)
            for e in events:
                if getattr(e, "nonce", None) is not None and hasattr(e, "order_id"):
                    self.nonce_of[e.order_id] = e.nonce
                if isinstance(e, (EntryReserved, CloseRequested)):
                    got.append(e.nonce)
                    self.handed_out.append(e.nonce)
                if isinstance(e, OrderSigned) and e.order_id in self.nonce_of:
                    self.signed.add(self.nonce_of[e.order_id])
        return got

    def state(self):
        return self.book.nonces.get(("base", BASE_ADDRESS))

    def gaps(self) -> list[int]:
        state = self.state()
        held = {o.nonce for o in self.book.live_orders() if o.nonce is not None}
        return [n for n in range(state.floor, state.next) if n not in held and n not in self.signed]

    def live_nonces(self) -> list[int]:
        return sorted(o.nonce for o in self.book.live_orders() if o.nonce is not None)


def nonces_of(book, *cmds):
    """Apply each command, return the nonce of every reservation / close it made."""
    life = Life()
    life.book = book
    return life.do(*cmds)


def test_evm_entries_get_sequential_nonces():
    life = Life(*FUNDED)
    assert life.do(*(reserve("base", f"T{i}", usd(10)) for i in range(5))) == [0, 1, 2, 3, 4]
    assert life.gaps() == []


def test_exit_orders_take_the_next_nonce_too():
    life = Life(*FUNDED, *round_trip_entry(1))
    assert life.do(close(1), reserve("base", "T2", usd(10))) == [1, 2]


def test_an_abandoned_new_orders_nonce_is_not_lost():
    """Abandoned before signing: its nonce must not become a gap. Either the next entry
    reuses it, or something in flight (a no-op self-transfer) fills it."""
    life = Life(*FUNDED, reserve("base", "T1", usd(10)), reserve("base", "T2", usd(10)))
    events = when(life.book, abandon(1))
    assert isinstance(events[0], OrderAbandoned)
    life.do(abandon(1))
    assert life.gaps() == []
    third, fourth = life.do(reserve("base", "T3", usd(10)), reserve("base", "T4", usd(10)))
    assert third in (0, 2) and fourth == third + (1 if third == 2 else 2)
    assert 0 in life.live_nonces()  # nonce 0 is still going to be used on chain
    assert life.gaps() == []
    live = life.live_nonces()
    assert len(live) == len(set(live))  # and never by two live orders


def test_abandon_releases_everything_the_entry_reserved():
    life = Life(*FUNDED, reserve("base", "T1", usd(10)))
    events = when(life.book, abandon(1))
    assert events[0].postings == (Posting("base", "quote", "cash", "reserved", usd(10)),
                                  Posting("base", "native", "cash", "reserved", FEE))
    life.do(abandon(1))
    book = life.book
    assert quote(book, "base") == usd(1000) and quote(book, "base", "reserved") == 0
    # native may be re-reserved for a transaction that fills the nonce, but none is lost
    assert native(book, "base") + native(book, "base", "reserved") == NATIVE
    assert native(book, "base", "reserved") == sum(r.fee_amount for r in book.held_reservations())
    assert book.meta.get("open_slots") == 0 and ("base", "T1") not in book.slots


@pytest.mark.parametrize("ending", [
    [failure(1, "reverted", network_fee=10)],
    [unknown(1)],
    [broadcast(1), fill(1, usd(10), TOKEN)],
], ids=["failed", "unknown", "filled"])
def test_a_signed_orders_nonce_is_never_handed_back(ending):
    life = Life(*FUNDED, reserve("base", "T1", usd(10)), sign(1), *ending)
    assert life.do(reserve("base", "T2", usd(10)), reserve("base", "T3", usd(10))) == [1, 2]
    assert life.gaps() == []


def test_a_signed_order_cannot_be_abandoned():
    book = given(*FUNDED, reserve("base", "T1", usd(10)), sign(1))
    assert "signed bytes exist" in denial(when(book, abandon(1)))


def test_raise_nonce_floor_raises():
    life = Life(*FUNDED, reserve("base", "T1", usd(10)))
    events = when(life.book, raise_floor(7))
    assert events == [NonceFloorRaised("base", BASE_ADDRESS, 7, NOW)]
    life.do(raise_floor(7))
    assert life.do(reserve("base", "T2", usd(10))) == [7]


@pytest.mark.parametrize("lower", [0, 4, 7])
def test_raise_nonce_floor_never_lowers(lower):
    life = Life(*FUNDED, raise_floor(7), reserve("base", "T1", usd(10)))
    assert when(life.book, raise_floor(lower)) == []
    assert life.state().floor == 7
    assert life.do(reserve("base", "T2", usd(10))) == [8]


def test_no_nonce_below_the_floor_goes_to_a_new_trade():
    """The chain's pending count (the floor) says every nonce below it is used: an order
    that got nonce 0 before the floor rose to 3 and is then abandoned must not give 0 to
    the next trade."""
    life = Life(*FUNDED, reserve("base", "T1", usd(10)), reserve("base", "T2", usd(10)), abandon(1),
                raise_floor(3), abandon(2))
    assert life.do(reserve("base", "T3", usd(10)), reserve("base", "T4", usd(10))) == [3, 4]


def test_an_order_that_fails_before_signing_leaves_no_nonce_gap():
    """An EVM order that never had signed bytes cannot have used its nonce. If it is settled
    as a definite failure (refused before anything was signed) its nonce must not become a
    gap: otherwise every later transaction waits behind it forever ("nonce too high")."""
    life = Life(*FUNDED, reserve("base", "T1", usd(10)))
    refused = denial(when(life.book, failure(1, "rejected before broadcast")))
    assert refused is not None and "no signed transaction awaits an outcome" in refused  # unsigned: abandon it
    life.do(abandon(1))
    assert [(o.intent, o.nonce) for o in life.book.live_orders()] == [("noop", 0)]  # its nonce is filled
    life.do(reserve("base", "T2", usd(10)))
    assert life.gaps() == []


# =========================================================================== order life


def test_submission_is_written_ahead_and_a_retry_is_recognised():
    book = given(*FUNDED, reserve("base", "T1", usd(10)))
    cmd = sign(1, tx="0xfeed", raw=b"\x02\xf8", expiry=None, quoted_out=123, min_out=120)
    events = when(book, cmd)
    assert events == [OrderSigned(1, "0xfeed", b"\x02\xf8", None, 123, 120, NOW)]
    then_apply(book, events)
    order = book.orders.get(1)
    assert (order.state, order.tx_id, order.raw, order.min_out) == ("signed", "0xfeed", b"\x02\xf8", 120)
    assert when(book, cmd) == []  # the same submission again: nothing new
    assert "already signed as 0xfeed" in denial(when(book, sign(1, tx="0xother")))


@pytest.mark.parametrize("cmd", [
    broadcast(1), fill(1, usd(10), TOKEN), unknown(1),  # order 1 is new: nothing was signed
    sign(99), failure(99), abandon(99), fill(99, 1, 1), broadcast(99), unknown(99),  # no order 99
])
def test_commands_on_an_order_not_in_that_state_are_rejected(cmd):
    book = given(*FUNDED, reserve("base", "T1", usd(10)))
    before = book.snapshot()
    events = when(book, cmd)
    assert len(events) == 1 and isinstance(events[0], CommandRejected)
    assert f"order {cmd.order_id}" in events[0].reason
    then_apply(book, events)
    assert book.snapshot() == before


@pytest.mark.parametrize("settle", [
    [broadcast(1), fill(1, usd(10), TOKEN)],
    [failure(1, "reverted")],
], ids=["filled", "failed"])
@pytest.mark.parametrize("late", [
    fill(1, usd(10), TOKEN), failure(1, "reverted", network_fee=5), unknown(1), broadcast(1), abandon(1),
], ids=["fill", "failure", "unknown", "broadcast", "abandon"])
def test_a_late_report_about_a_settled_order_changes_nothing(settle, late):
    book = given(*FUNDED, reserve("base", "T1", usd(10)), sign(1), *settle)
    before = book.snapshot()
    assert denial(when(book, late)) is not None
    assert book.snapshot() == before


def test_broadcast_then_unknown_then_broadcast_again():
    book = given(*FUNDED, reserve("base", "T1", usd(10)), sign(1))
    assert when(book, broadcast(1)) == [OrderSubmitted(1, NOW)]
    book = given(*FUNDED, reserve("base", "T1", usd(10)), sign(1), broadcast(1))
    assert when(book, broadcast(1)) == []
    assert when(book, unknown(1, "timeout")) == [OrderOutcomeUnknown(1, "timeout", NOW)]


@pytest.mark.parametrize("amount_in", [0, -1, usd(10) + 1])
def test_a_fill_that_does_not_match_the_order_is_rejected(amount_in):
    book = given(*FUNDED, reserve("base", "T1", usd(10)), sign(1))
    assert "does not match the order" in denial(when(book, fill(1, amount_in, TOKEN)))


# =========================================================================== fills post the right amounts


def test_entry_fill_posts_cost_returns_the_remainder_and_pays_the_network_fee():
    book = given(*FUNDED, reserve("base", "T1", usd(50), fee=1_000), sign(1), broadcast(1))
    events = when(book, fill(1, usd(45), 2 * TOKEN, fee=usd("0.1"), network_fee=300))
    filled, opened = events
    assert isinstance(filled, OrderFilled) and isinstance(opened, PositionOpened)
    assert filled.postings == (
        Posting("base", "quote", "positions", "reserved", usd(45)),
        Posting("base", "quote", "cash", "reserved", usd(5)),
        Posting("base", "native", "fees", "reserved", 300),
        Posting("base", "native", "cash", "reserved", 700),
    )
    assert (opened.position_id, opened.size, opened.cost) == (1, 2 * TOKEN, usd(45))
    assert opened.entry_price == Decimal("22.5")
    then_apply(book, events)
    assert quote(book, "base") == usd(1000) - usd(45)
    assert quote(book, "base", "reserved") == 0 and quote(book, "base", "positions") == usd(45)
    assert native(book, "base") == NATIVE - 300 and native(book, "base", "fees") == 300
    assert native(book, "base", "reserved") == 0
    assert book.slots.get(("base", "T1")) == "p1"
    assert book.reservations.get(1) is None and book.orders.get(1) is None  # settled things leave memory
    assert book.meta.get("open_slots") == 1


def test_entry_fill_for_the_full_amount_returns_nothing():
    book = given(*FUNDED, reserve("base", "T1", usd(50), fee=0), sign(1))
    filled, _ = when(book, fill(1, usd(50), TOKEN))
    assert filled.postings == (Posting("base", "quote", "positions", "reserved", usd(50)),)


def test_a_network_fee_above_the_reserve_is_still_posted_from_cash():
    book = given(*FUNDED, reserve("base", "T1", usd(50), fee=1_000), sign(1))
    filled, _ = when(book, fill(1, usd(50), TOKEN, network_fee=1_500))
    assert filled.postings[1:] == (Posting("base", "native", "fees", "reserved", 1_000),
                                   Posting("base", "native", "fees", "cash", 500))


@pytest.mark.parametrize("amount_out, fee, pnl, pnl_postings", [
    (usd(60), usd(1), usd(9), [Posting("base", "quote", "cash", "pnl", usd(9))]),
    (usd(40), 0, -usd(10), [Posting("base", "quote", "pnl", "cash", usd(10))]),
    (usd(51), usd(1), 0, []),
    (usd(50), usd(1), -usd(1), [Posting("base", "quote", "pnl", "cash", usd(1))]),
], ids=["gain", "loss", "flat", "the-venue-fee-makes-a-loss"])
def test_exit_fill_closes_with_the_right_pnl(amount_out, fee, pnl, pnl_postings):
    book = given(*FUNDED, *round_trip_entry(1, amount=usd(50), at=NOW), close(1, fee=500, at=NOW + 5),
                 sign(2), broadcast(2))
    filled, closed = when(book, exit_fill(2, amount_out, fee=fee, network_fee=200, at=NOW + 10))
    assert isinstance(closed, PositionClosed)
    assert closed.proceeds == amount_out - fee and closed.pnl == pnl
    assert closed.cooldown_until == NOW + 10 + COOLDOWN
    assert filled.postings == (Posting("base", "native", "fees", "reserved", 200),
                               Posting("base", "native", "cash", "reserved", 300))
    assert list(closed.postings) == [Posting("base", "quote", "cash", "positions", usd(50))] + pnl_postings
    then_apply(book, [filled, closed])
    assert quote(book, "base") == usd(1000) - usd(50) + amount_out - fee
    assert quote(book, "base", "positions") == 0
    assert quote(book, "base", "pnl") == -pnl  # pnl is a credit account: a gain is negative here
    assert book.positions.get(1) is None and ("base", "T1") not in book.slots
    assert book.cooldowns.get(("base", "T1")) == NOW + 10 + COOLDOWN
    assert book.meta.get("consecutive_losses") == (1 if pnl < 0 else 0)
    assert book.meta.get("open_slots") == 0


def test_a_gain_resets_the_loss_counter():
    book = given(*FUNDED, *closed_trip(1, 2, 1, "T1", proceeds=usd(40)))
    assert book.meta.get("consecutive_losses") == 1
    book = given(*FUNDED, *closed_trip(1, 2, 1, "T1", proceeds=usd(40)),
                 *closed_trip(3, 4, 2, "T2", proceeds=usd(60)))
    assert book.meta.get("consecutive_losses") == 0


# =========================================================================== failure and unknown


def test_definite_failure_releases_the_reservation_and_posts_the_fee():
    book = given(*FUNDED, reserve("base", "T1", usd(50), fee=1_000), sign(1), broadcast(1))
    events = when(book, failure(1, "reverted", network_fee=400))
    assert events == [OrderFailed(1, "reverted", 400, NOW, (
        Posting("base", "quote", "cash", "reserved", usd(50)),
        Posting("base", "native", "fees", "reserved", 400),
        Posting("base", "native", "cash", "reserved", 600)))]
    then_apply(book, events)
    assert quote(book, "base") == usd(1000) and quote(book, "base", "reserved") == 0
    assert native(book, "base") == NATIVE - 400 and native(book, "base", "fees") == 400
    assert native(book, "base", "reserved") == 0
    assert book.meta.get("open_slots") == 0 and ("base", "T1") not in book.slots
    assert book.reservations.get(1) is None and book.orders.get(1) is None


def test_a_failed_exit_is_retried_and_the_close_stays_requested():
    book = given(*FUNDED, *round_trip_entry(1), close(1, fee=1_000), sign(2))
    events = when(book, failure(2, "reverted", network_fee=100))
    failed, retry = events
    assert isinstance(failed, OrderFailed) and isinstance(retry, CloseRequested)
    assert (retry.position_id, retry.order_id, retry.fee_reserve) == (1, 3, 1_000)
    assert retry.nonce == 2  # a fresh nonce: the failed exit's nonce was spent on chain
    then_apply(book, events)
    position = book.positions.get(1)
    assert (position.state, position.exit_order) == ("closing", 3)
    assert native(book, "base") == NATIVE - 100 - 1_000 and native(book, "base", "reserved") == 1_000
    assert native(book, "base", "fees") == 100
    assert quote(book, "base", "positions") == usd(50)


def test_a_failed_exit_reopens_the_position_when_retries_run_out():
    history = [*FUNDED, *round_trip_entry(1), close(1, fee=1_000)]
    for attempt in range(2, 40):
        book = given(*history)
        if book.positions.get(1).state == "open":
            break
        exit_order = book.positions.get(1).exit_order
        history += [sign(exit_order), failure(exit_order, "reverted", network_fee=1)]
    else:
        pytest.fail("a failing exit is retried forever")
    position = book.positions.get(1)
    assert (position.state, position.exit_order) == ("open", None)
    assert native(book, "base", "reserved") == 0 and book.live_orders() == []
    assert native(book, "base") == NATIVE - (attempt - 2)
    assert isinstance(when(book, close(1, by="operator"))[0], CloseRequested)  # the operator decides


def test_a_failed_exit_without_native_for_a_retry_reopens_the_position():
    book = given(deposit("base", usd(100)), deposit_native("base", 2 * FEE), *round_trip_entry(1),
                 close(1, fee=2 * FEE), sign(2))
    events = when(book, failure(2, "reverted", network_fee=FEE + 1))
    assert [type(e) for e in events] == [OrderFailed]
    then_apply(book, events)
    assert book.positions.get(1).state == "open"
    assert native(book, "base") == FEE - 1 and native(book, "base", "reserved") == 0


def test_unknown_outcome_keeps_the_reservation_held():
    book = given(*FUNDED, reserve("base", "T1", usd(50), fee=1_000), sign(1), broadcast(1))
    then_apply(book, when(book, unknown(1)))
    assert book.orders.get(1).state == "unknown"
    assert book.reservations.get(1).state == "held"
    assert quote(book, "base") == usd(950) and quote(book, "base", "reserved") == usd(50)
    assert native(book, "base", "reserved") == 1_000
    assert "signed bytes exist" in denial(when(book, abandon(1)))  # no timeout ever voids it
    assert "already has a held reservation" in denial(when(book, reserve("base", "T1", usd(10))))
    assert when(book, unknown(1)) == []
    # the reconciler finds the receipt: the fill settles it
    then_apply(book, when(book, fill(1, usd(50), TOKEN)))
    assert quote(book, "base", "reserved") == 0 and quote(book, "base", "positions") == usd(50)


# =========================================================================== closes


def test_close_reserves_only_the_network_fee():
    book = given(*FUNDED, *round_trip_entry(1))
    (event,) = when(book, close(1, by="operator", fee=700, reason="manual"))
    assert event == CloseRequested(1, 2, 2, 700, 1, BASE_ADDRESS, "manual", "operator", NOW,
                                   (Posting("base", "native", "reserved", "cash", 700),))
    then_apply(book, [event])
    position = book.positions.get(1)
    assert (position.state, position.exit_order, position.close_reason) == ("closing", 2, "manual")
    exit_order = book.orders.get(2)
    assert (exit_order.intent, exit_order.amount_in, exit_order.position_id) == ("exit", TOKEN, 1)
    assert quote(book, "base") == usd(950)


CLOSE_CASES = [
    ("close twice", FUNDED + round_trip_entry(1) + [close(1)], close(1, by="operator"), "already closing"),
    ("close after closed", FUNDED + closed_trip(1, 2, 1), close(1, by="operator"), "already closed"),
    ("no such position", FUNDED, close(7), "no position 7"),
    ("halted blocks engine closes", FUNDED + round_trip_entry(1) + [halt()], close(1, by="engine"),
     "trading is halted"),
    ("insufficient native for the exit", [deposit("base", usd(100)), deposit_native("base", FEE)]
     + round_trip_entry(1, amount=usd(50)), close(1, fee=FEE + 1), "insufficient native balance"),
    ("negative fee reserve", FUNDED + round_trip_entry(1), close(1, fee=-1), "fee"),
]


@pytest.mark.parametrize("history, cmd, reason", [c[1:] for c in CLOSE_CASES], ids=[c[0] for c in CLOSE_CASES])
def test_close_denied(history, cmd, reason):
    book = given(*history)
    events = when(book, cmd)
    assert len(events) == 1 and isinstance(events[0], CloseDenied), events
    assert reason in events[0].reason


@pytest.mark.parametrize("state, by", [
    (TradingState.HALTED, "operator"),
    (TradingState.REDUCING, "engine"),
    (TradingState.REDUCING, "operator"),
    (TradingState.ACTIVE, "engine"),
])
def test_close_allowed(state, by):
    history = FUNDED + round_trip_entry(1)
    if state is not TradingState.ACTIVE:
        history.append(halt() if state is TradingState.HALTED else pause())
    book = given(*history)
    (event,) = when(book, close(1, by=by))
    assert isinstance(event, CloseRequested) and event.by == by


# =========================================================================== everything else


def test_deposit_once_per_ref():
    book = given(deposit("base", usd(10), ref="wire-1"))
    assert "already recorded" in denial(when(book, deposit("base", usd(10), ref="wire-1")))
    assert "unknown chain" in denial(when(book, deposit("eth", usd(10))))
    assert "unknown asset" in denial(when(book, deposit("base", usd(10), asset="btc")))
    assert "positive" in denial(when(book, deposit("base", 0)))
    assert quote(book, "base") == usd(10)


def test_trading_state_changes_and_asking_for_the_current_state_changes_nothing():
    book = given()
    assert when(book, pause()) == [TradingStateChanged(TradingState.REDUCING, TradingState.ACTIVE,
                                                       "operator reducing", "operator", NOW)]
    assert when(book, resume()) == []  # already active: nothing to do, and not an error
    book = given(pause())
    assert when(book, pause()) == []
    assert when(book, resume())[0].state is TradingState.ACTIVE
    book = given(halt())
    assert when(book, halt()) == []  # an emergency halt on a halted bot succeeds


def test_leaving_a_halt_needs_force():
    book = given(halt())
    assert "force" in denial(when(book, resume()))
    assert "force" in denial(when(book, pause()))
    assert when(book, resume(force=True))[0].state is TradingState.ACTIVE


def test_marks_are_recorded_per_chain_and_token():
    book = given()
    events = when(book, marks("base", {"T1": "1.5"}))
    assert events == [PricesMarked("base", (("T1", Decimal("1.5")),), NOW)]
    then_apply(book, events)
    assert book.marks.get(("base", "T1")) == (Decimal("1.5"), NOW)
    assert "unknown chain" in denial(when(book, marks("eth", {"T1": "1"})))


def test_only_marks_that_moved_are_recorded():
    """A live chain is priced every second: an unchanged price is no news, and the journal keeps
    everything it is told."""
    book = then_apply(given(), when(given(), marks("base", {"T1": "1.5", "T2": "2"})))
    assert when(book, marks("base", {"T1": "1.5", "T2": "2"}, at=NOW + 1000)) == []
    assert when(book, marks("base", {"T1": "1.5", "T2": "2.1"}, at=NOW + 1000)) == \
        [PricesMarked("base", (("T2", Decimal("2.1")),), NOW + 1000)]


def test_not_a_command():
    with pytest.raises(TypeError):
        decide(given(), object())
