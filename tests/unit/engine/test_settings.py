"""Settings sources and their order: defaults < profile < config.toml < .env < environment < flags."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.settings import SettingsError, load_settings


def test_safe_defaults(clean_env):
    s = load_settings()
    assert (s.dry_run, s.max_slippage_bps, s.max_gas_price_gwei, s.mode) == (True, 50, 50, "paper")


def test_each_source_overrides_the_one_below(clean_env, monkeypatch):
    home = clean_env / "home"
    (home / "config.toml").write_text('max_slippage_bps = 40\nmax_position_usd = "80"\ncooldown_s = 11\n')
    assert load_settings().max_slippage_bps == 40
    (clean_env / ".env").write_text("BOTCTL_MAX_SLIPPAGE_BPS=30\nBOTCTL_COOLDOWN_S=12\n")
    s = load_settings()
    assert (s.max_slippage_bps, s.cooldown_s, s.max_position_usd) == (30, 12, Decimal(80))
    monkeypatch.setenv("BOTCTL_MAX_SLIPPAGE_BPS", "20")
    monkeypatch.setenv("BOTCTL_PAPER__SEED", "9")
    s = load_settings()
    assert (s.max_slippage_bps, s.cooldown_s, s.paper.seed) == (20, 12, 9)
    assert load_settings(max_slippage_bps=10).max_slippage_bps == 10


@pytest.mark.parametrize("name, value, words", [
    ("BOTCTL_MAX_SLIPPAGE_BPS", "abc", "valid integer"),
    ("BOTCTL_MAX_SLIPPAGE_BPS", "-5", "greater than or equal"),
    ("BOTCTL_MAX_GAS_PRICE_GWEI", "0", "greater than 0"),
    ("BOTCTL_PAPER__SPEED", "fast", "decimal"),
    ("BOTCTL_PROFILE", "yolo", "unknown profile"),
])
def test_invalid_values_name_the_setting(clean_env, monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert words in message
    assert name in message or "yolo" in message


def test_config_show_masks_secrets(clean_env, monkeypatch):
    monkeypatch.setenv("BOTCTL_CHAINS__BASE__KIND", "evm")
    monkeypatch.setenv("BOTCTL_CHAINS__BASE__RPC_URL", "https://user:hunter2@rpc.example/v1")
    shown = load_settings().shown()
    assert "hunter2" not in str(shown)
    assert shown["chains"]["base"]["rpc_url"].startswith("https://********@")
