"""The EVM venue behind the port, on a real anvil with the canonical Uniswap V2: the market read
from the chain, the executor's quote -> sign -> broadcast -> lookup, and the port and world.

Orders are built by hand the way the sequencer hands them out (a nonce and our address on each,
an approve at N right before the swap at N+1); balances are read independently of the code
under test, so a fill is proven by what reached the account, and a fee by the coin it cost.
"""

from __future__ import annotations

import asyncio
import itertools
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal

import pytest

from engine.core.book import Order
from engine.core.money import from_units
from engine.settings import Settings
from engine.venues.evm.executor import EXPIRE_AFTER_BLOCKS, SWAP_GAS, EvmExecutor
from engine.venues.evm.market import load_market
from engine.venues.evm.world import EvmPort, open_world
from engine.venues.port import Accepted, ExecutorError, Rejected, Unknown, VenueError

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

CHAIN = "anvil"
PASSWORD = "tr0ub4dor & 3 (test only)"
CAP_GWEI = 50
GWEI = 10**9
_ids = itertools.count(1)


# --------------------------------------------------------------------------- set-up


@pytest.fixture(scope="module")
def home(tmp_path_factory, anvil_chain):  # noqa: F811
    """A home whose keystore holds the trader's key (a cheap scrypt: tests only)."""
    from wallet.keystore import write_new

    home = tmp_path_factory.mktemp("evm-home")
    key = bytes.fromhex(anvil_chain.uniswap.trader.key[2:])
    assert write_new(home / "keys" / "evm.json", key, PASSWORD, scrypt_n=2**4) == anvil_chain.uniswap.trader.address
    return home


def settings_for(evm_chain, home, *, quote="USDC", tokens=("TKA", "TKB"), confirmations=1,  # noqa: F811
                 chain_id=None, rpc_url=None, router=None) -> Settings:
    chain = evm_chain.uniswap
    return Settings(_env_file=None, home=home, mode="live", max_gas_price_gwei=CAP_GWEI, chains={CHAIN: {
        "kind": "evm", "rpc_url": rpc_url or evm_chain.rpc_url, "chain_id": chain_id or evm_chain.chain_id,
        "router": router or chain.router, "quote_token": "native" if quote == "native" else chain.address(quote),
        "tokens": [chain.address(t) if t in chain.tokens else t for t in tokens], "keystore": "keys/evm.json",
        "confirmations": confirmations}})


@pytest.fixture(autouse=True)
def every_look_up_reads(monkeypatch):
    """These tests change the chain between two look-ups without always mining (a drop, a revert) and
    ask what a read says: every look-up reads. The pacing on new blocks has its own test."""
    monkeypatch.setattr(EvmExecutor, "lookup_every_s", 0)


@pytest.fixture
async def live(evm_chain, home, monkeypatch, tmp_path):  # noqa: F811
    """`world, port = await live(quote=..., tokens=..., confirmations=...)`: opened through the
    product's own path (load_market, then open_world with the password from the environment)."""
    monkeypatch.setenv("BOTCTL_EVM_PASSWORD", PASSWORD)
    monkeypatch.chdir(tmp_path)  # no stray .env
    opened = []

    async def open_(**kw):
        settings = settings_for(evm_chain, home, **kw)
        market = await load_market(CHAIN, settings.chains[CHAIN], evm_chain.uniswap.trader.address)
        world = await open_world(settings, home, {CHAIN: market}, must_exist=False)
        opened.append(world)
        return world, world.ports[CHAIN]

    yield open_
    for world in opened:
        await world.close()


def order(port: EvmPort, intent: str, token: str, amount_in: int, nonce: int) -> Order:
    return Order(next(_ids), intent, CHAIN, token, 0, None, "new", amount_in, nonce, port.market.address, 0, 0)


