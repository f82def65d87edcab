"""The EVM chain client and the Router02 transactions, on a real anvil with the canonical Uniswap V2.

What the executor will lean on: the client reports what the node reports; a quote is what the
swap then fills and the fill decoded from the receipt is what reached our balance (tokens from
Transfer logs, ETH from the pair's Swap event, gas from the receipt); a swap that reverts is a
receipt with status 0 that cost exactly its gas; no receipt while a transaction is pooled; a
replaced block shows as a changed block hash.
"""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction

import pytest

from engine.venues.evm import abi
from engine.venues.evm.client import EvmClient, Receipt, decode_symbol
from engine.venues.evm.swaps import SwapKind, approve_tx, cancel_tx, decode_fill, min_out, sign, swap_tx

from chains.evm.anvil import HERE
from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

SWAP_GAS, APPROVE_GAS = 250_000, 100_000  # explicit limits, well above use: never an estimate
UNKNOWN_HASH = "0x" + "ab" * 32


@pytest.fixture
async def client(evm_chain):  # noqa: F811
    c = EvmClient(evm_chain.rpc_url, timeout_s=10)
    yield c
    await c.close()


@pytest.fixture
def trader(evm_chain):  # noqa: F811
    from eth_account import Account

    return Account.from_key(evm_chain.uniswap.trader.key)


async def envelope(client: EvmClient, address: str, gas: int, nonce: int | None = None) -> dict:
    base_fee, tip, chain_id, pending = await asyncio.gather(
        client.next_base_fee(), client.suggested_tip(), client.chain_id(), client.pending_nonce(address))
    return {"chain_id": chain_id, "nonce": pending if nonce is None else nonce, "gas": gas,
            "max_fee": 2 * base_fee + tip, "tip": tip}


def _fees(env: dict) -> dict:
    """A cancellation's arguments from an envelope (its gas is the plain transfer's)."""
    return {"nonce": env["nonce"], "chain_id": env["chain_id"], "max_fee": env["max_fee"], "tip": env["tip"]}


async def mined(client: EvmClient, tx_hash: str) -> Receipt:
    for _ in range(500):
        if (receipt := await client.receipt(tx_hash)) is not None:
            return receipt
        await asyncio.sleep(0.01)
    raise AssertionError(f"{tx_hash} not mined")


async def send(client: EvmClient, account, tx: dict) -> Receipt:
    tx_hash, raw = sign(account, tx)
    assert await client.send_raw(raw) == tx_hash
    receipt = await mined(client, tx_hash)
    assert receipt.tx_hash == tx_hash
    return receipt


async def approve(client, account, token: str, spender: str, amount: int) -> Receipt:
    receipt = await send(client, account, approve_tx(token, spender, amount,
                                                     **await envelope(client, account.address, APPROVE_GAS)))
    assert receipt.status == 1
    return receipt


