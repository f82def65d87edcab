"""`status --json` shows the book's amounts exactly, however large (DESIGN section 7: decimal strings)."""

from __future__ import annotations

import json
import sqlite3

import pytest

pytestmark = pytest.mark.slow

DECIMALS = {("base", "quote"): 6, ("solana", "quote"): 6, ("base", "native"): 18, ("solana", "native"): 9}


def exact(units: int, decimals: int) -> str:
    """What `units` base units must read as, from the digits alone (no Decimal involved)."""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    whole, fraction = digits[: len(digits) - decimals], digits[len(digits) - decimals:].rstrip("0")
    return ("-" if units < 0 else "") + whole + ("." + fraction if fraction else "")


def test_a_deposit_past_28_digits_shows_exactly_in_status(botctl, home):
    run = botctl("run", "--seed", "3", "--duration", "60", env={
        "BOTCTL_PAPER__DEPOSIT_USD": str(10**30), "BOTCTL_PAPER__NATIVE_DEPOSIT": str(10**21)})
    assert run.returncode == 0, run.stderr
    result = botctl("status", "--json")
    assert result.returncode == 0, result.stderr
    chains = json.loads(result.stdout)["chains"]

    conn = sqlite3.connect(home / "botctl.db")
    balances = {(c, a, acct): int(v) for c, a, acct, v in conn.execute(
        "SELECT chain, asset, account, amount FROM balances")}
    conn.close()
    shown = {"cash": ("quote", "cash"), "native_cash": ("native", "cash"), "network_fees": ("native", "fees")}
    for chain in ("base", "solana"):
        for key, (asset, account) in shown.items():
            units = balances[(chain, asset, account)]
            assert chains[chain][key] == exact(units, DECIMALS[(chain, asset)]), (chain, key)
        assert len(str(balances[(chain, "quote", "cash")])) > 28, "the book holds more digits than a Decimal context"
        assert balances[(chain, "quote", "cash")] != 10**36, "some cash went into positions"
    assert botctl("audit").returncode == 0
