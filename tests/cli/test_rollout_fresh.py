"""The rollout wizard on a fresh home: where a new operator starts.

No book yet: `rollout status`, `rollout check` and the wizard show the paper stage's checklist
with nothing done and say what to do first; none of them creates the home.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import terminal
from terminal import converse

pytestmark = pytest.mark.slow


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0"})
    return env


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return terminal.run(args, env_for(home), cwd=home.parent)


def test_rollout_check_on_a_fresh_home_is_the_paper_checklist_with_everything_missing(tmp_path):
    home = tmp_path / "home"
    check = cli(home, "rollout", "check", "--json")
    assert check.returncode == 1, check.stderr
    assert "Traceback" not in check.stderr and "start the engine once" not in check.stderr
    [line] = check.stderr.splitlines()
    assert line.startswith("error: ") and "missing for testnet" in line
    summary = json.loads(check.stdout)
    assert (summary["stage"], summary["next"], summary["ready"]) == ("paper", "testnet", False)
    items = summary["items"]
    assert {"trades", "hours", "consistency", "audit", "drill:failure", "drill:crash", "drill:halt",
            "attest:logs"} <= {i["key"] for i in items}
    assert [i["key"] for i in items if i["ok"]] == []
    assert len(summary["missing"]) == len(items)
    assert summary["evidence"]["book"] is False
    assert not home.exists()


def test_rollout_status_on_a_fresh_home_shows_the_checklist_and_the_first_step(tmp_path):
    home = tmp_path / "home"
    status = cli(home, "rollout", "status")
    assert status.returncode == 0, status.stderr
    assert status.stderr == ""
    lines = status.stdout.splitlines()
    assert lines[0].startswith("stage paper") and "-> testnet: 0/" in lines[0]
    assert sum(1 for line in lines if line.strip().startswith("[MISS]")) >= 8
    assert not any(line.strip().startswith("[ok") for line in lines)
    assert "First: `botctl run`" in status.stdout
    assert not home.exists()


def test_the_wizard_on_a_fresh_home_starts_the_operator_off(tmp_path):
    home = tmp_path / "home"
    code, shown = converse(["rollout"], env_for(home), [])
    assert code == 0, shown
    assert "stage paper" in shown and "[MISS]" in shown and "[ok" not in shown
    assert "First: `botctl run`" in shown
    assert "Traceback" not in shown and "error:" not in shown
    assert not home.exists()
