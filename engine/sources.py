"""Where entries come from: the seeded simulated feed, or the operator's JSONL signals.

A source only proposes; the risk rules decide. Every opportunity carries an
id that the book takes once (a re-read file or a replayed feed opens nothing
twice). A signal line that cannot be taken is logged with its line number and
reason and skipped: never traded, never fatal. Signals come from outside, so
every line, whatever its bytes, is read inside one guard: an engine that stops
on a line stops on it again at every restart, and its positions go unwatched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from itertools import accumulate
from typing import Callable

from engine.core.money import PLAIN_DECIMAL, parse_amount
from engine.venues.port import Market

log = logging.getLogger("botctl.signals")

MAX_LINE_BYTES = 8192  # a signal is a few hundred bytes; the bound keeps a runaway line from filling memory
MAX_ID_CHARS = 128
MAX_TTL_S = 10**9  # about 31 years: longer means "no expiry", and larger numbers only cost
READ_BYTES = 1 << 20  # per poll: one tick never waits on a huge backlog
TAIL_BYTES = 64
WATCH_S = 0.01  # a followed file is looked at this often, off the loop, while lines keep coming
IDLE_WATCH_S = 0.05  # and this often once none came for a second: an idle engine's stats cost it little
MAX_DEPTH = 16  # a signal is one flat object

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Opportunity:
    id: str
    chain: str
    token: str
    amount: int | None  # quote base units, None: let the risk rules size it


class SignalError(ValueError):
    pass


def _no_constant(name: str):
    raise SignalError(f"{name} is not a number")


def _shown(value: object, limit: int = 40) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _decode(line: bytes | str) -> str:
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:  # replacing the byte would merge distinct ids into one
        raise SignalError(f"not valid UTF-8 (byte {exc.start + 1})") from None


def _depth(text: str) -> int:
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def _unique(pairs: list[tuple[str, object]]) -> dict:
    """An object whose keys are all different: with `"size": "25", "size": null` the parser keeps
    the last one, and which one the writer meant is anyone's guess."""
    data = dict(pairs)
    if len(data) < len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise SignalError(f"duplicate key {_shown(key)}")
            seen.add(key)
    return data


def _load(text: str) -> dict:
    """JSON with every number as an exact Decimal (no float, no int-digit limit, no infinity) and
    no key given twice.

    Nesting is bounded before parsing: the parser's own limit is the interpreter's recursion
    limit, which differs from process to process."""
    if _depth(text) > MAX_DEPTH:
        raise SignalError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constant,
                          object_pairs_hook=_unique)
    except RecursionError:
        raise SignalError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise SignalError(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise SignalError("not a JSON object")
    return data


def _ident(value: object) -> str:
    """Ids are stored and compared as text, so a stray byte or escape must not make two ids one."""
    wrong = f"id must be 1 to {MAX_ID_CHARS} printable characters"
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        if value.adjusted() >= MAX_ID_CHARS:
            raise SignalError(wrong)
        value = str(int(value))
    if not isinstance(value, str):
        raise SignalError("id must be a string or an integer")
    if not value or len(value) > MAX_ID_CHARS or not value.isprintable():  # lone surrogates are not printable
        raise SignalError(wrong)
    return value


def _size(value: object, decimals: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, Decimal)):
        raise SignalError("size must be a decimal string")
    try:
        amount = parse_amount(str(value), decimals)
    except ValueError as exc:
        raise SignalError(f"size: {exc}") from None
    if amount <= 0:
        raise SignalError("size must be positive")
    return amount


