"""JSON-lines logs in $BOTCTL_HOME/logs/, rotated; each line carries the ids it concerns; never a secret.

Operators read these with journalctl, grep and log shippers (`botctl logs` shows them readably),
so a line is one JSON object: when, level, logger, a readable message, and the ids it concerns.

A log that cannot be written (a full disk, a file turned into a directory) must never disturb the
terminal the engine runs in: a line that cannot be written is dropped and counted, and stderr gets
one line saying so - not the logging module's traceback for every record.

Secrets (keystore passwords, API keys, endpoints whose URLs carry keys) must never reach a line,
whatever code logged it: the formatter masks every secret value it was told of, in the final line.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping

LEVEL_VARIABLE = "BOTCTL_LOG_LEVEL"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FILE_NAME = "botctl.log"
MAX_BYTES = 5_000_000
BACKUPS = 5
MASK = "********"
TOLD_EVERY_S = 60.0  # at most one stderr line a minute about a log that cannot be written

# Attributes of a record that become keys of its line (set with `extra=`), in this order.
IDS = ("event", "command", "by", "run", "stage", "chain", "token", "signal", "position", "order", "tx",
       "line", "reason")

_secrets: set[str] = set()
_masks: tuple[tuple[str, str], ...] = ()


def protect(values: Iterable[str | None]) -> None:
    """Mask these values in every line written from now on (short values are ignored: masking
    "1" everywhere would garble lines and protect nothing)."""
    global _masks
    for value in values:
        if value and len(value) >= 4:
            _secrets.add(value)
    pairs = set()
    for value in _secrets:
        pairs.add((value, MASK))
        escaped = json.dumps(value)[1:-1]  # how the value appears inside a JSON string
        if escaped != value:
            pairs.add((escaped, MASK))
    _masks = tuple(sorted(pairs, key=lambda pair: -len(pair[0])))  # longest first: a URL before its key


def secret_values(environ: Mapping[str, str], urls: Iterable[str | None] = ()) -> list[str]:
    """The secret values among BOTCTL_ variables and endpoint URLs: every variable named like a
    secret, and every URL with its parts that can carry a key (userinfo, path, query)."""
    from engine.settings import PREFIX, SECRET_VARIABLES, SECRET_WORDS

    found: list[str] = []
    urls = list(urls)
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith(PREFIX) or not value:
            continue
        if upper in SECRET_VARIABLES or any(word in upper.lower() for word in SECRET_WORDS):
            found.append(value)
        elif "://" in value:
            urls.append(value)
    for url in urls:
        found += _url_secrets(url)
    return found


def _url_secrets(url: str | None) -> list[str]:
    """A URL whose shown form (engine.settings.safe_url) hides something: the URL and those parts."""
    if not url or "://" not in url:
        return []
    from urllib.parse import parse_qsl, urlsplit

    from engine.settings import safe_url

    if not safe_url(url).endswith("/…"):
        return []  # scheme, host and port only: nothing to hide
    out = [url, url.rstrip("/")]
    try:
        parts = urlsplit(url)
        out += [parts.username, parts.password, parts.query, parts.fragment]
        out += [segment for segment in parts.path.split("/") if len(segment) >= 8]
        out += [value for _key, value in parse_qsl(parts.query)]
    except ValueError:
        pass
    return [value for value in out if value]


def masked(text: str) -> str:
    for secret, mask in _masks:
        if secret in text:
            text = text.replace(secret, mask)
    return text


class JsonLines(logging.Formatter):
    """One JSON object per record: at (UTC, ms), level, logger, msg, the ids it carries, error."""

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        line = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        attrs = record.__dict__
        for key in IDS:
            value = attrs.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        text = json.dumps(line, default=str)  # ASCII only: a line's length is its size in bytes
        return masked(text) if _masks else text


class LogFile(logging.FileHandler):
    """A rotating JSON-lines file that drops a line it cannot write, counts it (`dropped`), and
    says so on stderr in one line (at most once a minute) - never a traceback.

    Each record is formatted once (the stdlib rotating handler formats it twice and stats the file
    for every record); the size is tracked from the bytes written."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS):
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.max_bytes = max_bytes
        self.backups = backups
        self.dropped = 0
        self._size = 0
        self._regular = True
        self._failing = False
        self._told_at: float | None = None

    def _open(self):
        old = os.umask(0o077)  # the file may hold what an operator did: 0600
        try:
            stream = super()._open()
        finally:
            os.umask(old)
        try:
            info = os.fstat(stream.fileno())
            self._size, self._regular = info.st_size, stat.S_ISREG(info.st_mode)
        except BaseException:
            stream.close()
            raise
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self.stream is None:
                self.stream = self._open()
            if self._regular and self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self.stream.write(line)
            self.stream.flush()
            self._size += len(line)
            self._failing = False
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _rotate(self) -> None:
        self._drop_stream()
        base = self.baseFilename
        for index in range(self.backups - 1, 0, -1):
            older = f"{base}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{base}.{index + 1}")
        if not os.path.exists(base):
            pass  # moved or deleted by someone else: start a new one
        elif self.backups > 0:
            os.replace(base, f"{base}.1")
        else:
            os.truncate(base, 0)
        self.stream = self._open()

    def _drop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()  # a failed flush still closes the file: its unwritten lines are dropped
            except Exception:
                pass

    def handleError(self, record: logging.LogRecord) -> None:
        """Drop, count, and tell the terminal once - the logging module would print a traceback."""
        self.dropped += 1
        error = sys.exc_info()[1]
        self._drop_stream()  # reopened for the next record: the log works again once there is room
        if self._failing:
            return
        self._failing = True
        now = time.monotonic()
        if self._told_at is not None and now - self._told_at < TOLD_EVERY_S:
            return
        self._told_at = now
        why = getattr(error, "strerror", None) or f"{type(error).__name__}: {error}"
        try:
            sys.stderr.write(f"botctl: cannot write the log {self.baseFilename}: {masked(str(why))}; "
                             "log lines are dropped until it can be written (the book is not affected)\n")
            sys.stderr.flush()
        except Exception:
            pass

    def flush(self) -> None:
        try:
            super().flush()
        except Exception:  # at exit too: a full disk must not print a traceback from logging.shutdown
            self._drop_stream()

    def close(self) -> None:
        try:
            super().close()
        except Exception:
            self.stream = None


