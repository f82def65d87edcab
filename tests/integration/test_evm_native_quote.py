"""A chain whose quote is its own coin (`quote_token = "native"`), through the real CLI: entries
pay ETH through swapExactETHForTokens (nothing to approve), exits sell through
swapExactTokensForETH (the token approved first). The book keeps the coin set aside for fees
apart from the quote, and reconciliation compares both with the one balance the chain has."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from evmkit import book, botctl, live_home, positions_settled, run_until, transactions_from  # noqa: F401 (fixture)

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_a_chain_whose_quote_is_its_coin_opens_and_closes_positions_through_weth(live_home, evm_chain, tmp_path):  # noqa: F811
    home, address = live_home
    config = home / "config.toml"
    config.write_text(re.sub(r'quote_token = "[^"]*"', 'quote_token = "native"', config.read_text()) +
                      'gas_reserve = "0.2"\n')
    # The limits are in USD: a coin is not a dollar, so the operator says what one counts as.
    refused = botctl(home, "run", "--duration", "1")
    assert refused.returncode == 2 and 'quote_token = "native" needs quote_usd' in refused.stderr, refused.stderr
    config.write_text(config.read_text() + 'quote_usd = "40"\n')
    signals = tmp_path / "signals.jsonl"
    signals.write_text('{"id": "s1", "chain": "anvil", "token": "TKA", "size": "2"}\n'  # 80 USD: under 100
                       '{"id": "s2", "chain": "anvil", "token": "TKB", "size": "3"}\n')  # 120 USD: over
    run_until(home, signals, lambda: positions_settled(home, 1), "the 80 USD entry opened")
    denied = [json.loads(d)["reason"] for (d,) in book(home, "SELECT data FROM journal WHERE kind = 'EntryDenied'")]
    assert denied == ["size 3 (120 USD) exceeds max position 100 USD"], denied
    positions = json.loads(botctl(home, "positions", "--json").stdout)
    assert [(p["token"], p["cost"]) for p in positions] == [("TKA", "2")], positions
    status = json.loads(botctl(home, "status", "--json").stdout)
    anvil = status["chains"]["anvil"]  # in ETH, the quote; equity in USD, at the configured 40 a coin
    held = Decimal(anvil["cash"]) + Decimal(anvil["reserved"]) + Decimal(anvil["open_value"])
    assert Decimal(status["equity"]) == held * 40 and held > 0, status
    shown = botctl(home, "status").stdout
    assert f"equity {held * 40:,.2f} USD" in shown, shown  # the text says the unit too
    closed = botctl(home, "close", "--all", "--yes")
    assert closed.returncode == 0, closed.stderr + closed.stdout
    assert json.loads(botctl(home, "positions", "--json").stdout) == []
    sent = transactions_from(evm_chain, address)
    assert len(sent) == 3 and all(tx.status == 1 for tx in sent)  # entry; approve + exit
    assert botctl(home, "audit").returncode == 0
    reconcile = botctl(home, "reconcile")
    assert reconcile.returncode == 0 and "balances agree" in reconcile.stdout, reconcile.stdout + reconcile.stderr
