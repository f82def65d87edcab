"""The simulated market's own opportunities: a seeded draw per block, so a run replays exactly."""

from __future__ import annotations

from engine.sources import Opportunity
from engine.venues.paper.market import PaperChain, rng


class SimulatedSource:
    def __init__(self, seed: int, chains: dict[str, PaperChain], rate_bps: int):
        self.seed = seed
        self.chains = chains
        self.rate_bps = rate_bps
        self._pairs = [(c.name, t.symbol) for c in chains.values() for t in c.tokens]

    def poll(self, height: int, now_ms: int) -> list[Opportunity]:
        draw = rng(self.seed, "opportunity", height)
        if not self._pairs or draw.randrange(10_000) >= self.rate_bps:
            return []
        chain, token = draw.choice(self._pairs)
        return [Opportunity(f"sim-{self.seed}-{height}", chain, token, None)]
