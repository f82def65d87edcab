"""`botctl rollout` (the checklist wizard), `rollout check|status|promote|demote|attest`, `botctl drill`.

The checklist is measured from the database (engine/rollout.py), never
ticked by hand; attestations are the only things an operator adds, and they
are recorded with who and when. Promote, demote and attest go through the one
queue like every operator command (the running engine decides them, or this
process does when nobody owns the book); the owner measures the evidence
again itself before a promotion.
"""

from __future__ import annotations

import sys

import typer

from console.commands.common import command_line, context
from console.errors import Failed, Usage
from console.output import emit_json

app = typer.Typer(help="The staged rollout: paper -> testnet -> soft-launch -> scale-up. Alone, on a terminal: "
                       "the checklist wizard (evidence from the database; offers drills and attestations).",
                  invoke_without_command=True)

JSON = typer.Option(False, "--json", help="One JSON object on stdout.")
YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def _tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _measure(audit: bool = True):
    from engine.core.evidence import checklist
    from engine.rollout import as_json, evidence_of
    from engine.stages import stage, stored_stage

    settings, db, policy = context(book=False)  # a fresh home: the first stage's checklist, nothing done
    current = stage(stored_stage(db) or "paper")
    ev = evidence_of(db, policy, current.name, audit=audit)
    items = checklist(current, ev, settings.rollout.min_hours, settings.rollout.min_trades)
    return settings, db, current, ev, items, as_json(current, ev, items)


def _print(current, summary: dict, items, db=None) -> None:
    since = f" since {summary['since']}" if summary["since"] else ""
    if current.next is None:
        print(f"stage {current.title}{since}: the last stage, nothing to promote to")
        return
    done = sum(1 for i in items if i.ok)
    print(f"stage {current.title}{since} -> {current.next}: {done}/{len(items)} done "
          f"(evidence counted on {summary['network']})")
    for item in items:
        mark = "ok  " if item.ok else "MISS"
        print(f"  [{mark}] {item.label}: {item.have}" + ("" if item.ok else f"  (needs {item.need})"))
    if not summary["evidence"]["book"]:
        print(f"\nnothing is measured yet: there is no book{f' at {db}' if db else ''}. First: `botctl run` "
              "(paper mode on the simulated market) starts the book and trades; then `botctl rollout` again "
              "to see what is left (drills, attestations)")


@app.callback()
def rollout(ctx: typer.Context) -> None:
    """The checklist wizard on a terminal (asks for attestations, offers drills and the promotion);
    elsewhere the checklist, as `rollout status` prints it."""
    if ctx.invoked_subcommand is not None:
        return
    if not _tty():
        status(json_out=False)
        return
    _wizard()


@app.command("status")
def status(json_out: bool = JSON) -> None:
    """The current stage's checklist with the evidence measured from the database."""
    _show(json_out)


@app.command("check")
def check(json_out: bool = JSON) -> None:
    """Like status, and exit 1 if anything is missing for the next promotion."""
    current, items = _show(json_out)
    if current.next is None:
        raise Failed(f"stage {current.name} is the last stage: nothing to promote to")
    missing = [i for i in items if not i.ok]
    if missing:
        raise Failed(f"{len(missing)} item(s) missing for {current.next}: " + "; ".join(i.missing() for i in missing))


def _show(json_out: bool):
    settings, db, current, _ev, items, summary = _measure()
    if json_out:
        emit_json(summary)
    else:
        _print(current, summary, items, db)
        if settings.profile != current.name and summary["evidence"]["book"]:
            print(f"\nnote: the book is in stage {current.name} but these settings use profile {settings.profile}: "
                  f"runs and drills started with them count for {settings.profile}'s network, not for "
                  f"{current.name}'s; set BOTCTL_PROFILE={current.name} (or --profile {current.name}) to earn it")
    return current, items


@app.command("promote")
def promote(reason: str = typer.Option(None, "--reason", help="Why (kept with the event)."),
            yes: bool = YES, json_out: bool = JSON) -> None:
    """Move to the next stage, only when every item of the checklist passes."""
    settings, db, current, _ev, items, _summary = _measure()
    if current.next is None:
        raise Failed(f"stage {current.name} is the last stage: nothing to promote to")
    missing = [i for i in items if not i.ok]
    if missing:
        raise Failed(f"promotion to {current.next} refused, missing: " + "; ".join(i.missing() for i in missing))
    if _tty() and not yes and not json_out:
        typed = typer.prompt(f"promote {current.name} -> {current.next}? type {current.next} to confirm")
        if typed.strip() != current.next:
            raise Failed("not promoted: confirmation not typed")
    _send(settings, db, "promote", {"from": current.name, "to": current.next,
                                    **({"reason": reason} if reason else {})}, json_out)