def _expires_ms(at: object, ttl: object) -> int:
    """When a signal stops being worth taking, in epoch milliseconds (exact integers, any year)."""
    if not isinstance(at, str):
        raise SignalError("at must be an ISO 8601 time")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise SignalError(f"at is not an ISO 8601 time: {_shown(at)}") from None
    if when.tzinfo is None:  # local to which machine? the ttl would depend on where the engine runs
        raise SignalError("at needs a time zone (e.g. 2026-11-24T17:00:00Z)")
    if isinstance(ttl, bool) or not isinstance(ttl, (str, Decimal)):
        raise SignalError("ttl_s must be a number of seconds")
    if isinstance(ttl, str):  # plain ASCII notation only, as for amounts: "1_0" is not 10
        ttl = ttl.strip(" \t")
        if not PLAIN_DECIMAL.fullmatch(ttl):
            raise SignalError(f"ttl_s must be a number of seconds: {_shown(ttl)}")
    try:
        seconds = Decimal(ttl)
    except ArithmeticError:
        raise SignalError("ttl_s must be a number of seconds") from None
    if not seconds.is_finite() or not 0 <= seconds <= MAX_TTL_S:
        raise SignalError(f"ttl_s must be from 0 to {MAX_TTL_S} seconds")
    return (when - _EPOCH) // _MS + int(seconds * 1000)


def parse_signal(line: bytes | str, number: int, chains: dict[str, Market], now_ms: int) -> Opportunity | None:
    """One JSONL line -> an opportunity; None for a stale signal; SignalError for a bad one."""
    text = _decode(line).strip()
    if number == 1:
        text = text.removeprefix("\ufeff").strip()  # a byte-order mark some editors write first
    data = _load(text)
    chain_name, token = data.get("chain"), data.get("token")
    if not isinstance(chain_name, str) or not isinstance(token, str):
        raise SignalError("chain and token are required strings")
    chain = chains.get(chain_name)
    if chain is None:
        raise SignalError(f"unknown chain {_shown(chain_name)}")
    symbol = chain.resolve(token)
    if symbol is None:
        raise SignalError(f"unknown token {_shown(token)} on {chain_name}")
    ident = data.get("id")
    ident = _ident(ident) if ident is not None else f"line{number}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    amount = _size(data["size"], chain.quote_decimals) if data.get("size") is not None else None
    if data.get("at") is not None and data.get("ttl_s") is not None:
        if _expires_ms(data["at"], data["ttl_s"]) < now_ms:
            return None
    return Opportunity(ident, chain_name, symbol, amount)


def take_line(line: bytes | str, number: int, chains: dict[str, Market], now_ms: int) -> Opportunity | None:
    """`parse_signal` inside the one guard: whatever a line holds, the worst it does is SignalError."""
    try:
        return parse_signal(line, number, chains, now_ms)
    except SignalError:
        raise
    except Exception as exc:  # noqa: BLE001 - a line the checks above missed still must not stop the engine
        raise SignalError(f"cannot be read ({type(exc).__name__})") from None


# ---------------------------------------------------------------------------------------------- lines

OVERLONG = object()  # a line past MAX_LINE_BYTES: refused whole, its bytes never kept
AFTER_TAKEN = object()  # text after a line that was already taken as a complete object


