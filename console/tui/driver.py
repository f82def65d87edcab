"""The terminal driver: Textual's own, except that a terminal that goes away is let go of.

When the terminal closes (its window, a dropped ssh session), every write to it fails with EIO.
Textual's writer thread dies on the first one, its bounded queue fills, and the app's loop then
blocks for ever on a later frame: the engine never stops and the book's lock stays held. Here a
failed write drops the output from then on and tells the app (`TerminalLost`), which quits like
"quit now"; SIGHUP says the same, but may arrive after the writer has already failed.
"""

from __future__ import annotations

import os

from textual.drivers.linux_driver import LinuxDriver

from console.tui.messages import TerminalLost


class _Output:
    """What the writer thread writes to: the terminal, until it fails once."""

    def __init__(self, terminal, app):
        self.terminal = terminal
        self.app = app
        self.lost = False

    def write(self, text: str) -> None:
        if not self.lost:
            try:
                self.terminal.write(text)
            except OSError:
                self._lose()

    def flush(self) -> None:
        if not self.lost:
            try:
                self.terminal.flush()
            except OSError:
                self._lose()

    def _lose(self) -> None:
        self.lost = True
        try:  # what is still buffered goes nowhere (at exit, a failing flush would turn exit 0 into 120)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.terminal.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        self.app.post_message(TerminalLost())  # thread-safe, like the driver's own key events

    def fileno(self) -> int:
        return self.terminal.fileno()

    def isatty(self) -> bool:
        return True


class TerminalDriver(LinuxDriver):
    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        # Deliberately replaces the base's private output file (the one its writer thread is given);
        # tests/console/test_no_shadowing.py checks that the base still has it.
        self._file = _Output(self._file, app)
