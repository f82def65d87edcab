"""The simulated market: a few tokens per chain whose prices walk at random.

Every random draw is seeded by (seed, what, height), never by a shared RNG
state, so the walk is the same whatever order things are asked in and can
resume after a crash from nothing but the stored block height and prices.
All arithmetic is Decimal; the draws are integers in basis points.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from decimal import Context, Decimal

from engine.core.book import ChainPolicy

_CTX = Context(prec=18)


@dataclass(frozen=True, slots=True)
class PaperToken:
    symbol: str
    decimals: int
    price: Decimal  # starting price, quote per whole token
    address: str


@dataclass(frozen=True, slots=True)
class PaperChain:
    name: str
    kind: str  # evm | solana
    native: str
    native_decimals: int
    quote_decimals: int
    address: str  # our account on the venue
    tokens: tuple[PaperToken, ...]

    def policy(self) -> ChainPolicy:
        return ChainPolicy(self.name, self.kind, self.address, self.quote_decimals, self.native_decimals,
                           {t.symbol: t.decimals for t in self.tokens})

    def resolve(self, token: str) -> str | None:
        """Symbol, address or mint -> the symbol the book uses."""
        for t in self.tokens:
            if token == t.symbol or token.lower() == t.address.lower():
                return t.symbol
        return None


def _address(kind: str, label: str) -> str:
    digest = hashlib.sha256(label.encode()).hexdigest()
    return "0x" + digest[:40] if kind == "evm" else "Paper" + digest[:39]


def _tokens(kind: str, chain: str, specs) -> tuple[PaperToken, ...]:
    return tuple(PaperToken(sym, dec, Decimal(price), _address(kind, f"{chain}:{sym}")) for sym, dec, price in specs)


SOLANA = PaperChain(
    "solana", "solana", "SOL", 9, 6, _address("solana", "paper-wallet:solana"),
    _tokens("solana", "solana", [("BONK", 5, "0.0000215"), ("WIF", 6, "1.85"), ("JUP", 6, "0.92"),
                                 ("PYTH", 6, "0.31")]),
)
BASE = PaperChain(
    "base", "evm", "ETH", 18, 6, _address("evm", "paper-wallet:base"),
    _tokens("evm", "base", [("DEGEN", 18, "0.0081"), ("BRETT", 18, "0.094"), ("TOSHI", 18, "0.00062"),
                            ("AERO", 18, "1.12")]),
)
CHAINS: dict[str, PaperChain] = {c.name: c for c in (SOLANA, BASE)}


def rng(seed: int, *parts: object) -> random.Random:
    """A generator for one decision: the same arguments always draw the same numbers."""
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def step_price(seed: int, chain: str, token: str, height: int, price: Decimal, volatility_bps: int) -> Decimal:
    move = rng(seed, "walk", chain, token, height).randint(-volatility_bps, volatility_bps)
    new = _CTX.multiply(price, Decimal(10_000 + move)) / 10_000
    return +_CTX.plus(new)
