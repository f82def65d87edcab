"""Which world an engine trades in, chosen from the settings: the one place that knows the venue kinds.

The kernel asks here and knows nothing of the answer but the port (engine/venues/port.py):
paper mode trades the simulated market's chains; live mode, each configured chain on the venue
of its `kind`.
"""

from __future__ import annotations

from pathlib import Path

from engine.venues.port import Market, VenueError, World

NOT_YET = "mode live: the EVM and Solana executors are not in this version; run paper (--profile paper) meanwhile"


def market_for(settings) -> dict[str, Market]:
    """The chains this engine trades and the tokens signals may name on each."""
    if settings.mode == "paper":
        from engine.venues.paper.market import CHAINS

        return CHAINS
    return {}  # live chains are read from the config and the chain when their venue opens


async def open_world(settings, home: Path, market: dict[str, Market], must_exist: bool) -> World:
    """The world, open. `must_exist`: the book has already met this world (a paper venue that is gone
    would be another chain, not this one)."""
    if settings.mode == "paper":
        from engine.venues.paper.world import open_world as open_paper

        return await open_paper(home, market, settings, must_exist)
    raise VenueError(NOT_YET)


def own_opportunities(settings, world: World, market: dict[str, Market]):
    """The world's own source of entries when no signals are given (paper: the simulated market's)."""
    if settings.mode == "paper":
        from engine.venues.paper.opportunities import SimulatedSource

        return SimulatedSource(world.seed, market, settings.paper.opportunity_rate_bps)
    return None


def describe_world(settings) -> str:
    """What `botctl doctor` says of the world, without opening it."""
    if settings.mode == "paper":
        from engine.venues.paper.world import VENUE_NAME

        venue = Path(settings.home) / VENUE_NAME
        return "paper mode trades the simulated market" + (f" ({venue.name} present)" if venue.exists() else "")
    return f"live: {len(settings.chains)} chain(s) configured"


def stored_now_ms(settings) -> int | None:
    """The world's clock as last committed, without opening it (None: it has none, or none yet)."""
    if settings.mode == "paper":
        from engine.venues.paper.world import stored_now_ms as paper_now

        return paper_now(Path(settings.home))
    return None