@app.command("demote")
def demote(to: str = typer.Option(None, "--to", help="Stage to go back to (default: the previous one)."),
           reason: str = typer.Option(None, "--reason", help="Why (kept with the event)."),
           json_out: bool = JSON) -> None:
    """Move back to an earlier stage, at any time (its tighter ceilings apply at once)."""
    from engine.core.stages import ORDER
    from engine.stages import stage, stored_stage

    settings, db, _policy = context()
    current = stage(stored_stage(db) or "paper")
    target = to or current.previous
    if target is None:
        raise Failed(f"stage {current.name} is the first stage: nothing to demote to")
    if target not in ORDER:
        raise Usage(f"unknown stage {target!r} (one of: {', '.join(ORDER)})")
    if ORDER.index(target) >= ORDER.index(current.name):
        raise Failed(f"{target} is not earlier than the current stage {current.name}")
    _send(settings, db, "demote", {"from": current.name, "to": target, **({"reason": reason} if reason else {})},
          json_out)


@app.command("attest")
def attest(item: str = typer.Argument(..., help="The attestation's key, e.g. `logs` (see `rollout status`)."),
           yes: bool = YES, json_out: bool = JSON) -> None:
    """Record that you attest one of the stage's items (with who and when)."""
    from engine.stages import stage, stored_stage

    settings, db, _policy = context()
    current = stage(stored_stage(db) or "paper")
    text = current.attestation(item)
    if text is None:
        keys = [t.split(":", 1)[0] for t in current.promotion.attestations]
        raise Failed(f"stage {current.name} asks no attestation {item!r}"
                     + (f" (it asks: {', '.join(keys)})" if keys else " (it asks none)"))
    if _tty() and not yes and not json_out:
        if not typer.confirm(f"{text}\nyou attest this, recorded with your name?", default=False):
            raise Failed("not attested")
    _send(settings, db, "attest", {"stage": current.name, "item": item}, json_out)


def _send(settings, db, command: str, args: dict, json_out: bool) -> None:
    import asyncio

    from console.commands.operator import _dispatch, _report

    row = asyncio.run(_dispatch(settings, db, command, args, False, 60.0))
    _report(row, json_out)


# --------------------------------------------------------------------------- the wizard


def _wizard() -> None:
    """Walk the checklist: each item with its evidence; ask for what an operator can give now."""
    _settings, db, current, ev, items, summary = _measure()
    _print(current, summary, items, db)
    if current.next is None or not ev.book:  # a fresh home: the first step is printed, nothing to offer yet
        return
    for item in items:
        if item.ok:
            continue
        if item.kind == "attestation":
            key = item.key.split(":", 1)[1]
            print()
            if typer.confirm(f"{item.label}\n  attest now (recorded with your name)?", default=False):
                attest(key, yes=True, json_out=False)
        elif item.kind == "drill":
            kind = item.key.split(":", 1)[1]
            print()
            if typer.confirm(f"run `botctl drill {kind}` now?", default=False):
                try:
                    drill(kind, yes=False, json_out=False)
                except Failed as exc:
                    print(str(exc))
        else:
            print(f"\n{item.label}: {item.have}; needs {item.need} - that comes from running the engine "
                  f"(botctl run / botctl tui)")
    _settings, _db, current, _ev, items, summary = _measure()
    print()
    _print(current, summary, items)
    if all(i.ok for i in items):
        if typer.confirm(f"everything passes: promote to {current.next}?", default=False):
            promote(reason="rollout wizard", yes=False, json_out=False)
    else:
        missing = sum(1 for i in items if not i.ok)
        print(f"{missing} item(s) still missing; `botctl rollout` again when they are done")


# --------------------------------------------------------------------------- drills


def drill(kind: str = typer.Argument(..., metavar="KIND", help="failure | crash | halt"),
          yes: bool = YES, json_out: bool = JSON) -> None:
    """Rehearse a failure on the real engine and record the result as rollout evidence.

    failure: the executor refuses entries after their funds were reserved (all must roll back).
    crash: an engine is killed (SIGKILL) mid-trade; the restart must settle it and audit clean.
    halt: the emergency stop closes every position and refuses entries; trading is then restored."""
    import asyncio

    from engine import drills, logs
    from engine.core.stages import DRILLS
    from engine.settings import load_settings
    from storage import ensure_home
    from storage.owner import OwnerBusy

    if kind not in DRILLS:
        raise Usage(f"unknown drill {kind!r} (one of: {', '.join(DRILLS)})")
    settings = load_settings()
    if kind == "halt" and settings.mode != "paper" and _tty() and not yes:
        if not typer.confirm("the halt drill closes every open position: go on?", default=False):
            raise Failed("drill not run")
    logs.setup(ensure_home(settings.home))
    say = (lambda line: None) if json_out else (lambda line: print(f"  {line}", flush=True))
    if not json_out:
        print(f"drill {kind}: running on the {settings.mode} engine (stage {settings.profile})", flush=True)
    try:
        result = asyncio.run(drills.run(kind, settings, command_line(), say, by=_who()))
    except OwnerBusy as exc:
        raise Failed(f"{exc}: stop it first - a drill owns the book while it runs") from None
    except drills.CannotDrill as exc:
        raise Failed(f"drill {kind} not run (nothing recorded): {exc}") from None
    if json_out:
        emit_json({"drill": kind, "passed": result.passed, "detail": result.detail, "steps": result.steps})
    elif result.passed:
        print(f"drill {kind} passed: {result.detail} (recorded)")
    if not result.passed:
        raise Failed(f"drill {kind} failed: {result.detail} (recorded)")


def _who() -> str:
    from engine.inbox import who

    return who()
