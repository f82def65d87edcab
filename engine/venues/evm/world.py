"""The live EVM world behind the venue port: each configured chain a port over its own node,
the wall clock as the engine's clock.

Balances on a chain whose quote is its own coin (quote_token = "native"): the chain has
one balance for that coin, while the book keeps "quote" and "native" as two assets, and
reconciliation (engine/core/reconcile.py expected_holdings) compares each asset on its
own. Reporting the coin under both would count it twice (and the openings would deposit it
twice); splitting it needs the book's own split, which the port cannot know. So the coin is
reported once, as "quote" (what positions are paid in and what the opening deposits), and
"native" is 0. Reconciliation then holds when the book's native asset stays 0 on such a
chain, that is when the network fees of a quote-native chain are reserved from and posted
to "quote" (the core's side of the contract).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Iterable

from engine.core.money import from_units
from engine.venues.evm.executor import EvmExecutor
from engine.venues.evm.market import EvmMarket
from engine.venues.port import Opening, VenueError

POLL_S = 0.2


class EvmPort:
    def __init__(self, market: EvmMarket, client, executor: EvmExecutor, gas_reserve: int = 0):
        self.chain = market.name
        self.market = market
        self.client = client
        self.executor = executor
        self.gas_reserve = gas_reserve  # wei set apart for fees at the first start, when the quote is the coin

    def __repr__(self) -> str:
        return f"EvmPort(chain={self.chain!r}, address={self.market.address})"

    async def height(self) -> int:
        return await self.client.block_number()

    async def balances(self) -> dict[str, int]:
        """Our holdings by asset in base units: the quote, the chain's coin, every allow-listed token.
        On a quote-native chain the coin is the quote and "native" is 0 (see the module's docstring)."""
        m, ours = self.market, self.market.address
        symbols = list(m.tokens)
        native, quote, *held = await asyncio.gather(
            self.client.native_balance(ours),
            self.client.token_balance(m.quote_address, ours) if not m.quote_native else _zero(),
            *(self.client.token_balance(m.tokens[s][0], ours) for s in symbols))
        found = {"quote": native, "native": 0} if m.quote_native else {"quote": quote, "native": native}
        return found | dict(zip(symbols, held))

    async def marks(self, tokens: Iterable[str]) -> dict[str, Decimal]:
        """Quote per whole token: what selling one whole token would fetch now (Router02.getAmountsOut,
        the pool's fee and price impact included). A token the router cannot price (no pool, no
        liquidity) has no mark this time; a node that does not answer raises."""
        m = self.market
        wanted = [t for t in dict.fromkeys(tokens) if t in m.tokens]
        answers = await asyncio.gather(
            *(self.client.amounts_out(m.router, 10 ** m.tokens[t][1], [m.tokens[t][0], m.quote_end()])
              for t in wanted), return_exceptions=True)
        prices: dict[str, Decimal] = {}
        for token, answer in zip(wanted, answers):
            if isinstance(answer, BaseException):
                if not _reverted(answer):
                    raise answer
                continue
            if answer[-1] > 0:
                prices[token] = from_units(answer[-1], m.quote_decimals)
        return prices

    async def pending_nonce(self, address: str) -> int | None:
        return await self.client.pending_nonce(address)


def _reverted(exc: BaseException) -> bool:
    """The router answered and refused (web3's ContractLogicError: no pool, no liquidity), as
    opposed to a node that did not answer. Matched by name: web3 stays unimported here."""
    return any(cls.__name__ == "ContractLogicError" for cls in type(exc).__mro__)


async def _zero() -> int:
    return 0


class EvmWorld:
    concurrency = 64  # orders advanced at once: fifty in flight do not wait on each other's round trips

    def __init__(self, ports: dict[str, EvmPort], poll_s: float = POLL_S):
        self.ports = ports
        self.poll_s = poll_s

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    @property
    def height(self) -> int | None:
        return None  # each chain has its own

    def describe(self) -> str:
        chains = ", ".join(f"{name} (chain id {port.market.chain_id}, {port.market.address})"
                           for name, port in sorted(self.ports.items()))
        return f"live EVM: {chains}"

    async def step(self, wake: asyncio.Event | None = None) -> int:
        """Waits one poll interval, or less when `wake` is set: the live loop acts on what the chains,
        signals and timers bring, and a signal line waits for no interval (it is read at once)."""
        if wake is None:
            await asyncio.sleep(self.poll_s)
            return 0
        try:
            await asyncio.wait_for(wake.wait(), self.poll_s)
        except asyncio.TimeoutError:
            pass
        wake.clear()
        return 0

    async def openings(self) -> list[Opening]:
        """Our quote and coin balances on each chain (those above 0), deposited once under
        `opening:<chain>:<asset>`. Tokens already held are not deposited: no position owns them."""
        found = []
        for name, port in sorted(self.ports.items()):
            held = dict(await port.balances())
            if port.market.quote_native:  # one coin: the fee budget is set apart from what positions are paid in
                held["native"] = min(held["quote"], port.gas_reserve)
                held["quote"] -= held["native"]
            for asset in ("quote", "native"):
                if held[asset] > 0:
                    found.append(Opening(name, asset, held[asset], f"opening:{name}:{asset}"))
        return found

    async def close(self) -> None:
        for port in self.ports.values():
            await port.client.close()


async def open_world(settings, home: Path, markets: dict[str, EvmMarket], must_exist: bool = False,
                     poll_s: float = POLL_S) -> EvmWorld:
    """The configured EVM chains, each with its key unlocked (off the event loop: scrypt takes
    ~0.7 s) and checked to be the address its market was read for. `must_exist` changes nothing
    here: the chain id, checked when the market was loaded, is what says it is the same chain."""
    from engine.core.money import to_units
    from engine.settings import DOTENV, read_dotenv
    from engine.venues.evm.client import EvmClient
    from engine.venues.evm.fees import gwei
    from wallet.keystore import DEFAULT_KEYSTORE, password_from_env_or_prompt, resolve, unlock_async

    chains = {name: cs for name, cs in sorted(settings.chains.items()) if cs.kind == "evm"}
    ports: dict[str, EvmPort] = {}
    password = None
    try:
        for name, cs in chains.items():
            market = markets.get(name)
            if market is None:
                raise VenueError(f"chain {name}: its market was not loaded")
            if password is None:  # one password (BOTCTL_EVM_PASSWORD) for every EVM keystore
                password = password_from_env_or_prompt(dotenv=read_dotenv(Path(DOTENV)))
            account = await unlock_async(resolve(home, cs.keystore or DEFAULT_KEYSTORE), password)
            if account.address != market.address:
                raise VenueError(f"chain {name}: the keystore holds {account.address}, but the chain was read "
                                 f"for {market.address}")
            client = EvmClient(cs.rpc_url)
            executor = EvmExecutor(market, client, account, max_gas_price_wei=gwei(settings.max_gas_price_gwei),
                                   confirmations=cs.confirmations)
            executor.stuck_after_ms = cs.replace_after_s * 1000

            if cs.cancel_gas_price_gwei is not None:
                executor.cancel_cap = gwei(cs.cancel_gas_price_gwei)
            ports[name] = EvmPort(market, client, executor, to_units(cs.gas_reserve, market.native_decimals))
    except BaseException:
        for port in ports.values():
            await port.client.close()
        raise
    return EvmWorld(ports, poll_s)
