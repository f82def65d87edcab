"""CLI speed as an operator feels it: wall time of whole `botctl` processes.

Prints the median of several runs of `botctl --help` beside a bare `python -c
"import typer"` measured in the same run (the floor any Typer CLI pays; the
ratio is what this code adds, and is stable across machines), `botctl status --json`,
and a `botctl close ID` round trip against a running engine (insert into the
inbox, nudge, decide, answer, wait for the exit fill), plus the inbox latency
from insert to decision measured from the database's own timestamps. Targets
(issues 4, 14): --help < 0.3 s and within 2.5x of the bare typer import, status < 0.5 s, close round trip < 0.5 s,
insert-to-decide < 100 ms. A script, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def env_for(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0", "BOTCTL_MAX_HOLD_S": "100000",
                "BOTCTL_STOP_LOSS_BPS": "0", "BOTCTL_TAKE_PROFIT_BPS": "0", "BOTCTL_MAX_OPEN_POSITIONS": "8"})
    env.update(extra)
    return env


def botctl(home: Path, *args: str, **extra: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          env=env_for(home, **extra))
    return time.perf_counter() - start, done


def bare_typer() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import typer"], check=True)
    return time.perf_counter() - start


def median_of(runs: int, fn) -> float:
    return statistics.median(fn() for _ in range(runs))


def verdict(value: float, target: float) -> str:
    return "PASS" if value < target else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    runs = 3 if parser.parse_args().quick else 9
    home = Path(tempfile.mkdtemp(prefix="botctl-bench-")) / "home"
    _t, first = botctl(home, "run", "--seed", "4", "--duration", "300")
    assert first.returncode == 0, first.stderr

    help_s = median_of(runs, lambda: botctl(home, "--help")[0])
    typer_s = median_of(runs, bare_typer)
    status_s = median_of(runs, lambda: botctl(home, "status", "--json")[0])

    engine = subprocess.Popen([sys.executable, "-m", "console.cli", "run"],
                              env=env_for(home, BOTCTL_PAPER__SPEED="50"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while json.loads(botctl(home, "status", "--json")[1].stdout)["owner"] is None:
            time.sleep(0.05)
        closes = []
        positions = json.loads(botctl(home, "positions", "--json")[1].stdout)
        for position in positions[:runs]:
            elapsed, done = botctl(home, "close", str(position["id"]), "--yes")
            if done.returncode == 0:
                closes.append(elapsed)
        conn = sqlite3.connect(home / "botctl.db")
        lags = [d - c for c, d in conn.execute("SELECT created_at, decided_at FROM inbox WHERE command = 'close'"
                                              " AND decided_at IS NOT NULL")]
        conn.close()
    finally:
        engine.send_signal(signal.SIGINT)
        engine.wait(timeout=30)

    close_s = statistics.median(closes) if closes else float("nan")
    lag_ms = statistics.median(lags) if lags else float("nan")
    print(f"{'what':<44}{'median':>10}{'target':>10}")
    print(f"{'botctl --help':<44}{help_s:>9.3f}s{'0.3s':>10}  {verdict(help_s, 0.3)}")
    ratio = help_s / typer_s
    floor = '  python -c "import typer" (same run)'
    print(f"{floor:<44}{typer_s:>9.3f}s")
    print(f"{'  --help / bare typer import':<44}{ratio:>9.2f}x{'2.5x':>10}  {verdict(ratio, 2.5)}")
    print(f"{'botctl status --json':<44}{status_s:>9.3f}s{'0.5s':>10}  {verdict(status_s, 0.5)}")
    print(f"{'botctl close ID (round trip, incl. exit fill)':<44}{close_s:>9.3f}s{'0.5s':>10}  "
          f"{verdict(close_s, 0.5)}  ({len(closes)} closes)")
    print(f"{'inbox insert -> decided (wall clock)':<44}{lag_ms:>8.0f}ms{'100ms':>10}  {verdict(lag_ms, 100)}")
    print("note: the close round trip includes the paper venue's latency (1-2 blocks at 50 blocks/s)")


if __name__ == "__main__":
    main()
