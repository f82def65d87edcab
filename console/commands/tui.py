"""`botctl tui`: the live operator console, with the engine embedded (textual is imported here
lazily, inside the command, so `botctl --help` never pays for it)."""

from __future__ import annotations

import typer


def tui_command(
    profile: str = typer.Option(None, "--profile", help="Profile to run (default: BOTCTL_PROFILE or paper)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the simulated market (paper mode)."),
    signals: str = typer.Option(None, "--signals", help="Read entries from a JSONL file, followed as it grows (not stdin: the console reads the keyboard)."),
) -> None:
    """The live console: positions, reservations, nonces and orders in flight; keys to act.

    Needs a terminal (stdin and stderr): without one it exits 2 before taking the book (`botctl run`
    is the headless engine). `q` quits, asking first when orders are in flight. SIGTERM, SIGHUP (the
    terminal closed) and SIGINT quit like "quit now": the engine stops at a clean point, what is in
    flight stays held and is settled from the chain on the next start, the book's lock is released,
    and the exit code is 0, as for `botctl run` stopped by a signal.
    """
    from console.errors import Failed, Usage
    from engine import logs
    from engine.settings import load_settings
    from storage import ensure_home

    settings = load_settings(profile=profile)
    if seed is not None:
        settings = settings.model_copy(update={"paper": settings.paper.model_copy(update={"seed": seed})})
    if signals == "-":
        raise Usage("tui reads the keyboard from the terminal: give --signals a file, not stdin")
    from console.commands.common import confirm_live

    confirm_live(settings)

    from console.tui.app import BotctlApp

    app = BotctlApp(settings, signals=signals, handle_signals=True)
    app.run(before=lambda: logs.setup(ensure_home(settings.home)))
    if app.error:
        if getattr(app, "error_code", 1) == 2:
            raise Usage(app.error)
        raise Failed(app.error)
