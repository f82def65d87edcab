"""Reconciliation: the book against the venue (the chain), after every order is settled.

The driver first settles each order whose outcome the book does not know
(SIGNED, SUBMITTED, UNKNOWN) from the venue's own record. Then the balances
must agree: quote and native coin = cash + reserved, each token = the size of
the positions holding it (plus any offset the operator accepted). A
difference nobody can explain blocks new entries until the operator reviews
it; exits keep running.
"""

from __future__ import annotations

from engine.core.book import Book


def expected_holdings(book: Book, chain: str) -> dict[str, int]:
    """What the chain should hold of ours. When the quote IS the chain's coin, the book still keeps
    the coin set aside for fees apart from the quote (each has its own reservations), but the chain
    has one balance: both are compared with it, as "quote"."""
    held = {
        "quote": book.balance(chain, "quote", "cash") + book.balance(chain, "quote", "reserved"),
        "native": book.balance(chain, "native", "cash") + book.balance(chain, "native", "reserved"),
    }
    policy = book.policy.chains.get(chain)
    if policy is not None and policy.quote_native:
        held = {"quote": held["quote"] + held["native"], "native": 0}
    for position in book.positions.values():
        if position.chain == chain:
            held[position.token] = held.get(position.token, 0) + position.size
    for key, value in book.meta.items():
        if isinstance(key, str) and key.startswith(f"offset:{chain}:"):
            token = key.split(":", 2)[2]
            held[token] = held.get(token, 0) + value
    return held


def differences(book: Book, venue: dict[str, dict[str, int]]) -> tuple[tuple[str, str, int, int], ...]:
    """(chain, asset, venue says, book says) for every asset where they disagree."""
    found = []
    for chain in sorted(venue):
        held = expected_holdings(book, chain)
        on_chain = venue[chain]
        for asset in sorted(set(on_chain) | set(held)):
            if on_chain.get(asset, 0) != held.get(asset, 0):
                found.append((chain, asset, on_chain.get(asset, 0), held.get(asset, 0)))
    return tuple(found)


def unlisted_holdings(book: Book) -> list[str]:
    """Open positions in a token the chain's allow-list no longer names: the chain's balance of it
    would not be read, reconciliation would call it a difference (and accepting that would wipe a
    holding the chain still has), and its exit could not be priced. Said, so the operator puts the
    token back (or closes the position first)."""
    out = []
    for position in book.open_positions():
        chain = book.policy.chains.get(position.chain)
        if chain is not None and chain.tokens and position.token not in chain.tokens:
            out.append(f"chains.{position.chain}: position {position.id} holds {position.token}, which is not in "
                       f"tokens any more: put it back in the allow-list (close the position first to drop it)")
    return out
