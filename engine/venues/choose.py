"""Which world an engine trades in, chosen from the settings: the one place that knows the venue kinds.

The kernel asks here and knows nothing of the answer but the port (engine/venues/port.py):
paper mode trades the simulated market's chains; live mode, each configured chain on the venue
of its `kind`. A live chain's market (token symbols and decimals) is read from the chain when an
engine starts and recorded in the book, so that commands that start no engine (status,
positions) read amounts with the decimals the engine traded with.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.core.book import ChainPolicy
from engine.venues.port import Market, VenueError, World

SOLANA_NOT_YET = "chain {name}: kind solana is not in this version (the Solana venue comes next); trade EVM or paper"
DRY_RUN_LIVE = ("mode live with dry run on sends nothing: set BOTCTL_DRY_RUN=false to trade this stage's "
                "network, or run paper (--profile paper)")


def market_for(settings, recorded: dict[str, ChainPolicy] | None = None) -> dict[str, Market]:
    """The chains a command that starts no engine reads the book with (live: as last recorded)."""
    if settings.mode == "paper":
        from engine.venues.paper.market import CHAINS

        return CHAINS
    return {name: _Recorded(policy) for name, policy in (recorded or {}).items()}


async def load_markets(settings, checking: bool = False) -> dict[str, Market]:
    """The chains an engine trades and the tokens signals may name on each (live: read from the chains).
    `checking` (botctl doctor): read them even with dry run on, which doctor reports by itself."""
    if settings.mode == "paper":
        return market_for(settings)
    if settings.dry_run and not checking:
        raise VenueError(DRY_RUN_LIVE)
    from engine.venues.evm.market import load_market
    from wallet.keystore import DEFAULT_KEYSTORE, KeystoreError, address_of, check, resolve

    markets: dict[str, Market] = {}
    for name, chain in sorted(settings.chains.items()):
        if chain.kind != "evm":
            raise VenueError(SOLANA_NOT_YET.format(name=name))
        if chain.quote_token == "native" and chain.quote_usd is None:
            raise VenueError(f"chain {name}: quote_token = \"native\" needs quote_usd, the USD you count one coin "
                             "as: the USD limits and stage ceilings are converted with it (when in doubt, higher: a "
                             "higher value allows fewer coins per position)")
        try:  # the address is public in the keystore: the key is unlocked only when the world opens
            address = address_of(check(resolve(settings.home, chain.keystore or DEFAULT_KEYSTORE)))
        except KeystoreError as exc:
            raise VenueError(f"chain {name}: {exc}") from None
        markets[name] = await load_market(name, chain, address)
    return markets


async def open_world(settings, home: Path, market: dict[str, Market], must_exist: bool) -> World:
    """The world, open. `must_exist`: the book has already met this world (a paper venue that is gone
    would be another chain, not this one)."""
    if settings.mode == "paper":
        from engine.venues.paper.world import open_world as open_paper

        return await open_paper(home, market, settings, must_exist)
    from engine.venues.evm.world import open_world as open_evm

    return await open_evm(settings, home, market, must_exist)


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


def policy_json(policy: ChainPolicy) -> str:
    """A chain's policy as the book records it (meta `market:<chain>`)."""
    return json.dumps({"kind": policy.kind, "address": policy.address, "quote_decimals": policy.quote_decimals,
                       "native_decimals": policy.native_decimals, "tokens": policy.tokens,
                       "quote_native": policy.quote_native, "approvals": policy.approvals}, sort_keys=True)


def policy_from_json(name: str, text: str) -> ChainPolicy:
    data = json.loads(text)
    return ChainPolicy(name, data["kind"], data["address"], data["quote_decimals"], data["native_decimals"],
                       dict(data["tokens"]), quote_native=data["quote_native"], approvals=data["approvals"])


class _Recorded:
    """A live chain as the book recorded it: enough to read amounts, nothing to trade with."""

    def __init__(self, policy: ChainPolicy):
        self._policy = policy
        self.name = policy.name
        self.quote_decimals = policy.quote_decimals

    def resolve(self, token: str) -> str | None:
        return token if token in self._policy.tokens else None

    def policy(self) -> ChainPolicy:
        return self._policy
