"""The inbox's mailbox protocol: a row either runs or is withdrawn, never both."""

from __future__ import annotations

import json
from types import SimpleNamespace

from engine import inbox
from engine.core.messages import TradingState


def _owner(h, tmp_path):
    """What InboxPoller needs of an owner: the writer, the sequencer, a clock, no executors."""
    return SimpleNamespace(writer=h.writer, sequencer=h.seq, executors={}, now=lambda: 1_700_000_000_000,
                           settings=SimpleNamespace(home=tmp_path), book=h.seq.book)


def _state(h, ident):
    return h.writer.run_sync(h.writer.query, "SELECT state FROM inbox WHERE id = ?", (ident,))[0][0]


async def test_a_withdrawn_row_is_never_decided(make_engine, tmp_path):
    h = await make_engine()
    ident = inbox.post(h.path, "pause", {})
    assert inbox.withdraw(h.path, ident, "not decided within 1s")
    assert await inbox.InboxPoller(_owner(h, tmp_path)).drain() == 0
    assert h.seq.book.trading_state is TradingState.ACTIVE
    row = inbox.read(h.path, ident)
    assert row["state"] == "withdrawn" and "withdrawn by its sender" in row["result"]["refused"][0]


async def test_a_taken_row_cannot_be_withdrawn_and_is_decided(make_engine, tmp_path):
    h = await make_engine()
    ident = inbox.post(h.path, "halt", {})
    await h.writer.run(h.writer.execute_write, "UPDATE inbox SET state = 'taken' WHERE id = ?", (ident,))
    assert not inbox.withdraw(h.path, ident, "interrupted")  # an owner (here: one that died) took it first
    assert await inbox.InboxPoller(_owner(h, tmp_path)).drain() == 1  # a taken row left behind is decided again
    assert _state(h, ident) == "done"
    assert h.seq.book.trading_state is TradingState.HALTED


async def test_rows_posted_while_draining_are_decided_before_drain_returns(make_engine, tmp_path):
    h = await make_engine()
    first = inbox.post(h.path, "pause", {})
    owner = _owner(h, tmp_path)
    poller = inbox.InboxPoller(owner)
    posted = []
    original = poller._decide_row

    async def decide_and_post(ident, command, args, sender):
        await original(ident, command, args, sender)
        if not posted:
            posted.append(inbox.post(h.path, "halt", {}))  # arrives while the owner is deciding

    poller._decide_row = decide_and_post
    assert await poller.drain() == 2
    assert _state(h, first) == "done" and _state(h, posted[0]) == "done"
    assert h.seq.book.trading_state is TradingState.HALTED


async def test_a_row_with_unreadable_arguments_is_answered_failed_not_left_taken(make_engine, tmp_path):
    h = await make_engine()
    ident = inbox.post(h.path, "pause", {})
    await h.writer.run(h.writer.execute_write, "UPDATE inbox SET args = '[1' WHERE id = ?", (ident,))
    assert await inbox.InboxPoller(_owner(h, tmp_path)).drain() == 1
    state, result = h.writer.run_sync(h.writer.query, "SELECT state, result FROM inbox WHERE id = ?", (ident,))[0]
    assert state == "failed" and "bad command" in json.loads(result)["refused"][0]


async def test_halt_on_a_halted_book_answers_already_halted(make_engine, tmp_path):
    h = await make_engine()
    poller = inbox.InboxPoller(_owner(h, tmp_path))
    first, second = inbox.post(h.path, "halt", {}), inbox.post(h.path, "halt", {})
    await poller.drain()
    assert inbox.read(h.path, first)["result"]["ok"] == ["trading active -> halted"]
    answer = inbox.read(h.path, second)
    assert answer["state"] == "done" and answer["result"]["ok"] == ["trading is already halted"]


async def test_a_row_withdrawn_between_listing_and_taking_is_not_decided(make_engine, tmp_path):
    h = await make_engine()
    ident = inbox.post(h.path, "pause", {})
    listed = h.writer.query

    def list_then_withdraw(sql, params=()):
        rows = listed(sql, params)
        if "FROM inbox" in sql:
            inbox.withdraw(h.path, ident, "gave up")  # the sender gives up right after the owner listed it
        return rows

    h.writer.query = list_then_withdraw
    assert await inbox.InboxPoller(_owner(h, tmp_path)).drain() == 1
    assert _state(h, ident) == "withdrawn"
    assert h.seq.book.trading_state is TradingState.ACTIVE


def test_the_write_lock_wait_is_botctl_lock_wait_s_when_it_is_one_and_10_s_otherwise(monkeypatch):
    for given, wanted in (("2", 2.0), ("0.1", 0.1), ("3600", 3600.0), ("0", 10.0), ("99999", 10.0), ("soon", 10.0),
                          ("nan", 10.0), ("", 10.0)):
        monkeypatch.setenv("BOTCTL_LOCK_WAIT_S", given)
        assert inbox.busy_wait_s() == wanted, given
    monkeypatch.delenv("BOTCTL_LOCK_WAIT_S")
    assert inbox.busy_wait_s() == 10.0
