"""Read commands: status, positions, reservations, history, audit, config show.

Each reads one consistent snapshot through a read-only connection, so they
are safe to run while the engine writes. `--json` prints one JSON value with
amounts as decimal strings.
"""

from __future__ import annotations

import json

import typer

from console.commands.common import context
from console.errors import Failed, Usage
from console.output import amount, emit_json, money, plain, price, table, when

JSON = typer.Option(False, "--json", help="One JSON value on stdout (amounts as decimal strings).")
LIMIT_MAX = 2**63 - 1  # SQLite's largest integer


def status(json_out: bool = JSON) -> None:
    """Mode, stage, trading state and money per chain."""
    import asyncio

    from engine import views

    settings, db, policy = context()
    data = asyncio.run(views.status(db, policy))
    from storage.owner import current_owner

    owner = current_owner(settings.home)
    owner = {"pid": owner.get("pid"), "command": owner.get("command")} if owner else None
    from engine.stages import stored_stage

    data = {"mode": settings.mode, "stage": stored_stage(db) or "paper", "profile": settings.profile,
            "dry_run": settings.dry_run, "owner": owner, **data}
    if json_out:
        emit_json(data)
        return
    running = f" (profile {data['profile']})" if data["profile"] != data["stage"] else ""
    print(f"mode {data['mode'].upper()}  stage {data['stage']}{running}  trading {data['trading_state']}  "
          f"open positions {data['open_positions']}  orders in flight {data['orders_in_flight']}"
          + (f" ({data['orders_unknown']} unknown)" if data["orders_unknown"] else "")
          + (f"  owner pid {owner['pid']} ({owner['command']})" if owner else "  owner none"))
    limit = settings.max_consecutive_losses
    if limit and data["consecutive_losses"] >= limit and data["trading_state"] == "active":
        print(f"loss breaker: {data['consecutive_losses']} consecutive losses stopped new entries "
              "(`botctl resume` re-arms it)")
    if data["review"]:
        print(f"review: {len(data['review'])} reconciliation difference(s) between the venue and the book stop "
              "new entries (`botctl reconcile` shows them; `--accept` records them)")
    for chain, refused in data["refused_broadcasts"].items():
        if refused >= policy.limits.max_consecutive_rejections > 0:
            print(f"rejection breaker: the {chain} node refused {refused} broadcasts in a row: no new entries on "
                  f"{chain} until a transaction lands there (`botctl resume` re-arms it)")
    rows = [[name, money(c["cash"]), money(c["reserved"]), money(c["open_value"]), money(c["realized_pnl"]),
             money(c["unrealized_pnl"]), plain(c["network_fees"])] for name, c in data["chains"].items()]
    table("Chains (quote units)", ["chain", "cash", "reserved", "open value", "realized pnl", "unrealized pnl",
                                   "network fees (native)"], rows, {1, 2, 3, 4, 5, 6})
    print(f"equity {money(data['equity'])} USD (each chain's quote at its quote_usd)")


def positions(all_: bool = typer.Option(False, "--all", help="Include closed positions."),
              json_out: bool = JSON) -> None:
    """Open (and closing) positions; --all adds closed ones."""
    import asyncio

    from engine import views

    _settings, db, policy = context()
    rows = asyncio.run(views.positions(db, policy, include_closed=all_))
    if json_out:
        emit_json([{k: r[k] for k in ("id", "chain", "token", "state", "size", "cost", "entry_price", "mark_price",
                                      "pnl", "opened_at", "value", "closed_at", "exit_price", "close_reason")}
                   for r in rows])
        return
    table("Positions", ["id", "chain", "token", "state", "size", "cost", "entry", "mark", "pnl", "opened"],
          [[str(r["id"]), r["chain"], r["token"], r["state"], amount(r["size"]), money(r["cost"]),
            price(r["entry_price"]), price(r["mark_price"]), money(r["pnl"]), when(r["opened_at"])] for r in rows],
          {0, 4, 5, 6, 7, 8})


def reservations(json_out: bool = JSON) -> None:
    """Funds held for orders in flight, with the order that holds them."""
    import asyncio

    from engine import views

    _settings, db, policy = context()
    rows = asyncio.run(views.reservations(db, policy))
    if json_out:
        emit_json(rows)
        return
    table("Reservations", ["id", "kind", "chain", "token", "amount", "fee reserve", "state", "order", "tx"],
          [[str(r["id"]), r["kind"], r["chain"], r["token"], money(r["amount"]), plain(r["fee_reserve"]),
            r["state"], f"{r['order_id']} ({r['order_state']})", (r["tx_id"] or "-")[:18]] for r in rows],
          {0, 4, 5})