def level_from(environ: Mapping[str, str]) -> int:
    """BOTCTL_LOG_LEVEL (debug, info, warning, error); info when unset."""
    from engine.settings import SettingsError

    text = (environ.get(LEVEL_VARIABLE) or "info").strip().lower()
    if text not in LEVELS:
        raise SettingsError(f"{LEVEL_VARIABLE}: {text!r} is not a level (one of: {', '.join(LEVELS)})")
    return LEVELS[text]


def setup(home: Path, level: int | None = None) -> logging.Handler:
    """Log the `botctl` loggers to $home/logs/botctl.log at `level` (default: BOTCTL_LOG_LEVEL, else
    INFO), masking the secrets of the environment and of the working directory's .env. Calling it
    again replaces the handler it installed."""
    level = level_from(os.environ) if level is None else level
    protect(secret_values({**_dotenv(), **os.environ}))
    logs = Path(home) / "logs"
    try:
        logs.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        pass  # the handler's first write fails, is dropped and is told on stderr once
    handler = LogFile(logs / FILE_NAME)
    handler.setFormatter(JsonLines())
    root = logging.getLogger("botctl")
    for old in [h for h in root.handlers if isinstance(h, LogFile)]:
        root.removeHandler(old)
        old.close()
    root.setLevel(level)
    root.addHandler(handler)
    root.propagate = False
    return handler


def _dotenv() -> dict[str, str]:
    from engine.settings import DOTENV, SettingsError, read_dotenv

    try:
        return read_dotenv(Path(DOTENV))
    except SettingsError:  # loading the settings refused it already, or will
        return {}
