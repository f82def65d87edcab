"""The one place errors are written: one `error:` line on stderr and an exit code.

0 ok, 1 refused or failed, 2 usage or configuration. Commands raise; `main`
catches and writes. No traceback reaches the operator for an expected failure.
"""

from __future__ import annotations

import sys


class Failed(Exception):
    """Refused or failed: exit 1."""

    code = 1


class Usage(Exception):
    """Bad usage or configuration: exit 2."""

    code = 2


def write_error(message: str) -> None:
    line = " ".join(str(message).split()) or "failed"
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()
