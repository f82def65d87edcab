"""Stuck EVM transactions: a replacement or a cancellation at the order's nonce is written ahead
like the first attempt, and every earlier attempt is kept: any of them may be the one mined."""

from __future__ import annotations

import json

from engine.core.messages import OrderReplaced, ReplaceSubmission

from builders import NOW, broadcast, failure, fill, funded, given, native, quote, reserve, sign, start_engine, usd, \
    when


def signed_with_fees(order_id: int, max_fee: int = 100, tip: int = 10):
    cmd = sign(order_id)
    return type(cmd)(cmd.order_id, cmd.tx_id, cmd.raw, cmd.expiry, cmd.quoted_out, cmd.min_out, cmd.at,
                     json.dumps({"max_fee": max_fee, "tip": tip}))


def replacement(order_id: int, tx: str, max_fee: int = 110, tip: int = 11, cancel: bool = False):
    return ReplaceSubmission(order_id, tx, f"raw-{tx}".encode(), json.dumps({"max_fee": max_fee, "tip": tip}), NOW,
                             cancel)


def test_a_sent_order_is_replaced_and_keeps_every_earlier_attempt():
    book = given(*funded("base"), reserve("base", "T1", usd(50)), signed_with_fees(1), broadcast(1))
    (event,) = when(book, replacement(1, "0xr1"))
    assert isinstance(event, OrderReplaced) and event.tx_id == "0xr1" and not event.cancel
    book = given(*funded("base"), reserve("base", "T1", usd(50)), signed_with_fees(1), broadcast(1),
                 replacement(1, "0xr1"), replacement(1, "0xr2", 121, 13, cancel=True))
    order = book.orders.get(1)
    attempts = order.all_attempts()
    assert [(a.tx_id, a.max_fee, a.tip, a.cancel) for a in attempts] == [
        ("0xtx1", 100, 10, False), ("0xr1", 110, 11, False), ("0xr2", 121, 13, True)]
    assert attempts[0].raw == b"raw-0xtx1".hex()
    assert (order.tx_id, order.raw, order.state, order.nonce) == ("0xr2", b"raw-0xr2", "submitted", 0)


def test_the_same_attempt_twice_is_recorded_once():
    book = given(*funded("base"), reserve("base", "T1", usd(50)), signed_with_fees(1), broadcast(1),
                 replacement(1, "0xr1"))
    assert when(book, replacement(1, "0xr1")) == []
    assert when(book, replacement(1, "0xtx1")) == []  # the first attempt, reported as a replacement


def test_only_a_broadcast_order_is_replaced():
    book = given(*funded("base"), reserve("base", "T1", usd(50)))
    (rejected,) = when(book, replacement(1, "0xr1"))
    assert "no signed transaction" in rejected.reason
    book = given(*funded("base"), reserve("base", "T1", usd(50)), signed_with_fees(1))
    (rejected,) = when(book, replacement(1, "0xr1"))
    assert "broadcast it before replacing it" in rejected.reason
    book = given(*funded("solana"), reserve("solana", "T1", usd(50)), sign(1, expiry=100), broadcast(1))
    (rejected,) = when(book, replacement(1, "0xr1"))
    assert "no nonce" in rejected.reason


def test_funds_stay_held_through_replacements_and_settle_once():
    book = given(*funded("base"), reserve("base", "T1", usd(50)), signed_with_fees(1), broadcast(1),
                 replacement(1, "0xr1"))
    assert quote(book, "base", "reserved") == usd(50)
    book = given(*funded("base"), reserve("base", "T1", usd(50)), signed_with_fees(1), broadcast(1),
                 replacement(1, "0xr1", cancel=True), failure(1, "cancelled at nonce 0", network_fee=700))
    assert quote(book, "base", "reserved") == 0 and quote(book, "base") == usd(1000)
    assert native(book, "base", "fees") == 700 and not book.live_orders()


async def test_attempts_survive_a_restart(tmp_path):
    h = await start_engine(tmp_path, cash={"base": usd(1000)})
    try:
        for cmd in (reserve("base", "T1", usd(50)), signed_with_fees(1), broadcast(1), replacement(1, "0xr1")):
            await h.ok(cmd)
        order = (await h.load()).orders.get(1)
        assert [a.tx_id for a in order.all_attempts()] == ["0xtx1", "0xr1"]
        await h.ok(fill(1, usd(50), 10**18, network_fee=500))
        assert h.audit() == [] and h.invariants() == []
    finally:
        await h.close()
