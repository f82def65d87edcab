"""`botctl logs`: the engine's log, readably, so nobody reads raw JSON by hand.

The log is JSON lines in $BOTCTL_HOME/logs/ (botctl.log, rotated to botctl.log.1 ... .5). This
shows the last lines (of every file, oldest first), optionally only those about one order or one
position, and with -f keeps showing new ones as they are written, across a rotation, like
`tail -F`. A position's lines include those of its orders (its entry order's lines name the
position only once it is filled, so they are found through the lines that name both).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from pathlib import Path

import typer

from console.errors import Failed, Usage

POLL_S = 0.2


def logs_command(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep showing new lines as they are written "
                                "(Ctrl-C stops)."),
    json_out: bool = typer.Option(False, "--json", help="The log's own JSON lines, one object per line."),
    order: int = typer.Option(None, "--order", help="Only the lines about this order."),
    position: int = typer.Option(None, "--position", help="Only the lines about this position and its orders."),
    lines: int = typer.Option(None, "--lines", "-n", min=0, help="How many of the last lines to show first "
                              "(default: 50, or every line about the --order or --position; 0 with -f: new "
                              "ones only)."),
) -> None:
    """Show the engine's log: the last lines, readably (tail), or new lines as they come (-f)."""
    from engine.logs import FILE_NAME
    from engine.settings import load_settings

    if order is not None and position is not None:
        raise Usage("--order and --position: give one of them")
    folder = Path(load_settings(check=False).home) / "logs"
    path = folder / FILE_NAME
    if not follow and not path.exists():
        raise Failed(f"no log at {path}: the engine writes it (`botctl run` or `botctl tui`)")
    wanted = Filter(order, position)
    if lines is None:
        lines = 50 if wanted.any else None
    show = _raw if json_out else _readable
    try:
        handle = _tail(path, wanted, lines, show)
        if follow:
            _follow(path, handle, wanted, show)
        elif handle is not None:
            handle.close()
    except KeyboardInterrupt:  # how -f ends
        return
    except BrokenPipeError:  # `botctl logs | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return


class Filter:
    """Which lines to show. A position's orders are learnt from the lines that name both."""

    def __init__(self, order: int | None, position: int | None):
        self.order = order
        self.position = position
        self.orders: set[int] = set()

    @property
    def any(self) -> bool:
        return self.order is None and self.position is None

    def learn(self, record: dict) -> None:
        if record.get("position") == self.position and isinstance(record.get("order"), int):
            self.orders.add(record["order"])

    def keeps(self, record: dict | None) -> bool:
        if self.any:
            return True
        if record is None:
            return False
        if self.order is not None:
            return record.get("order") == self.order
        self.learn(record)
        return record.get("position") == self.position or record.get("order") in self.orders

    def might(self, text: str) -> bool:
        """A cheap look before parsing: can this line be about what is wanted?"""
        if self.order is not None:
            return f'"order": {self.order}' in text
        return f'"position": {self.position}' in text or '"order"' in text

    def select(self, text: str) -> tuple[bool, dict | None]:
        if self.any:
            return True, None
        record = _parse(text) if self.might(text) else None
        return self.keeps(record), record


def _parse(text: str) -> dict | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _files(path: Path) -> list[Path]:
    """The rotated files, oldest first, then the current one."""
    backups = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1:]
        if suffix.isdigit():
            backups.append((int(suffix), candidate))
    return [p for _n, p in sorted(backups, reverse=True)] + [path]


def _lines_of(handle):
    for raw in handle:
        if raw.endswith(b"\n"):
            yield raw[:-1].decode("utf-8", "replace")
        else:  # a line still being written: read it again later
            handle.seek(-len(raw), os.SEEK_CUR)
            return


def _tail(path: Path, wanted: Filter, count: int | None, show):
    """Show the last `count` wanted lines of every file; return the current file, open at the end of
    what was read (for -f), or None if there is none yet."""
    files = []
    for file in _files(path):
        try:
            files.append((file, open(file, "rb")))
        except FileNotFoundError:
            continue
    if wanted.position is not None:  # an entry order's first lines come before the line that links it
        needle = f'"position": {wanted.position}'
        for _file, handle in files:
            for text in _lines_of(handle):
                if needle in text:
                    record = _parse(text)
                    if record is not None:
                        wanted.learn(record)
            handle.seek(0)
    kept: deque = deque(maxlen=count)
    current = None
    for file, handle in files:
        for text in _lines_of(handle):
            keep, record = wanted.select(text)
            if keep:
                kept.append((text, record))
        if file == path:
            current = handle
        else:
            handle.close()
    for text, record in kept:
        show(text, record)
    sys.stdout.flush()
    return current


def _follow(path: Path, handle, wanted: Filter, show) -> None:
    """Show new lines as they are written; after a rotation, finish the old file, then the new one."""
    while True:
        _show_new(handle, wanted, show)
        if _replaced(path, handle):
            if handle is not None:
                _show_new(handle, wanted, show)  # what was written to it just before it was moved
                handle.close()
            try:
                handle = open(path, "rb")
            except FileNotFoundError:
                handle = None
            continue
        time.sleep(POLL_S)


def _show_new(handle, wanted: Filter, show) -> None:
    if handle is None:
        return
    shown = False
    for text in _lines_of(handle):
        keep, record = wanted.select(text)
        if keep:
            show(text, record)
            shown = True
    if shown:
        sys.stdout.flush()


def _replaced(path: Path, handle) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    if handle is None:
        return True
    then = os.fstat(handle.fileno())
    return (now.st_ino, now.st_dev) != (then.st_ino, then.st_dev) or now.st_size < handle.tell()


# --------------------------------------------------------------------------- showing

_NOT_SHOWN = {"at", "level", "logger", "msg", "error", "event", "reason"}


def _raw(text: str, _record: dict | None) -> None:
    sys.stdout.write(text + "\n")


def _readable(text: str, record: dict | None) -> None:
    record = record if record is not None else _parse(text)
    if record is None:
        sys.stdout.write(text + "\n")
        return
    at = str(record.get("at", "")).replace("T", " ")
    level = str(record.get("level", "")).upper()
    msg = str(record.get("msg", ""))
    logger = str(record.get("logger", ""))
    where = "" if logger in ("botctl.events", "") else f"[{logger.removeprefix('botctl.')}] "
    ids = []
    for key, value in record.items():
        if key in _NOT_SHOWN or value is None:
            continue
        if f"{key} {value}" in msg or (key in ("tx", "signal", "token", "chain") and str(value) in msg):
            continue  # the message names it already
        ids.append(f"{key}={value}")
    line = f"{at}  {level:<7} {where}{msg}" + (f"  ({' '.join(ids)})" if ids else "")
    sys.stdout.write(line + "\n")
    error = record.get("error")
    if error:
        sys.stdout.write("".join(f"    {row}\n" for row in str(error).splitlines()))
