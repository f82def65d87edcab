"""A real EVM node for the tests: foundry's anvil, installed from npm by the test run itself.

Why npm: the README's two commands are the whole set-up, and the npm registry ships
anvil's binary inside a package (`@foundry-rs/anvil-<os>-<arch>`), pinned by the
lockfile beside this file. `ensure_installed()` runs `npm ci` when node_modules is
missing or was installed from another lockfile; a file lock keeps two pytest-xdist
workers from installing at once.

Why the binary and not `node_modules/.bin/anvil`: that is a node wrapper which does not
pass SIGKILL on, so a killed wrapper leaves anvil running. `Anvil` starts the binary
itself and stops it by its own pid.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

HERE = Path(__file__).resolve().parent

_PLATFORMS = {
    ("Linux", "x86_64"): "linux-amd64",
    ("Linux", "aarch64"): "linux-arm64",
    ("Linux", "arm64"): "linux-arm64",
    ("Darwin", "x86_64"): "darwin-amd64",
    ("Darwin", "arm64"): "darwin-arm64",
}
_STAMP = ".botctl-lockfile-sha256"  # in node_modules: the lockfile it was installed from
_LISTENING = re.compile(r"Listening on (\S+):(\d+)")
_KEY = re.compile(r"^\((\d+)\) (0x[0-9a-fA-F]{64})\s*$")


class ChainSetupError(RuntimeError):
    """The test chain cannot be installed or started; the message says what to do."""


def binary_path(root: Path = HERE) -> Path:
    key = (platform.system(), platform.machine())
    if key not in _PLATFORMS:
        raise ChainSetupError(f"anvil has no npm binary package for {key[0]} {key[1]}")
    return root / "node_modules" / "@foundry-rs" / f"anvil-{_PLATFORMS[key]}" / "bin" / "anvil"


def _lock_digest(root: Path) -> str:
    return hashlib.sha256((root / "package-lock.json").read_bytes()).hexdigest()


def _fresh(root: Path) -> bool:
    stamp = root / "node_modules" / _STAMP
    try:
        return stamp.read_text().strip() == _lock_digest(root) and os.access(binary_path(root), os.X_OK)
    except FileNotFoundError:
        return False


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_installed(root: Path = HERE, say: Callable[[str], None] = _say) -> Path:
    """Installs anvil and the Uniswap artifacts from the lockfile unless node_modules already
    matches it; returns the anvil binary. Raises ChainSetupError naming what is missing.
    `say` reports progress (a silent install of several seconds looks like a hang)."""
    if _fresh(root):
        return binary_path(root)
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if _fresh(root):  # another worker installed while we waited
            return binary_path(root)
        npm, node = shutil.which("npm"), shutil.which("node")
        if npm is None or node is None:
            missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if path is None)
            raise ChainSetupError(
                f"{missing} not found on PATH: the EVM tests install anvil and Uniswap V2 from npm; "
                "install Node.js 20+ with npm (Debian/Ubuntu: apt-get install nodejs npm; macOS: brew install node)"
            )
        # --ignore-scripts: anvil's postinstall only fetches the binary when the platform
        # package is absent; npm 11 skips it anyway, npm 10 would run it.
        cmd = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
        say(f"[evm test chain] installing anvil + Uniswap V2: npm {' '.join(cmd[1:])} in {root} ...")
        started = time.monotonic()
        try:
            done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600,
                                  check=False)
        except subprocess.TimeoutExpired as e:
            raise ChainSetupError(f"`npm ci` in {root} took over {e.timeout:.0f} s") from None
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise ChainSetupError(f"`npm ci` in {root} failed (exit {done.returncode}):\n{tail}")
        binary = binary_path(root)
        if not os.access(binary, os.X_OK):
            raise ChainSetupError(f"`npm ci` in {root} left no anvil binary at {binary}")
        (root / "node_modules" / _STAMP).write_text(_lock_digest(root) + "\n")
        say(f"[evm test chain] installed in {time.monotonic() - started:.1f} s")
        return binary


def _prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no prctl
        return None


_PRCTL = _prctl()  # resolved here: the child between fork and exec must not import


def _die_with_parent() -> None:
    """Runs in the child before exec: if the test process dies (kill -9, CI timeout), the
    kernel kills anvil too, so no node outlives its tests."""
    _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Anvil:
    """One anvil process on 127.0.0.1, on a port the kernel picks.

    `with Anvil(chain_id=..., no_mining=True) as node: node.rpc_url`. Its log (every RPC
    it served) is kept in a temporary file; `log()` returns it for a failing test's message.
    On Linux the kernel kills anvil when the thread that started it ends, so start it from
    a thread that outlives it (the main thread, as pytest fixtures do), not a to_thread call.
    """

    def __init__(self, *, chain_id: int = 31337, no_mining: bool = False, base_fee: int | None = None,
                 args: tuple[str, ...] = (), startup_timeout: float = 15.0):
        self.chain_id = chain_id
        self.no_mining = no_mining
        self._argv_extra = [*(["--no-mining"] if no_mining else []),
                            *(["--block-base-fee-per-gas", str(base_fee)] if base_fee is not None else []),
                            *args]
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen | None = None
        self._logdir: tempfile.TemporaryDirectory | None = None
        self.host = ""
        self.port = 0
        self.keys: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        assert self._proc is not None, "anvil not started"
        return self._proc.pid

    @property
    def rpc_url(self) -> str:
        assert self.port, "anvil not started"
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self._logdir is not None, "anvil not started"
        return Path(self._logdir.name) / "anvil.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (AssertionError, FileNotFoundError):
            return ""

    def start(self) -> Self:
        binary = ensure_installed()
        self._logdir = tempfile.TemporaryDirectory(prefix="botctl-anvil-")
        argv = [str(binary), "--host", "127.0.0.1", "--port", "0", "--chain-id", str(self.chain_id),
                *self._argv_extra]
        # A file, not a pipe: anvil logs every request, and a pipe nobody drains would block it.
        with open(self.log_path, "wb") as out:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          preexec_fn=_die_with_parent if _PRCTL else None)
        deadline = time.monotonic() + self._startup_timeout
        while True:
            text = self.log()
            found = _LISTENING.search(text)
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                self.keys = _keys(text)
                return self
            if self._proc.poll() is not None or time.monotonic() > deadline:
                code = self._proc.poll()
                self.stop()
                why = f"exited with {code}" if code is not None else f"not listening after {self._startup_timeout} s"
                raise ChainSetupError(f"anvil {why}: {' '.join(argv)}\n{text[-2000:]}")
            time.sleep(0.01)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; reaps the process, so its pid is gone after."""
        proc = self._proc
        if proc is not None and proc.poll() is None:  # not reaped yet: the pid is still anvil's
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._logdir is not None:
            self._logdir.cleanup()
            self._logdir = None
        self.port = 0

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


def _keys(log: str) -> tuple[str, ...]:
    """The dev accounts' private keys, from anvil's startup banner (`(0) 0xac09...`)."""
    section = log.split("Private Keys", 1)[-1].split("Wallet", 1)[0]
    found = {int(m.group(1)): m.group(2) for line in section.splitlines() if (m := _KEY.match(line.strip()))}
    return tuple(found[i] for i in sorted(found))
