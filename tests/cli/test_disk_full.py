"""The disk fills under `botctl run`: one named error, and the book is whole.

$BOTCTL_HOME on a 16 MB tmpfs (Linux, root: `mount -t tmpfs -o size=16m`). A first short run makes
the book; a filler then leaves about 1.5 MB, so the next run fills the disk within seconds instead
of minutes. Expected: exactly `error: no space left on the disk holding <home>: nothing was
half-written; free space and start again`, exit 1, no traceback; then, with space again, a restart
runs, the audit is clean and no fill recorded before the disk filled is lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import terminal

pytestmark = pytest.mark.slow

LEAVE_FREE = 1536 * 1024


def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0"})
    return terminal.run(args, env, cwd=home.parent.parent, timeout=timeout)


@pytest.fixture
def small_disk(tmp_path):
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("a full disk is made with a 16 MB tmpfs: needs Linux and root (mount -t tmpfs)")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a 16 MB tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fills(home: Path) -> dict[int, dict]:
    history = cli(home, "history", "--json", "--limit", "1000000")
    assert history.returncode == 0, history.stderr
    return {row["id"]: row for row in json.loads(history.stdout)}


def test_a_full_disk_is_one_named_error_and_a_restart_with_space_audits_clean(small_disk):
    home = small_disk / "home"
    first = cli(home, "run", "--seed", "3", "--duration", "60")
    assert first.returncode == 0, first.stderr
    stat = os.statvfs(small_disk)
    with open(small_disk / "filler", "wb") as fh:
        fh.write(b"\0" * (stat.f_bavail * stat.f_frsize - LEAVE_FREE))

    full = cli(home, "run", "--seed", "3")  # no duration: until the disk is full
    assert full.returncode == 1, full.stderr
    for sign in ("Traceback", 'File "', "Exception in thread", "unexpected"):
        assert sign not in full.stderr, full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: no space left on the disk holding {home}: nothing was half-written; free space "
                      "and start again"], full.stderr
    assert full.stderr.splitlines()[-1] == errors[0]
    before = fills(home)

    (small_disk / "filler").unlink()
    again = cli(home, "run", "--seed", "3", "--duration", "30")
    assert again.returncode == 0, again.stderr
    audit = cli(home, "audit")
    assert audit.returncode == 0 and "audit clean" in audit.stdout, audit.stdout + audit.stderr
    after = fills(home)
    assert before and all(after.get(ident) == row for ident, row in before.items())  # no fill lost
