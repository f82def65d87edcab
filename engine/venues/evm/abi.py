"""The few ABI fragments the EVM venue speaks, as plain data.

Written out here because the product cannot read the npm build artifacts at run time; the
tests compare every fragment with the artifact entry of the same name (@uniswap/v2-core 1.0.1,
@uniswap/v2-periphery 1.1.0-beta.0), so a typo here fails there rather than on mainnet.
The event topics are constants for the same reason the fragments are: decoding a receipt
must not need web3, and the tests check them against keccak of the signatures.
"""

from __future__ import annotations


def _fn(name: str, inputs: list[tuple[str, str]], outputs: list[str], mutability: str) -> dict:
    return {"type": "function", "name": name, "stateMutability": mutability,
            "inputs": [{"name": n, "type": t} for n, t in inputs],
            "outputs": [{"name": n, "type": t} for n, t in zip(_OUTPUT_NAMES.get(name, [""] * len(outputs)), outputs)]}


def _event(name: str, inputs: list[tuple[str, str, bool]]) -> dict:
    return {"type": "event", "name": name, "anonymous": False,
            "inputs": [{"name": n, "type": t, "indexed": i} for n, t, i in inputs]}


_OUTPUT_NAMES = {name: ["amounts"] for name in (
    "getAmountsOut", "swapExactTokensForTokens", "swapExactETHForTokens", "swapExactTokensForETH")}

_SWAP_TAIL = [("amountOutMin", "uint256"), ("path", "address[]"), ("to", "address"), ("deadline", "uint256")]

ERC20 = [
    _fn("balanceOf", [("owner", "address")], ["uint256"], "view"),
    _fn("decimals", [], ["uint8"], "view"),
    _fn("symbol", [], ["string"], "view"),
    _fn("allowance", [("owner", "address"), ("spender", "address")], ["uint256"], "view"),
    _fn("approve", [("spender", "address"), ("value", "uint256")], ["bool"], "nonpayable"),
    _event("Transfer", [("from", "address", True), ("to", "address", True), ("value", "uint256", False)]),
]

ROUTER02 = [
    _fn("getAmountsOut", [("amountIn", "uint256"), ("path", "address[]")], ["uint256[]"], "view"),
    _fn("swapExactTokensForTokens", [("amountIn", "uint256"), *_SWAP_TAIL], ["uint256[]"], "nonpayable"),
    _fn("swapExactETHForTokens", _SWAP_TAIL, ["uint256[]"], "payable"),
    _fn("swapExactTokensForETH", [("amountIn", "uint256"), *_SWAP_TAIL], ["uint256[]"], "nonpayable"),
    _fn("WETH", [], ["address"], "view"),
    _fn("factory", [], ["address"], "view"),
]

PAIR = [
    _event("Swap", [("sender", "address", True), ("amount0In", "uint256", False), ("amount1In", "uint256", False),
                    ("amount0Out", "uint256", False), ("amount1Out", "uint256", False), ("to", "address", True)]),
]

# keccak256 of the events' canonical signatures (the first topic of their logs):
# Transfer(address,address,uint256) and Swap(address,uint256,uint256,uint256,uint256,address).
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
SWAP_TOPIC = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"


def fragment(abi: list[dict], name: str) -> dict:
    """The entry called `name` (each name appears once here: no overloads)."""
    return next(entry for entry in abi if entry["name"] == name)