def nonces(json_out: bool = JSON,
           offline: bool = typer.Option(False, "--offline", help="Do not ask the chains for their pending count "
                                        "(only the engine's floor is shown).")) -> None:
    """EVM nonces: the chain's pending count, the next we hand out, every transaction in flight with
    each attempt's fees and age, and gaps (nonces no transaction holds, which block ours above them)."""
    import asyncio
    import time

    from console.tui.format import age
    from engine import views
    from engine.guards import pending_counts
    from engine.venues.choose import stored_now_ms

    settings, db, _policy = context()
    rows = asyncio.run(views.nonces(db))
    problems: dict[str, str] = {}
    if not offline and settings.mode != "paper":
        counts, problems = pending_counts(settings, [(r["chain"], r["address"]) for r in rows])
        rows = asyncio.run(views.nonces(db, counts))
    if json_out:
        emit_json([{**r, **({"chain_error": problems[r["chain"]]} if r["chain"] in problems else {})} for r in rows])
        return
    now = stored_now_ms(settings) or int(time.time() * 1000)
    table("Nonces", ["chain", "address", "chain pending", "next", "in flight", "gap"],
          [[r["chain"], r["address"], _seen(r), str(r["next_nonce"]), str(len(r["in_flight"])),
            f"[bold red]nonces {_span(r['gap'])} hold no transaction: later ones cannot land[/]" if r["gap"] else "-"]
           for r in rows], {2, 3, 4})
    flying = [(r["chain"], t) for r in rows for t in r["in_flight"]]
    if flying:
        table("In flight", ["chain", "nonce", "order", "intent", "state", "tx", "max fee / tip (gwei)", "attempts",
                            "age"],
              [[chain, str(t["nonce"]), str(t["order_id"]), t["intent"], t["state"], t["tx_id"] or "-",
                _fees(t["attempts"][-1]) if t["attempts"] else "-", str(len(t["attempts"])),
                age(now - t["created_ms"])] for chain, t in flying], {1, 2, 7, 8})
    for chain, why in sorted(problems.items()):
        print(f"{chain}: pending count unknown ({why}); only the engine's floor is shown")


def _seen(row: dict) -> str:
    """The chain's pending count as asked now; else only the floor is known (the count the engine last
    raised ours to, which the chain may well be past): said as such, never as the count."""
    return str(row["chain_pending"]) if row["chain_pending"] is not None else f"? (floor {row['chain_floor']})"


def _span(gap: list[int]) -> str:
    first, last = gap
    return str(first) if first == last else f"{first}..{last}"


def _fees(attempt: dict) -> str:
    from engine.venues.evm.fees import format_gwei

    if attempt["max_fee_wei"] is None:
        return "-"
    cancel = " (cancel)" if attempt["cancel"] else ""
    return f"{format_gwei(attempt['max_fee_wei'])} / {format_gwei(attempt['tip_wei'] or 0)}{cancel}"


def history(limit: int = typer.Option(50, "--limit", help="How many rows, newest first."),
            commands: bool = typer.Option(False, "--commands", help="Operator commands instead of fills."),
            json_out: bool = JSON) -> None:
    """Fills, newest first (--commands: who did what, when, and the result)."""
    import asyncio

    from engine import views

    if not 1 <= limit <= LIMIT_MAX:
        raise Usage(f"--limit {limit} is out of range: from 1 to {LIMIT_MAX} rows")

    _settings, db, policy = context()
    if commands:
        rows = asyncio.run(views.commands(db, limit))
        if json_out:
            emit_json(rows)
            return
        table("Operator commands", ["id", "at", "who", "command", "args", "state", "result"],
              [[str(r["id"]), when(r["at"]), r["who"], r["command"], json.dumps(r["args"]), r["state"],
                "; ".join((r["result"] or {}).get("ok", []) + (r["result"] or {}).get("refused", []))]
               for r in rows], {0})
        return
    rows = asyncio.run(views.history(db, policy, limit))
    if json_out:
        emit_json([{k: r[k] for k in ("id", "position_id", "side", "chain", "token", "amount", "price", "fee",
                                      "tx_id", "at", "quote_amount", "network_fee")} for r in rows])
        return
    table("History", ["id", "position", "side", "chain", "token", "amount", "quote", "price", "fee", "at"],
          [[str(r["id"]), str(r["position_id"]), r["side"], r["chain"], r["token"], amount(r["amount"]),
            money(r["quote_amount"]), price(r["price"]), money(r["fee"], 4), when(r["at"])] for r in rows],
          {0, 1, 5, 6, 7, 8})


def audit(json_out: bool = JSON) -> int:
    """Recompute the book from the journal and check every invariant; exit 1 on any violation."""
    from engine.audit import audit_file

    _settings, db, policy = context()
    problems, events = audit_file(db, policy)
    if json_out:
        emit_json({"clean": not problems, "events": events, "violations": problems})
    elif problems:
        for line in problems:
            print(f"violation: {line}")
    else:
        print(f"audit clean: {events} journal events replayed, every invariant holds")
    if problems:
        raise Failed(f"audit found {len(problems)} violation(s)")
    return 0


def config_show(json_out: bool = JSON,
                reveal: bool = typer.Option(False, "--reveal", help="Show endpoints in full, API keys included "
                                            "(on a terminal only).")) -> None:
    """The settings in force. Endpoints show scheme and host only: API keys live in their paths and
    queries, and this output ends up in tickets and chats."""
    import sys

    from engine.settings import load_settings

    if reveal and not sys.stdout.isatty():
        raise Usage("--reveal prints secrets: only to a terminal, never into a pipe or a file")
    shown = load_settings().shown(reveal=reveal)
    if json_out:
        emit_json(shown)
        return
    for key, value in shown.items():
        print(f"{key} = {value}")


COMMANDS = {
    "status": status,
    "positions": positions,
    "reservations": reservations,
    "nonces": nonces,
    "history": history,
    "audit": audit,
}
