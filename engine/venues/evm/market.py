"""What an EVM chain offers to trade, read from the chain itself: the quote asset, the
allow-listed tokens (their symbols and decimals) and the router's WETH.

Symbols and decimals are read from the tokens, never typed into the config: a decimals
mistake is a 10^12 mistake in every amount. The symbol is the book's key for a token, so
two allow-listed tokens with the same symbol are refused (a signal naming it would be
ambiguous). The endpoint's chain id is checked against the configured one before anything
else is read, and no message names the endpoint's URL: URLs carry API keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from engine.core.book import ChainPolicy
from engine.redact import scrub
from engine.settings import safe_url
from engine.venues.port import VenueError, VenueUnreachable

NATIVE = "native"  # quote_token for the chain's own coin
RESERVED_KEYS = frozenset({"quote", "native"})  # balances() keys: a token may not be called that


@dataclass(frozen=True)
class EvmMarket:
    name: str
    quote_decimals: int
    native_decimals: int = 18
    quote_native: bool = False
    quote_address: str | None = None  # None when the quote is the chain's coin
    weth: str = ""  # the router's WETH: the path's end for the chain's coin
    router: str = ""
    tokens: dict[str, tuple[str, int]] = field(default_factory=dict)  # symbol -> (address, decimals)
    address: str = ""  # ours, checksummed
    chain_id: int = 0
    quote_symbol: str = ""

    def resolve(self, token: str) -> str | None:
        """A signal's token (symbol, or address in any case) -> the symbol the book uses. A symbol
        in another case is taken only when it names one token."""
        if token in self.tokens:
            return token
        lowered = token.lower()
        for symbol, (address, _decimals) in self.tokens.items():
            if address.lower() == lowered:
                return symbol
        folded = [symbol for symbol in self.tokens if symbol.lower() == lowered]
        return folded[0] if len(folded) == 1 else None

    def policy(self) -> ChainPolicy:
        return ChainPolicy(self.name, "evm", self.address, self.quote_decimals, self.native_decimals,
                           {symbol: decimals for symbol, (_address, decimals) in self.tokens.items()},
                           quote_native=self.quote_native, approvals=True)

    def token_address(self, symbol: str) -> str | None:
        found = self.tokens.get(symbol)
        return None if found is None else found[0]

    def quote_end(self) -> str:
        """The address the quote side of every path ends at (WETH for the chain's coin)."""
        return self.weth if self.quote_native else self.quote_address


async def load_market(name: str, chain_settings, address: str) -> EvmMarket:
    """The market of chain `name` as the chain says it is; VenueError (one line) when it cannot be used."""
    from engine.venues.evm.client import EvmClient

    cs = chain_settings
    for setting in ("rpc_url", "chain_id", "router", "quote_token"):
        if getattr(cs, setting) is None:
            raise VenueError(f"chain {name}: {setting} is not set")
    ours = _checksummed(name, address, "our address")
    router = _checksummed(name, cs.router, "router")
    quote_native = cs.quote_token.strip().lower() == NATIVE
    quote = None if quote_native else _checksummed(name, cs.quote_token, "quote_token")
    tokens: list[str] = []
    for given in cs.tokens:
        token = _checksummed(name, given, "token")
        if token == quote:
            raise VenueError(f"chain {name}: token {token} is the quote token itself")
        if token not in tokens:
            tokens.append(token)

    client = EvmClient(cs.rpc_url)
    try:
        try:
            chain_id = await client.chain_id()
        except Exception as exc:
            raise _unusable(name, exc, f"the node at {safe_url(cs.rpc_url)} did not give its chain id",
                            f"the node at {safe_url(cs.rpc_url)} cannot be reached") from None
        if chain_id != cs.chain_id:
            raise VenueError(f"chain {name}: the endpoint is on chain id {chain_id}, not the configured "
                             f"chain_id {cs.chain_id}")
        # All at once, every answer awaited before the client closes (gather would leave the
        # others running after the first failure); the first failure in this order is reported.
        weth, quote_meta, *metas = answers = await asyncio.gather(
            _weth(client, name, router),
            _meta(client, name, quote, "quote token") if quote else _none(),
            *(_meta(client, name, token, "token") for token in tokens), return_exceptions=True)
    finally:
        await client.close()
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer

    if quote_native and weth in tokens:
        raise VenueError(f"chain {name}: token {weth} is the router's WETH, the quote itself")
    quote_symbol = quote_meta[0] if quote_meta else NATIVE
    by_symbol: dict[str, tuple[str, int]] = {}
    for token, (symbol, decimals) in zip(tokens, metas):
        if symbol in RESERVED_KEYS:
            raise VenueError(f"chain {name}: token {token} is called {symbol!r}, the book's name for the "
                             f"{symbol} asset: it cannot be traded here")
        if symbol == quote_symbol:
            raise VenueError(f"chain {name}: token {token} has the quote token's symbol {symbol!r}: "
                             "a signal naming it would be ambiguous")
        if symbol in by_symbol:
            raise VenueError(f"chain {name}: tokens {by_symbol[symbol][0]} and {token} share the symbol "
                             f"{symbol!r}: allow-list one of them")
        by_symbol[symbol] = (token, decimals)
    return EvmMarket(name=name, quote_decimals=quote_meta[1] if quote_meta else 18, native_decimals=18,
                     quote_native=quote_native, quote_address=quote, weth=weth, router=router, tokens=by_symbol,
                     address=ours, chain_id=chain_id, quote_symbol=quote_symbol)


async def _none() -> None:
    return None


async def _weth(client, name: str, router: str) -> str:
    # EvmClient has no WETH() read of its own (yet): the router contract it builds is used here.
    try:
        weth = await client._contract(router, "router").functions.WETH().call()
    except Exception as exc:
        raise _unusable(name, exc, f"router {router} is not a Uniswap V2 router (WETH() failed)") from None
    return _checksummed(name, weth, "the router's WETH")


async def _meta(client, name: str, token: str, what: str) -> tuple[str, int]:
    try:
        symbol, decimals = await client.token_meta(token)
    except Exception as exc:
        raise _unusable(name, exc, f"{what} {token} is not an ERC20 (symbol() or decimals() failed)") from None
    if not isinstance(symbol, str) or not symbol.strip() or not symbol.isprintable():
        raise VenueError(f"chain {name}: {what} {token} has no usable symbol ({symbol!r})")
    if not isinstance(decimals, int) or not 0 <= decimals <= 77:
        raise VenueError(f"chain {name}: {what} {token} reports {decimals!r} decimals")
    return symbol, decimals


def _unusable(name: str, exc: BaseException, problem: str, silent: str = "the node stopped answering") -> VenueError:
    """A node that did not answer is not a contract (or a node) that answered wrong: say which it was
    (VenueUnreachable: the same command may get past it later)."""
    from engine.venues.evm.errors import classify

    said = describe_error(exc)
    if classify(exc).kind == "transport":
        return VenueUnreachable(f"chain {name}: {silent} ({said})")
    return VenueError(f"chain {name}: {problem} ({said})")


def describe_error(exc: BaseException) -> str:
    """An exception in a few words: the node's own words when it answered, on one line."""
    from engine.venues.evm.errors import classify

    return scrub(classify(exc).message) or type(exc).__name__


def _checksummed(name: str, address, what: str) -> str:
    """EIP-55. Mixed case is a checksum and must hold: a mistyped address is refused, not 'fixed'."""
    from eth_utils import is_address, is_checksum_address, to_checksum_address

    text = str(address).strip() if address is not None else ""
    hex_part = text[2:] if text.startswith("0x") else ""
    if not is_address(text) or not (hex_part in (hex_part.lower(), hex_part.upper()) or is_checksum_address(text)):
        raise VenueError(f"chain {name}: {what} {text!r} is not an address (or its checksum is wrong)")
    return to_checksum_address(text)
