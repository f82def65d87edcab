"""The paper world behind the venue port: one simulated venue on a thread of its own, its chains
as ports, its block clock as the engine's. A seed replays it exactly."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Iterable

from engine.venues.paper.executor import Faults, PaperExecutor, VenueLink
from engine.venues.paper.market import PaperChain
from engine.venues.paper.venue import PaperVenue, VenueMismatch, VenueParams
from engine.venues.port import Opening, VenueError

VENUE_NAME = "paper-venue.db"


class PaperPort:
    def __init__(self, link: VenueLink, chain: str, faults: Faults):
        self.link = link
        self.chain = chain
        self.executor = PaperExecutor(link, chain, faults)

    async def height(self) -> int:
        return self.link.venue.height

    async def balances(self) -> dict[str, int]:
        return await self.link.call(self.link.venue.balances, self.chain)

    async def marks(self, tokens: Iterable[str] = ()) -> dict[str, Decimal]:
        """Every listed token's price, held or not: the simulated market moves them all each block."""
        return await self.link.call(self.link.venue.prices, self.chain)

    async def pending_nonce(self, address: str) -> int | None:
        if self.link.venue.chains[self.chain].kind != "evm":
            return None
        return await self.link.call(self.link.venue.account_nonce, self.chain, address)


class PaperWorld:
    concurrency = 1  # one order at a time: a seed replays exactly

    def __init__(self, link: VenueLink, faults: Faults):
        self.link = link
        self.venue: PaperVenue = link.venue
        self.ports = {name: PaperPort(link, name, faults) for name in self.venue.chains}

    @property
    def seed(self) -> int:
        return self.venue.seed

    @property
    def height(self) -> int:
        return self.venue.height

    def now_ms(self) -> int:
        return self.venue.now_ms()

    def describe(self) -> str:
        return f"seed {self.venue.seed}"

    async def step(self, wake=None) -> int:  # noqa: ARG002 - blocks are paced by the run, not by arrivals
        return await self.link.call(self.venue.advance)

    async def openings(self) -> list[Opening]:
        deposits = await self.link.call(self.venue.genesis_deposits)
        return [Opening(chain, asset, amount, f"genesis:{chain}:{asset}")
                for (chain, asset), amount in sorted(deposits.items())]

    async def close(self) -> None:
        await self.link.close()


async def open_world(home: Path, market: dict[str, PaperChain], settings, must_exist: bool) -> PaperWorld:
    """The paper venue in $BOTCTL_HOME, opened (created on a book's first start)."""
    p = settings.paper
    venue = PaperVenue(Path(home) / VENUE_NAME, market, VenueParams(
        p.seed, p.fee_bps, p.volatility_bps, p.slippage_noise_bps, p.latency_blocks, p.deposit_usd,
        p.native_deposit, must_exist=must_exist, block_ms=p.block_ms))
    try:
        link = await VenueLink(venue).open()
    except VenueMismatch as exc:
        raise VenueError(str(exc)) from None
    return PaperWorld(link, Faults(p.fail_rate_bps, p.unknown_rate_bps, p.expiry_blocks))


def stored_now_ms(home: Path) -> int | None:
    """The paper world's clock as last committed (None: no venue yet), read without opening it."""
    return PaperVenue.stored_now_ms(Path(home) / VENUE_NAME)
