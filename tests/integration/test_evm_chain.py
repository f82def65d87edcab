"""The EVM test chain the live executor is tested against: a real anvil with the canonical
Uniswap V2, reached the way the executor reaches a real chain (AsyncWeb3 over HTTP, our
own signed EIP-1559 transactions with every field explicit).

These tests prove the foundation holds before anything is built on it: a quote is what
a swap then fills, a swap below amountOutMin is mined and fails on chain, a test leaves
the worker's shared node as it found it, the node starts with the options asked for and
is gone by its pid after, and the npm install the test run does for itself happens once
however many xdist workers ask.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chains.evm.anvil import HERE, Anvil, ChainSetupError, binary_path, ensure_installed
from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]
GAS = 250_000  # well above a V2 swap's ~150k: the limit is explicit, never an estimate


async def connect(url: str):
    import aiohttp
    from web3 import AsyncHTTPProvider, AsyncWeb3

    return AsyncWeb3(AsyncHTTPProvider(url, exception_retry_configuration=None,
                                       request_kwargs={"timeout": aiohttp.ClientTimeout(total=10)}))


async def send(w3, account, call, nonce: int):
    """Signs `call` with every field given (no estimate, no filled-in fee) and waits for its receipt."""
    from eth_account import Account

    base_fee = (await w3.eth.get_block("pending"))["baseFeePerGas"]
    tip = 10**9
    tx = await call.build_transaction({
        "from": account.address, "nonce": nonce, "gas": GAS, "maxFeePerGas": 2 * base_fee + tip,
        "maxPriorityFeePerGas": tip, "chainId": await w3.eth.chain_id, "value": 0,
    })
    signed = Account.from_key(account.key).sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    assert tx_hash == signed.hash
    return await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.05)


async def balances(w3, owner: str, *tokens) -> list[int]:
    return [await w3.eth.get_balance(owner)] + [await t.functions.balanceOf(owner).call() for t in tokens]


async def test_a_swap_fills_exactly_what_the_router_quoted(evm_chain):  # noqa: F811
    chain = evm_chain.uniswap
    trader = chain.trader
    w3 = await connect(evm_chain.rpc_url)
    try:
        assert await w3.eth.chain_id == evm_chain.chain_id == chain.chain_id
        router = w3.eth.contract(address=chain.router, abi=chain.router_abi)
        usdc = w3.eth.contract(address=chain.address("USDC"), abi=chain.erc20_abi)
        tka = w3.eth.contract(address=chain.address("TKA"), abi=chain.erc20_abi)
        assert (await usdc.functions.decimals().call(), await tka.functions.decimals().call()) == (6, 18)

        amount_in = 1_000 * 10**6  # 1,000 USDC
        path = [usdc.address, tka.address]
        quoted = (await router.functions.getAmountsOut(amount_in, path).call())[-1]
        # The router priced it from the pair the factory made (pairFor's init code hash holds):
        pair = w3.eth.contract(address=chain.pairs[("USDC", "TKA")], abi=chain.pair_abi)
        r0, r1, _ = await pair.functions.getReserves().call()
        r_usdc, r_tka = (r0, r1) if await pair.functions.token0().call() == usdc.address else (r1, r0)
        assert quoted == amount_in * 997 * r_tka // (r_usdc * 1000 + amount_in * 997)
        assert 490 * 10**18 < quoted < 500 * 10**18  # 1 TKA = 2 USDC, less the 0.3% fee and impact

        before = await balances(w3, trader.address, usdc, tka)
        nonce = await w3.eth.get_transaction_count(trader.address, "pending")
        approve = await send(w3, trader, usdc.functions.approve(router.address, amount_in), nonce)
        deadline = (await w3.eth.get_block("latest"))["timestamp"] + 600
        min_out = quoted * (10_000 - 50) // 10_000
        swap = await send(w3, trader, router.functions.swapExactTokensForTokens(
            amount_in, min_out, path, trader.address, deadline), nonce + 1)
        after = await balances(w3, trader.address, usdc, tka)

        assert (approve["status"], swap["status"]) == (1, 1)
        assert swap["gasUsed"] < GAS
        gas_paid = sum(r["gasUsed"] * r["effectiveGasPrice"] for r in (approve, swap))
        assert [a - b for a, b in zip(after, before)] == [-gas_paid, -amount_in, quoted]
        assert await w3.eth.get_transaction_count(trader.address) == nonce + 2
    finally:
        await w3.provider.disconnect()


async def test_a_swap_below_amount_out_min_is_mined_and_fails(evm_chain):  # noqa: F811
    from web3.exceptions import ContractLogicError

    chain = evm_chain.uniswap
    trader = chain.trader
    w3 = await connect(evm_chain.rpc_url)
    try:
        router = w3.eth.contract(address=chain.router, abi=chain.router_abi)
        usdc = w3.eth.contract(address=chain.address("USDC"), abi=chain.erc20_abi)
        tkb = w3.eth.contract(address=chain.address("TKB"), abi=chain.erc20_abi)
        amount_in = 500 * 10**6
        path = [usdc.address, tkb.address]
        quoted = (await router.functions.getAmountsOut(amount_in, path).call())[-1]
        deadline = (await w3.eth.get_block("latest"))["timestamp"] + 600
        swap = router.functions.swapExactTokensForTokens(amount_in, quoted + 1, path, trader.address, deadline)

        nonce = await w3.eth.get_transaction_count(trader.address, "pending")
        approve = await send(w3, trader, usdc.functions.approve(router.address, amount_in), nonce)
        assert approve["status"] == 1
        with pytest.raises(ContractLogicError, match="INSUFFICIENT_OUTPUT_AMOUNT"):
            await swap.call({"from": trader.address})  # what an estimate would have said

        before = await balances(w3, trader.address, usdc, tkb)
        receipt = await send(w3, trader, swap, nonce + 1)
        after = await balances(w3, trader.address, usdc, tkb)

        assert receipt["status"] == 0
        assert receipt["gasUsed"] < GAS  # a revert, not out of gas
        fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
        assert [a - b for a, b in zip(after, before)] == [-fee, 0, 0]  # the swap did not happen, the fee did
        assert await w3.eth.get_transaction_count(trader.address) == nonce + 2  # its nonce is spent
    finally:
        await w3.provider.disconnect()


def test_a_test_leaves_the_shared_chain_as_it_found_it(anvil_chain):  # noqa: F811
    """What evm_chain does after each test: a worker's tests share one node, never its state."""
    chain = anvil_chain
    trader, deployer = chain.uniswap.trader.address, chain.uniswap.deployer.address

    def state():
        return (chain.rpc("eth_blockNumber"), chain.rpc("eth_getTransactionCount", [trader, "latest"]),
                chain.rpc("eth_getBalance", [trader, "latest"]), chain.rpc("txpool_status"),
                chain.rpc("anvil_getAutomine"))

    before = state()
    with chain.reverted():
        chain.rpc("eth_sendTransaction", [{"from": trader, "to": deployer, "value": hex(10**18)}])  # mined
        chain.rpc("evm_setAutomine", [False])
        chain.rpc("eth_sendTransaction", [{"from": trader, "to": deployer, "value": "0x1"}])  # pooled
        assert state() != before
    time.sleep(0.2)  # anvil mines in the background: a late block would show by now
    assert state() == before
    assert before[3] == {"pending": "0x0", "queued": "0x0"} and before[4] is True


