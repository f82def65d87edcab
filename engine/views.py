"""Read models for operators and scripts: one consistent snapshot per call.

Every function here reads through a read-only connection inside one read
transaction (storage.read_snapshot), so `status` never mixes two commits even
while the engine writes. Values are Decimal in whole units; the console turns
them into text.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from engine.core.book import Policy, nonce_gap
from engine.core.money import from_units, quote_for, to_units
from storage import fetch_all, read_snapshot


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _token_decimals(policy: Policy, chain: str, token: str) -> int:
    spec = policy.chains.get(chain)
    return spec.tokens.get(token, 18) if spec else 18


def _qd(policy: Policy, chain: str) -> int:
    spec = policy.chains.get(chain)
    return spec.quote_decimals if spec else 6


async def _marks(conn) -> dict[tuple[str, str], Decimal]:
    return {(c, t): Decimal(p) for c, t, p in await fetch_all(conn, "SELECT chain, token, price FROM marks")}


def _position_view(row, marks, policy: Policy) -> dict:
    (pid, chain, token, state, size, cost, entry_price, opened_at, closed_at, proceeds, pnl, exit_price,
     close_reason) = row
    size, cost = int(size), int(cost)
    qd, td = _qd(policy, chain), _token_decimals(policy, chain, token)
    mark = marks.get((chain, token))
    if state == "closed":
        value, profit = None, int(pnl)
    elif mark is not None:
        value = quote_for(size, mark, qd, td)
        profit = value - cost
    else:
        value, profit = None, None
    return {
        "id": pid,
        "chain": chain,
        "token": token,
        "state": state,
        "size": from_units(size, td),
        "cost": from_units(cost, qd),
        "entry_price": Decimal(entry_price),
        "mark_price": mark,
        "value": None if value is None else from_units(value, qd),
        "pnl": None if profit is None else from_units(profit, qd),
        "opened_at": iso(opened_at),
        "closed_at": iso(closed_at),
        "exit_price": None if exit_price is None else Decimal(exit_price),
        "close_reason": close_reason,
    }


_POSITION_COLUMNS = ("id, chain, token, state, size, cost, entry_price, opened_at, closed_at, proceeds, pnl, "
                     "exit_price, close_reason")


async def positions(db: Path, policy: Policy, include_closed: bool = False,
                    ids: list[int] | None = None) -> list[dict]:
    async with read_snapshot(db) as conn:
        marks = await _marks(conn)
        clauses, params = [], []
        if not include_closed:
            clauses.append("state != 'closed'")
        if ids is not None:
            clauses.append(f"id IN ({', '.join('?' for _ in ids)})")
            params += [int(i) for i in ids]
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await fetch_all(conn, f"SELECT {_POSITION_COLUMNS} FROM positions {where} ORDER BY id", params)
    return [_position_view(row, marks, policy) for row in rows]


_QUOTE_FIELDS = ("cash", "reserved", "open_value", "open_cost", "realized_pnl", "unrealized_pnl")
_NATIVE_FIELDS = ("native_cash", "native_reserved", "network_fees")
_ACCOUNT_FIELD = {("quote", "cash"): "cash", ("quote", "reserved"): "reserved", ("quote", "pnl"): "realized_pnl",
                  ("native", "cash"): "native_cash", ("native", "reserved"): "native_reserved",
                  ("native", "fees"): "network_fees"}


async def status(db: Path, policy: Policy) -> dict:
    """Sums are taken in base units and turned into Decimal once: Decimal addition (and
    negation) rounds to 28 digits, which a wei balance outgrows."""
    async with read_snapshot(db) as conn:
        balances = await fetch_all(conn, "SELECT chain, asset, account, amount FROM balances")
        meta = dict(await fetch_all(conn, "SELECT key, value FROM meta"))
        marks = await _marks(conn)
        rows = await fetch_all(conn, f"SELECT {_POSITION_COLUMNS} FROM positions WHERE state != 'closed'")
        counts = dict(await fetch_all(conn, "SELECT state, count(*) FROM orders WHERE state IN "
                                            "('new', 'signed', 'submitted', 'unknown') GROUP BY state"))
    units: dict[str, dict[str, int]] = {}

    def chain_units(name: str) -> dict[str, int]:
        return units.setdefault(name, dict.fromkeys(_QUOTE_FIELDS + _NATIVE_FIELDS, 0))

    for name in sorted(policy.chains):
        chain_units(name)
    for chain, asset, account, amount in balances:
        field = _ACCOUNT_FIELD.get((asset, account))
        if field is not None:
            value = int(amount)
            chain_units(chain)[field] = -value if account == "pnl" else value  # pnl is a credit
    for row in rows:
        chain, token, size, cost = row[1], row[2], int(row[4]), int(row[5])
        view = chain_units(chain)
        mark = marks.get((chain, token))
        value = cost if mark is None else quote_for(size, mark, _qd(policy, chain), _token_decimals(policy, chain, token))
        view["open_cost"] += cost
        view["open_value"] += value
        view["unrealized_pnl"] += value - cost
    chains: dict[str, dict] = {}
    equity: list[tuple[int, int]] = []  # in USD: a chain whose quote is its coin counts it at its quote_usd
    for name, view in units.items():
        spec = policy.chains.get(name)
        qd, nd = (spec.quote_decimals, spec.native_decimals) if spec else (_qd(policy, name), 0)
        chains[name] = {field: from_units(view[field], qd if field in _QUOTE_FIELDS else nd)
                        for field in _QUOTE_FIELDS + _NATIVE_FIELDS}
        usd, scale = _scaled(spec.quote_usd if spec else Decimal(1))
        equity.append(((view["cash"] + view["reserved"] + view["open_value"]) * usd, qd + scale))
    return {
        "trading_state": meta.get("trading_state", "active"),
        "consecutive_losses": int(meta.get("consecutive_losses", 0)),
        "review": [{"chain": c, "asset": a, "venue": str(v), "book": str(b)}
                   for c, a, v, b in json.loads(meta.get("review") or "[]")],  # entries wait for these
        "refused_broadcasts": {key.partition(":")[2]: int(v) for key, v in sorted(meta.items())
                               if key.startswith("rejected:") and int(v)},
        "open_positions": len(rows),
        "orders_in_flight": sum(counts.values()),
        "orders_unknown": counts.get("unknown", 0),
        "chains": chains,
        "equity": sum_units(equity),
    }


def _scaled(value: Decimal) -> tuple[int, int]:
    """`value` as (integer, decimals): units times it stay exact integers (a wei balance times a
    price would round at Decimal's 28 digits)."""
    decimals = max(0, -value.normalize().as_tuple().exponent)
    return to_units(value, decimals), decimals


def sum_units(amounts: list[tuple[int, int]]) -> Decimal:
    """Exact sum of (base units, decimals) pairs of different decimals, in integers."""
    scale = max((decimals for _units, decimals in amounts), default=0)
    return from_units(sum(units * 10 ** (scale - decimals) for units, decimals in amounts), scale)


async def reservations(db: Path, policy: Policy) -> list[dict]:
    async with read_snapshot(db) as conn:
        rows = await fetch_all(conn, (
            "SELECT r.id, r.kind, r.chain, r.token, r.amount, r.fee_amount, r.created_at, r.order_id,"
            " r.position_id, o.state, o.tx_id, o.nonce FROM reservations r JOIN orders o ON o.id = r.order_id"
            " WHERE r.state = 'held' ORDER BY r.id"))
    out = []
    for rid, kind, chain, token, amount, fee, created, order_id, position_id, ostate, tx, nonce in rows:
        spec = policy.chains.get(chain)
        out.append({
            "id": rid,
            "kind": kind,
            "chain": chain,
            "token": token,
            "amount": from_units(int(amount), _qd(policy, chain)),
            "fee_reserve": from_units(int(fee), spec.native_decimals if spec else 0),
            "state": "unknown outcome" if ostate == "unknown" else "held",
            "order_id": order_id,
            "order_state": ostate,
            "position_id": position_id,
            "tx_id": tx,
            "nonce": nonce,
            "created_at": iso(created),
        })
    return out


def _attempt_view(attempt) -> dict:
    return {"tx_id": attempt.tx_id, "max_fee_wei": attempt.max_fee, "tip_wei": attempt.tip,
            "cancel": attempt.cancel, "sent_at": iso(attempt.at), "sent_ms": attempt.at}


async def nonces(db: Path, chain_pending: dict[tuple[str, str], int] | None = None) -> list[dict]:
    """Per (chain, address): the next nonce we hand out, the chain's pending count (as `chain_pending`
    says now, else as last seen: the floor), and every transaction in flight with its nonce and every
    attempt at it (each replacement's fees; any of them may be the one mined). A gap is a run of
    nonces below our lowest in flight that the chain has no transaction for."""
    import dataclasses

    from engine.core.book import Order
    from engine.persist import entity_from_row

    columns = ", ".join(f.name for f in dataclasses.fields(Order))
    async with read_snapshot(db) as conn:
        accounts = await fetch_all(conn, "SELECT chain, address, next, floor FROM nonces ORDER BY chain, address")
        flying = [entity_from_row(Order, row) for row in await fetch_all(conn, (
            f"SELECT {columns} FROM orders WHERE nonce IS NOT NULL"
            " AND state IN ('new', 'signed', 'submitted', 'unknown') ORDER BY nonce"))]
    out = []
    for chain, address, next_nonce, floor in accounts:
        mine = [o for o in flying if (o.chain, o.address) == (chain, address)]
        pending = (chain_pending or {}).get((chain, address))
        seen = pending if pending is not None else floor
        out.append({"chain": chain, "address": address, "next_nonce": next_nonce, "chain_floor": floor,
                    "chain_pending": pending, "gap": nonce_gap(seen, [o.nonce for o in mine]),
                    "in_flight": [{"order_id": o.id, "nonce": o.nonce, "intent": o.intent, "state": o.state,
                                   "tx_id": o.tx_id, "created_ms": o.created_at, "updated_at": iso(o.updated_at),
                                   "attempts": [_attempt_view(a) for a in o.all_attempts()] if o.tx_id else []}
                                  for o in mine]})
    return out


async def commands(db: Path, limit: int | None = None) -> list[dict]:
    """Operator commands: who did what, when, and what came of it."""
    import json

    async with read_snapshot(db) as conn:
        sql = "SELECT id, command, args, who, created_at, state, result, decided_at FROM inbox ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = await fetch_all(conn, sql)
    return [{"id": i, "command": c, "args": json.loads(a), "who": w, "at": iso(at), "state": s,
             "result": json.loads(r) if r else None, "decided_at": iso(d)} for i, c, a, w, at, s, r, d in rows]


async def history(db: Path, policy: Policy, limit: int | None = None) -> list[dict]:
    async with read_snapshot(db) as conn:
        sql = ("SELECT id, position_id, side, chain, token, amount, quote_amount, price, fee, network_fee, tx_id, at"
               " FROM fills ORDER BY id DESC")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = await fetch_all(conn, sql)
    out = []
    for fid, pid, side, chain, token, amount, quote_amount, price, fee, network_fee, tx, at in rows:
        spec = policy.chains.get(chain)
        out.append({
            "id": fid,
            "position_id": pid,
            "side": side,
            "chain": chain,
            "token": token,
            "amount": from_units(int(amount), _token_decimals(policy, chain, token)),
            "quote_amount": from_units(int(quote_amount), _qd(policy, chain)),
            "price": Decimal(price),
            "fee": from_units(int(fee), _qd(policy, chain)),
            "network_fee": from_units(int(network_fee), spec.native_decimals if spec else 0),
            "tx_id": tx,
            "at": iso(at),
        })
    return out


async def unsettled(db: Path) -> tuple[int, list[tuple[int, str, int]]]:
    """What a `halt --close-all` still waits for: how many entries are in flight (each may yet open
    a position, which the halt then closes) and every position not closed (id, state, exits tried)."""
    async with read_snapshot(db) as conn:
        (entries,), = await fetch_all(conn, "SELECT count(*) FROM orders WHERE intent = 'entry' AND state IN "
                                            "('new', 'signed', 'submitted', 'unknown')")
        rows = await fetch_all(conn, "SELECT id, state, exit_attempts FROM positions WHERE state != 'closed' "
                                     "ORDER BY id")
    return entries, [tuple(row) for row in rows]


async def last_exits(db: Path, ids: list[int]) -> dict[int, dict]:
    """Per position: its latest exit order (state, reason) and how many exits its latest close
    request tried, so a close that did not happen can say why."""
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    async with read_snapshot(db) as conn:
        rows = await fetch_all(conn, f"SELECT o.position_id, o.id, o.state, o.reason, p.exit_attempts FROM orders o "
                                     f"JOIN positions p ON p.id = o.position_id WHERE o.intent = 'exit' "
                                     f"AND o.position_id IN ({marks}) ORDER BY o.id", [int(i) for i in ids])
    return {pid: {"order": oid, "state": state, "reason": reason, "tried": tried}
            for pid, oid, state, reason, tried in rows}
