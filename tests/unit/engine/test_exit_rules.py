"""Exit rules. `halt --close-all` closes every position, also one that opens after it: an entry already sent
when the halt committed may still fill, and the position it opens must not stay open behind the
operator's back. Pure: the rule (engine/core/exits.closes_after_halt) on books built by the decider."""

from __future__ import annotations

from engine.core.decider import MAX_EXIT_ATTEMPTS
from engine.core.exits import closes_after_halt
from engine.core.messages import (
    CloseDenied,
    CloseRequested,
    RequestClose,
    SetTradingState,
    TradingState,
    TradingStateChanged,
)

from builders import (
    FEE,
    broadcast,
    close,
    failure,
    fill,
    funded,
    given,
    halt,
    reserve,
    resume,
    round_trip_entry,
    sign,
    then_apply,
    usd,
    when,
)

FUNDED = funded()


def halt_all(by: str = "operator") -> SetTradingState:
    return SetTradingState(TradingState.HALTED, "operator halt", 0, by, close_all=True)


def sent_entry() -> list:
    return [reserve(), sign(1), broadcast(1)]


def test_an_entry_sent_before_the_halt_that_fills_after_it_is_closed():
    book = given(*FUNDED, *sent_entry(), halt_all())
    assert closes_after_halt(book) == []  # nothing open yet
    book = given(*FUNDED, *sent_entry(), halt_all(), fill(1, usd(50), 10**18))
    assert closes_after_halt(book) == [1]
    events = when(book, RequestClose(1, "halt --close-all: opened after the halt", FEE, 0, by="halt"))
    assert isinstance(events[0], CloseRequested), events  # a halt stops automatic exits, not this one
    then_apply(book, events)
    assert closes_after_halt(book) == []  # closing: asked once


def test_a_plain_halt_leaves_a_later_position_open():
    book = given(*FUNDED, *sent_entry(), halt(), fill(1, usd(50), 10**18))
    assert closes_after_halt(book) == []


def test_halt_close_all_on_a_halted_book_arms_the_rule():
    book = given(*FUNDED, halt())
    events = when(book, halt_all())
    assert events and isinstance(events[0], TradingStateChanged) and events[0].close_all, events
    then_apply(book, events)
    assert when(book, halt_all()) == []  # already armed: nothing to record


def test_leaving_the_halt_disarms_it():
    book = given(*FUNDED, *sent_entry(), halt_all(), resume(force=True), halt(), fill(1, usd(50), 10**18))
    assert book.trading_state is TradingState.HALTED
    assert closes_after_halt(book) == []


def test_a_position_whose_exit_failed_waits_for_the_operator():
    history = [*FUNDED, *round_trip_entry(1), halt_all(), close(1, by="halt")]
    order = 2
    for _ in range(MAX_EXIT_ATTEMPTS):  # each failure is retried until the budget is spent
        history += [sign(order), broadcast(order), failure(order)]
        order += 1
    book = given(*history)
    assert book.positions.get(1).state == "open"
    assert closes_after_halt(book) == []  # not asked again and again


def test_a_close_whose_chain_cannot_be_reached_is_refused_with_the_reason_and_reserves_nothing():
    book = given(*FUNDED, *round_trip_entry(1))
    events = when(book, RequestClose(1, "operator close", 0, 0, "operator", refused="cannot reach base: refused"))
    assert [type(e) for e in events] == [CloseDenied]
    assert "stays open: cannot reach base" in events[0].reason


def test_an_automatic_exit_that_used_up_its_attempts_is_not_started_again():
    """Each attempt of an exit the chain keeps reverting costs gas (an approve and a swap): once a
    close has used up its budget, the stop-loss / max-hold rules leave the position to the operator."""
    from engine.core.exits import ExitRules, exits_due

    history = [*FUNDED, *round_trip_entry(1), close(1, by="engine", reason="max-hold")]
    order = 2
    for _ in range(MAX_EXIT_ATTEMPTS):
        history += [sign(order), broadcast(order), failure(order)]
        order += 1
    book = given(*history)
    assert book.positions.get(1).state == "open"
    assert exits_due(book, 10**15, ExitRules(max_hold_ms=1)) == []  # no fresh budget by itself
    assert exits_due(given(*FUNDED, *round_trip_entry(1)), 10**15, ExitRules(max_hold_ms=1)) == [(1, "max-hold")]
