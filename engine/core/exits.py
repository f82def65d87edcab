"""Exit rules for open positions: pure, on the book's marks and the time given.

Stop-loss and take-profit compare the marked value of a position with its
cost basis; max-hold compares its age. Positions already closing are skipped,
so a rule firing twice cannot ask for a second sell.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.book import MAX_EXIT_ATTEMPTS, Book, Position
from engine.core.messages import TradingState
from engine.core.money import quote_for


@dataclass(frozen=True, slots=True)
class ExitRules:
    stop_loss_bps: int = 500
    take_profit_bps: int = 1000
    max_hold_ms: int = 1_800_000


def marked_value(book: Book, position: Position) -> int | None:
    mark = book.marks.get((position.chain, position.token))
    if mark is None:
        return None
    chain = book.policy.chains[position.chain]
    return quote_for(position.size, mark[0], chain.quote_decimals, chain.tokens.get(position.token, 18))


def exit_reason(book: Book, position: Position, now: int, rules: ExitRules) -> str | None:
    """Why an automatic exit is due now, if it is. A position whose last close used up its attempts
    (each one an approve and a swap that reverted, paying gas) waits for the operator: the rule
    firing again would start a fresh budget, and the chain would be paid for the same failure
    for ever. `botctl close` gives it a new budget."""
    if position.state != "open" or position.exit_attempts >= MAX_EXIT_ATTEMPTS:
        return None
    value = marked_value(book, position)
    if value is not None and position.cost > 0:
        change_bps = (value - position.cost) * 10_000 // position.cost
        if rules.stop_loss_bps and change_bps <= -rules.stop_loss_bps:
            return f"stop-loss ({change_bps} bps)"
        if rules.take_profit_bps and change_bps >= rules.take_profit_bps:
            return f"take-profit (+{change_bps} bps)"
    if rules.max_hold_ms and now - position.opened_at >= rules.max_hold_ms:
        return "max-hold"
    return None


def exits_due(book: Book, now: int, rules: ExitRules) -> list[tuple[int, str]]:
    due = []
    for position in book.open_positions():
        reason = exit_reason(book, position, now, rules)
        if reason is not None:
            due.append((position.id, reason))
    return due


HALT_CLOSE = "halt --close-all: opened after the halt"


def closes_after_halt(book: Book) -> list[int]:
    """A `halt --close-all` keeps closing while it holds: an entry already sent when it committed
    may still fill, and the position it opens is closed as it lands (by the operator's halt, not by
    an automatic rule, which a halt stops). A position whose exit was tried and failed waits for
    the operator: a chain that refuses it is not asked again and again."""
    if book.trading_state is not TradingState.HALTED or not book.meta.get("closing_all"):
        return []
    return [p.id for p in book.open_positions() if p.state == "open" and p.exit_attempts == 0]
