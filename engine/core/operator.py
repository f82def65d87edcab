"""Operator commands as rules: what each command asks of the engine, and how its answer reads.

An inbox row (engine/inbox.py carries it between processes) becomes engine
commands here, against the current book; the events they decide fold into the
row's answer. Idempotent: a row re-run after a crash skips what already
happened (a position already closing is refused by the decider, not here).
"""

from __future__ import annotations

from engine.core.book import Book
from engine.core.messages import (
    AttestationRecorded,
    ChangeStage,
    CloseDenied,
    CloseRequested,
    CommandRejected,
    EntryDenied,
    RecordAttestation,
    RequestClose,
    SetTradingState,
    StageChanged,
    TradingState,
    TradingStateChanged,
)

COMMANDS = ("close", "close_all", "pause", "resume", "halt", "promote", "demote", "attest")
STAGE_COMMANDS = ("promote", "demote", "attest")


def needs_venue(command: str, args: dict) -> bool:
    """Does deciding this row need the venue (a fee reserve priced, a transaction to send)? Stage
    commands and trading-state changes move no funds: the book alone may decide them, so that a
    pause, a resume, a halt or a demotion work while a chain's node is down or its key cannot be
    opened."""
    return command in ("close", "close_all") or (command == "halt" and bool(args.get("close_all")))


def plan(book: Book, command: str, args: dict, at: int, by: str, fees: dict[str, int | str], wall: int) -> list:
    """Engine commands for one inbox row, against the current book. `at` is the engine's clock,
    `wall` the wall clock (an attestation is a person's word, dated as people date things)."""
    if command == "close":
        position = book.positions.get(args["id"])
        return [_request_close(position, int(args["id"]), args.get("reason") or "operator close", at, by, fees)]
    if command == "close_all":
        return _close_all(book, args, at, by, fees)
    if command == "pause":
        return [SetTradingState(TradingState.REDUCING, args.get("reason") or "operator pause", at, by)]
    if command == "resume":
        return [SetTradingState(TradingState.ACTIVE, args.get("reason") or "operator resume", at, by,
                                force=bool(args.get("force")))]
    if command == "promote":
        return [ChangeStage(args["to"], args["from"], tuple(args["_missing"]), args["_evidence"],
                            args.get("reason") or "operator promote", at, by)]
    if command == "demote":
        return [ChangeStage(args["to"], args["from"], (), "{}", args.get("reason") or "operator demote", at, by,
                            promote=False)]
    if command == "attest":
        return [RecordAttestation(args["stage"], args["item"], wall, by)]
    if command == "halt":
        steps = [SetTradingState(TradingState.HALTED, args.get("reason") or "operator halt", at, by,
                                 close_all=bool(args.get("close_all")))]
        if args.get("close_all"):
            steps += _close_all(book, args, at, by, fees)
        return steps
    raise ValueError(f"unknown operator command {command!r}")


def _close_all(book: Book, args: dict, at: int, by: str, fees: dict[str, int | str]) -> list:
    reason = args.get("reason") or "operator close --all"
    return [_request_close(p, p.id, reason, at, by, fees) for p in book.open_positions() if p.state == "open"]


def _request_close(position, ident: int, reason: str, at: int, by: str, fees: dict[str, int | str]) -> RequestClose:
    """`fees` holds each chain's fee reserve, or why the chain cannot price one now (its node is
    down): such a close is refused with that reason, nothing reserved."""
    fee = fees.get(position.chain, 0) if position else 0
    if isinstance(fee, str):
        return RequestClose(ident, reason, 0, at, by, refused=fee)
    return RequestClose(ident, reason, fee, at, by)


def outcome(prior: dict | None, events: list, command=None) -> dict:
    """Fold one command's events into the row's result."""
    result = dict(prior or {"ok": [], "refused": [], "closing": []})
    result = {k: list(v) for k, v in result.items()}
    if not events and isinstance(command, SetTradingState):
        result["ok"].append(f"trading is already {command.state.word}")
    for event in events:
        if isinstance(event, (CloseDenied, CommandRejected, EntryDenied)):
            result["refused"].append(event.reason)
        elif isinstance(event, CloseRequested):
            result["closing"].append(event.position_id)
            result["ok"].append(f"position {event.position_id} closing (order {event.order_id})")
        elif isinstance(event, TradingStateChanged):
            line = (f"trading {event.previous.value} -> {event.state.value}" if event.previous is not event.state
                    else f"trading stays {event.state.word}" + ("" if event.close_all else f": {event.reason}"))
            if event.close_all:
                line += " (closing every position, also any an entry already sent opens later)"
            result["ok"].append(line)
        elif isinstance(event, StageChanged):
            result["ok"].append(f"stage {event.previous} -> {event.stage}")
        elif isinstance(event, AttestationRecorded):
            result["ok"].append(f"attested for {event.stage}: {event.text}")
    return result


def row_state(result: dict) -> str:
    return "refused" if result["refused"] and not result["ok"] else "done"