async def deadline(evm_chain) -> int:  # noqa: F811
    return int(evm_chain.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 600


def _shape(entry: dict, names: bool = True) -> dict:
    """What an ABI entry means on the wire (and, with names, to a reader); legacy keys dropped."""
    def params(items):
        return [((p["name"],) if names else ()) + (p["type"], p.get("indexed", False)) for p in items]

    return {"type": entry["type"], "name": entry["name"], "inputs": params(entry["inputs"]),
            "outputs": params(entry.get("outputs", [])), "anonymous": entry.get("anonymous", False),
            "stateMutability": entry.get("stateMutability")}


def test_the_abi_fragments_are_the_published_artifacts(anvil_chain):  # noqa: F811
    from eth_utils import event_abi_to_log_topic

    chain = anvil_chain.uniswap
    ierc20 = json.loads((HERE / "node_modules/@uniswap/v2-core/build/IERC20.json").read_text())["abi"]
    for ours, theirs in ((abi.ERC20, ierc20), (abi.ROUTER02, chain.router_abi), (abi.PAIR, chain.pair_abi)):
        for entry in ours:
            assert [_shape(e) for e in theirs if e.get("name") == entry["name"]] == [_shape(entry)], entry["name"]
    # The deployed test tokens and WETH9 speak the same wire format (their parameter names differ).
    for deployed in (chain.erc20_abi, chain.weth_abi):
        for entry in abi.ERC20:
            if entry["name"] != "decimals" or deployed is chain.erc20_abi:  # WETH9's decimals is a uint8 too
                found = [_shape(e, names=False) for e in deployed if e.get("name") == entry["name"]]
                assert found == [_shape(entry, names=False)], entry["name"]
    assert event_abi_to_log_topic(abi.fragment(abi.ERC20, "Transfer")).hex() == abi.TRANSFER_TOPIC[2:]
    assert event_abi_to_log_topic(abi.fragment(abi.PAIR, "Swap")).hex() == abi.SWAP_TOPIC[2:]


async def test_the_client_reports_what_the_node_reports(evm_chain, client, trader):  # noqa: F811
    chain = evm_chain.uniswap
    usdc = chain.address("USDC")
    assert await client.chain_id() == evm_chain.chain_id == 31337
    assert await client.block_number() == int(evm_chain.rpc("eth_blockNumber"), 16)
    assert await client.next_base_fee() == int(evm_chain.rpc("eth_getBlockByNumber", ["pending", False])
                                               ["baseFeePerGas"], 16)
    assert await client.suggested_tip() == int(evm_chain.rpc("eth_maxPriorityFeePerGas"), 16)
    assert await client.native_balance(trader.address) == int(
        evm_chain.rpc("eth_getBalance", [trader.address, "latest"]), 16)
    assert await client.token_balance(usdc, trader.address.lower()) == 100_000 * 10**6
    assert await client.token_meta(usdc) == ("USDC", 6)
    assert await client.token_meta(chain.weth) == ("WETH", 18)
    assert await client.allowance(usdc, trader.address, chain.router) == 0

    await approve(client, trader, usdc, chain.router, 123)
    assert await client.allowance(usdc, trader.address, chain.router) == 123

    evm_chain.rpc("evm_setAutomine", [False])
    mined_before = await client.latest_nonce(trader.address)
    tx_hash, raw = sign(trader, cancel_tx(trader.address, **_fees(await envelope(client, trader.address, 0))))
    await client.send_raw(raw)
    node = [int(evm_chain.rpc("eth_getTransactionCount", [trader.address, tag]), 16) for tag in ("latest", "pending")]
    assert [await client.latest_nonce(trader.address), await client.pending_nonce(trader.address)] == node
    assert node == [mined_before, mined_before + 1]


async def test_a_quoted_token_swap_fills_the_quote_and_the_receipt_says_so(evm_chain, client, trader):  # noqa: F811
    chain = evm_chain.uniswap
    usdc, tka = chain.address("USDC"), chain.address("TKA")
    amount_in = 1_000 * 10**6
    await approve(client, trader, usdc, chain.router, amount_in)

    quoted = (await client.amounts_out(chain.router, amount_in, [usdc, tka]))[-1]
    assert 490 * 10**18 < quoted < 500 * 10**18  # 1 TKA = 2 USDC, less fee and impact
    before = await asyncio.gather(client.native_balance(trader.address), client.token_balance(usdc, trader.address),
                                  client.token_balance(tka, trader.address))
    tx = swap_tx(chain.router, SwapKind.TOKENS_FOR_TOKENS, amount_in, min_out(quoted, 50), [usdc, tka],
                 trader.address, await deadline(evm_chain), **await envelope(client, trader.address, SWAP_GAS))
    receipt = await send(client, trader, tx)
    after = await asyncio.gather(client.native_balance(trader.address), client.token_balance(usdc, trader.address),
                                 client.token_balance(tka, trader.address))

    assert receipt.status == 1 and receipt.gas_used < SWAP_GAS
    filled = decode_fill(receipt, trader.address, [usdc, tka])
    assert filled == quoted  # automine, nobody else trading: the quote is exact
    assert [a - b for a, b in zip(after, before)] == [-receipt.gas_posted, -amount_in, filled]
    assert receipt.block_hash == await client.block_hash(receipt.block_number)
    with pytest.raises(ValueError, match="no output"):  # the input token's Transfer went to the pair, not to us
        decode_fill(receipt, trader.address, [tka, usdc])


async def test_native_outputs_and_inputs_decode_to_the_balance_change(evm_chain, client, trader):  # noqa: F811
    chain = evm_chain.uniswap
    tka, weth, pair = chain.address("TKA"), chain.weth, chain.pairs[("WETH", "TKA")]
    amount_in = 2_000 * 10**18  # ~1 ETH worth

    await approve(client, trader, tka, chain.router, amount_in)
    quoted = (await client.amounts_out(chain.router, amount_in, [tka, weth]))[-1]
    native_before = await client.native_balance(trader.address)
    receipt = await send(client, trader, swap_tx(
        chain.router, SwapKind.TOKENS_FOR_ETH, amount_in, min_out(quoted, 50), [tka, weth], trader.address,
        await deadline(evm_chain), **await envelope(client, trader.address, SWAP_GAS)))
    native_change = await client.native_balance(trader.address) - native_before
    assert receipt.status == 1
    got = decode_fill(receipt, trader.address, [tka, weth], native=True, pair=pair, router=chain.router)
    assert got == native_change + receipt.gas_posted == quoted
    ours = "0x" + trader.address[2:].lower().rjust(64, "0")
    assert not [log for log in receipt.logs if log.topics[2:3] == (ours,)]  # no log names us: ETH left no trace
    with pytest.raises(ValueError, match="give pair and router"):
        decode_fill(receipt, trader.address, [tka, weth], native=True)

    eth_in = 10**18
    quoted = (await client.amounts_out(chain.router, eth_in, [weth, tka]))[-1]
    before = await asyncio.gather(client.native_balance(trader.address), client.token_balance(tka, trader.address))
    tx = swap_tx(chain.router, SwapKind.ETH_FOR_TOKENS, eth_in, min_out(quoted, 50), [weth, tka], trader.address,
                 await deadline(evm_chain), **await envelope(client, trader.address, SWAP_GAS))
    assert tx["value"] == eth_in
    receipt = await send(client, trader, tx)
    after = await asyncio.gather(client.native_balance(trader.address), client.token_balance(tka, trader.address))
    assert receipt.status == 1
    filled = decode_fill(receipt, trader.address, [weth, tka])
    assert [a - b for a, b in zip(after, before)] == [-eth_in - receipt.gas_posted, filled]
    assert filled == quoted


async def test_a_swap_asking_above_its_quote_is_mined_reverted_and_costs_only_gas(evm_chain, client,  # noqa: F811
                                                                                   trader):
    chain = evm_chain.uniswap
    usdc, tkb = chain.address("USDC"), chain.address("TKB")
    amount_in = 500 * 10**6
    await approve(client, trader, usdc, chain.router, amount_in)
    quoted = (await client.amounts_out(chain.router, amount_in, [usdc, tkb]))[-1]
    before = await asyncio.gather(client.native_balance(trader.address), client.token_balance(usdc, trader.address))
    nonce = await client.pending_nonce(trader.address)

    receipt = await send(client, trader, swap_tx(
        chain.router, SwapKind.TOKENS_FOR_TOKENS, amount_in, quoted + 1, [usdc, tkb], trader.address,
        await deadline(evm_chain), **await envelope(client, trader.address, SWAP_GAS)))
    after = await asyncio.gather(client.native_balance(trader.address), client.token_balance(usdc, trader.address))

    assert receipt.status == 0 and receipt.gas_used < SWAP_GAS  # a revert, not out of gas
    assert [a - b for a, b in zip(after, before)] == [-receipt.gas_posted, 0]
    assert decode_fill(receipt, trader.address, [usdc, tkb]) == 0
    assert await client.latest_nonce(trader.address) == nonce + 1  # its nonce is spent


async def test_no_receipt_while_pooled_and_the_same_bytes_again_raise(evm_chain, client, trader):  # noqa: F811
    assert await client.receipt(UNKNOWN_HASH) is None
    assert await client.transaction_known(UNKNOWN_HASH) is False

    evm_chain.rpc("evm_setAutomine", [False])
    tx_hash, raw = sign(trader, cancel_tx(trader.address, **_fees(await envelope(client, trader.address, 0))))
    assert await client.send_raw(raw) == tx_hash
    assert await client.receipt(tx_hash) is None
    assert await client.transaction_known(tx_hash) is True
    with pytest.raises(Exception) as raised:  # what it means is the errors module's business
        await client.send_raw(raw)
    assert "already" in str(raised.value).lower(), raised.value

    evm_chain.rpc("evm_mine")
    receipt = await client.receipt(tx_hash)
    assert receipt is not None and receipt.status == 1 and receipt.gas_used == 21_000
    assert receipt.logs == ()


async def test_a_replaced_block_shows_as_a_changed_block_hash(evm_chain, client, trader):  # noqa: F811
    height = await client.block_number()
    kept = await client.block_hash(height)
    snapshot = evm_chain.rpc("evm_snapshot")
    evm_chain.rpc("evm_mine")
    first = await client.block_hash(height + 1)
    assert first is not None and first != kept

    assert evm_chain.rpc("evm_revert", [snapshot]) is True
    assert await client.block_hash(height + 1) is None  # above the head now
    receipt = await send(client, trader, cancel_tx(trader.address, **_fees(await envelope(client, trader.address, 0))))
    assert receipt.block_number == height + 1
    assert await client.block_hash(height + 1) == receipt.block_hash != first
    assert await client.block_hash(height) == kept


def test_min_out_rounds_down_to_the_least_we_accept():
    for quoted in (0, 1, 199, 10**18 + 7, 492_537_313_432_835_820_895):
        for bps in (0, 1, 50, 333, 10_000):
            exact = Fraction(quoted * (10_000 - bps), 10_000)
            assert exact - 1 < min_out(quoted, bps) <= exact, (quoted, bps)


def test_the_builders_refuse_what_a_node_would_refuse_or_a_unit_mistake():
    env = {"chain_id": 31337, "nonce": 0, "gas": SWAP_GAS, "max_fee": 10, "tip": 1}
    a, b, me = "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20
    tx = swap_tx(a, "swapExactTokensForTokens", 5, 4, [a, b], me, 10**10, **env)
    assert tx["data"].startswith("0x38ed1739") and tx["value"] == 0 and tx["type"] == 2
    with pytest.raises(ValueError, match="tip"):
        swap_tx(a, SwapKind.TOKENS_FOR_TOKENS, 5, 4, [a, b], me, 10**10, **(env | {"tip": 11}))
    with pytest.raises(ValueError, match="integer"):
        swap_tx(a, SwapKind.TOKENS_FOR_TOKENS, 5.0, 4, [a, b], me, 10**10, **env)
    with pytest.raises(ValueError, match="checksum"):
        approve_tx(a, "0x" + "aB" * 20, 1, **env)
    with pytest.raises(ValueError, match="two tokens"):
        swap_tx(a, SwapKind.TOKENS_FOR_ETH, 5, 4, [a], me, 10**10, **env)
    assert cancel_tx(me, 7, chain_id=1, max_fee=2, tip=1) == {
        "type": 2, "chainId": 1, "nonce": 7, "to": me, "value": 0, "data": "0x", "gas": 21_000,
        "maxFeePerGas": 2, "maxPriorityFeePerGas": 1}
    assert decode_symbol(b"MKR".ljust(32, b"\0")) == "MKR"  # the bytes32 symbols of old tokens