async def signed(port: EvmPort, o: Order, slippage_bps: int = 50) -> Order:
    """The order as the driver leaves it after RecordSubmission: its signed bytes stored."""
    ex = port.executor
    if o.intent == "approve":
        s = await ex.sign_approve(o)
    elif o.intent == "noop":
        s = await ex.sign_noop(o)
    else:
        s = await ex.sign(o, await ex.quote(o), slippage_bps)
    assert s.expiry is None  # an EVM transaction is bound by its nonce, not by a height
    return replace(o, state="signed", tx_id=s.tx_id, raw=s.raw, min_out=s.min_out)


async def sent(port: EvmPort, o: Order, pooled: bool = False) -> Order:
    """Broadcast, and (unless `pooled`: automine off) wait until it is mined: anvil's automine answers
    the send before the block holding it is sealed."""
    result = await port.executor.broadcast(o)
    assert result == Accepted(o.tx_id), result
    for _ in range(500):
        if pooled or await port.client.receipt(o.tx_id) is not None:
            return replace(o, state="submitted")
        await asyncio.sleep(0.01)
    raise AssertionError(f"{o.tx_id} was not mined")


def holdings(evm_chain, *symbols: str) -> dict[str, int]:  # noqa: F811
    """The trader's balances read straight from the node, not through the code under test."""
    chain = evm_chain.uniswap
    who = chain.trader.address[2:].lower().rjust(64, "0")
    found = {"ETH": int(evm_chain.rpc("eth_getBalance", [chain.trader.address, "latest"]), 16)}
    for symbol in symbols:
        data = "0x70a08231" + who  # balanceOf(address)
        found[symbol] = int(evm_chain.rpc("eth_call", [{"to": chain.address(symbol), "data": data}, "latest"]), 16)
    return found


def nonce_of(evm_chain, tag: str = "pending") -> int:  # noqa: F811
    return int(evm_chain.rpc("eth_getTransactionCount", [evm_chain.uniswap.trader.address, tag]), 16)


def router_out(evm_chain, amount_in: int, *path: str) -> int:  # noqa: F811
    from web3 import Web3

    chain = evm_chain.uniswap
    router = Web3(Web3.HTTPProvider(evm_chain.rpc_url)).eth.contract(address=chain.router, abi=chain.router_abi)
    return router.functions.getAmountsOut(amount_in, [chain.address(s) for s in path]).call()[-1]


@contextmanager
def next_base_fee(evm_chain, wei: int):  # noqa: F811
    """The next block's base fee pinned to `wei`, and put back after: anvil keeps the pin across a
    snapshot revert, and the worker's later tests share this node."""
    was = int(evm_chain.rpc("eth_getBlockByNumber", ["pending", False])["baseFeePerGas"], 16)
    evm_chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(wei)])
    try:
        yield
    finally:
        evm_chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(was)])


