"""Run botctl on a pseudo-terminal (a real TTY to it) and answer its prompts."""

from __future__ import annotations

import os
import sys


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
