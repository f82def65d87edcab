"""Shared helpers for paper-engine integration tests: start, settle, audit, conservation."""

from __future__ import annotations

import sqlite3

from engine.audit import audit
from engine.core.reconcile import differences
from engine.kernel import build, policy_for
from engine.settings import load_settings


class NoSource:
    def poll(self, height, now_ms):
        return []


async def start(tmp_path, **paper):
    # Short holds and cooldowns: many round trips in a few hundred blocks.
    settings = load_settings(home=tmp_path / "home", max_hold_s=60, cooldown_s=20, paper={"speed": 0, **paper})
    return settings, await build(settings)


async def settle(engine, limit=300):
    """Stop new entries and tick until nothing is in flight."""
    engine.source = NoSource()
    for _ in range(limit):
        if not engine.book.orders.base:
            return
        await engine.tick()
    raise AssertionError(f"orders still in flight: {engine.book.live_orders()}")


def audited(settings):
    conn = sqlite3.connect(settings.home / "botctl.db")
    try:
        return audit(lambda sql: conn.execute(sql).fetchall(), policy_for(settings))
    finally:
        conn.close()


def conservation(engine) -> list[str]:
    """Every asset the venue holds for us equals what the book says we hold.

    Written out here, independently of engine.reconcile, so the two can check each other."""
    problems = []
    book = engine.book
    for chain in engine.executors:
        venue = engine.world.venue.balances(chain)
        held = {"quote": book.balance(chain, "quote", "cash") + book.balance(chain, "quote", "reserved"),
                "native": book.balance(chain, "native", "cash") + book.balance(chain, "native", "reserved")}
        for position in book.positions.base.values():
            if position.chain == chain:
                held[position.token] = held.get(position.token, 0) + position.size
        for asset in set(venue) | set(held):
            if venue.get(asset, 0) != held.get(asset, 0):
                problems.append(f"{chain} {asset}: venue {venue.get(asset, 0)} book {held.get(asset, 0)}")
    assert not problems or differences(book, {c: engine.world.venue.balances(c) for c in engine.executors})
    return problems
