"""Configuration and the home's files, through the real CLI: what is read from where, what is shown,
and what is refused (one `error:` line, exit 2) instead of being accepted silently."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

import terminal
from clikit import one_error_line, put_book_in_stage
from terminal import converse

pytestmark = pytest.mark.slow

SECRET_URL = "http://127.0.0.1:9/v2/SECRETKEY?api-key=SECRETQUERY"


def env_without_home(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No BOTCTL_ variable at all, and a private user home, so `~/.botctl` can be looked at."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"HOME": str(tmp_path / "user"), "BOTCTL_PAPER__SPEED": "0"})
    env.update(extra)
    return env


def cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return terminal.run(args, env, cwd=cwd)


def venue_seed(home: Path) -> str:
    conn = sqlite3.connect(home / "paper-venue.db")
    try:
        return conn.execute("SELECT value FROM meta WHERE key = 'seed'").fetchone()[0]
    finally:
        conn.close()


# --------------------------------------------------------------------------- the home, from every source


def test_home_named_in_dotenv_is_the_home_whose_config_is_read(tmp_path):
    home = tmp_path / "x" / "home"
    home.mkdir(parents=True, mode=0o700)
    (home / "config.toml").write_text('max_position_usd = "7"\ndefault_position_usd = "7"\n[paper]\nseed = 9\n')
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text(f"BOTCTL_HOME={home}\n")
    env = env_without_home(tmp_path)

    shown = cli(work, env, "config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    config = json.loads(shown.stdout)
    assert config["home"] == str(home)
    assert config["max_position_usd"] == "7" and config["paper"]["seed"] == 9

    ran = cli(work, env, "run", "--duration", "40")
    assert ran.returncode == 0, ran.stderr
    assert not (tmp_path / "user" / ".botctl").exists(), "nothing may be read or written in ~/.botctl"
    assert venue_seed(home) == "9", "a new venue takes the home's configured seed"
    positions = json.loads(cli(work, env, "positions", "--all", "--json").stdout)
    assert positions, "a 40-block run opens positions"
    assert all(float(p["cost"]) <= 7 for p in positions), "the home's risk limit is in force"
    status = json.loads(cli(work, env, "status", "--json").stdout)
    assert status["stage"] == "paper"
    assert cli(work, env, "audit").returncode == 0


def test_profile_named_in_dotenv_is_the_profile_in_force(tmp_path):
    home = tmp_path / "home"
    (tmp_path / ".env").write_text(f"BOTCTL_HOME={home}\nBOTCTL_PROFILE=soft-launch\n")
    result = cli(tmp_path, env_without_home(tmp_path), "config", "show")
    assert result.returncode == 2, "soft-launch is looser than the stage a new book starts in"
    assert "stage is paper: promote first" in one_error_line(result)


# --------------------------------------------------------------------------- one masking rule


def test_config_show_masks_endpoints_to_scheme_and_host(botctl, home, tmp_path):
    env = {"BOTCTL_CHAINS__BASE__KIND": "evm", "BOTCTL_CHAINS__BASE__RPC_URL": SECRET_URL}
    (tmp_path / ".env").write_text("BOTCTL_CHAINS__SOL__KIND=solana\n"
                                   "BOTCTL_CHAINS__SOL__RPC_URL=https://user:hunter2@rpc.example?api-key=SECRET3\n")
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = botctl(*args, env=env)
        assert result.returncode == 0, result.stderr
        for secret in ("SECRETKEY", "SECRETQUERY", "SECRET3", "hunter2", "user"):
            assert secret not in result.stdout + result.stderr
    config = json.loads(botctl("config", "show", "--json", env=env).stdout)
    assert config["chains"]["base"]["rpc_url"] == "http://127.0.0.1:9/…"
    assert config["chains"]["sol"]["rpc_url"] == "https://rpc.example/…"
    assert config["chains"]["sol"]["jupiter_url"] == "https://api.jup.ag/…"


def test_doctor_masks_endpoints_the_same_way(botctl):
    env = {"BOTCTL_CHAINS__BASE__KIND": "evm", "BOTCTL_CHAINS__BASE__RPC_URL": SECRET_URL}
    result = botctl("doctor", env=env)
    assert "http://127.0.0.1:9/…" in result.stdout
    assert "SECRET" not in result.stdout + result.stderr


def test_reveal_only_on_a_terminal(botctl, home):
    env = {"BOTCTL_CHAINS__BASE__KIND": "evm", "BOTCTL_CHAINS__BASE__RPC_URL": SECRET_URL}
    piped = botctl("config", "show", "--reveal", env=env)
    assert piped.returncode == 2
    assert "terminal" in one_error_line(piped)
    assert "SECRET" not in piped.stdout + piped.stderr

    full = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    full.update(env, BOTCTL_HOME=str(home))
    code, shown = converse(["config", "show", "--reveal"], full, [])
    assert code == 0, shown
    assert SECRET_URL in shown


# --------------------------------------------------------------------------- refused, not ignored


@pytest.mark.parametrize("config, dotenv, words", [
    ("max_slipage_bps = 10\n", "", ["config.toml: max_slipage_bps is not a setting",
                                    "did you mean max_slippage_bps?"]),
    ("[paper]\nseedd = 3\n", "", ["config.toml: paper.seedd is not a setting", "did you mean paper.seed?"]),
    ("", "BOTCTL_MAX_SLIPAGE_BPS=10\n", [".env line 1: BOTCTL_MAX_SLIPAGE_BPS is not a setting",
                                         "did you mean BOTCTL_MAX_SLIPPAGE_BPS?"]),
    ("", "# ok\nBOTCTL_PAPER__FAIL_RATE=5\n", [".env line 2: BOTCTL_PAPER__FAIL_RATE is not a setting",
                                              "did you mean BOTCTL_PAPER__FAIL_RATE_BPS?"]),
    ('profile = "paper"\n', "", ["config.toml: profile cannot be set here", "BOTCTL_PROFILE"]),
    ('home = "/tmp"\n', "", ["config.toml: home cannot be set here", "BOTCTL_HOME"]),
    ("", "BOTCTL_COOLDOWN_S=5\nBOTCTL_EVM_PASSWORD hunter2\n", [".env line 2: not a NAME=value line"]),
    ("", "BOTCTL_DEBUG=1\n", [".env line 1: BOTCTL_DEBUG is read from the environment only"]),
    ('min_position_usd = "20"\nmax_position_usd = "10"\n', "",
     ["config.toml: min_position_usd = 20 is above ", "config.toml: max_position_usd = 10: no entry"]),
    ('min_position_usd = "20"\n', "BOTCTL_MAX_POSITION_USD=10\n",
     ["config.toml: min_position_usd = 20 is above BOTCTL_MAX_POSITION_USD=10"]),
    ('[paper]\ndeposit_usd = "0.0000001"\n', "", ["config.toml: paper.deposit_usd:", "the deposit would be 0"]),
    ('max_slippage_bps = "abc"\n', "", ["config.toml: max_slippage_bps: Input should be a valid integer"]),
    ('[chains.x]\nkind = "evm"\nconfirmations = 5000\n', "",
     ["config.toml: chains.x.confirmations: Input should be less than or equal to 1000"]),
    ('max_slippage_bps = 80\n', "BOTCTL_MAX_SLIPPAGE_BPS=abc\n", ["BOTCTL_MAX_SLIPPAGE_BPS: Input should be"]),
    ('[chains.x]\nkind = "evm"\nmarks_every_s = 0.1\n', "",
     ["config.toml: chains.x.marks_every_s: Input should be greater than or equal to 0.2"]),
    ('[chains.x]\nkind = "evm"\nquote_usd = "0"\n', "", ["config.toml: chains.x.quote_usd: Input should be greater than 0"]),
    ('[chains.x]\nkind = "evm"\ntokens = ["0x0000000000000000000000000000000000000001", 5]\n', "",
     ["config.toml: chains.x.tokens[1]: Input should be a valid string"]),
    ('[chains.x]\nkind = "evm"\nconfirmations = 2\n',
     'BOTCTL_CHAINS={"x": {"kind": "evm", "confirmations": "z"}}\n',
     ["BOTCTL_CHAINS (at x.confirmations): Input should be a valid integer"]),
    ("", "BOTCTL_PAPER__NATIVE_DEPOSIT=0.0000000001\n", ["BOTCTL_PAPER__NATIVE_DEPOSIT",
                                                        "the deposit would be 0"]),
])
def test_what_was_silently_accepted_is_refused(botctl, home, tmp_path, config, dotenv, words):
    home.mkdir(mode=0o700)
    if config:
        (home / "config.toml").write_text(config)
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    result = botctl("run", "--duration", "5")
    assert result.returncode == 2, result.stdout + result.stderr
    line = one_error_line(result)
    for word in words:
        assert word in line
    assert "hunter2" not in line
    assert not (home / "botctl.db").exists(), "nothing may be written on bad input"


@pytest.mark.parametrize("variable, value, args, suggestion", [
    ("BOTCTL_MAX_SLIPAGE_BPS", "5", ["config", "show"], "BOTCTL_MAX_SLIPPAGE_BPS"),
    ("BOTCTL_DRYRUN", "false", ["run", "--duration", "5"], "BOTCTL_DRY_RUN"),
    ("BOTCTL_PROFIL", "scale-up", ["status"], "BOTCTL_PROFILE"),
    ("botctl_paper__sed", "3", ["run", "--duration", "5"], "BOTCTL_PAPER__SEED"),
    ("BOTCTL_COOLDOWN_S__X", "5", ["config", "show", "--json"], "BOTCTL_COOLDOWN_S"),
])
def test_a_variable_that_is_no_setting_is_refused_in_the_environment_as_in_dotenv(botctl, home, tmp_path,
                                                                                  variable, value, args,
                                                                                  suggestion):
    name = variable.upper()
    from_environment = botctl(*args, env={variable: value})
    assert from_environment.returncode == 2, from_environment.stdout + from_environment.stderr
    said = one_error_line(from_environment)
    assert said == f"error: environment: {name} is not a setting (did you mean {suggestion}?)"
    assert not from_environment.stdout and not home.exists(), "nothing may be read into effect or written"

    (tmp_path / ".env").write_text(f"{variable}={value}\n")  # one rule for both
    from_dotenv = botctl(*args)
    assert from_dotenv.returncode == 2
    assert one_error_line(from_dotenv) == said.replace("environment:", ".env line 1:")
    assert not home.exists()


def test_the_variables_botctl_reads_that_are_no_setting_are_accepted(botctl):
    env = {"BOTCTL_LOG_LEVEL": "debug", "BOTCTL_DEBUG": "1", "BOTCTL_CRASH_AT": "nowhere", "BOTCTL_CRASH_SKIP": "0",
           "BOTCTL_EVM_PASSWORD": "pw-hunter2", "BOTCTL_JUPITER_API_KEY": "key-hunter2",
           "BOTCTL_SYNCHRONOUS": "NORMAL"}
    result = botctl("config", "show", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert json.loads(result.stdout)["synchronous"] == "NORMAL"


# --------------------------------------------------------------------------- files others can write


# Every command reads its settings from the home first, so each refuses; a different few per file.
INSECURE = (
    ("config.toml", 0o666, "chmod 600", (["config", "show"], ["status"], ["run", "--duration", "5"])),
    ("paper-venue.db", 0o646, "chmod 600", (["positions", "--json"], ["reconcile"], ["history"])),
    ("botctl.db", 0o620, "chmod 600", (["audit"], ["reservations"])),
    (".", 0o777, "chmod 700", (["nonces"], ["history", "--commands"], ["config", "show", "--json"])),
)


def test_every_command_refuses_a_home_file_others_can_write(botctl, home):
    assert botctl("run", "--seed", "3", "--duration", "20").returncode == 0
    (home / "config.toml").write_text("cooldown_s = 60\n")
    os.chmod(home / "config.toml", 0o600)
    for name, mode, fix, commands in INSECURE:
        path = home / name
        os.chmod(path, mode)
        for args in commands:
            result = botctl(*args)
            assert result.returncode == 2, (name, args, result.stderr)
            assert f"{fix} {path}" in one_error_line(result), (name, args)
        if name == ".":
            doctor = botctl("doctor")
            assert doctor.returncode == 1 and f"{fix} {path}" in doctor.stdout
        os.chmod(path, 0o700 if name == "." else 0o600)
    assert botctl("audit").returncode == 0


# --------------------------------------------------------------------------- the paper venue is the chain


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_venue_that_is_gone_is_an_error_never_a_new_venue(botctl, home, how):
    assert botctl("run", "--seed", "6", "--duration", "40").returncode == 0
    before = json.loads(botctl("status", "--json").stdout)
    venue = home / "paper-venue.db"
    for extra in (Path(f"{venue}-wal"), Path(f"{venue}-shm")):
        extra.unlink(missing_ok=True)
    if how == "deleted":
        venue.unlink()
    else:
        venue.write_bytes(b"")
    for args in (["run", "--duration", "5"], ["reconcile", "--accept"]):
        result = botctl(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        line = one_error_line(result)
        assert str(venue) in line and "restore" in line and "fresh BOTCTL_HOME" in line
    assert venue.exists() == (how == "emptied") and (not venue.exists() or venue.stat().st_size == 0)
    after = json.loads(botctl("status", "--json").stdout)
    assert after["equity"] == before["equity"], "nothing was accepted from a venue that is not the book's"
    assert botctl("audit").returncode == 0


def test_a_venue_keeps_the_block_length_it_was_created_with(botctl, home, tmp_path):
    """BOTCTL_PAPER__BLOCK_MS (tests run a simulated day in fewer, longer blocks) sets a new venue's
    clock; another length later would move the time of every block mined so far, so it is refused."""
    minute = {"BOTCTL_PAPER__BLOCK_MS": "60000"}

    def hours(where=home) -> str:
        return json.loads(botctl("rollout", "check", "--json", env={"BOTCTL_HOME": str(where)}).stdout
                          )["evidence"]["hours"]

    assert json.loads(botctl("config", "show", "--json").stdout)["paper"]["block_ms"] is None
    assert json.loads(botctl("config", "show", "--json", env=minute).stdout)["paper"]["block_ms"] == 60000
    assert botctl("run", "--duration", "60", env=minute).returncode == 0
    assert hours() == "1.000", "60 blocks of a minute"
    assert botctl("run", "--duration", "30").returncode == 0
    assert hours() == "1.500", "an existing venue keeps its own length"
    other = botctl("run", "--duration", "5", env={"BOTCTL_PAPER__BLOCK_MS": "1000"})
    assert other.returncode == 2
    assert "was created with 60000 ms blocks, not 1000" in one_error_line(other)
    assert hours() == "1.500", "nothing ran"
    # A paper book taken without its venue (a stage change) reads the venue's clock at its length too.
    put_book_in_stage(home, "testnet")
    since = json.loads(botctl("rollout", "check", "--json").stdout)["since"]
    fills = [row["at"] for row in json.loads(botctl("history", "--json").stdout)]
    assert fills and since >= max(fills), (since, max(fills))

    default = tmp_path / "default"  # a second, by default
    assert botctl("run", "--duration", "36", env={"BOTCTL_HOME": str(default)}).returncode == 0
    assert hours(default) == "0.010"


@pytest.mark.parametrize("value, words", [("0", "greater than or equal to 1"),
                                          ("60001", "less than or equal to 60000"), ("1.5", "valid integer")])
def test_a_block_length_below_a_millisecond_or_beyond_a_minute_is_refused(botctl, home, value, words):
    result = botctl("run", "--duration", "5", env={"BOTCTL_PAPER__BLOCK_MS": value})
    assert result.returncode == 2
    line = one_error_line(result)
    assert "BOTCTL_PAPER__BLOCK_MS" in line and words in line
    assert not home.exists(), "nothing may be written on bad input"


@pytest.mark.parametrize("where", [".env", "logs", "botctl.lock"])
def test_a_file_others_can_write_is_refused_by_every_command(tmp_path, where):
    """A writable .env could redirect the home; a writable logs/ invites a planted log file."""
    import stat

    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_PAPER__SPEED": "0"})
    (work / ".env").write_text(f"BOTCTL_HOME={home}\n")
    run = cli(work, env, "run", "--duration", "3")
    assert run.returncode == 0, run.stderr
    target = work / ".env" if where == ".env" else home / where
    target.chmod(stat.S_IMODE(target.stat().st_mode) | stat.S_IWOTH)
    for command in (["status"], ["run", "--duration", "2"]):
        result = cli(work, env, *command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        shown = ".env" if where == ".env" else str(target)  # .env is named as the operator knows it
        assert result.stderr.startswith("error: ") and shown in result.stderr and "chmod" in result.stderr
