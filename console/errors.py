"""The one place errors are written: one `error:` line on stderr and an exit code.

0 ok, 1 refused or failed, 2 usage or configuration, 130 interrupted. Commands
raise; `main` catches and writes. No traceback ever reaches the operator's
terminal: it goes to the log when there is one, and to stderr only with
BOTCTL_DEBUG=1. Failures of the machine (a full or read-only disk, a file that
is not a book...) are named by storage.failure; `unexpected` is kept for bugs.
"""

from __future__ import annotations

import logging
import sys
import threading

DEBUG_VARIABLE = "BOTCTL_DEBUG"
INTERRUPTED = ("interrupted: nothing was half-written (the book is as of its last commit); `botctl status` and "
               "`botctl history --commands` show where things stand")

log = logging.getLogger("botctl.cli")


class Failed(Exception):
    """Refused or failed: exit 1."""

    code = 1


class Usage(Exception):
    """Bad usage or configuration: exit 2."""

    code = 2


class Interrupted(Failed):
    """Ctrl-C, said with what became of the command (e.g. withdrawn): exit 130."""

    code = 130


def write_error(message: str) -> None:
    line = " ".join(str(message).split()) or "failed"
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()


def quiet_terminal(debug: bool) -> None:
    """Before anything logs: a record with a traceback must never fall through to logging's
    last-resort handler (stderr) in a process that has not set up its log file yet, nor a thread's
    failure print one; both go to the log (engine.logs.setup) instead. BOTCTL_DEBUG=1 keeps
    Python's own printing."""
    if debug:
        return
    root = logging.getLogger()
    if not any(isinstance(handler, _Quiet) for handler in root.handlers):
        root.addHandler(_Quiet())
    threading.excepthook = _thread_failed
    sys.unraisablehook = _unraisable


class _Quiet(logging.NullHandler):
    """Stands in for logging.lastResort: what no handler takes is dropped, not printed."""


def _thread_failed(args) -> None:
    if issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("botctl.thread").error("thread %s failed", name,
                                             exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _unraisable(args) -> None:
    """An exception Python can only ignore (in a finalizer, at exit): the log, not the terminal."""
    if args.exc_type is None:
        return
    logging.getLogger("botctl.thread").error("%s: exception ignored", args.err_msg or "unraisable",
                                             exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def outcome(exc: BaseException) -> tuple[str, int, bool] | None:
    """(the line, the exit code, whether its traceback is worth keeping) for an expected failure;
    None for a bug."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, 130, False
    if isinstance(exc, (Usage, Failed)):
        return str(exc), exc.code, False
    import typer

    if isinstance(exc, typer.Abort):
        return "aborted", 1, False
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # usage errors (Typer's click)
        return exc.format_message(), 2, False
    from engine.settings import SettingsError
    from storage import failure
    from wallet.keystore import KeystoreError

    if isinstance(exc, KeystoreError):  # its own exit code: 2 a missing or exposed file, 1 a wrong password
        return str(exc), exc.code, False
    if isinstance(exc, SettingsError):  # 2 a setting to fix; 1 a node that did not answer (Unreachable)
        return str(exc), exc.code, False
    known = failure(exc)  # a StorageError, or an sqlite3/OS error raised outside storage's own calls
    if known is not None:
        return str(known), known.code, known is not exc or exc.__cause__ is not None
    return None


def report(exc: BaseException, debug: bool) -> int:
    """Write the one line for `exc` and return the exit code; re-raise a bug when debugging."""
    known = outcome(exc)
    if known is None:
        if debug:
            raise exc
        log.error("unexpected error", exc_info=exc)  # the log file when there is one; never the terminal
        write_error(f"unexpected {type(exc).__name__}: {exc} ({DEBUG_VARIABLE}=1 shows the traceback)")
        return 1
    message, code, keep = known
    if keep:
        log.warning("%s", message, exc_info=exc)
        if debug:
            import traceback

            traceback.print_exception(exc)
    write_error(message)
    return code