def change(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


# --------------------------------------------------------------------------- swaps


async def test_an_approve_then_an_entry_fill_what_reached_the_account(evm_chain, live):  # noqa: F811
    world, port = await live()
    assert port.market.policy().approves("quote") and port.market.policy().tokens == {"TKA": 18, "TKB": 18}
    ex, amount = port.executor, 1_000 * 10**6
    n = nonce_of(evm_chain)
    before = holdings(evm_chain, "USDC", "TKA")
    # Both are signed before either is sent: the swap's gas is never estimated, so no allowance is needed yet.
    approve = await signed(port, order(port, "approve", "quote", amount, n))
    entry = await signed(port, order(port, "entry", "TKA", amount, n + 1))
    assert entry.min_out == router_out(evm_chain, amount, "USDC", "TKA") * 9950 // 10_000

    approve, entry = await sent(port, approve), await sent(port, entry)
    a, e = await ex.lookup(approve), await ex.lookup(entry)
    moved = change(before, holdings(evm_chain, "USDC", "TKA"))

    assert a.status == "filled" and a.amount_out == 0 and a.network_fee > 0
    assert e.status == "filled" and e.amount_in == amount and e.fee == 0
    assert moved == {"USDC": -amount, "TKA": e.amount_out, "ETH": -(a.network_fee + e.network_fee)}
    assert e.amount_out >= entry.min_out
    assert await ex.client.allowance(port.market.quote_address, port.market.address, port.market.router) == 0


async def test_an_approve_then_an_exit_sell_the_token_for_the_quote(evm_chain, live):  # noqa: F811
    world, port = await live()
    ex, amount = port.executor, 300 * 10**18
    n = nonce_of(evm_chain)
    before = holdings(evm_chain, "USDC", "TKA")
    approve = await sent(port, await signed(port, order(port, "approve", "TKA", amount, n)))
    exit_ = await sent(port, await signed(port, order(port, "exit", "TKA", amount, n + 1)))
    a, x = await ex.lookup(approve), await ex.lookup(exit_)
    assert a.status == x.status == "filled"
    assert 590 * 10**6 < x.amount_out < 600 * 10**6  # 1 TKA = 2 USDC, less the pool's fee
    assert change(before, holdings(evm_chain, "USDC", "TKA")) == {
        "TKA": -amount, "USDC": x.amount_out, "ETH": -(a.network_fee + x.network_fee)}


async def test_a_swap_whose_price_moved_past_its_slippage_fails_on_chain_and_costs_its_gas(evm_chain, live):  # noqa: F811,E501
    world, port = await live()
    ex, amount = port.executor, 20_000 * 10**6
    n = nonce_of(evm_chain)
    before = holdings(evm_chain, "USDC", "TKB")
    # Both swaps are quoted before either is sent: the first moves the pool, the second asked for
    # its quote exactly (slippage 0) and now gets less.
    approve = await signed(port, order(port, "approve", "quote", 2 * amount, n))
    first = await signed(port, order(port, "entry", "TKB", amount, n + 1), slippage_bps=0)
    second = await signed(port, order(port, "entry", "TKB", amount, n + 2), slippage_bps=0)
    for o in (approve, first, second):
        await sent(port, o)
    outcomes = [await ex.lookup(o) for o in (approve, first, second)]

    assert [o.status for o in outcomes] == ["filled", "filled", "failed"]
    failed = outcomes[2]
    assert failed.network_fee > 0 and failed.amount_out == 0 and failed.reason.startswith("reverted on chain")
    assert change(before, holdings(evm_chain, "USDC", "TKB")) == {
        "USDC": -amount, "TKB": outcomes[1].amount_out, "ETH": -sum(o.network_fee for o in outcomes)}
    assert nonce_of(evm_chain, "latest") == n + 3  # the reverted swap spent its nonce


async def test_a_base_fee_above_the_cap_signs_nothing(evm_chain, live):  # noqa: F811
    world, port = await live()
    ex, n = port.executor, nonce_of(evm_chain)
    assert await ex.fee_reserve() == SWAP_GAS * CAP_GWEI * GWEI
    with next_base_fee(evm_chain, CAP_GWEI * GWEI + GWEI // 2):
        for o in (order(port, "entry", "TKA", 10**6, n), order(port, "approve", "quote", 10**6, n),
                  order(port, "noop", "", 0, n)):
            with pytest.raises(ExecutorError) as raised:
                await signed(port, o)
            assert str(raised.value) == f"{CHAIN}: next block's base fee 50.5 gwei is above the cap 50 gwei"
    assert nonce_of(evm_chain) == n and evm_chain.rpc("txpool_status")["pending"] == "0x0"


async def test_orders_that_cannot_be_signed_are_refused_before_signing(evm_chain, live):  # noqa: F811
    world, port = await live()
    ex, n = port.executor, nonce_of(evm_chain)
    with pytest.raises(ExecutorError, match="not a token allow-listed"):
        await ex.quote(order(port, "entry", "NOPE", 10**6, n))
    with pytest.raises(ExecutorError, match="no nonce"):
        await ex.sign_noop(replace(order(port, "noop", "", 0, n), nonce=None))
    with pytest.raises(ExecutorError, match="not our address"):
        await ex.sign_noop(replace(order(port, "noop", "", 0, n), address="0x" + "12" * 20))
    with pytest.raises(ExecutorError, match="no quote"):  # amount x 997 overflows: the router reverts
        await ex.quote(order(port, "exit", "TKA", 2**250, n))


# --------------------------------------------------------------------------- sending and looking up


async def test_sending_twice_is_never_a_rejection_and_a_refusal_at_admission_is(evm_chain, live):  # noqa: F811
    world, port = await live()
    ex, n = port.executor, nonce_of(evm_chain)
    evm_chain.rpc("evm_setAutomine", [False])
    noop = await signed(port, order(port, "noop", "", 0, n))
    assert await ex.broadcast(noop) == Accepted(noop.tx_id)
    assert await ex.broadcast(noop) == Accepted(noop.tx_id)  # "already imported": the pool holds it
    evm_chain.rpc("evm_mine")
    again = await ex.broadcast(noop)  # mined now: "nonce too low" is for the lookup to settle, never a refusal
    assert isinstance(again, Unknown) and "nonce" in again.reason, again
    assert (await ex.lookup(noop)).status == "filled"

    # The coin's whole balance as a swap's value: the node refuses it at admission (definite).
    world2, native = await live(quote="native", tokens=("TKA",))
    broke = await signed(native, order(native, "entry", "TKA", holdings(evm_chain)["ETH"], n + 1))
    refused = await native.executor.broadcast(broke)
    assert isinstance(refused, Rejected) and "funds" in refused.reason.lower(), refused


async def test_pooled_is_pending_dropped_is_missing_and_a_nonce_taken_by_another_is_expired(evm_chain, live):  # noqa: F811,E501
    world, port = await live()
    ex, n = port.executor, nonce_of(evm_chain)
    evm_chain.rpc("evm_setAutomine", [False])
    noop = await sent(port, await signed(port, order(port, "noop", "", 0, n)), pooled=True)
    assert (await ex.lookup(noop)).status == "pending"

    evm_chain.rpc("anvil_dropTransaction", [noop.tx_id])
    assert (await ex.lookup(noop)).status == "missing"

    other = await sent(port, await signed(port, order(port, "approve", "TKA", 1, n)), pooled=True)  # same nonce
    evm_chain.rpc("evm_mine")
    # our receipt may only lag the nonce count (a load-balanced endpoint): not another's yet
    assert (await ex.lookup(noop)).status == "pending"
    for _ in range(EXPIRE_AFTER_BLOCKS):
        evm_chain.rpc("evm_mine")
    gone = await ex.lookup(noop)
    assert (gone.status, gone.reason) == ("expired", "nonce taken by another transaction")
    assert (await ex.lookup(other)).status == "filled"


async def test_a_pending_transaction_is_read_again_on_a_new_block_not_at_every_look_up(evm_chain, live):  # noqa: F811
    """A receipt can only come with a block: while the node mines nothing, the engine's look-ups of a
    pooled transaction (five a second each) cost one head read, not three reads an order; a new
    block, or LOOKUP_EVERY_S without one (a drop, a reorg back to the same height), reads it again."""
    from engine.venues.evm.executor import HEAD_FRESH_S

    world, port = await live()
    ex, n = port.executor, nonce_of(evm_chain)
    ex.lookup_every_s = 60
    reads = []
    receipt = port.client.receipt

    async def counted(tx_hash):
        reads.append(tx_hash)
        return await receipt(tx_hash)

    port.client.receipt = counted
    evm_chain.rpc("evm_setAutomine", [False])
    noop = await sent(port, await signed(port, order(port, "noop", "", 0, n)), pooled=True)
    assert (await ex.lookup(noop)).status == "pending" and len(reads) == 1
    for _ in range(5):
        assert (await ex.lookup(noop)).status == "pending"
    assert len(reads) == 1, "read again with no new block"
    evm_chain.rpc("evm_mine")
    await asyncio.sleep(HEAD_FRESH_S * 1.5)  # the head read is shared for one engine step
    assert (await ex.lookup(noop)).status == "filled" and len(reads) == 2

    # A node that will not say its head (a per-method limit, a backend that fails it) still settles
    # what it has receipts for: the look-up reads the transaction itself.
    head_fails = port.client.block_number

    async def refused():
        raise OSError("eth_blockNumber refused")

    port.client.block_number = refused
    third = await sent(port, await signed(port, order(port, "noop", "", 0, n + 1)), pooled=True)
    assert (await ex.lookup(third)).status == "pending"
    evm_chain.rpc("evm_mine")
    await asyncio.sleep(HEAD_FRESH_S * 1.5)
    assert (await ex.lookup(third)).status == "filled"
    port.client.block_number = head_fails
    n += 1

    ex.lookup_every_s = 0.3
    other = await sent(port, await signed(port, order(port, "noop", "", 0, n + 1)), pooled=True)
    evm_chain.rpc("anvil_dropTransaction", [other.tx_id])
    assert (await ex.lookup(other)).status == "missing"  # a first read is never skipped
    other = await sent(port, other, pooled=True)
    assert (await ex.lookup(other)).status == "pending"
    evm_chain.rpc("anvil_dropTransaction", [other.tx_id])
    await asyncio.sleep(0.4)
    assert (await ex.lookup(other)).status == "missing", "no block for a while: read again all the same"


async def test_a_receipt_is_final_only_after_the_configured_confirmations(evm_chain, live):  # noqa: F811
    world, port = await live(confirmations=2)
    ex, n = port.executor, nonce_of(evm_chain)
    noop = await sent(port, await signed(port, order(port, "noop", "", 0, n)))  # automine: in the head block
    assert (await ex.lookup(noop)).status == "pending"
    evm_chain.rpc("evm_mine")
    done = await ex.lookup(noop)
    assert done.status == "filled" and done.network_fee > 0 and done.amount_out == 0

    # A receipt whose block is replaced before it is final was never a fill: the lookup says so.
    snapshot = evm_chain.rpc("evm_snapshot")
    late = await sent(port, await signed(port, order(port, "noop", "", 0, n + 1)))
    assert (await ex.lookup(late)).status == "pending"
    assert evm_chain.rpc("evm_revert", [snapshot]) is True
    assert (await ex.lookup(late)).status == "missing"

    from eth_account import Account

    at_once = EvmExecutor(port.market, port.client, Account.from_key(evm_chain.uniswap.trader.key),
                          max_gas_price_wei=CAP_GWEI * GWEI, confirmations=0)
    other = await sent(port, await signed(port, order(port, "noop", "", 0, n + 1)))
    assert (await at_once.lookup(other)).status == "filled"


async def test_a_native_quote_enters_and_exits_through_weth(evm_chain, live):  # noqa: F811
    world, port = await live(quote="native", tokens=("TKA",))
    ex = port.executor
    assert port.market.quote_native and port.market.quote_decimals == 18
    assert not port.market.policy().approves("quote") and port.market.policy().approves("TKA")
    n = nonce_of(evm_chain)
    before = holdings(evm_chain, "TKA")
    entry = await sent(port, await signed(port, order(port, "entry", "TKA", 10**18, n)))  # no approve for the coin
    e = await ex.lookup(entry)
    assert e.status == "filled" and 1_900 * 10**18 < e.amount_out < 2_000 * 10**18  # 1 ETH = 2,000 TKA
    assert change(before, holdings(evm_chain, "TKA")) == {"TKA": e.amount_out, "ETH": -(10**18 + e.network_fee)}

    before = holdings(evm_chain, "TKA")
    approve = await sent(port, await signed(port, order(port, "approve", "TKA", e.amount_out, n + 1)))
    exit_ = await sent(port, await signed(port, order(port, "exit", "TKA", e.amount_out, n + 2)))
    a, x = await ex.lookup(approve), await ex.lookup(exit_)
    assert a.status == x.status == "filled" and 98 * 10**16 < x.amount_out < 10**18
    assert change(before, holdings(evm_chain, "TKA")) == {
        "TKA": -e.amount_out, "ETH": x.amount_out - a.network_fee - x.network_fee}
    with pytest.raises(ExecutorError, match="nothing to approve"):
        await ex.sign_approve(order(port, "approve", "quote", 1, n + 3))


class Between:
    """A client whose answers are scripted: what a node says when our transaction is mined in the
    middle of a lookup, or when one read of it fails."""

    def __init__(self, receipts, latest_nonce, head=100):
        self.receipts = list(receipts)
        self.nonce, self.head = latest_nonce, head

    async def receipt(self, tx_hash):
        answer = self.receipts.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def latest_nonce(self, address):
        if isinstance(self.nonce, Exception):
            raise self.nonce
        return self.nonce

    async def transaction_known(self, tx_hash):
        return False

    async def block_number(self):
        return self.head


async def test_expired_needs_every_read_and_our_own_late_receipt_wins(evm_chain, live):  # noqa: F811
    from engine.venues.evm.client import Receipt

    world, port = await live()
    noop = replace(order(port, "noop", "", 0, 7), state="submitted", tx_id="0x" + "ab" * 32, raw=b"x")
    mined = Receipt(noop.tx_id, 1, 100, "0x" + "cd" * 32, 21_000, 2 * GWEI, ())

    def executor(client):
        return EvmExecutor(port.market, client, port.executor._account, max_gas_price_wei=CAP_GWEI * GWEI)

    # No receipt, then the nonce is beyond ours because OUR transaction was mined in between: a fill.
    assert (await executor(Between([None, mined], latest_nonce=8)).lookup(noop)).status == "filled"
    lagging = Between([None, None] * 3, latest_nonce=8)  # no receipt of ours, the nonce taken
    ex = executor(lagging)
    assert (await ex.lookup(noop)).status == "pending"  # a receipt may lag the nonce count
    lagging.head += EXPIRE_AFTER_BLOCKS - 1
    assert (await ex.lookup(noop)).status == "pending"
    lagging.head += 1
    assert (await ex.lookup(noop)).status == "expired"
    with pytest.raises(TimeoutError):  # a read that failed proves nothing: the driver keeps it unknown
        await executor(Between([None], latest_nonce=TimeoutError())).lookup(noop)
    with pytest.raises(TimeoutError):
        await executor(Between([None, TimeoutError()], latest_nonce=8)).lookup(noop)


@pytest.fixture
async def gateway():
    """An endpoint that answers every request with an error quoting the URL it was asked for,
    API key included, over two lines (what a misconfigured proxy in front of a node does)."""
    from aiohttp import web

    async def page(request):
        ask = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": ask["id"], "error": {
            "code": -32000, "message": f"upstream failed for {request.url}\nretry later"}})

    app = web.Application()
    app.router.add_post("/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v2/SECRET-API-KEY"
    await runner.cleanup()


async def test_what_a_node_says_reaches_a_message_on_one_line_without_the_endpoint_key(evm_chain, home, live,  # noqa: F811,E501
                                                                                      gateway):
    from engine.venues.evm.client import EvmClient

    settings = settings_for(evm_chain, home, rpc_url=gateway)
    with pytest.raises(VenueError) as raised:
        await load_market(CHAIN, settings.chains[CHAIN], evm_chain.uniswap.trader.address)
    said = [str(raised.value)]

    world, port = await live()
    client = EvmClient(gateway)
    try:
        ex = EvmExecutor(port.market, client, port.executor._account, max_gas_price_wei=CAP_GWEI * GWEI)
        noop = await signed(port, order(port, "noop", "", 0, nonce_of(evm_chain)))
        sent_ = await ex.broadcast(noop)
        assert isinstance(sent_, Unknown), sent_  # an answer that is no answer: the bytes may have gone
        said.append(sent_.reason)
        with pytest.raises(ExecutorError) as no_quote:
            await ex.quote(order(port, "entry", "TKA", 10**6, 0))
        said.append(str(no_quote.value))
    finally:
        await client.close()
    for text in said:
        assert "upstream failed for http://127.0.0.1:" in text and "\n" not in text, text
        assert "SECRET-API-KEY" not in text, text


class Pricing:
    """A router that cannot price TKB (it reverts) and, when asked, a node that times out on TKA."""

    def __init__(self, market, timeout: bool):
        self.market, self.timeout = market, timeout

    async def amounts_out(self, router, amount_in, path):
        from web3.exceptions import ContractLogicError

        if path[0] == self.market.tokens["TKB"][0]:
            raise ContractLogicError("execution reverted: UniswapV2Library: INSUFFICIENT_LIQUIDITY")
        if self.timeout:
            raise TimeoutError()
        return [amount_in, 2 * 10**6]


async def test_a_token_the_router_cannot_price_has_no_mark_but_a_silent_node_is_an_error(evm_chain, live):  # noqa: F811,E501
    world, port = await live()
    assert await EvmPort(port.market, Pricing(port.market, False), port.executor).marks(["TKA", "TKB"]) == {
        "TKA": Decimal(2)}
    with pytest.raises(TimeoutError):
        await EvmPort(port.market, Pricing(port.market, True), port.executor).marks(["TKA", "TKB"])


# --------------------------------------------------------------------------- port and world


async def test_the_port_reports_balances_marks_and_nonces_and_the_world_its_openings(evm_chain, live):  # noqa: F811
    world, port = await live()
    chain = evm_chain.uniswap
    held = holdings(evm_chain, "USDC", "TKA", "TKB")
    assert await port.balances() == {"quote": held["USDC"], "native": held["ETH"], "TKA": held["TKA"],
                                     "TKB": held["TKB"]}
    marks = await port.marks(["TKA", "TKB", "NOPE"])
    assert marks == {"TKA": from_units(router_out(evm_chain, 10**18, "TKA", "USDC"), 6),
                     "TKB": from_units(router_out(evm_chain, 10**18, "TKB", "USDC"), 6)}
    assert Decimal("1.99") < marks["TKA"] < 2 and all(type(p) is Decimal for p in marks.values())
    assert await port.height() == int(evm_chain.rpc("eth_blockNumber"), 16)
    assert await port.pending_nonce(chain.trader.address) == nonce_of(evm_chain)
    assert world.height is None and abs(world.now_ms() - __import__("time").time() * 1000) < 5_000
    assert [(o.asset, o.amount, o.ref) for o in await world.openings()] == [
        ("quote", held["USDC"], f"opening:{CHAIN}:quote"), ("native", held["ETH"], f"opening:{CHAIN}:native")]
    assert await world.step() == 0 and CHAIN in world.describe()

    # The coin as the quote: reported once, as the quote (never twice: the opening would deposit it
    # twice); the opening sets the fee budget (gas_reserve, 0.05 by default) apart from the quote.
    world, native = await live(quote="native", tokens=("TKA",))
    assert await native.balances() == {"quote": held["ETH"], "native": 0, "TKA": held["TKA"]}
    budget = 5 * 10**16
    assert [(o.asset, o.amount) for o in await world.openings()] == [("quote", held["ETH"] - budget),
                                                                      ("native", budget)]
    assert await native.marks(["TKA"]) == {"TKA": from_units(router_out(evm_chain, 10**18, "TKA", "WETH"), 18)}


async def test_signals_name_a_token_by_symbol_or_address_in_any_case(evm_chain, live):  # noqa: F811
    world, port = await live()
    m, tka = port.market, evm_chain.uniswap.address("TKA")
    assert [m.resolve(t) for t in ("TKA", tka, tka.lower(), tka.upper().replace("0X", "0x"), "tka", "USDC", "x")] \
        == ["TKA", "TKA", "TKA", "TKA", "TKA", None, None]


# --------------------------------------------------------------------------- refusals at start


async def test_a_chain_that_cannot_be_used_is_refused_in_one_line(evm_chain, home, live):  # noqa: F811
    chain, trader = evm_chain.uniswap, evm_chain.uniswap.trader.address

    async def refused(**kw) -> str:
        settings = settings_for(evm_chain, home, **kw)
        with pytest.raises(VenueError) as raised:
            await load_market(CHAIN, settings.chains[CHAIN], trader)
        message = str(raised.value)
        assert "\n" not in message and message.startswith(f"chain {CHAIN}: ")
        return message

    assert await refused(chain_id=8453) == \
        f"chain {CHAIN}: the endpoint is on chain id {evm_chain.chain_id}, not the configured chain_id 8453"
    down = await refused(rpc_url="http://127.0.0.1:1/v2/SECRET-API-KEY")
    assert "cannot be reached" in down and "SECRET-API-KEY" not in down and "http://127.0.0.1:1/…" in down
    assert "not a Uniswap V2 router" in await refused(router=chain.address("USDC"))
    assert "is not an ERC20" in await refused(tokens=("TKA", trader))
    assert "is the quote token itself" in await refused(tokens=("USDC",))
    assert "is not an address" in await refused(tokens=("0x" + "aB" * 20,))

    twin = _deploy_token(evm_chain, "TKA")
    assert "share the symbol 'TKA'" in await refused(tokens=("TKA", twin))

    # The keystore holds the trader; a market read for another address is not its chain.
    settings = settings_for(evm_chain, home)
    market = await load_market(CHAIN, settings.chains[CHAIN], chain.deployer.address)
    with pytest.raises(VenueError, match="the keystore holds"):
        await open_world(settings, home, {CHAIN: market}, must_exist=False)


def _deploy_token(evm_chain, symbol: str) -> str:  # noqa: F811
    from web3 import Web3

    from chains.evm.uniswap import compile_erc20

    w3 = Web3(Web3.HTTPProvider(evm_chain.rpc_url))
    erc20_abi, code = compile_erc20()
    deployer = evm_chain.uniswap.deployer.address
    tx = w3.eth.contract(abi=erc20_abi, bytecode=code).constructor("Twin", symbol, 18).transact({"from": deployer})
    return w3.eth.wait_for_transaction_receipt(tx, timeout=10)["contractAddress"]


async def test_neither_the_password_nor_the_key_appears_in_any_message(evm_chain, home, live, monkeypatch):  # noqa: F811,E501
    from wallet.keystore import KeystoreError

    key = evm_chain.uniswap.trader.key[2:].lower()
    world, port = await live()
    said = [repr(port.executor), str(port.executor), repr(port), world.describe()]
    with next_base_fee(evm_chain, CAP_GWEI * GWEI * 2), pytest.raises(ExecutorError) as raised:
        await signed(port, order(port, "noop", "", 0, nonce_of(evm_chain)))
    said.append(str(raised.value))

    monkeypatch.setenv("BOTCTL_EVM_PASSWORD", PASSWORD + "x")
    settings = settings_for(evm_chain, home)
    market = await load_market(CHAIN, settings.chains[CHAIN], evm_chain.uniswap.trader.address)
    with pytest.raises(KeystoreError) as wrong:
        await open_world(settings, home, {CHAIN: market}, must_exist=False)
    said.append(str(wrong.value))
    assert "wrong password" in said[-1]
    for text in said:
        assert key not in text.lower() and PASSWORD not in text, text


def test_the_venue_modules_import_neither_web3_nor_eth_account():
    """web3 and eth_account cost over a second to import: only a live EVM chain may pay it."""
    import subprocess
    import sys

    code = ("import sys, engine.venues.evm.world, engine.venues.evm.market, engine.venues.evm.executor; "
            "print(sorted(m for m in ('web3', 'eth_account') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"

