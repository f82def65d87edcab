"""Run botctl on a pseudo-terminal (a real TTY to it): answer its prompts (`converse`), or drive a
full-screen command with keys and signals and read what it drew (`Console`)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import sys
import termios
import threading
import time


def converse(args: list[str], env: dict[str, str], answers: list[str]) -> tuple[int, str]:
    """Run `botctl ARGS`, answering each prompt (output ending in ':') with the next answer in turn.
    Returns (exit code, everything shown)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: botctl on the terminal
        os.execve(sys.executable, [sys.executable, "-m", "console.cli", *args], env)
    shown, pending = b"", list(answers)
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
        if pending and shown.rstrip(b" ").endswith(b":"):
            os.write(fd, pending.pop(0).encode() + b"\r")
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


# Escape sequences a full-screen app writes: CSI (cursor, colours, modes), OSC (titles, links), and the
# short ESC forms (charset, keypad, save/restore). Stripped, what is left is the text it drew.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>NOPM78c]")


class Console:
    """`botctl ARGS` on a pseudo-terminal of `size` (columns, rows), for full-screen commands.

    A thread drains the terminal all the time (a full-screen app blocks once the terminal's buffer is
    full); `expect` searches what was drawn, escape sequences stripped. `mark()` then
    `expect(..., after=mark)` only looks at what was drawn since. Use as a context manager: a child
    still running at the end is killed (SIGKILL, by its pid) and reaped, so no test leaves one behind."""

    def __init__(self, args: list[str], env: dict[str, str], size: tuple[int, int] = (130, 40),
                 cwd: str | None = None):
        import pty

        columns, rows = size
        env = {**env, "TERM": env.get("TERM", "xterm-256color")}
        self.args = args
        self.started = time.monotonic()
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its window size set before botctl starts and asks for it
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
                if cwd is not None:
                    os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, "-m", "console.cli", *args], env)
            finally:
                os._exit(127)
        self._chunks: list[bytes] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.code: int | None = None

    def _drain(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: every process on the terminal has gone
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def raw(self) -> str:
        return b"".join(list(self._chunks)).decode(errors="replace")

    def text(self) -> str:
        """Everything drawn so far, escape sequences stripped."""
        return _ESCAPES.sub("", self.raw())

    def mark(self) -> int:
        return len(self.text())

    def expect(self, pattern: str, timeout: float = 10, after: int = 0) -> re.Match:
        """Wait until `pattern` (a regular expression) was drawn after position `after`."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text()[after:])
            if found:
                return found
            if time.monotonic() > deadline or (self.poll() is not None and not self._reader.is_alive()):
                raise AssertionError(f"{pattern!r} not drawn within {timeout} s (exit {self.code}); "
                                     f"last drawn: {self.text()[-1500:]!r}")
            time.sleep(0.05)

    def press(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def hang_up(self) -> None:
        """Close the terminal, as when its window is closed: the kernel sends SIGHUP to botctl."""
        self._stop.set()
        self._reader.join()
        os.close(self.fd)
        self.fd = -1

    def poll(self) -> int | None:
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def wait(self, timeout: float = 10) -> int:
        """The exit code; AssertionError if botctl is still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"botctl {' '.join(self.args)} still running {timeout} s later; "
                                     f"last drawn: {self.text()[-1500:]!r}")
            time.sleep(0.05)
        return self.code

    def close(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            _pid, status = os.waitpid(self.pid, 0)
            self.code = os.waitstatus_to_exitcode(status)
        self._stop.set()
        self._reader.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Console":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
