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
    assert str(caught.value) == "environment: BOTCTL_PAPER__SEEDD is not a setting (did you mean BOTCTL_PAPER__SEED?)"


@pytest.mark.parametrize("name, words", [
    ("BOTCTL_MAX_SLIPAGE_BPS", "environment: BOTCTL_MAX_SLIPAGE_BPS is not a setting (did you mean "
                               "BOTCTL_MAX_SLIPPAGE_BPS?)"),
    ("botctl_dryrun", "environment: BOTCTL_DRYRUN is not a setting (did you mean BOTCTL_DRY_RUN?)"),
    ("BOTCTL_COOLDOWN_S__X", "environment: BOTCTL_COOLDOWN_S__X is not a setting (did you mean BOTCTL_COOLDOWN_S?)"),
    ("BOTCTL_CHAINS__BASE__KINDD", "did you mean BOTCTL_CHAINS__BASE__KIND?"),
    ("BOTCTL_PAPER__", "environment: BOTCTL_PAPER__ is not a setting"),
])
def test_an_unknown_top_level_or_nested_variable_in_the_environment_is_refused(clean_env, monkeypatch, name,
                                                                                  words):
    monkeypatch.setenv(name, "5")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert words in str(caught.value)


def test_the_variables_that_are_no_setting_are_accepted_in_the_environment(clean_env, monkeypatch):
    from engine.settings import NOT_SETTINGS

    for name in NOT_SETTINGS:
        monkeypatch.setenv(name, "0")
    monkeypatch.setenv("BOTCTL_SYNCHRONOUS", "NORMAL")
    monkeypatch.setenv("BOTCTL_CHAINS__BASE", '{"kind": "evm"}')  # a whole table as JSON
    s = load_settings()
    assert (s.synchronous, s.chains["base"].kind) == ("NORMAL", "evm")


def test_log_level_in_dotenv_is_refused_as_environment_only(clean_env):
    (clean_env / ".env").write_text("BOTCTL_LOG_LEVEL=debug\n")
    with pytest.raises(SettingsError, match="BOTCTL_LOG_LEVEL is read from the environment only"):
        load_settings()


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


def test_every_botctl_variable_the_project_reads_or_sets_is_a_setting_or_on_the_allow_list(clean_env):
    """A variable read with os.environ that is no setting and not on NOT_SETTINGS would stop every
    command that has it set: this keeps the allow-list and the code that reads the variables in step."""
    import re
    from pathlib import Path

    from engine.settings import check_environment

    root = Path(__file__).resolve().parents[3]
    files = [root / "README.md", root / ".env.example", *sorted((root / ".ci").glob("*"))]
    for folder in ("engine", "console", "storage", "wallet", "tests/bench", "tests/integration"):
        files += sorted((root / folder).rglob("*.py"))
    names = set()
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        found = {name for line in lines for name in re.findall(r"BOTCTL_[A-Z0-9_]*[A-Z0-9]", line)}
        refused = {name for line in lines if "not a setting" in line  # examples of a refused name
                   for name in re.findall(r"BOTCTL_[A-Z0-9_]*[A-Z0-9]", line)}
        names |= found - refused
    assert {"BOTCTL_HOME", "BOTCTL_DEBUG", "BOTCTL_LOG_LEVEL", "BOTCTL_CRASH_SKIP"} <= names
    for name in sorted(names):
        check_environment({name: "1"})
