"""Where entries come from: the seeded simulated feed, or the operator's JSONL signals.

A source only proposes; the risk rules decide. Every opportunity carries an
id that the book takes once (a re-read file or a replayed feed opens nothing
twice). A signal line that is wrong is logged with its line number and
skipped: never traded, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine.money import parse_amount
from engine.paper.market import PaperChain, rng

log = logging.getLogger("botctl.signals")


@dataclass(frozen=True, slots=True)
class Opportunity:
    id: str
    chain: str
    token: str
    amount: int | None  # quote base units, None: let the risk rules size it


class SimulatedSource:
    def __init__(self, seed: int, chains: dict[str, PaperChain], rate_bps: int):
        self.seed = seed
        self.chains = chains
        self.rate_bps = rate_bps
        self._pairs = [(c.name, t.symbol) for c in chains.values() for t in c.tokens]

    def poll(self, height: int, now_ms: int) -> list[Opportunity]:
        draw = rng(self.seed, "opportunity", height)
        if not self._pairs or draw.randrange(10_000) >= self.rate_bps:
            return []
        chain, token = draw.choice(self._pairs)
        return [Opportunity(f"sim-{self.seed}-{height}", chain, token, None)]


class SignalError(ValueError):
    pass


def parse_signal(line: str, number: int, chains: dict[str, PaperChain], now_ms: int) -> Opportunity | None:
    """One JSONL line -> an opportunity; None for a stale signal; SignalError for a bad one."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise SignalError(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise SignalError("not a JSON object")
    chain_name, token = data.get("chain"), data.get("token")
    if not isinstance(chain_name, str) or not isinstance(token, str):
        raise SignalError("chain and token are required strings")
    chain = chains.get(chain_name)
    if chain is None:
        raise SignalError(f"unknown chain {chain_name!r}")
    symbol = chain.resolve(token)
    if symbol is None:
        raise SignalError(f"unknown token {token!r} on {chain_name}")
    amount = None
    if data.get("size") is not None:
        try:
            amount = parse_amount(str(data["size"]), chain.quote_decimals)
        except ValueError as exc:
            raise SignalError(f"size: {exc}") from None
        if amount <= 0:
            raise SignalError("size must be positive")
    if data.get("at") is not None and data.get("ttl_s") is not None:
        try:
            at = datetime.fromisoformat(str(data["at"]))
            ttl = int(data["ttl_s"])
        except (ValueError, TypeError):
            raise SignalError("at must be ISO 8601 and ttl_s an integer") from None
        if at.timestamp() * 1000 + ttl * 1000 < now_ms:
            return None
    ident = data.get("id")
    if ident is None:
        ident = f"line{number}:{hashlib.sha256(line.encode()).hexdigest()[:16]}"
    return Opportunity(str(ident), chain_name, symbol, amount)


class JsonlSource:
    """Follows a file as it grows (or stdin, `-`); each complete line is read once per run."""

    def __init__(self, path: str, chains: dict[str, PaperChain]):
        self.path = path
        self.chains = chains
        self._offset = 0
        self._number = 0
        self._partial = ""
        self._stdin_lines: list[str] = []
        if path == "-":
            threading.Thread(target=self._read_stdin, daemon=True, name="botctl-signals").start()
        elif not Path(path).exists():
            raise FileNotFoundError(f"signals file {path} does not exist")

    def _read_stdin(self) -> None:
        for line in sys.stdin:
            self._stdin_lines.append(line)

    def _new_lines(self) -> list[str]:
        if self.path == "-":
            lines, self._stdin_lines[:] = list(self._stdin_lines), []
            return lines
        with open(self.path, "r", encoding="utf-8", errors="replace") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
            self._offset = handle.tell()
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for its newline
        return [line + "\n" for line in lines]

    def poll(self, height: int, now_ms: int) -> list[Opportunity]:
        found = []
        for line in self._new_lines():
            self._number += 1
            text = line.strip()
            if not text:
                continue
            try:
                opportunity = parse_signal(text, self._number, self.chains, now_ms)
            except SignalError as exc:
                log.warning("signal line %d skipped: %s", self._number, exc,
                            extra={"line": self._number, "reason": str(exc)})
                continue
            if opportunity is None:
                log.info("signal line %d skipped: older than its ttl", self._number)
                continue
            found.append(opportunity)
        return found
