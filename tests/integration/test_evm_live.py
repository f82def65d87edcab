"""Live trading on a real EVM node, through the real CLI: `botctl run --signals FILE` with a
`[chains.NAME] kind = "evm"` config pointing at anvil with the canonical Uniswap V2. Positions
open and close on chain, `botctl audit` is clean and `botctl reconcile` finds the book equal to
the chain's balances (quote, native, tokens) to the base unit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)
from clikit import env_for, put_book_in_stage

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
USDC = 10**6
FUNDS_USDC = 2_000 * USDC
FUNDS_ETH = 10 * 10**18


def fresh_account(chain) -> tuple[str, str]:
    """A new key holding only ETH and USDC: nothing the book would not know of at its first start."""
    from eth_account import Account
    from web3 import Web3

    account = Account.create()
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    chain.rpc("anvil_setBalance", [account.address, hex(FUNDS_ETH)])
    trader = chain.uniswap.trader
    usdc = w3.eth.contract(address=chain.uniswap.tokens["USDC"], abi=chain.uniswap.erc20_abi)
    tx = usdc.functions.transfer(account.address, FUNDS_USDC).build_transaction(
        {"from": trader.address, "nonce": w3.eth.get_transaction_count(trader.address), "gas": 100_000,
         "chainId": chain.chain_id})
    signed = Account.from_key(trader.key).sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
    assert receipt["status"] == 1
    return account.address, account.key.hex()


@pytest.fixture
def live_home(tmp_path: Path, evm_chain):  # noqa: F811
    """A home whose book is in the testnet stage, a keystore of a fresh funded key, and a config that
    trades anvil's USDC for TKA and TKB through the canonical Router02."""
    from wallet.keystore import write_new

    home = tmp_path / "home"
    address, key = fresh_account(evm_chain)
    write_new(home / "keys" / "evm.json", bytes.fromhex(key.removeprefix("0x")), PASSWORD, scrypt_n=2**10)
    put_book_in_stage(home, "testnet")
    u = evm_chain.uniswap
    (home / "config.toml").write_text(
        'dry_run = false\n'
        '[chains.anvil]\nkind = "evm"\n'
        f'rpc_url = "{evm_chain.rpc_url}"\nchain_id = {evm_chain.chain_id}\nrouter = "{u.router}"\n'
        f'quote_token = "{u.tokens["USDC"]}"\ntokens = ["{u.tokens["TKA"]}", "{u.tokens["TKB"]}"]\n'
        'keystore = "keys/evm.json"\nconfirmations = 1\n')
    return home, address


def botctl(home: Path, *args: str, timeout: float = 180, **extra: str) -> subprocess.CompletedProcess:
    env = env_for(home, BOTCTL_PROFILE="testnet", BOTCTL_EVM_PASSWORD=PASSWORD, **extra)
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True, env=env,
                          cwd=home.parent, timeout=timeout)


def test_signals_open_positions_on_chain_and_close_them_with_the_book_equal_to_the_chain(live_home, tmp_path):
    home, address = live_home
    signals = tmp_path / "signals.jsonl"
    signals.write_text('{"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}\n'
                       '{"id": "s2", "chain": "anvil", "token": "tkb", "size": "30"}\n')
    run = botctl(home, "run", "--signals", str(signals), "--duration", "8")
    assert run.returncode == 0, run.stderr
    positions = json.loads(botctl(home, "positions", "--json").stdout)
    assert sorted((p["token"], p["cost"]) for p in positions) == [("TKA", "20"), ("TKB", "30")], \
        botctl(home, "logs").stdout[-3000:] + run.stderr

    closed = botctl(home, "close", "--all", "--yes")
    assert closed.returncode == 0, closed.stderr + closed.stdout
    assert json.loads(botctl(home, "positions", "--json").stdout) == []

    audit = botctl(home, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    reconcile = botctl(home, "reconcile")
    assert reconcile.returncode == 0 and "balances agree" in reconcile.stdout, reconcile.stdout + reconcile.stderr
    history = json.loads(botctl(home, "history", "--json").stdout)
    assert sorted((f["side"], f["token"]) for f in history) == [("buy", "TKA"), ("buy", "TKB"), ("sell", "TKA"),
                                                                ("sell", "TKB")], history


def test_a_live_start_with_dry_run_on_sends_nothing_and_says_so(live_home):
    home, _address = live_home
    result = botctl(home, "run", "--duration", "1", BOTCTL_DRY_RUN="true")
    assert result.returncode == 2 and "dry run on sends nothing" in result.stderr, result.stderr
