"""What `botctl nonces` reads (engine/views.nonces) from a real SQLite book: every attempt at a
nonce kept with its fees, and a gap shown from the chain's pending count when it is asked, else
from the floor the engine last saw."""

from __future__ import annotations

import pytest

from engine import views
from engine.core.book import nonce_gap
from engine.core.messages import RecordSubmission, ReplaceSubmission

from builders import BASE_ADDRESS, broadcast, raise_floor, reserve, start_engine, usd


def test_a_gap_is_the_run_of_nonces_below_our_lowest_in_flight_the_chain_has_not_seen():
    assert nonce_gap(3, [5, 6]) == (3, 4)
    assert nonce_gap(5, [5, 6]) is None and nonce_gap(9, [5]) is None
    assert nonce_gap(None, [5]) is None and nonce_gap(0, []) is None


@pytest.mark.asyncio
async def test_every_attempt_at_a_nonce_is_shown_with_its_fees_and_a_gap_from_the_chain_count(tmp_path):
    h = await start_engine(tmp_path, cash={"base": usd(1000)})
    try:
        await h.ok(raise_floor(2))
        order = (await h.ok(reserve("base", "T1", usd(50)))).events[0].order_id
        await h.ok(RecordSubmission(order, "0xfirst", b"\x01", None, 10**18, 10**17, 1,
                                    '{"max_fee": 2000000000, "tip": 100000000}'))
        await h.ok(broadcast(order))
        await h.ok(ReplaceSubmission(order, "0xsecond", b"\x02", '{"max_fee": 2200000000, "tip": 110000000}', 1))
    finally:
        await h.close()
    (row,) = await views.nonces(h.path)
    assert (row["address"], row["next_nonce"], row["chain_floor"], row["chain_pending"], row["gap"]) == \
        (BASE_ADDRESS, 3, 2, None, None)
    (flying,) = row["in_flight"]
    assert flying["nonce"] == 2 and flying["tx_id"] == "0xsecond"
    assert [(a["tx_id"], a["max_fee_wei"], a["tip_wei"]) for a in flying["attempts"]] == \
        [("0xfirst", 2_000_000_000, 100_000_000), ("0xsecond", 2_200_000_000, 110_000_000)]
    (row,) = await views.nonces(h.path, {("base", BASE_ADDRESS): 1})  # the chain lost our nonce 1
    assert row["chain_pending"] == 1 and row["gap"] == (1, 1)
