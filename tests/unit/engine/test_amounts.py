"""Amounts leave the engine exactly: integer base units shown with no Decimal context rounding.

The oracle here is plain string arithmetic on the integer's digits, never Decimal, so a
rounding anywhere between the book and the JSON text shows up as a different string.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from console.output import jsonable, plain
from engine import views
from engine.core.money import from_units

from builders import NOW, broadcast, close, fill, policy, sign, usd

WEI_MAX = 2**256 - 1


def exact(units: int, decimals: int) -> str:
    """What `units` base units must read as, from the digits alone."""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    whole, fraction = digits[: len(digits) - decimals], digits[len(digits) - decimals:].rstrip("0")
    return ("-" if units < 0 else "") + whole + ("." + fraction if fraction else "")


@pytest.mark.parametrize("units, decimals, text", [
    (1, 6, "0.000001"),
    (1, 18, "0.000000000000000001"),
    (0, 6, "0"),
    (0, 18, "0"),
    (-1, 6, "-0.000001"),
    (WEI_MAX, 18, "115792089237316195423570985008687907853269984665640564039457.584007913129639935"),
    (-WEI_MAX, 18, "-115792089237316195423570985008687907853269984665640564039457.584007913129639935"),
    (10**36 - 25_000_000, 6, "999999999999999999999999999975"),
    (10**30 + 1, 6, "1000000000000000000000000.000001"),
    (123, 0, "123"),
])
def test_base_units_read_exactly(units, decimals, text):
    assert exact(units, decimals) == text  # the oracle itself, pinned
    value = from_units(units, decimals)
    assert plain(value) == text
    assert jsonable({"amount": value}) == {"amount": text}


def test_every_digit_survives_at_every_scale():
    for decimals in (0, 6, 9, 18):
        for units in (WEI_MAX, WEI_MAX - 1, -(WEI_MAX // 7), 10**40 + 1, 2**64 + 3):
            assert plain(from_units(units, decimals)) == exact(units, decimals)


@pytest.mark.parametrize("bad", [1.5, "100", Decimal("100")])
def test_only_integer_base_units_are_accepted(bad):
    with pytest.raises(TypeError):
        from_units(bad, 6)


def test_sums_of_different_decimals_are_exact():
    assert plain(views.sum_units([(WEI_MAX, 18), (1, 6), (-1, 0)])) == exact(WEI_MAX + 10**12 - 10**18, 18)
    assert plain(views.sum_units([])) == "0"


async def test_status_shows_the_book_exactly(make_engine):
    """A quote balance past 28 digits, a 2**256 - 1 wei native balance, and a realized loss."""
    big = 10**30 + 1
    h = await make_engine(policy(), cash={"base": big, "solana": usd(1000)},
                          native={"base": WEI_MAX, "solana": 10**18})
    try:
        pid, _entry = await h.open_position("solana", "T1", usd(50), out=10**18, at=NOW)
        exit_order = (await h.ok(close(pid, at=NOW))).events[0].order_id
        await h.ok(sign(exit_order, at=NOW))
        await h.ok(broadcast(exit_order, at=NOW))
        await h.ok(fill(exit_order, 10**18, usd("41.234567"), at=NOW))
        loss = usd("41.234567") - usd(50)
        data = json.loads(json.dumps(jsonable(await views.status(h.path, h.policy))))
    finally:
        await h.close()
    base, solana = data["chains"]["base"], data["chains"]["solana"]
    assert base["cash"] == exact(big, 6)
    assert base["native_cash"] == exact(WEI_MAX, 18)
    assert solana["realized_pnl"] == exact(loss, 6) == "-8.765433"
    assert solana["cash"] == exact(usd(1000) + loss, 6)
    assert data["equity"] == exact(big + usd(1000) + loss, 6)


@pytest.mark.parametrize("text, decimals, units", [
    ("1000000000000000000000000.000001", 6, 10**30 + 1),  # 31 digits: a Decimal product would round it
    ("1.9999999", 6, 1_999_999),  # what we may spend rounds down
    ("-1.0000001", 6, -1_000_001),  # down is toward minus infinity
    ("0.0000001", 6, 0),
    ("1E+3", 2, 100_000),
    (str(2**256 - 1), 0, 2**256 - 1),
])
def test_whole_units_become_base_units_exactly(text, decimals, units):
    from engine.core.money import to_units

    assert to_units(text, decimals) == units
    assert to_units(Decimal(text), decimals) == units


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "1e999999"])
def test_what_is_no_amount_is_refused_not_computed(bad):
    from engine.core.money import to_units

    with pytest.raises(ValueError):
        to_units(bad, 6)
