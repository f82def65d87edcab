"""The transactions the EVM executor signs, and what a mined one filled. Pure: no node.

Every transaction is a complete EIP-1559 dict built by ABI-encoding the call ourselves, with
every field given by the caller (nonce from the sequencer, gas limit and fees from the fee
rules). web3's build_transaction is avoided on purpose: it estimates gas and may ask the node,
and an estimate can fall short of what the mined swap needs. eth_abi and eth_account are
imported inside the functions (heavy imports, only a live EVM chain needs them).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from engine.core.money import min_out
from engine.venues.evm import abi

if TYPE_CHECKING:
    from engine.venues.evm.client import Receipt

CANCEL_GAS = 21_000  # a plain transfer to ourselves: the least a transaction can use

__all__ = ["CANCEL_GAS", "SwapKind", "approve_tx", "cancel_tx", "decode_fill", "min_out", "sign", "swap_tx"]


class SwapKind(StrEnum):
    """Router02's exact-input swaps: the amount spent is fixed, the amount received bounded below."""

    TOKENS_FOR_TOKENS = "swapExactTokensForTokens"
    ETH_FOR_TOKENS = "swapExactETHForTokens"  # pays amount_in as the transaction's value; path[0] is WETH
    TOKENS_FOR_ETH = "swapExactTokensForETH"  # path[-1] is WETH, unwrapped by the router to `to`


def swap_tx(router: str, kind: SwapKind | str, amount_in: int, min_out: int, path: list[str], to: str,
            deadline: int, *, chain_id: int, nonce: int, gas: int, max_fee: int, tip: int) -> dict:
    """An exact-input Router02 swap of `amount_in` for at least `min_out` along `path`, paid to `to`."""
    kind = SwapKind(kind)
    if len(path) < 2:
        raise ValueError(f"a swap path needs at least two tokens, got {len(path)}")
    _check_amounts(amount_in=amount_in, min_out=min_out, deadline=deadline)
    path = [_address(a) for a in path]
    tail = [min_out, path, _address(to), deadline]
    args = tail if kind is SwapKind.ETH_FOR_TOKENS else [amount_in, *tail]
    value = amount_in if kind is SwapKind.ETH_FOR_TOKENS else 0
    return _tx(router, value, _calldata(abi.ROUTER02, kind.value, args),
               chain_id=chain_id, nonce=nonce, gas=gas, max_fee=max_fee, tip=tip)


def approve_tx(token: str, spender: str, amount: int, *, chain_id: int, nonce: int, gas: int, max_fee: int,
               tip: int) -> dict:
    """ERC20 approve(spender, amount): lets the router pull `amount` of `token` from us."""
    _check_amounts(amount=amount)
    return _tx(token, 0, _calldata(abi.ERC20, "approve", [_address(spender), amount]),
               chain_id=chain_id, nonce=nonce, gas=gas, max_fee=max_fee, tip=tip)


def cancel_tx(address: str, nonce: int, *, chain_id: int, max_fee: int, tip: int, gas: int = CANCEL_GAS) -> dict:
    """A zero-value transfer to ourselves at `nonce`: once mined, nothing else can use that nonce.
    Its fees must outbid what holds the nonce (the fee rules' bump), or the pool refuses it."""
    return _tx(address, 0, "0x", chain_id=chain_id, nonce=nonce, gas=gas, max_fee=max_fee, tip=tip)


def sign(account, tx: dict) -> tuple[str, bytes]:
    """(tx hash 0x-hex, raw signed bytes) for an eth_account LocalAccount. The hash is known
    before anything is sent: the write-ahead record stores both."""
    signed = account.sign_transaction(tx)
    return signed.hash.to_0x_hex(), bytes(signed.raw_transaction)


def decode_fill(receipt: Receipt, our_address: str, path: list[str], *, native: bool = False,
                pair: str | None = None, router: str | None = None) -> int:
    """What the swap along `path` paid us, from its receipt's logs, in path[-1]'s base units.

    A token output is the sum of path[-1]'s Transfer logs to `our_address` (what arrived, not
    what was asked). A native output leaves no log when the router sends the ETH, so it is read
    from the last hop's Swap event: the one `pair` (path[-2]/path[-1]) emitted paying `router`,
    on the WETH side (token0 is the lower address). A reverted swap filled nothing. A successful
    receipt without the expected log raises ValueError: that is a decoding mistake, not a fill of 0.
    """
    if receipt.status != 1:
        return 0
    token_out = _address(path[-1])
    if native:
        if pair is None or router is None:
            raise ValueError("a native output is decoded from the last pair's Swap event: give pair and router")
        pair, router = _address(pair), _address(router)
        weth_is_token0 = int(token_out, 16) < int(_address(path[-2]), 16)
        amounts = [_words(log.data) for log in receipt.logs
                   if log.address == pair and len(log.topics) == 3 and log.topics[0] == abi.SWAP_TOPIC
                   and _topic_address(log.topics[2]) == router and len(log.data) == 4 * 32]
        got = [a[2] if weth_is_token0 else a[3] for a in amounts]  # amount0Out, amount1Out
    else:
        ours = _address(our_address)
        got = [_words(log.data)[0] for log in receipt.logs
               if log.address == token_out and len(log.topics) == 3 and log.topics[0] == abi.TRANSFER_TOPIC
               and _topic_address(log.topics[2]) == ours and len(log.data) == 32]
    if not got:
        raise ValueError(f"receipt {receipt.tx_hash} succeeded but shows no output of {token_out}")
    return sum(got)


def _tx(to: str, value: int, data: str, *, chain_id: int, nonce: int, gas: int, max_fee: int, tip: int) -> dict:
    _check_amounts(chain_id=chain_id, nonce=nonce, gas=gas, max_fee=max_fee, tip=tip, value=value)
    if tip > max_fee:
        raise ValueError(f"tip {tip} above max fee {max_fee}: every node refuses it")
    return {"type": 2, "chainId": chain_id, "nonce": nonce, "to": _address(to), "value": value, "data": data,
            "gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip}


def _calldata(contract_abi: list[dict], name: str, args: list) -> str:
    from eth_abi import encode
    from eth_utils import function_abi_to_4byte_selector

    entry = abi.fragment(contract_abi, name)
    return "0x" + (function_abi_to_4byte_selector(entry) + encode([i["type"] for i in entry["inputs"]], args)).hex()


def _check_amounts(**values: int) -> None:
    for name, value in values.items():
        if type(value) is not int or value < 0:  # bool, float, Decimal: a unit mistake upstream
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _address(address: str) -> str:
    """Checksummed. Mixed case is a checksum and must hold: a mistyped address is refused, not 'fixed'."""
    from eth_utils import is_address, is_checksum_address, to_checksum_address

    hex_part = address[2:] if isinstance(address, str) and address.startswith("0x") else ""
    if not is_address(address) or not (hex_part in (hex_part.lower(), hex_part.upper())
                                       or is_checksum_address(address)):
        raise ValueError(f"not an address (or a bad checksum): {address!r}")
    return to_checksum_address(address)


def _topic_address(topic: str) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address("0x" + topic[-40:])


def _words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 32], "big") for i in range(0, len(data), 32)]
