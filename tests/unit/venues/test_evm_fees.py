"""EIP-1559 fee rules: the first offer stays within the cap and is includable, and every
replacement we compute is one geth's pool takes.

anvil accepts replacements geth refuses (it ignores the tip), so the integration tests
cannot catch a bad bump: these tests hold `bump` against a transcription of geth's rule.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.venues.evm.fees import (
    CANCEL_GAS,
    FeeRefused,
    Fees,
    bump,
    cancel_fees,
    format_gwei,
    gas_limit_for,
    gas_reserve,
    geth_accepts_replacement,
    gwei,
    initial,
)

WEI = st.integers(min_value=0, max_value=10**30)


@st.composite
def fee_pairs(draw) -> Fees:
    max_fee = draw(WEI)
    return Fees(max_fee=max_fee, tip=draw(st.integers(min_value=0, max_value=max_fee)))


# ---- units

def test_gwei_is_exact_and_refuses_floats_and_fractions_of_a_wei():
    assert gwei(50) == 50_000_000_000
    assert gwei(Decimal("61.2")) == 61_200_000_000
    assert gwei(Decimal("0.000000001")) == 1
    with pytest.raises(TypeError):
        gwei(1.5)
    with pytest.raises(ValueError):
        gwei(Decimal("0.0000000001"))


def test_fees_refuse_floats_negatives_and_a_tip_above_the_fee_cap():
    with pytest.raises(TypeError):
        Fees(max_fee=1.0, tip=0)
    with pytest.raises(ValueError):
        Fees(max_fee=10, tip=-1)
    with pytest.raises(ValueError, match="tip 11 wei is above max_fee 10 wei"):
        Fees(max_fee=10, tip=11)


def test_gwei_is_shown_exactly():
    assert [format_gwei(w) for w in (61_200_000_000, 50_000_000_000, 1, 0)] == ["61.2", "50", "0.000000001", "0"]


# ---- the first offer

def test_initial_leaves_headroom_for_a_rising_base_fee():
    assert initial(gwei(10), gwei(2), gwei(50)) == Fees(max_fee=gwei(22), tip=gwei(2))


def test_initial_never_passes_the_cap():
    assert initial(gwei(30), gwei(2), gwei(50)) == Fees(max_fee=gwei(50), tip=gwei(2))
    assert initial(gwei(49), gwei(2), gwei(50)) == Fees(max_fee=gwei(50), tip=gwei(1))  # tip cut to what is left
    assert initial(gwei(50), gwei(2), gwei(50)) == Fees(max_fee=gwei(50), tip=0)


def test_a_base_fee_above_the_cap_is_refused_in_gwei():
    with pytest.raises(FeeRefused) as refused:
        initial(gwei(Decimal("61.2")), gwei(1), gwei(50))
    assert refused.value.reason == "next block's base fee 61.2 gwei is above the cap 50 gwei"


@given(base=WEI, tip=WEI, cap=WEI)
def test_initial_is_within_the_cap_and_includable_or_refused(base, tip, cap):
    try:
        fees = initial(base, tip, cap)
    except FeeRefused:
        assert base > cap
        return
    assert fees.tip <= fees.max_fee <= cap
    assert fees.max_fee >= base + fees.tip  # the tip asked for is payable on top of the next base fee
    assert fees.tip == min(tip, cap - base)


# ---- replacement: geth's rule itself

@pytest.mark.parametrize(("old", "new", "accepted"), [
    # old fee cap and tip -> new: both fields strictly higher and >= old * 110 // 100
    ((1, 1), (2, 2), True),  # 1 * 110 // 100 == 1: strictly higher is what binds at 1 wei
    ((2, 1), (2, 2), False),  # fee cap not raised
    ((9, 9), (10, 10), True),  # 9 * 110 // 100 == 9
    ((10, 10), (11, 11), True),  # 10 * 110 // 100 == 11
    ((10, 10), (11, 10), False),  # tip not raised
    ((100, 100), (110, 110), True),
    ((100, 50), (110, 55), True),
    ((100, 50), (109, 55), False),  # fee cap +9%
    ((100, 100), (110, 109), False),  # tip +9%
    ((100, 5), (200, 5), False),  # fee cap doubled, tip not raised: what anvil accepts
    ((105, 7), (115, 8), True),  # 115 >= 115, 8 >= 7
    ((105, 7), (115, 7), False),
])
def test_geth_replacement_rule(old, new, accepted):
    assert geth_accepts_replacement(Fees(*old), Fees(*new)) is accepted


def test_geth_rule_floors_the_threshold_like_big_int_division():
    assert geth_accepts_replacement(Fees(19, 19), Fees(20, 20))  # 19 * 110 // 100 == 20
    assert not geth_accepts_replacement(Fees(29, 29), Fees(31, 30))  # 29 * 110 // 100 == 31: the tip falls short


def test_a_bump_of_the_fee_cap_alone_is_what_anvil_takes_and_geth_refuses():
    old = Fees(max_fee=gwei(22), tip=gwei(2))
    cap_only = Fees(max_fee=gwei(25), tip=old.tip)
    assert not geth_accepts_replacement(old, cap_only)
    assert geth_accepts_replacement(old, bump(old, gwei(50)))


# ---- replacement: our bump

@pytest.mark.parametrize(("old", "new"), [
    ((0, 0), (1, 1)), ((1, 1), (2, 2)), ((9, 9), (10, 10)), ((10, 10), (11, 11)), ((11, 10), (13, 11)),
    ((100, 100), (110, 110)), ((gwei(22), gwei(2)), (gwei(Decimal("24.2")), gwei(Decimal("2.2")))),
])
def test_bump_raises_both_fields_by_ten_percent_rounded_up_and_at_least_one_wei(old, new):
    assert bump(Fees(*old), gwei(1000)) == Fees(*new)


@given(old=fee_pairs(), cap=WEI)
def test_every_bump_is_a_replacement_geth_accepts_within_the_cap(old, cap):
    assert geth_accepts_replacement(old, bump(old, 10**32))  # room for any bump
    new = bump(old, cap)
    if new is None:
        assert max(old.max_fee + 1, -(-old.max_fee * 110 // 100)) > cap  # the bump itself passes the cap
        return
    assert geth_accepts_replacement(old, new)
    assert new.tip <= new.max_fee <= cap


@given(old=fee_pairs(), fresh=fee_pairs(), cap=WEI)
def test_a_bump_lifted_to_fresh_fees_is_still_accepted_and_within_the_cap(old, fresh, cap):
    new = bump(old, cap, at_least=fresh)
    if new is None:
        assert bump(old, cap) is None  # only the bump itself not fitting refuses
        return
    assert geth_accepts_replacement(old, new)
    assert new.tip <= new.max_fee <= cap
    assert new.max_fee >= min(fresh.max_fee, cap)


def test_bump_lifts_to_fresh_fees_when_the_chain_moved_more_than_ten_percent():
    old = Fees(max_fee=gwei(22), tip=gwei(2))
    fresh = initial(gwei(20), gwei(3), gwei(50))  # base fee doubled since `old` was signed
    assert bump(old, gwei(50), at_least=fresh) == Fees(max_fee=gwei(43), tip=gwei(3))
    assert bump(old, gwei(30), at_least=fresh) == Fees(max_fee=gwei(30), tip=gwei(3))  # as far as the cap


def test_bump_gives_up_when_the_replacement_would_pass_the_cap():
    assert bump(Fees(max_fee=gwei(46), tip=gwei(2)), gwei(50)) is None  # 50.6 > 50
    assert bump(Fees(max_fee=gwei(45), tip=gwei(2)), gwei(50)) == Fees(max_fee=gwei(Decimal("49.5")),
                                                                        tip=gwei(Decimal("2.2")))


# ---- cancellation

def test_a_cancel_replaces_a_stuck_trade_under_its_own_cap():
    stuck = Fees(max_fee=gwei(50), tip=gwei(2))  # at the trading cap: no trade bump fits
    assert bump(stuck, gwei(50)) is None
    cancel = cancel_fees(stuck, cancel_cap=gwei(80))
    assert cancel == Fees(max_fee=gwei(55), tip=gwei(Decimal("2.2")))
    assert geth_accepts_replacement(stuck, cancel)
    assert cancel_fees(stuck, cancel_cap=gwei(54)) is None


@given(old=fee_pairs(), cap=WEI)
def test_every_cancel_is_a_replacement_geth_accepts_within_its_cap(old, cap):
    cancel = cancel_fees(old, cap)
    assert cancel is None or (geth_accepts_replacement(old, cancel) and cancel.max_fee <= cap)


# ---- gas

def test_gas_limit_is_the_estimate_with_half_again_rounded_up():
    assert gas_limit_for(102_984) == 154_476
    assert gas_limit_for(102_984) > 147_600  # an estimate without the accumulator writes still covers them
    assert gas_limit_for(21_001) == 31_502
    with pytest.raises(ValueError):
        gas_limit_for(0)
    with pytest.raises(TypeError):
        gas_limit_for(1.5)


def test_gas_reserve_is_the_most_the_transaction_can_be_charged():
    assert gas_reserve(154_476, gwei(22)) == 154_476 * 22 * 10**9
    assert gas_reserve(CANCEL_GAS, gwei(55)) == 21_000 * 55 * 10**9