class Lines:
    """Cuts a byte stream into numbered lines, keeping at most MAX_LINE_BYTES of an unfinished one.

    An unfinished last line is taken when the stream ends, or as soon as it is a
    whole JSON object: no byte appended to it (but whitespace) can make a
    different valid line of it, so waiting for its newline would only leave a
    writer that never sends one untraded.
    """

    def __init__(self):
        self.number = 0
        self._pending = bytearray()
        self._overflow = 0  # bytes of the current line beyond the bound: it is refused whole
        self._taken = False  # the current unfinished line was taken as a complete object

    def feed(self, data: bytes) -> list[tuple[int, object]]:
        found = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._hold(data[start:end])
            found.extend(self._end())
            start = end + 1
        self._hold(data[start:])
        if start < len(data):
            found.extend(self._complete_object())
        return found

    def finish(self) -> list[tuple[int, object]]:
        """The stream ended: its unfinished last line is a line."""
        if self._pending or self._overflow or self._taken:
            return self._end()
        return []

    def _hold(self, piece: bytes) -> None:
        if self._overflow or len(self._pending) + len(piece) > MAX_LINE_BYTES:
            self._overflow += len(self._pending) + len(piece)
            self._pending.clear()
        else:
            self._pending += piece

    def _end(self) -> list[tuple[int, object]]:
        raw, overflow, taken = bytes(self._pending), self._overflow, self._taken
        self._pending.clear()
        self._overflow, self._taken = 0, False
        if taken:
            return [(self.number, AFTER_TAKEN)] if overflow or raw.strip() else []
        self.number += 1
        return [(self.number, OVERLONG if overflow else raw)]

    def _complete_object(self) -> list[tuple[int, object]]:
        if self._taken or self._overflow or not self._pending.rstrip().endswith(b"}"):
            return []
        try:
            whole = isinstance(json.loads(self._pending.decode("utf-8")), dict)
        except Exception:  # noqa: BLE001 - not (yet) a whole object: wait for more
            whole = False
        if not whole:
            return []
        raw = bytes(self._pending)
        self._pending.clear()
        self._taken = True
        self.number += 1
        return [(self.number, raw)]


# ---------------------------------------------------------------------------------------------- readers

class _Stream:
    """Reads a stream on a thread (the engine's loop must not block on it), as bytes: a stray byte
    is one refused line, never a decoding error that kills the thread.

    stdin is read once, to its end. A FIFO (or another file that cannot be seeked, such as a
    character device) is read the same way, since tell() and pread() fail on it; opening a FIFO
    blocks until a writer opens it, so that happens on the thread too. When a FIFO's writers have
    all closed it, it is opened again for the next one (`echo '{...}' > FIFO` per signal), and the
    last writer's unfinished line is a line."""

    def __init__(self, path: str | None = None, fifo: bool = False):
        self.path = path  # None: stdin
        self.label = "stdin" if path is None else f"file {path}"
        self._chunks: deque[bytes | None] = deque()  # None: a writer ended. append/popleft are atomic
        self._closing = False
        self._again = fifo
        self._said: str | None = None
        self._notify: Callable[[], None] = _nobody
        self.lines = Lines()
        threading.Thread(target=self._read, daemon=True, name="botctl-signals").start()

    def watch(self, notify: Callable[[], None]) -> None:
        """Call `notify` (from the reader's thread) whenever there is something to read."""
        self._notify = notify
        if self._chunks:
            notify()

    def _arrived(self, chunk: bytes | None) -> None:
        self._chunks.append(chunk)
        self._notify()

    def close(self) -> None:
        """Ends the thread: one blocked opening a FIFO is woken by opening it for writing (which
        fails harmlessly if no reader waits)."""
        self._closing = True
        if self._again:
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    def _read(self) -> None:
        try:
            if self.path is None:
                self._read_stdin()
            else:
                self._read_file()
        except Exception as exc:  # noqa: BLE001 - a closed or broken stream ends the signals, not the engine
            reason = getattr(exc, "strerror", None) or str(exc)
            log.warning("signals on %s stopped: %s", self.label, reason, extra={"reason": reason})
        finally:
            if self.path is None:
                self._arrived(None)  # its unfinished last line is a line

    def _read_stdin(self) -> None:
        stream = sys.stdin
        if stream is None:
            raise OSError("stdin is closed")
        buffer = getattr(stream, "buffer", None)
        while True:
            if buffer is not None:
                chunk = buffer.read1(65536)
            else:  # a text stream stood in for stdin
                chunk = stream.read(65536).encode("utf-8", "surrogateescape")
            if not chunk:
                break
            self._arrived(chunk)

    def _read_file(self) -> None:
        while not self._closing:
            try:
                fd = os.open(self.path, os.O_RDONLY)  # a FIFO: waits here for a writer
            except FileNotFoundError:
                if not self._again:
                    raise
                self._say(f"signals FIFO {self.path} is gone; waiting for a new one")
                time.sleep(1)
                continue
            self._said = None
            try:
                if self._again and not stat.S_ISFIFO(os.fstat(fd).st_mode):  # it would be read over and over
                    raise OSError(f"{self.path} is no longer a FIFO")
                while chunk := os.read(fd, 65536):
                    self._arrived(chunk)
            finally:
                os.close(fd)
                self._arrived(None)  # the writer's unfinished last line is a line
            if not self._again:
                break

    def _say(self, message: str) -> None:
        if message != self._said:
            self._said = message
            log.warning(message, extra={"reason": message})

    def read(self) -> list[tuple[int, object]]:
        found, size = [], 0
        while self._chunks and size < READ_BYTES:
            chunk = self._chunks.popleft()
            if chunk is None:
                found.extend(self.lines.finish())
                if self._again:
                    log.debug("signals %s: its writers closed it after line %d", self.label, self.lines.number,
                              extra={"line": self.lines.number})
                else:
                    log.info("signals on %s ended after line %d", self.label, self.lines.number,
                             extra={"line": self.lines.number})
                continue
            size += len(chunk)
            found.extend(self.lines.feed(chunk))
        return found


