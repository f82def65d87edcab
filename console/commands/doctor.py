"""`botctl doctor`: is this machine ready to run the stage it is in? One line per check."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import typer

from console.errors import Failed
from console.output import emit_json


def _database(db: Path) -> str | None:
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(db, isolation_level=None, timeout=2)
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock, writes nothing
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"{db} is not writable: {exc}"
    return None


def _schema(db: Path) -> tuple[bool, str]:
    """The schema version against the one this botctl reads: every read command refuses another."""
    from engine.audit import schema_problem

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=2)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return False, f"{db} cannot be read: {exc}"
    problem = schema_problem(version)
    return problem is None, problem or f"version {version}, the one this botctl reads"


def checks(home_flag: str | None = None) -> list[tuple[str, bool, str]]:
    """(what, ok, detail) for every check, in the order an operator fixes them."""
    from engine.guards import key_problem, network_problems, probe_all
    from engine.kernel import DB_NAME
    from engine.settings import SettingsError, load_settings, safe_url
    from engine.stages import stage, stored_stage
    from engine.venues.choose import DRY_RUN_LIVE, SOLANA_NOT_YET, describe_world
    from storage import InsecureHome, ensure_home
    from storage.owner import current_owner

    out: list[tuple[str, bool, str]] = []
    try:
        settings = load_settings(home=home_flag)
    except InsecureHome as exc:  # settings are read from the home: an unsafe one is checked first
        return [("home", False, str(exc))]
    except SettingsError as exc:
        return [("settings", False, str(exc))]
    out.append(("settings", True, f"profile {settings.profile}, mode {settings.mode}, "
                                  f"dry run {'on' if settings.dry_run else 'off'}, "
                                  f"slippage {settings.max_slippage_bps} bps, gas cap {settings.max_gas_price_gwei} gwei"))
    home = Path(settings.home)
    try:
        ensure_home(home)
        out.append(("home", True, f"{home} (private)"))
    except InsecureHome as exc:
        out.append(("home", False, str(exc)))
        return out
    db = home / DB_NAME
    stored = stored_stage(db)
    out.append(("stage", True, f"{stored or 'paper'}" + ("" if stored else " (no book yet)")))
    problem = _database(db)
    out.append(("database", problem is None, problem or (f"{db} writable" if db.exists()
                                                          else f"{db} is created on the first start")))
    if db.exists():
        out.append(("schema", *_schema(db)))
    owner = current_owner(home)
    out.append(("lock", True, f"owned by pid {owner.get('pid')} ({owner.get('command')})" if owner
                else "free: no engine owns the book"))
    if settings.mode == "paper":
        out.append(("keys", True, "paper mode signs with the paper signer: no keys needed"))
        out.append(("endpoints", True, describe_world(settings)))
    if settings.mode != "paper":  # what `botctl run` would refuse before it opens anything
        if settings.dry_run:
            out.append(("dry run", False, DRY_RUN_LIVE))
        for name, chain in sorted(settings.chains.items()):
            if chain.kind != "evm":
                out.append((f"chains.{name}", False, SOLANA_NOT_YET.format(name=name).split(": ", 1)[1]))
    if not settings.chains and settings.mode != "paper":
        out.append(("chains", False, "mode live needs [chains.<name>] (see .env.example)"))
    for name, chain in sorted(settings.chains.items()):
        problem = key_problem(home, chain)
        out.append((f"key {name}", problem is None, problem or "present and private"))
    if settings.chains:
        found, unreachable = probe_all(settings, timeout=3.0)
        for line in unreachable:
            out.append((line.split(":", 1)[0], False, line.split(":", 1)[1].strip()))
        if settings.mode != "paper" and not unreachable and not any(not ok for _c, ok, _d in out):
            out.append(_market(settings))
        wrong = network_problems(stage(settings.profile), found, {n: c.chain_id for n, c in settings.chains.items()})
        for name, net in sorted(found.items()):
            mine = [w for w in wrong if w.startswith(f"chains.{name}:")]
            out.append((f"chains.{name}", not mine, mine[0].split(":", 1)[1].strip() if mine
                        else f"{safe_url(settings.chains[name].rpc_url)} is {net.label}: a {net.network} network, "
                             f"allowed in stage {settings.profile}"))
    return out


def _market(settings) -> tuple[str, bool, str]:
    """What `botctl run` reads from each chain before it trades (the router, the quote and every
    allow-listed token): read here too, so that doctor passes only what a start would take."""
    import asyncio

    from engine.venues.choose import load_markets
    from engine.venues.port import VenueError

    try:
        markets = asyncio.run(load_markets(settings, checking=True))
    except VenueError as exc:
        return ("market", False, str(exc))
    except Exception as exc:  # a node that answered the probe and then not: said without its URL
        return ("market", False, f"the chains could not be read ({type(exc).__name__})")
    return ("market", True, "; ".join(f"{name}: the router, the quote and {len(m.tokens)} token(s) answer"
                                      for name, m in sorted(markets.items())))


def doctor(json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout.")) -> None:
    """Check settings, keys, endpoints (reachable, right network for the stage), database, lock."""
    results = checks(os.environ.get("BOTCTL_HOME"))
    bad = [r for r in results if not r[1]]
    if json_out:
        emit_json({"ok": not bad, "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in results]})
    else:
        width = max(len(c) for c, _ok, _d in results)
        for check, ok, detail in results:
            print(f"{'ok  ' if ok else 'FAIL'} {check:<{width}}  {detail}")
    if bad:
        raise Failed(f"{len(bad)} check(s) failed: {bad[0][0]}: {bad[0][2]}")
