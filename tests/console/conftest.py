"""A seeded paper engine for the console's tests, and a home prepared for snapshots.

No automatic exits (stop-loss, take-profit and max-hold off) so that what a test
does to a position is the only thing that happens to it; the market still moves.
"""

from __future__ import annotations

import os
import types

import pytest

from engine.kernel import build

from tuikit import GENESIS_S, SEED, make_settings  # noqa: F401 (fixtures below use them)


@pytest.fixture(autouse=True)
def _no_botctl_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("BOTCTL_"):
            monkeypatch.delenv(key)


@pytest.fixture
def frozen_genesis(monkeypatch):
    """A venue created under this fixture starts at GENESIS_S, so engine times are the same every run."""
    import engine.venues.paper.venue as venue

    monkeypatch.setattr(venue, "time", types.SimpleNamespace(time=lambda: GENESIS_S))
    return GENESIS_S * 1000


@pytest.fixture
async def seeded(tmp_path):
    """`engine = await seeded(ticks)`: a paper engine on tmp_path/home after `ticks` blocks; closed after."""
    engines = []

    async def make(ticks: int = 150, **overrides):
        engine = await build(make_settings(tmp_path / "home", **overrides))
        engines.append(engine)
        for _ in range(ticks):
            await engine.tick()
        return engine

    yield make
    for engine in engines:
        await engine.close()


@pytest.fixture
async def engine(tmp_path, prepared):
    """A paper engine after 150 blocks: 8 open positions (seed 3), nothing in flight. The book is
    made once per test process (tuikit.prepare_home) and copied; the engine started on the copy is
    the one that ticked those blocks, restarted (nothing was in flight: nothing to reconcile)."""
    import asyncio

    from tuikit import prepare_home

    home = tmp_path / "home"
    await asyncio.to_thread(prepared, home, "console: seed 3, 150 blocks", lambda path: prepare_home(path, 150))
    engine = await build(make_settings(home))
    yield engine
    await engine.close()
