"""Settings sources and their order: defaults < profile < config.toml < .env < environment < flags."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.settings import SettingsError, load_settings, safe_url
from storage import InsecureHome


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
    assert shown["chains"]["base"]["rpc_url"] == "https://rpc.example/…"
    assert load_settings().shown(reveal=True)["chains"]["base"]["rpc_url"] == "https://user:hunter2@rpc.example/v1"


@pytest.mark.parametrize("url, shown", [
    ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ("https://rpc.example/", "https://rpc.example"),
    ("https://eth-mainnet.g.alchemy.com/v2/SECRETKEY", "https://eth-mainnet.g.alchemy.com/…"),
    ("https://rpc.helius.xyz?api-key=SECRET", "https://rpc.helius.xyz/…"),
    ("wss://user:SECRET@node.example:8546", "wss://node.example:8546/…"),
    ("https://node.example#SECRET", "https://node.example/…"),
    ("http://[::1]:8545/SECRET", "http://[::1]:8545/…"),
    (None, "(none)"),
])
def test_an_endpoint_shows_scheme_and_host_only(url, shown):
    assert safe_url(url) == shown


def test_home_and_profile_named_in_dotenv_decide_which_config_is_read(clean_env, monkeypatch):
    other = clean_env / "other"
    other.mkdir(mode=0o700)
    (other / "config.toml").write_text("max_slippage_bps = 7\n")
    (clean_env / ".env").write_text(f"BOTCTL_HOME={other}\nBOTCTL_PROFILE=testnet\n")
    monkeypatch.delenv("BOTCTL_HOME")
    s = load_settings(check=False)
    assert (s.home, s.max_slippage_bps, s.profile) == (other, 7, "testnet")
    monkeypatch.setenv("BOTCTL_HOME", str(clean_env / "home"))  # the environment is above .env
    assert load_settings(check=False).max_slippage_bps == 50


def test_an_unknown_nested_variable_in_the_environment_gets_a_suggestion(clean_env, monkeypatch):
    monkeypatch.setenv("BOTCTL_PAPER__SEEDD", "3")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == "BOTCTL_PAPER__SEEDD: not a setting (did you mean BOTCTL_PAPER__SEED?)"


def test_secrets_and_other_programs_variables_in_dotenv_are_accepted(clean_env):
    (clean_env / ".env").write_text("BOTCTL_EVM_PASSWORD=x\nBOTCTL_JUPITER_API_KEY=y\nPATH_EXTRA=1\n"
                                    "BOTCTL_CHAINS__BASE__KIND=evm\nbotctl_cooldown_s=9\n")
    s = load_settings()
    assert (s.cooldown_s, s.chains["base"].kind) == (9, "evm")


def test_an_insecure_home_is_refused_before_anything_is_read(clean_env):
    home = clean_env / "home"
    (home / "config.toml").write_text("cooldown_s = 9\n")
    (home / "config.toml").chmod(0o664)
    with pytest.raises(InsecureHome, match="chmod 600"):
        load_settings()
    (home / "config.toml").chmod(0o600)
    assert load_settings().cooldown_s == 9
    missing = clean_env / "nowhere"
    load_settings(home=missing)
    assert not missing.exists(), "reading settings creates nothing"
