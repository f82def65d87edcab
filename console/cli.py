"""`botctl`: the command line. Thin: every command is a few lines over engine/ and storage/.

Heavy modules are imported inside the commands that need them, so `botctl
--help` and the read commands start fast (web3 and solana are never imported
here).
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from console.commands import doctor, operator, read, reconcile, rollout, run, tui
from console.errors import Failed, Usage, write_error

app = typer.Typer(
    name="botctl",
    help="Operator console for a DEX trading bot (Solana/Jupiter and EVM/Uniswap V2). "
    "Paper mode, dry run, 50 bps slippage and a 50 gwei gas cap are the defaults.",
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
config_app = typer.Typer(help="Show the settings in force.", no_args_is_help=True)
config_app.command("show")(read.config_show)
app.add_typer(config_app, name="config")


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps every expected failure to one `error:` line and an exit code."""
    from engine.settings import SettingsError
    from storage import InsecureHome, StorageError

    try:
        result = app(args=argv, prog_name="botctl", standalone_mode=False)
    except typer.Abort:
        write_error("aborted")
        return 1
    except (SettingsError, InsecureHome, Usage) as exc:
        write_error(str(exc))
        return 2
    except (StorageError, Failed) as exc:
        write_error(str(exc))
        return 1
    except KeyboardInterrupt:
        write_error("interrupted")
        return 130
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # usage errors (Typer's click)
            write_error(exc.format_message())
            return 2
        # A bug: say so in one line, keep the traceback in the log
        if os.environ.get("BOTCTL_DEBUG"):
            raise
        logging.getLogger("botctl").exception("unexpected error")
        write_error(f"unexpected {type(exc).__name__}: {exc} (BOTCTL_DEBUG=1 shows the traceback)")
        return 1
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
