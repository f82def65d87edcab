"""Typed messages between the engine side of the app and its widgets."""

from __future__ import annotations

from textual.message import Message


class BookChanged(Message):
    """The engine committed something since the last repaint. A burst collapses into one:
    what changed is accumulated on the app (`Changes`), this only says "look"."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, BookChanged)


class EngineReady(Message):
    """The engine is built, reconciled and attached: panels can load the book."""


class EngineStopped(Message):
    """The engine's tick loop ended; `error` says why if it failed."""

    def __init__(self, error: str | None = None):
        super().__init__()
        self.error = error


class OperatorResult(Message):
    """The answer to an operator action sent from this console (close, pause, halt, ...)."""

    def __init__(self, action: str, accepted: bool, detail: str):
        super().__init__()
        self.action = action
        self.accepted = accepted
        self.detail = detail


class TerminalLost(Message):
    """The terminal went away (a write to it failed): nobody can see or steer the console any more."""
