"""Live trading on a real EVM node, through the real CLI: `botctl run --signals FILE` with a
`[chains.NAME] kind = "evm"` config pointing at anvil with the canonical Uniswap V2. Positions
open and close on chain, `botctl audit` is clean and `botctl reconcile` finds the book equal to
the chain's balances (quote, native, tokens) to the base unit."""

from __future__ import annotations

import json

import pytest
from evmkit import botctl, live_home  # noqa: F401 (live_home is a fixture)

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_signals_open_positions_on_chain_and_close_them_with_the_book_equal_to_the_chain(live_home, tmp_path):  # noqa: F811
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


def test_a_live_start_with_dry_run_on_sends_nothing_and_says_so(live_home):  # noqa: F811
    home, _address = live_home
    result = botctl(home, "run", "--duration", "1", BOTCTL_DRY_RUN="true")
    assert result.returncode == 2 and "dry run on sends nothing" in result.stderr, result.stderr
