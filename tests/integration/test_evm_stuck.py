"""Stuck transactions on a real EVM node, through `botctl run`: with mining paused, an order not
mined in time is replaced at its nonce with both fees raised (within the cap), and exactly one
transaction at that nonce is mined; one that cannot be raised within the cap is cancelled at its
nonce by a zero-value transfer to ourselves, so later nonces are not blocked and the funds it
held are released once the cancellation is mined."""

from __future__ import annotations

import json
import signal

import pytest
from evmkit import automine, book_json, botctl, live_home, mine, output, start, transactions_from, wait_for  # noqa: F401

from engine.venues.evm.fees import format_gwei

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

GWEI = 10**9


def pool(chain, address: str) -> list[dict]:
    """Our transactions waiting in the node's pool, by nonce."""
    content = chain.rpc("txpool_content")["pending"]
    ours = next((txs for who, txs in content.items() if who.lower() == address.lower()), {})
    return [ours[n] for n in sorted(ours, key=int)]


def swapped_out(chain, address: str, before: set[str]) -> list[dict] | None:
    """Our two pooled transactions once neither is one of `before` (both were re-signed)."""
    now = pool(chain, address)
    return now if len(now) == 2 and not {tx["hash"] for tx in now} & before else None


@pytest.fixture
def paused(evm_chain):  # noqa: F811
    """Mining off and the next base fee pinned at 1 gwei (that survives evm_revert: put back after)."""
    before = int(evm_chain.rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
    automine(evm_chain, False)
    evm_chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(GWEI)])
    yield evm_chain
    evm_chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(before)])


def run_one_signal(home, tmp_path, chain_settings: dict, **env):
    config = home / "config.toml"
    config.write_text(config.read_text() + "".join(f"{k} = {json.dumps(v)}\n" for k, v in chain_settings.items()))
    signals = tmp_path / "signals.jsonl"
    signals.write_text('{"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}\n')
    return start(home, "run", "--signals", str(signals), "--duration", "120", **env)


def stop(proc, home) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, output(home)[1]


def test_a_stuck_entry_is_replaced_with_both_fees_raised_and_mined_once(live_home, paused, tmp_path):  # noqa: F811
    home, address = live_home
    proc = run_one_signal(home, tmp_path, {"replace_after_s": 2})
    try:
        first = wait_for(lambda: len(pool(paused, address)) == 2 and pool(paused, address), 30, "approve and swap")
        fees = {tx["nonce"]: (int(tx["maxFeePerGas"], 16), int(tx["maxPriorityFeePerGas"], 16)) for tx in first}
        replaced = wait_for(lambda: swapped_out(paused, address, {tx["hash"] for tx in first}), 30, "replacements")
        for tx in replaced:  # geth's rule: both fields at least +10% and strictly higher; never above the cap
            old_fee, old_tip = fees[tx["nonce"]]
            new_fee, new_tip = int(tx["maxFeePerGas"], 16), int(tx["maxPriorityFeePerGas"], 16)
            assert new_fee > old_fee and new_fee * 100 >= old_fee * 110 and new_fee <= 50 * GWEI
            assert new_tip > old_tip and new_tip * 100 >= old_tip * 110
        # `botctl nonces` shows the chain's pending count and every attempt at each nonce, fees rising
        (row,) = book_json(home, "nonces")
        assert row["chain_pending"] == 2 and row["gap"] is None, row
        for flying in row["in_flight"]:
            attempts = flying["attempts"]
            assert len(attempts) >= 2, flying
            assert all(b["max_fee_wei"] * 100 >= a["max_fee_wei"] * 110 and b["tip_wei"] * 100 >= a["tip_wei"] * 110
                       for a, b in zip(attempts, attempts[1:])), attempts
        assert {tx["hash"] for tx in replaced} <= {a["tx_id"] for f in row["in_flight"] for a in f["attempts"]}
        table = botctl(home, "nonces").stdout
        assert "In flight" in table and format_gwei(row["in_flight"][-1]["attempts"][-1]["max_fee_wei"]) in table
        mine(paused)
        wait_for(lambda: json.loads(botctl(home, "positions", "--json").stdout), 30, "the position")
    finally:
        stop(proc, home)
    sent = transactions_from(paused, address)
    assert sorted(tx.nonce for tx in sent) == [0, 1], sent  # one transaction per nonce, both mined
    assert {tx.hash for tx in sent} == {tx["hash"] for tx in replaced}
    assert [p["token"] for p in json.loads(botctl(home, "positions", "--json").stdout)] == ["TKA"]
    assert botctl(home, "audit").returncode == 0
    assert "balances agree" in botctl(home, "reconcile").stdout
    assert "replaced with both fees raised" in botctl(home, "logs").stdout


def test_an_entry_that_cannot_be_raised_within_the_cap_is_cancelled_and_its_funds_released(live_home, paused,  # noqa: F811
                                                                                          tmp_path):
    home, address = live_home
    # a 2 gwei cap leaves no room for +10% above 1 gwei base + 1 gwei tip: only a cancellation can go
    proc = run_one_signal(home, tmp_path, {"replace_after_s": 2, "cancel_gas_price_gwei": 10},
                          BOTCTL_MAX_GAS_PRICE_GWEI="2")
    try:
        first = wait_for(lambda: len(pool(paused, address)) == 2 and pool(paused, address), 30, "approve and swap")
        cancels = wait_for(lambda: swapped_out(paused, address, {tx["hash"] for tx in first}), 30, "cancellations")
        for tx in cancels:  # zero-value transfers to ourselves, under the cancellation's own cap
            assert tx["to"].lower() == address.lower() and int(tx["value"], 16) == 0 and tx["input"] == "0x"
            assert 2 * GWEI < int(tx["maxFeePerGas"], 16) <= 10 * GWEI
        mine(paused)
        wait_for(lambda: not json.loads(botctl(home, "reservations", "--json").stdout), 30, "the funds released")
    finally:
        stop(proc, home)
    sent = transactions_from(paused, address)
    assert sorted(tx.nonce for tx in sent) == [0, 1] and {tx.hash for tx in sent} == {tx["hash"] for tx in cancels}
    assert json.loads(botctl(home, "positions", "--json").stdout) == []
    assert botctl(home, "audit").returncode == 0
    assert "balances agree" in botctl(home, "reconcile").stdout
    assert "cancelled by a zero-value transfer" in botctl(home, "logs").stdout
