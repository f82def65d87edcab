"""Stages: the shipped figures, ceilings that refuse (never clip) a looser config, and the
stored stage's ceilings as risk rules in the decider."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from engine.core.messages import (
    AttestationRecorded,
    ChangeStage,
    CommandRejected,
    EntryDenied,
    EntryReserved,
    RecordAttestation,
    StageChanged,
)
from engine.core.stages import ORDER
from engine.settings import SettingsError, load_settings
from engine.stages import stage, stages

from builders import funded, given, reserve, then_apply, usd, when

NOW = 1_700_000_000_000


# --------------------------------------------------------------------------- the figures


def test_profiles_carry_the_fix_lists_figures():
    paper, testnet, soft, scale = (stage(name) for name in ORDER)
    assert (paper.ceiling.dry_run, paper.networks, paper.live_funds) == (True, ("paper",), False)
    assert (paper.promotion.min_hours, paper.promotion.min_trades, paper.promotion.max_balance_inconsistencies) \
        == (24, 100, 0)
    assert testnet.networks == ("paper", "testnet") and not testnet.live_funds
    assert (testnet.promotion.min_trades, testnet.promotion.min_hours, testnet.promotion.network) == (50, 48, "testnet")
    assert "failure" in testnet.promotion.drills
    assert (soft.ceiling.capital_usd, soft.ceiling.max_position_usd, soft.ceiling.chain_kinds) \
        == (Decimal(100), Decimal(5), ("solana",))
    assert soft.live_funds and "halt" in soft.promotion.drills and soft.promotion.min_hours == 48
    assert soft.promotion.min_trades == 100  # scale-up comes "after 100 successful trades"
    assert (scale.ceiling.capital_usd, set(scale.ceiling.chain_kinds), scale.next) == (Decimal(500), {"evm", "solana"}, None)
    assert [s.next for s in stages().values()] == ["testnet", "soft-launch", "scale-up", None]


def test_every_profiles_defaults_fit_its_own_ceiling(clean_env):
    import tomllib

    from engine.core.stages import breaches
    from engine.settings import Settings
    from engine.stages import profile_file

    for name in ORDER:
        data = {k: v for k, v in tomllib.loads(profile_file(name).read_text()).items() if k != "stage"}
        assert breaches(Settings(**data), stage(name)) == [], name


# --------------------------------------------------------------------------- ceilings refuse looser settings




@pytest.mark.parametrize("config, named, ceiling", [
    ('max_slippage_bps = 60', "config.toml: max_slippage_bps = 60", "ceiling 50"),
    ('max_gas_price_gwei = 51', "config.toml: max_gas_price_gwei = 51", "ceiling 50"),
    ('max_position_usd = "100.01"', "config.toml: max_position_usd = 100.01", "ceiling 100"),
    ('max_exposure_usd = "5000"', "config.toml: max_exposure_usd = 5000", "ceiling 1000"),
    ('max_open_positions = 11', "config.toml: max_open_positions = 11", "ceiling 10"),
    ('dry_run = false', "config.toml: dry_run = false", "keeps dry run on"),
    ('[rollout]\nmin_trades = 99', "config.toml: rollout.min_trades = 99", "criterion 100"),
    ('[rollout]\nmin_hours = 1', "config.toml: rollout.min_hours = 1", "criterion 24"),
])
def test_a_config_beyond_the_ceiling_is_refused_naming_setting_and_ceiling(clean_env, config, named, ceiling):
    (clean_env / "home" / "config.toml").write_text(config + "\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value) and ceiling in str(info.value)


def test_the_environment_cannot_loosen_either(clean_env, monkeypatch):
    monkeypatch.setenv("BOTCTL_MAX_POSITION_USD", "250")
    with pytest.raises(SettingsError, match="BOTCTL_MAX_POSITION_USD=250 exceeds the paper ceiling 100"):
        load_settings()


def test_tightening_is_fine(clean_env):
    (clean_env / "home" / "config.toml").write_text(
        'max_slippage_bps = 20\nmax_position_usd = "10"\n[rollout]\nmin_trades = 150\nmin_hours = 30\n')
    s = load_settings()
    assert (s.max_slippage_bps, s.max_position_usd, s.rollout.min_trades) == (20, Decimal(10), 150)


def test_a_profile_looser_than_the_stage_is_refused(clean_env):
    with pytest.raises(SettingsError, match="stage is paper: promote first"):
        load_settings(profile="soft-launch")


# --------------------------------------------------------------------------- stage rules in the decider


def at_stage(name: str, *items, pol=None):
    """A funded book that went through the stages up to `name` (ChangeStage, evidence taken as given)."""
    steps = []
    for previous, following in zip(ORDER, ORDER[1:ORDER.index(name) + 1]):
        steps.append(ChangeStage(following, previous, (), "{}", "test", NOW))
    return given(*funded("solana"), *funded("base"), *steps, *items, pol=pol)


def test_soft_launch_refuses_six_dollars_and_any_evm_entry():
    book = at_stage("soft-launch")
    six = when(book, reserve("solana", "T1", usd(6)))
    assert isinstance(six[0], EntryDenied) and "ceiling of 5 USD per position" in six[0].reason
    evm = when(book, reserve("base", "T1", usd(5)))
    assert isinstance(evm[0], EntryDenied) and "solana chains only" in evm[0].reason
    five = when(book, reserve("solana", "T1", usd(5)))
    assert isinstance(five[0], EntryReserved)


def test_the_stage_capital_caps_what_is_at_risk_in_all():
    from builders import policy

    book = at_stage("scale-up", pol=policy(max_open_positions=50, max_position=50, max_exposure=10_000))
    for n in range(10):  # 10 x $50 = the stage's $500 of capital
        events = when(book, reserve("solana", f"T{n}", usd(50)))
        assert isinstance(events[0], EntryReserved), events
        book = then_apply(book, events)
    over = when(book, reserve("solana", "T99", usd(1)))
    assert isinstance(over[0], EntryDenied) and "capital room 0" in over[0].reason


def test_the_default_size_is_clamped_to_the_stage_ceiling():
    book = at_stage("soft-launch")
    events = when(book, reserve("solana", "T1", None))
    assert isinstance(events[0], EntryReserved) and events[0].amount == usd(5)


def test_demoting_while_running_tightens_at_once():
    book = at_stage("scale-up")
    assert isinstance(when(book, reserve("base", "T1", usd(20)))[0], EntryReserved)
    book = then_apply(book, when(book, ChangeStage("soft-launch", "scale-up", (), "{}", "demote", NOW, promote=False)))
    assert isinstance(when(book, reserve("base", "T1", usd(5)))[0], EntryDenied)


def test_promotion_with_anything_missing_is_refused_naming_it():
    book = given(*funded("solana"))
    events = when(book, ChangeStage("testnet", "paper", ("round trips: 3 (needs >= 100)",), "{}", "x", NOW))
    assert isinstance(events[0], CommandRejected) and "round trips: 3" in events[0].reason


@pytest.mark.parametrize("cmd, reason", [
    (ChangeStage("soft-launch", "paper", (), "{}", "x", NOW), "one stage at a time"),
    (ChangeStage("testnet", "testnet", (), "{}", "x", NOW), "changed meanwhile"),
    (ChangeStage("paper", "paper", (), "{}", "x", NOW), "already paper"),
    (ChangeStage("testnet", "paper", (), "{}", "x", NOW, promote=False), "a demotion goes back"),
    (RecordAttestation("paper", "nonsense", NOW), "asks no attestation 'nonsense'"),
    (RecordAttestation("testnet", "logs", NOW), "the stage is paper"),
])
def test_stage_commands_refused(cmd, reason):
    events = when(given(), cmd)
    assert isinstance(events[0], CommandRejected) and reason in events[0].reason


def test_promote_attest_and_demote_are_events():
    book = given()
    attested = when(book, RecordAttestation("paper", "logs", NOW, by="ann@host"))
    assert isinstance(attested[0], AttestationRecorded) and attested[0].by == "ann@host"
    book = then_apply(book, when(book, ChangeStage("testnet", "paper", (), json.dumps({"trades": 100}), "ok", NOW)))
    assert book.meta.get("stage") == "testnet"
    demoted = when(book, ChangeStage("paper", "testnet", ("anything",), "{}", "back", NOW, promote=False))
    assert isinstance(demoted[0], StageChanged)  # demotion needs no evidence


def test_a_stage_that_does_not_allow_live_funds_refuses_a_live_policy():
    from builders import policy

    live = policy()
    live = type(live)(live.chains, live.limits, live=True, stages=live.stages)
    book = at_stage("testnet", pol=live)
    denied = when(book, reserve("solana", "T1", usd(5)))
    assert isinstance(denied[0], EntryDenied) and denied[0].reason == "stage testnet does not allow live funds"
    assert isinstance(when(at_stage("soft-launch", pol=live), reserve("solana", "T1", usd(5)))[0], EntryReserved)


def test_the_stage_caps_open_positions_even_when_settings_allow_more():
    from builders import policy

    book = at_stage("paper", pol=policy(max_open_positions=50, max_exposure=5000))
    for n in range(10):  # the paper stage's ceiling: 10 open positions
        book = then_apply(book, when(book, reserve("solana", f"T{n}", usd(1))))
    denied = when(book, reserve("solana", "T99", usd(1)))
    assert isinstance(denied[0], EntryDenied) and "paper stage allows 10 open positions" in denied[0].reason
