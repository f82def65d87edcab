"""The staged rollout through the real CLI: evidence comes from real paper runs and drills only.

One long test walks paper -> testnet the way an operator would (a 24-hour simulated paper run,
unpaced, on one-minute blocks: the same simulated day in 1,440 blocks instead of 86,400; its drills
run before it, so that no audit replays a whole day's journal more than needed). The others are
quick: refusals, and the testnet stage reached through a seam."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

import terminal
from chains.evm_tester import serve
from clikit import put_book_in_stage

FAST = {"BOTCTL_SYNCHRONOUS": "NORMAL"}  # the long run's commits need not reach the platter here
# One-minute blocks: a simulated day is 1,440 of them. Every rule of the evidence is in simulated
# time (heartbeats each engine minute, hours from their spans), so the day counts the same; exits,
# cooldowns and latency still span several blocks (max hold 30, cooldown 5, latency 1-2).
MINUTE_BLOCKS = {"BOTCTL_PAPER__BLOCK_MS": "60000"}
DAY = 24 * 60  # blocks of a minute; `--duration` counts blocks on paper


def check(botctl) -> tuple[int, dict]:
    out = botctl("rollout", "check", "--json")
    return out.returncode, json.loads(out.stdout)


def missing_keys(summary: dict) -> set[str]:
    return {item["key"] for item in summary["items"] if not item["ok"]}


@pytest.mark.slow
def test_promotion_rests_on_evidence_from_real_runs_and_drills(botctl, home, tmp_path):
    # A short run: some trades, far from 24 hours. It creates the venue: one-minute blocks from now
    # on, whatever later commands say (a venue keeps its block length).
    assert botctl("run", "--duration", "180", "--seed", "5", env={**FAST, **MINUTE_BLOCKS}).returncode == 0
    code, summary = check(botctl)
    assert code == 1 and summary["stage"] == "paper" and summary["next"] == "testnet"
    assert missing_keys(summary) == {"trades", "hours", "drill:failure", "drill:crash", "drill:halt", "attest:logs"}
    refused = botctl("rollout", "promote", "--yes")
    assert refused.returncode == 1
    err = refused.stderr.strip()
    assert err.startswith("error: promotion to testnet refused, missing:") and len(err.splitlines()) == 1
    for named in ("round trips closed on paper", "hours run on paper", "drill failure", "drill crash",
                  "drill halt", "logs:"):
        assert named in err
    assert json.loads(botctl("status", "--json").stdout)["stage"] == "paper"

    # Each drill in paper mode: passes, leaves the audit clean, is recorded. (Before the long run:
    # evidence counts in any order, and each audit here replays a short journal, not a day's.)
    for kind in ("failure", "crash", "halt"):
        out = botctl("drill", kind)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"drill {kind} passed" in out.stdout
        assert botctl("audit").returncode == 0
        _code, summary = check(botctl)
        assert f"drill:{kind}" not in missing_keys(summary)
    assert missing_keys(summary) == {"trades", "hours", "attest:logs"}  # drills run no trading hours

    # The long run (24 simulated hours, no loss breaker so that it keeps trading); the operator
    # attests from another terminal while it runs: the running engine records it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update(BOTCTL_HOME=str(home), BOTCTL_PAPER__SPEED="0", BOTCTL_MAX_CONSECUTIVE_LOSSES="0", **FAST)
    run = terminal.spawn(["run", "--duration", str(DAY)], env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while json.loads(botctl("status", "--json").stdout)["owner"] is None:
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.1)
        attested = botctl("rollout", "attest", "logs", "--yes", "--json")
        assert attested.returncode == 0, attested.stderr
        assert json.loads(attested.stdout)["state"] == "done"
        assert run.wait(timeout=240) == 0, run.stderr.read()
    finally:
        if run.poll() is None:
            run.kill()
    code, summary = check(botctl)
    assert code == 0 and summary["ready"] and summary["missing"] == [], summary["missing"]
    assert summary["evidence"]["trades"] >= 100 and float(summary["evidence"]["hours"]) >= 24 + 3  # + the short run
    who = summary["evidence"]["attestations"]["logs"]["by"]
    assert "@" in who and "pid" in who  # who attested, from which host and process

    promoted = botctl("rollout", "promote", "--yes")
    assert promoted.returncode == 0, promoted.stderr
    assert "stage paper -> testnet" in promoted.stdout
    assert json.loads(botctl("status", "--json").stdout)["stage"] == "testnet"
    # The testnet stage's own checklist starts empty: paper evidence does not count there.
    code, summary = check(botctl)
    assert code == 1 and summary["stage"] == "testnet" and summary["evidence"]["trades"] == 0
    history = botctl("history", "--commands", "--json")
    commands = [row["command"] for row in json.loads(history.stdout)]
    assert {"attest", "promote"} <= set(commands)


def test_in_the_testnet_stage_paper_counts_nothing_and_demotion_needs_no_evidence(botctl, home):
    assert botctl("run", "--duration", "120", "--seed", "3").returncode == 0
    put_book_in_stage(home, "testnet")
    # Its profile trades test networks: with none configured it says what to do; paper still runs.
    live = botctl("run", "--duration", "5")
    assert live.returncode == 2 and "mode live needs chains" in live.stderr
    assert botctl("run", "--duration", "120", "--seed", "3", "--profile", "paper").returncode == 0
    code, summary = check(botctl)
    assert code == 1 and summary["stage"] == "testnet"
    assert summary["evidence"]["trades"] == 0  # paper trades in the testnet stage are not testnet evidence
    assert float(summary["evidence"]["hours"]) == 0

    # Demotion needs no evidence, and the paper stage's tighter ceilings apply again.
    demoted = botctl("rollout", "demote", "--reason", "drill the way back")
    assert demoted.returncode == 0 and "stage testnet -> paper" in demoted.stdout
    assert json.loads(botctl("status", "--json").stdout)["stage"] == "paper"
    assert botctl("audit").returncode == 0
    history = botctl("history", "--commands", "--json")
    assert "demote" in [row["command"] for row in json.loads(history.stdout)]


def test_promote_on_a_fresh_book_names_everything_missing(botctl):
    assert botctl("run", "--duration", "30", "--seed", "2").returncode == 0
    out = botctl("rollout", "promote", "--yes")
    assert out.returncode == 1 and "promotion to testnet refused, missing:" in out.stderr
    human = botctl("rollout", "status")
    assert human.returncode == 0 and "[MISS] round trips closed on paper" in human.stdout
    assert botctl("rollout", "check").returncode == 1


def test_a_profile_looser_than_the_stage_is_refused(botctl):
    assert botctl("run", "--duration", "5").returncode == 0
    out = botctl("run", "--duration", "5", "--profile", "soft-launch")
    assert out.returncode == 2
    assert out.stderr.startswith("error: stage is paper: promote first") and len(out.stderr.splitlines()) == 1


def test_a_config_beyond_the_ceiling_is_refused_with_nothing_written(botctl, home):
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text('max_position_usd = "150"\n')
    out = botctl("run", "--duration", "5")
    assert out.returncode == 2
    line = out.stderr.strip()  # named where the operator set it
    assert line.startswith("error: ")
    assert line.endswith("config.toml: max_position_usd = 150 exceeds the paper ceiling 100"), line
    assert not (home / "botctl.db").exists()


def test_attest_and_drill_refuse_bad_input(botctl):
    assert botctl("run", "--duration", "5").returncode == 0
    out = botctl("rollout", "attest", "nonsense", "--yes")
    assert out.returncode == 1 and "asks no attestation 'nonsense' (it asks: logs)" in out.stderr
    out = botctl("drill", "flood")
    assert out.returncode == 2 and "unknown drill 'flood'" in out.stderr
    out = botctl("rollout", "demote")
    assert out.returncode == 1 and "first stage" in out.stderr


def test_a_drill_refuses_while_another_process_owns_the_book(botctl, home, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update(BOTCTL_HOME=str(home), BOTCTL_PAPER__SPEED="1")
    run = terminal.spawn(["run"], env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not (home / "botctl.db").exists() or \
                json.loads(botctl("status", "--json").stdout or "{}").get("owner") is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        out = botctl("drill", "failure")
        assert out.returncode == 1 and "stop it first" in out.stderr
    finally:
        run.terminate()
        run.wait(timeout=30)


# --------------------------------------------------------------------------- network guards


def test_doctor_reports_each_check_and_a_mainnet_endpoint(botctl, home):
    assert botctl("run", "--duration", "5").returncode == 0
    ok = botctl("doctor")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for check_name in ("settings", "home", "stage", "database", "lock", "keys", "endpoints"):
        assert any(line.split()[1] == check_name for line in ok.stdout.splitlines() if line.startswith("ok"))
    with serve(chain_id=1) as url:
        (home / "config.toml").write_text(f'[chains.base]\nkind = "evm"\nrpc_url = "{url}"\nchain_id = 1\n')
        out = botctl("doctor", "--json")
    assert out.returncode == 1
    report = {c["check"]: c for c in json.loads(out.stdout)["checks"]}
    assert not report["chains.base"]["ok"]
    assert report["chains.base"]["detail"] == \
        "the endpoint is chain id 1 (Ethereum mainnet), a mainnet network; stage paper trades on paper only"
    assert report["key base"]["detail"] == "no keystore configured"


def test_doctor_fails_what_a_live_start_would_refuse_a_dry_run_and_a_solana_chain(botctl, home):
    assert botctl("run", "--duration", "5").returncode == 0
    put_book_in_stage(home, "testnet")
    with serve(chain_id=31337) as url:
        (home / "config.toml").write_text(f'[chains.anvil]\nkind = "evm"\nrpc_url = "{url}"\nchain_id = 31337\n'
                                          f'[chains.sol]\nkind = "solana"\nrpc_url = "{url}"\n')
        out = botctl("doctor", "--json", env={"BOTCTL_PROFILE": "testnet"})
    assert out.returncode == 1, out.stdout + out.stderr
    checks = json.loads(out.stdout)["checks"]
    assert any(c["check"] == "dry run" and not c["ok"] and "BOTCTL_DRY_RUN=false" in c["detail"] for c in checks), checks
    assert any(c["check"] == "chains.sol" and not c["ok"] and "not in this version" in c["detail"] for c in checks)
    # the paper profile on a testnet book: its runs count for paper, and the checklist says so
    shown = botctl("rollout", "status", env={"BOTCTL_PROFILE": "paper"}).stdout
    assert "note: the book is in stage testnet but these settings use profile paper" in shown, shown


def converse(home, args: list[str], answers: list[str], extra: dict | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update(BOTCTL_HOME=str(home), BOTCTL_PAPER__SPEED="0", **(extra or {}))
    return terminal.converse(args, env, answers)


def test_the_wizard_walks_the_checklist_and_records_what_the_operator_does(botctl, home):
    assert botctl("run", "--duration", "120", "--seed", "3").returncode == 0
    # drills in checklist order: failure (yes), crash (no), halt (no); then the attestation (yes)
    code, shown = converse(home, ["rollout"], ["y", "n", "n", "y"])
    assert code == 0, shown
    assert "stage paper (staging) -> testnet: 2/8 done" in shown  # consistency and audit, before
    assert "drill failure passed" in shown and "attested for paper: logs" in shown
    assert "4/8 done" in shown and "4 item(s) still missing" in shown  # progress after
    _code, summary = check(botctl)
    assert missing_keys(summary) == {"trades", "hours", "drill:crash", "drill:halt"}


# --------------------------------------------------------------------------- live funds at start


def test_live_funds_need_every_guard_then_the_word_live_on_a_terminal(botctl, home, tmp_path):
    from chains.solana_stub import serve as solana

    assert botctl("run", "--duration", "5").returncode == 0
    put_book_in_stage(home, "soft-launch")
    keypair = home / "keys" / "solana.json"
    keypair.parent.mkdir(mode=0o700)
    keypair.write_text(json.dumps(list(range(64))))
    keypair.chmod(0o644)
    live = {"BOTCTL_PROFILE": "soft-launch", "BOTCTL_DRY_RUN": "false"}
    with solana() as url:  # answers with mainnet-beta's genesis hash
        (home / "config.toml").write_text(
            f'[chains.solana]\nkind = "solana"\nrpc_url = "{url}"\nkeypair = "keys/solana.json"\n')
        out = botctl("run", "--duration", "5", env=live)
        assert out.returncode == 2 and f"keypair {keypair} is readable by others (chmod 600" in out.stderr
        keypair.chmod(0o600)
        out = botctl("run", "--duration", "5", env=live)
        assert out.returncode == 1
        assert out.stderr.strip() == "error: live funds need a typed confirmation: start botctl from a terminal"
        code, shown = converse(home, ["run", "--duration", "5"], ["yes"], live)
        assert code == 1 and "type LIVE to go on" in shown and "not started" in shown
        code, shown = converse(home, ["run", "--duration", "5"], ["LIVE"], live)
        assert code == 2 and "kind solana is not in this version" in shown
        # A dry run needs no confirmation (and no keys): nothing would move, and nothing starts.
        out = botctl("run", "--duration", "5", env={"BOTCTL_PROFILE": "soft-launch"})
        assert out.returncode == 2 and "dry run on sends nothing" in out.stderr


def test_a_drill_that_cannot_run_says_why_and_records_nothing(botctl):
    assert botctl("run", "--duration", "5").returncode == 0
    assert botctl("halt").returncode == 0
    for kind in ("failure", "crash", "halt"):
        out = botctl("drill", kind)
        assert out.returncode == 1, out.stdout + out.stderr
        assert out.stderr.startswith(f"error: drill {kind} not run (nothing recorded):"), out.stderr
        assert "halted" in out.stderr
    _code, summary = check(botctl)
    assert summary["evidence"]["drills"] == {}


def test_a_command_no_engine_here_can_decide_is_refused_up_front_and_never_runs_later(botctl, home):
    assert botctl("run", "--duration", "5").returncode == 0
    put_book_in_stage(home, "testnet")  # its profile trades test networks: no engine starts here
    before = json.loads(botctl("positions", "--json").stdout)
    assert before, "the paper run left positions open"
    out = botctl("close", "--all", "--yes")  # selling needs the engine
    assert out.returncode == 2 and out.stderr.startswith("error: mode live needs chains"), out.stderr
    assert botctl("run", "--duration", "5", "--profile", "paper").returncode == 0  # a later owner
    history = json.loads(botctl("history", "--commands", "--json").stdout)
    assert all(r["command"] != "close_all" or r["state"] == "withdrawn" for r in history), history
    # a pause moves no funds: decided on the book alone, though no engine can start here
    out = botctl("pause")
    assert out.returncode == 0 and "trading active -> reducing" in out.stdout, out.stderr
    # A demotion works whatever the stage's engine can do, even with a config the paper stage refuses
    # (testnet may turn dry run off; paper may not); reads keep working, an engine start says why.
    (home / "config.toml").write_text("dry_run = false\n")
    assert botctl("rollout", "demote").returncode == 0
    assert json.loads(botctl("status", "--json").stdout)["stage"] == "paper"
    out = botctl("run", "--duration", "5")
    assert out.returncode == 2 and "config.toml: dry_run = false: the paper stage keeps dry run on" in out.stderr


def test_rollout_alone_off_a_terminal_prints_the_checklist(botctl):
    assert botctl("run", "--duration", "5").returncode == 0
    out = botctl("rollout")
    assert out.returncode == 0
    assert out.stdout.startswith("stage paper (staging) -> testnet:") and "[MISS] drill halt" in out.stdout
