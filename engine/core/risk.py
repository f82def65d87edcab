"""Risk rules for a new entry: pure functions of the book and the command.

`check_entry` returns the quote amount to reserve, or a reason to deny. The
order of the checks is the order an operator reads the reason in: why not at
all (state, chain), why not this token, why not this much.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core.book import Book, rejected_at_key, rejections_key
from engine.core.messages import ReserveEntry, TradingState
from engine.core.money import from_units, to_units


class Denied(Exception):
    """Raised inside the pure rules only; the decider turns it into a denial event."""


def exposure(book: Book) -> Decimal:
    """USD at risk across chains: held for entries plus open cost, each chain's quote at its quote_usd."""
    total = Decimal(0)
    for name, chain in book.policy.chains.items():
        units = book.balance(name, "quote", "reserved") + book.balance(name, "quote", "positions")
        total += from_units(units, chain.quote_decimals) * chain.quote_usd
    return total


def usd_units(usd: Decimal, chain) -> int:
    """A USD limit in the chain's quote base units (rounded down: a limit never grows)."""
    return to_units(usd / chain.quote_usd, chain.quote_decimals)


def check_entry(book: Book, cmd: ReserveEntry) -> int:
    limits = book.policy.limits
    state = book.trading_state
    if state is not TradingState.ACTIVE:
        raise Denied(f"trading is {state.value}: no new entries")
    if book.meta.get("review"):
        raise Denied("a reconciliation difference waits for review (botctl reconcile)")
    chain = book.policy.chains.get(cmd.chain)
    if chain is None:
        raise Denied(f"unknown chain {cmd.chain!r}")
    current = book.policy.stages[book.meta.get("stage")]  # the stored stage: no config loosens it
    if book.policy.live and not current.live_funds:
        raise Denied(f"stage {current.name} does not allow live funds")
    ceiling = current.ceiling
    if chain.kind not in ceiling.chain_kinds:
        raise Denied(f"stage {current.name} allows {' and '.join(ceiling.chain_kinds)} chains only, "
                     f"not {cmd.chain} ({chain.kind})")
    if chain.tokens and cmd.token not in chain.tokens:
        raise Denied(f"token {cmd.token} is not on the {cmd.chain} allow-list")
    if cmd.signal_id is not None and cmd.signal_id in book.signals:
        raise Denied(f"signal {cmd.signal_id} was already taken")
    held = book.slots.get((cmd.chain, cmd.token))
    if held is not None:
        what = "an open position" if held.startswith("p") else "a held reservation"
        raise Denied(f"{cmd.chain}/{cmd.token} already has {what}")
    until = book.cooldowns.get((cmd.chain, cmd.token))
    if until is not None and cmd.at < until:
        raise Denied(f"{cmd.chain}/{cmd.token} is cooling down for {(until - cmd.at + 999) // 1000}s")
    refused = book.meta.get(rejections_key(cmd.chain), 0)
    if limits.max_consecutive_rejections and refused >= limits.max_consecutive_rejections:
        wait = book.meta.get(rejected_at_key(cmd.chain), 0) + limits.rejection_probe_ms - cmd.at
        if wait > 0:  # after that, one entry goes through as a probe: landing re-arms, a refusal waits again
            raise Denied(f"rejection breaker: the {cmd.chain} node refused {refused} broadcasts in a row "
                         f"(entries on {cmd.chain} resume when a transaction lands there; a probe entry in "
                         f"{(wait + 999) // 1000}s; `botctl resume` re-arms now)")
    losses = book.meta.get("consecutive_losses")
    if limits.max_consecutive_losses and losses >= limits.max_consecutive_losses:
        raise Denied(f"loss breaker: {losses} consecutive losses")
    if book.meta.get("open_slots") >= limits.max_open_positions:
        raise Denied(f"max open positions ({limits.max_open_positions}) reached")
    if ceiling.max_open_positions is not None and book.meta.get("open_slots") >= ceiling.max_open_positions:
        raise Denied(f"the {current.name} stage allows {ceiling.max_open_positions} open positions")

    qd = chain.quote_decimals
    cash = book.balance(cmd.chain, "quote", "cash")
    max_position = usd_units(limits.max_position, chain)
    stage_max = usd_units(ceiling.max_position_usd, chain) if ceiling.max_position_usd is not None else None
    at_risk = exposure(book)
    room = usd_units(limits.max_exposure - at_risk, chain)
    stage_room = usd_units(ceiling.capital_usd - at_risk, chain) if ceiling.capital_usd is not None else None
    if cmd.amount is not None:
        amount = cmd.amount
        if amount <= 0:
            raise Denied("entry size must be positive")
        if amount < usd_units(limits.min_position, chain):  # dust: the fees outweigh it and it takes a slot
            raise Denied(f"size {from_units(amount, qd)} is below the minimum position {limits.min_position}")
        if amount > max_position:
            raise Denied(f"size {_size(amount, chain)} exceeds max position {limits.max_position} USD")
        if stage_max is not None and amount > stage_max:
            raise Denied(f"size {_size(amount, chain)} exceeds the {current.name} stage ceiling of "
                         f"{ceiling.max_position_usd} USD per position")
        if stage_room is not None and amount > stage_room:
            raise Denied(f"size {from_units(amount, qd)} exceeds the {current.name} stage's capital room "
                         f"{from_units(max(stage_room, 0), qd)} (capital {ceiling.capital_usd})")
        if amount > room:
            raise Denied(f"size {from_units(amount, qd)} exceeds exposure room {from_units(max(room, 0), qd)}")
        if amount > cash:
            raise Denied(f"insufficient cash on {cmd.chain}: {from_units(cash, qd)} < {from_units(amount, qd)}")
    else:
        amount = min(usd_units(limits.default_position, chain), max_position, room, cash,
                     *(v for v in (stage_max, stage_room) if v is not None))
        if amount < usd_units(limits.min_position, chain):
            raise Denied(f"no room for an entry on {cmd.chain} (cash {from_units(cash, qd)})")
    if cmd.fee_reserve < 0:
        raise Denied("fee reserve must not be negative")
    native = book.balance(cmd.chain, "native", "cash")
    if cmd.fee_reserve > native:
        raise Denied(f"insufficient native balance on {cmd.chain} for network fees")
    return amount


def _size(amount: int, chain) -> str:
    """An entry's size as the operator reads it: in quote units, and in USD when the quote is not USD."""
    units = from_units(amount, chain.quote_decimals)
    if chain.quote_usd == 1:
        return str(units)
    return f"{units.normalize():f} ({(units * chain.quote_usd).normalize():f} USD)"
