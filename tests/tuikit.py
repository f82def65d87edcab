"""Helpers for the console's tests: a seeded paper engine's settings and a book on disk.

A module of its own (not conftest) so that test modules import it by a name no other
directory's conftest shadows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.kernel import build
from engine.settings import load_settings

SEED = 3
GENESIS_S = 1_795_000_000  # the venue's genesis time, frozen for snapshots (epoch seconds)


def make_settings(home: Path, **overrides):
    return load_settings(home=home, paper={"speed": 0, "seed": SEED}, stop_loss_bps=0, take_profit_bps=0,
                         max_hold_s=0, **overrides)


def prepare_home(home: Path, ticks: int) -> None:
    """Build a book on disk (in a loop of its own) and let it go: an app can then open it."""

    async def go():
        engine = await build(make_settings(home))
        try:
            for _ in range(ticks):
                await engine.tick()
        finally:
            await engine.close()

    asyncio.run(go())
