"""`botctl`: the command line. Thin: every command is a few lines over engine/ and storage/.

Heavy modules are imported inside the commands that need them, so `botctl
--help` and the read commands start fast (web3 and solana are never imported
here).
"""

from __future__ import annotations

import os
import signal
import sys

# Ctrl-C while the imports below still load: one line, not a traceback (main() restores the default).
signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write("error: interrupted\n"), os._exit(130)))

import typer  # noqa: E402

from console.commands import doctor, keys, logs, operator, read, reconcile, rollout, run, tui
from console.errors import DEBUG_VARIABLE, INTERRUPTED, quiet_terminal, report, write_error

app = typer.Typer(
    name="botctl",
    help="Operator console for a DEX trading bot: paper trading, and live EVM chains through Uniswap V2 "
    "(Solana/Jupiter next). Paper mode, dry run, 50 bps slippage and a 50 gwei gas cap are the defaults.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("run")(run.run_command)
app.command("reconcile")(reconcile.reconcile_command)
app.command("tui")(tui.tui_command)
for name, fn in operator.COMMANDS.items():
    app.command(name)(fn)
for name, fn in read.COMMANDS.items():
    app.command(name)(fn)
app.add_typer(rollout.app, name="rollout")
app.command("drill")(rollout.drill)
app.command("doctor")(doctor.doctor)
app.command("logs")(logs.logs_command)
app.add_typer(keys.app, name="keys")
config_app = typer.Typer(help="Show the settings in force.", no_args_is_help=True)
config_app.command("show")(read.config_show)
app.add_typer(config_app, name="config")


def main(argv: list[str] | None = None) -> int:
    """Entry point: every failure becomes one `error:` line and an exit code (console/errors.py)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # asyncio.run cancels the command's task on Ctrl-C
    debug = bool(os.environ.get(DEBUG_VARIABLE))
    quiet_terminal(debug)
    try:
        result = app(args=argv, prog_name="botctl", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:
        return report(exc, debug)
    if result == 130:  # Typer turns a KeyboardInterrupt into a silent Exit(130): say it
        write_error(INTERRUPTED)
        return 130
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