def gone(pid: int) -> bool:
    """No anvil at `pid` any more. A reaped pid may already be another process's: this machine's
    pid_max can be 32,768, and the suite forks hundreds of short-lived botctl children."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return b"anvil" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


async def test_anvil_runs_with_the_options_asked_and_is_gone_by_its_pid_after():
    with Anvil(chain_id=424242, no_mining=True) as node:
        pid = node.pid
        assert node.rpc_url.startswith("http://127.0.0.1:") and node.port > 0
        w3 = await connect(node.rpc_url)
        try:
            assert await w3.eth.chain_id == 424242
            height = await w3.eth.block_number
            sender = await w3.eth.accounts
            await w3.eth.send_transaction({"from": sender[0], "to": sender[1], "value": 1})
            await asyncio.sleep(0.1)
            assert await w3.eth.block_number == height  # --no-mining: it waits in the pool
            assert (await w3.provider.make_request("txpool_status", []))["result"]["pending"] == "0x1"
        finally:
            await w3.provider.disconnect()
        assert not gone(pid)
    assert gone(pid)
    assert node.returncode is not None and not node.running


def test_an_anvil_that_ignores_sigterm_is_killed():
    node = Anvil().start()
    pid = node.pid
    os.kill(pid, signal.SIGSTOP)  # a stopped process holds SIGTERM pending: only SIGKILL ends it
    node.stop(grace=0.3)  # returns (pytest-timeout guards a hang): killed after the grace
    assert gone(pid)
    assert node.returncode == -signal.SIGKILL


def _fake_npm_bin(tmp_path: Path, root: Path) -> Path:
    """A `npm` that records each call and lays out what `npm ci` would, slowly; and a `node`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    binary = binary_path(root)
    (bin_dir / "npm").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{tmp_path}/npm-calls"\n'
        "sleep 0.5\n"
        f'rm -rf "{root}/node_modules"\n'
        f'mkdir -p "{binary.parent}" && printf "#!/bin/sh\\n" > "{binary}" && chmod +x "{binary}"\n'
    )
    (bin_dir / "node").write_text("#!/bin/sh\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def test_concurrent_workers_install_once_and_a_changed_lockfile_reinstalls(tmp_path):
    root = tmp_path / "evm"
    root.mkdir()
    shutil.copy(HERE / "package-lock.json", root)
    env = dict(os.environ, PATH=f"{_fake_npm_bin(tmp_path, root)}:/usr/bin:/bin", PYTHONPATH=str(TESTS))
    code = ("from pathlib import Path; from chains.evm.anvil import ensure_installed; "
            f"ensure_installed(Path({str(root)!r}))")

    def install_in_parallel(n: int) -> None:
        workers = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
                   for _ in range(n)]
        for w in workers:
            assert w.wait(timeout=30) == 0, w.stderr.read()

    install_in_parallel(2)
    calls = (tmp_path / "npm-calls").read_text().splitlines()
    assert calls == ["ci --no-audit --no-fund --ignore-scripts"]

    install_in_parallel(1)  # up to date: nothing to do
    assert len((tmp_path / "npm-calls").read_text().splitlines()) == 1

    (root / "package-lock.json").write_text((root / "package-lock.json").read_text() + "\n")
    install_in_parallel(1)  # another lockfile: install again
    assert len((tmp_path / "npm-calls").read_text().splitlines()) == 2


def test_without_node_the_chain_refuses_to_start_and_says_what_to_install(tmp_path, monkeypatch):
    root = tmp_path / "evm"
    root.mkdir()
    shutil.copy(HERE / "package-lock.json", root)
    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no npm
    with pytest.raises(ChainSetupError, match=r"node and npm not found.*install Node\.js"):
        ensure_installed(root)
