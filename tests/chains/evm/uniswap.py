"""The canonical Uniswap V2 on a test node, with a 6-decimal "USDC" and two 18-decimal tokens.

WETH9, UniswapV2Factory and UniswapV2Router02 are deployed from the published npm build
artifacts (the bytecode mainnet runs), not recompiled, so the router's hard-coded pair
init code hash holds and the executor meets the same contracts as on a real chain.
The tokens are tests/chains/evm/ERC20.vy, compiled with the `vyper` pip package: the
published artifacts only carry an 18-decimal ERC20, and a quote asset with 6 decimals is
the case that catches unit mistakes.

Setup uses sync web3 and anvil's unlocked dev accounts; what is under test (the executor)
talks to the node through AsyncWeb3 with its own signed transactions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
_V2_CORE = HERE / "node_modules" / "@uniswap" / "v2-core" / "build"
_V2_PERIPHERY = HERE / "node_modules" / "@uniswap" / "v2-periphery" / "build"

# keccak256 of UniswapV2Pair's creation code, hard-coded in Router02's UniswapV2Library.pairFor.
PAIR_INIT_CODE_HASH = "0x96e8ac4277198ff8b6f785478aa9a39f403cb768dd02cbee326c3e7da348845f"

DEPLOYER, TRADER = 0, 1  # indexes into the node's dev accounts
TRADER_FUNDS = {"USDC": 100_000 * 10**6, "TKA": 10_000 * 10**18, "TKB": 10_000 * 10**18}

# (token, amount) pairs of liquidity the deployer adds; prices: 1 TKA = 2 USDC,
# 1 TKB = 0.5 USDC, 1 ETH = 4000 USDC (consistent across the pools, so no arbitrage).
_POOLS = (
    (("USDC", 1_000_000 * 10**6), ("TKA", 500_000 * 10**18)),
    (("USDC", 1_000_000 * 10**6), ("TKB", 2_000_000 * 10**18)),
    (("WETH", 250 * 10**18), ("TKA", 500_000 * 10**18)),
    (("WETH", 250 * 10**18), ("TKB", 2_000_000 * 10**18)),
    (("WETH", 1_000 * 10**18), ("USDC", 4_000_000 * 10**6)),
)
_TOKENS = (("USDC", "USD Coin (test)", 6), ("TKA", "Token A (test)", 18), ("TKB", "Token B (test)", 18))


@dataclass(frozen=True)
class DevAccount:
    address: str  # checksummed
    key: str  # 0x-prefixed private key: a well-known anvil dev key, worthless off the test node


@dataclass(frozen=True)
class UniswapV2:
    """What a test needs to trade on the deployed chain. Addresses are checksummed."""

    chain_id: int
    weth: str
    factory: str
    router: str
    tokens: dict[str, str]  # symbol -> address: "USDC" (6 decimals), "TKA", "TKB" (18)
    decimals: dict[str, int]  # symbol -> decimals, WETH included
    pairs: dict[tuple[str, str], str]  # (symbol, symbol) in _POOLS order -> pair address
    router_abi: list
    factory_abi: list
    pair_abi: list
    erc20_abi: list  # the test tokens' ABI; also fits WETH's ERC20 part
    weth_abi: list
    accounts: tuple[DevAccount, ...]  # the node's dev accounts, in its order

    @property
    def deployer(self) -> DevAccount:
        return self.accounts[DEPLOYER]

    @property
    def trader(self) -> DevAccount:
        """Holds ETH and TRADER_FUNDS of each test token; has approved nothing."""
        return self.accounts[TRADER]

    def address(self, symbol: str) -> str:
        return self.weth if symbol == "WETH" else self.tokens[symbol]


def artifact(path: Path) -> tuple[list, str]:
    data = json.loads(path.read_text())
    bytecode = data.get("bytecode") or data["evm"]["bytecode"]["object"]
    return data["abi"], bytecode if bytecode.startswith("0x") else "0x" + bytecode


def compile_erc20() -> tuple[list, str]:
    """ERC20.vy's ABI and bytecode. Compiling takes ~2 s, so the result is cached in
    .build/ (git-ignored) under the source's and vyper's versions; written atomically,
    since xdist workers may compile at the same time."""
    import vyper

    source = (HERE / "ERC20.vy").read_text()
    tag = hashlib.sha256(f"{vyper.__version__}\n{source}".encode()).hexdigest()[:16]
    cache = HERE / ".build" / f"ERC20-{tag}.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        return cached["abi"], cached["bytecode"]
    out = vyper.compile_code(source, output_formats=["abi", "bytecode"])
    cache.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"abi": out["abi"], "bytecode": out["bytecode"]}, f)
    os.replace(tmp, cache)
    return out["abi"], out["bytecode"]


def deploy(rpc_url: str, keys: tuple[str, ...]) -> UniswapV2:
    """Deploys everything on the node at rpc_url and funds the trader. `keys` are the node's
    dev accounts' private keys (Anvil.keys), in the order of eth_accounts. Works on a node
    started with --no-mining too: automine is switched on for the setup and restored."""
    from eth_account import Account
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    accounts = tuple(DevAccount(Account.from_key(k).address, k) for k in keys)
    if [a.address for a in accounts] != list(w3.eth.accounts)[: len(accounts)] or len(accounts) <= TRADER:
        raise RuntimeError("the keys given are not the node's dev accounts")
    automine = _rpc(w3, "anvil_getAutomine")
    if not automine:
        _rpc(w3, "evm_setAutomine", [True])
    try:
        return _deploy(w3, accounts)
    finally:
        if not automine:
            _rpc(w3, "evm_setAutomine", [False])


def _deploy(w3, accounts: tuple[DevAccount, ...]) -> UniswapV2:
    from web3 import Web3

    deployer, trader = accounts[DEPLOYER].address, accounts[TRADER].address
    chain_id = w3.eth.chain_id

    # Explicit gas and fees: web3 then sends at once instead of estimating and pricing each
    # transaction first (3x fewer requests). Setup only; anvil charges the gas used.
    # Each setup block uses under half its gas target, so the base fee only falls from here.
    base_fee = w3.eth.get_block("pending")["baseFeePerGas"]
    fees = {"gas": 8_000_000, "maxFeePerGas": 2 * base_fee + 10**9, "maxPriorityFeePerGas": 10**9}

    def send(call, value: int = 0, sender: str = deployer):
        tx_hash = call.transact({"from": sender, "value": value, **fees})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.01)
        if receipt["status"] != 1:
            raise RuntimeError(f"setup transaction reverted: {receipt['transactionHash'].to_0x_hex()}")
        return receipt

    def create(abi, bytecode, *args):
        receipt = send(w3.eth.contract(abi=abi, bytecode=bytecode).constructor(*args))
        return w3.eth.contract(address=receipt["contractAddress"], abi=abi)

    weth_abi, weth_code = artifact(_V2_PERIPHERY / "WETH9.json")
    factory_abi, factory_code = artifact(_V2_CORE / "UniswapV2Factory.json")
    router_abi, router_code = artifact(_V2_PERIPHERY / "UniswapV2Router02.json")
    pair_abi, pair_code = artifact(_V2_CORE / "UniswapV2Pair.json")
    erc20_abi, erc20_code = compile_erc20()

    if Web3.keccak(hexstr=pair_code).to_0x_hex() != PAIR_INIT_CODE_HASH:
        raise RuntimeError("v2-core's UniswapV2Pair is not the pair Router02 computes addresses for")
    if PAIR_INIT_CODE_HASH[2:] not in router_code:
        raise RuntimeError("Router02's bytecode does not carry the pair init code hash")

    weth = create(weth_abi, weth_code)
    factory = create(factory_abi, factory_code, deployer)
    router = create(router_abi, router_code, factory.address, weth.address)
    tokens = {symbol: create(erc20_abi, erc20_code, name, symbol, decimals) for symbol, name, decimals in _TOKENS}

    for symbol, token in tokens.items():
        pooled = sum(amount for pool in _POOLS for sym, amount in pool if sym == symbol)
        send(token.functions.mint(deployer, pooled))
        send(token.functions.mint(trader, TRADER_FUNDS[symbol]))
        send(token.functions.approve(router.address, 2**256 - 1))

    deadline = w3.eth.get_block("latest")["timestamp"] + 3600
    pairs = {}
    for (sym_a, amount_a), (sym_b, amount_b) in _POOLS:
        if sym_a == "WETH":
            send(router.functions.addLiquidityETH(tokens[sym_b].address, amount_b, amount_b, amount_a, deployer,
                                                  deadline), value=amount_a)
        else:
            send(router.functions.addLiquidity(tokens[sym_a].address, tokens[sym_b].address, amount_a, amount_b,
                                               amount_a, amount_b, deployer, deadline))
        a = weth.address if sym_a == "WETH" else tokens[sym_a].address
        b = weth.address if sym_b == "WETH" else tokens[sym_b].address
        pair = factory.functions.getPair(a, b).call()
        if pair != _pair_for(factory.address, a, b):
            raise RuntimeError(f"pair {sym_a}/{sym_b} is not where Router02 looks for it")
        pairs[(sym_a, sym_b)] = pair

    decimals = {symbol: d for symbol, _name, d in _TOKENS} | {"WETH": 18}
    return UniswapV2(chain_id=chain_id, weth=weth.address, factory=factory.address, router=router.address,
                     tokens={s: t.address for s, t in tokens.items()}, decimals=decimals, pairs=pairs,
                     router_abi=router_abi, factory_abi=factory_abi, pair_abi=pair_abi, erc20_abi=erc20_abi,
                     weth_abi=weth_abi, accounts=accounts)


def _pair_for(factory: str, a: str, b: str) -> str:
    """UniswapV2Library.pairFor: CREATE2(factory, keccak(token0 ++ token1), init code hash)."""
    from web3 import Web3

    token0, token1 = sorted((a, b), key=lambda x: int(x, 16))
    salt = Web3.keccak(bytes.fromhex(token0[2:]) + bytes.fromhex(token1[2:]))
    raw = Web3.keccak(b"\xff" + bytes.fromhex(factory[2:]) + salt + bytes.fromhex(PAIR_INIT_CODE_HASH[2:]))
    return Web3.to_checksum_address(raw[12:])


def _rpc(w3, method: str, params: list | None = None):
    reply = w3.provider.make_request(method, params or [])
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]
