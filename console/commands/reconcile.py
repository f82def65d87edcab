"""`botctl reconcile`: settle every uncertain order from the venue and compare balances."""

from __future__ import annotations

import typer

from console.commands.common import command_line
from console.errors import Failed
from console.output import emit_json


def reconcile_command(
    accept: bool = typer.Option(False, "--accept", help="Accept the recorded differences (an audited event)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Run the reconciliation pass now; --accept records the operator's acceptance of differences."""
    import asyncio

    from engine.settings import load_settings

    settings = load_settings()
    report = asyncio.run(_reconcile(settings, accept))
    if json_out:
        emit_json(report)
    else:
        for item in report["resolved"]:
            print(f"order {item['order']} ({item['intent']}, was {item['was']}): {item['now']}")
        if not report["resolved"]:
            print("no order was in doubt")
        for chain in report["not_compared"]:
            print(f"{chain}: balances not compared while an order is still in doubt (compared once it settles: "
                  "`botctl run`, then `botctl reconcile`)")
        for d in report["differences"]:
            print(f"difference: {d['chain']} {d['asset']}: venue {d['venue']} book {d['book']} (base units)")
        if report["accepted"]:
            print("differences accepted: the book now follows the venue; new entries are allowed again")
        elif not report["differences"] and not report["not_compared"]:
            print("balances agree with the venue")
        elif not report["differences"]:
            print("the balances compared agree with the venue")
    if report["differences"] and not report["accepted"]:
        raise Failed(f"{len(report['differences'])} difference(s) with the venue block new entries: "
                     "review them, then run `botctl reconcile --accept`")


async def _reconcile(settings, accept: bool) -> dict:
    from engine import logs
    from engine.core.messages import AcceptReconciliation
    from engine.kernel import build
    from storage import ensure_home
    from storage.owner import OwnerBusy

    logs.setup(ensure_home(settings.home))
    try:
        engine = await build(settings, command=command_line())
    except OwnerBusy as exc:
        raise Failed(f"{exc} (it reconciles at its own start)") from None
    try:
        result = engine.last_reconciliation
        accepted = False
        if accept and result.differences:
            outcome = await engine.sequencer.submit(AcceptReconciliation(engine.now(), "operator"))
            accepted = outcome.accepted
    finally:
        await engine.close()
    return {
        "resolved": [{"order": oid, "intent": intent, "was": was, "now": now}
                     for oid, intent, was, now in result.resolved],
        "differences": [{"chain": c, "asset": a, "venue": str(v), "book": str(b)}
                        for c, a, v, b in result.differences],
        "accepted": accepted,
        "not_compared": list(result.not_compared),
    }