class _File:
    """Follows a file by name, as `tail -F` does: a file moved away is read to its end and then the
    new file at that name from its start; a file that shrinks is read again from its start."""

    def __init__(self, path: str):
        self.path = path
        self.lines = Lines()
        self._handle = self._open()
        if self._handle is None:
            raise FileNotFoundError(f"signals file {path} does not exist")
        self._said: str | None = None  # the last condition logged, so a lasting one is logged once
        self._tail = b""  # the last bytes read: if they change, the file was rewritten
        self._closed = False

    def _open(self):
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FileNotFoundError(f"signals file {self.path} cannot be read: {exc.strerror}") from None
        self._ino = _identity(os.fstat(handle.fileno()))
        return handle

    def close(self) -> None:
        self._closed = True
        self._handle.close()

    def watch(self, notify: Callable[[], None]) -> None:
        """Call `notify` (from a thread of its own) whenever the file at the path changes: grown,
        rewritten or replaced. A regular file gives no wake-up of its own (stdlib has no inotify), so
        a thread looks at it: every WATCH_S while lines keep coming, every IDLE_WATCH_S once they
        stop (the first line after a quiet spell waits at most that), and the engine's loop stays
        asleep until there is something to read."""
        threading.Thread(target=self._watch, args=(notify,), daemon=True, name="botctl-signals-watch").start()

    def _watch(self, notify: Callable[[], None]) -> None:
        seen, changed = None, time.monotonic()
        while not self._closed:
            try:
                status = os.stat(self.path)
                now = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
            except OSError:
                now = None
            if now != seen:
                seen, changed = now, time.monotonic()
                notify()
            time.sleep(WATCH_S if time.monotonic() - changed < 1 else IDLE_WATCH_S)

    def read(self) -> list[tuple[int, object]]:
        try:
            found = []
            if self._rewritten():
                found += self._restart("was truncated or rewritten")
                self._handle.seek(0)
            data = self._handle.read(READ_BYTES)
            self._tail = (self._tail + data)[-TAIL_BYTES:]
            found += self.lines.feed(data)
            if not data:  # at the end of what this file holds: has another file taken its name?
                found += self._follow()
            return found
        except OSError as exc:
            self._say(f"cannot read signals file {self.path}: {exc.strerror or exc}; will retry")
            return []

    def _rewritten(self) -> bool:
        """Shorter than what was read, or the last bytes read are no longer there: a new file's
        content in the same file (`> F`, an editor's save), read from its start."""
        offset = self._handle.tell()
        if offset == 0:
            return False
        fd = self._handle.fileno()
        if os.fstat(fd).st_size < offset:
            return True
        return os.pread(fd, len(self._tail), offset - len(self._tail)) != self._tail

    def _follow(self) -> list[tuple[int, object]]:
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            self._say(f"signals file {self.path} is gone; waiting for a new one")
            return []
        if _identity(current) == self._ino:
            self._said = None
            return []
        if not stat.S_ISREG(current.st_mode):  # opening a FIFO here would block the engine's loop
            self._say(f"signals file {self.path} was replaced by something that is not a regular file; "
                      "restart to read it")
            return []
        old = self._handle
        handle = self._open()
        if handle is None:  # gone again between stat and open
            return []
        self._handle = handle
        old.close()
        found = self._restart("was replaced")
        data = handle.read(READ_BYTES)
        self._tail = data[-TAIL_BYTES:]
        return found + self.lines.feed(data)

    def _restart(self, what: str) -> list[tuple[int, object]]:
        found = self.lines.finish()  # the old file ended: its unfinished last line is a line
        log.warning("signals file %s %s after line %d: reading it from its start", self.path, what,
                    self.lines.number, extra={"line": self.lines.number, "reason": what})
        self.lines = Lines()  # numbers restart with the file, so an id-less line keeps its id on a re-read
        self._tail = b""
        self._said = None
        return found

    def _say(self, message: str) -> None:
        if message != self._said:
            self._said = message
            log.warning(message, extra={"reason": message})


def _nobody() -> None:
    pass


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _reader_for(path: str) -> _File | _Stream:
    """A regular file is followed by name; anything else that can be read (a FIFO, a device) is a
    stream. Checked here, before anything is taken: a path that cannot be read fails the start."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"signals file {path} does not exist") from None
    except OSError as exc:
        raise FileNotFoundError(f"signals file {path} cannot be read: {exc.strerror}") from None
    if stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode):
        return _File(path)
    if stat.S_ISSOCK(status.st_mode):
        raise FileNotFoundError(f"signals file {path} cannot be read: it is a socket")
    if not os.access(path, os.R_OK):  # opening would block (a FIFO) before it could fail
        raise FileNotFoundError(f"signals file {path} cannot be read: Permission denied")
    return _Stream(path, fifo=stat.S_ISFIFO(status.st_mode))


class JsonlSource:
    """Signals from a file followed as it grows and is rotated (or stdin, `-`); each line read once per run."""

    def __init__(self, path: str, chains: dict[str, Market]):
        self.path = path
        self.chains = chains
        self._reader = _Stream() if path == "-" else _reader_for(path)
        self._failed: str | None = None

    def close(self) -> None:
        self._reader.close()

    def watch(self, notify: Callable[[], None]) -> None:
        """Call `notify`, from another thread, whenever a line may be there to read (live engines
        step at once on it instead of at their next poll)."""
        self._reader.watch(notify)

    def poll(self, height: int, now_ms: int) -> list[Opportunity]:
        try:
            lines = self._reader.read()
        except Exception as exc:  # noqa: BLE001 - a reader's bug stops the signals for a tick, never the engine
            if str(exc) != self._failed:
                self._failed = str(exc)
                log.exception("reading signals failed; will retry", extra={"reason": str(exc)})
            return []
        self._failed = None
        found = []
        for number, line in lines:
            try:
                if line is OVERLONG:
                    raise SignalError(f"longer than {MAX_LINE_BYTES} bytes")
                if line is AFTER_TAKEN:
                    raise SignalError("text after a signal already taken from this line")
                if not line.strip():
                    continue
                opportunity = take_line(line, number, self.chains, now_ms)
            except SignalError as exc:
                log.warning("signal line %d skipped: %s", number, exc, extra={"line": number, "reason": str(exc)})
                continue
            if opportunity is None:
                log.info("signal line %d skipped: older than its ttl", number,
                         extra={"line": number, "reason": "older than its ttl"})
                continue
            found.append(opportunity)
        return found
