"""Dialogs: confirm a close, type a word to confirm (HALT, RESUME), quit with orders in flight,
the audit's result, and the keys."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ConfirmClose(ModalScreen[bool]):
    """Close one position: what it will do, then y / n."""

    BINDINGS = [
        Binding("y", "confirm", "Close it"),
        Binding("n,escape", "cancel", "Cancel"),
    ]

    def __init__(self, position_id: int, preview: Text | str):
        super().__init__(classes="dialog-screen")
        self.position_id = position_id
        self.preview = preview

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog danger"):
            yield Label(f"Close position {self.position_id}?", id="dialog-title")
            yield Static(self.preview, id="dialog-body")
            with Horizontal(classes="buttons"):
                yield Button("Close it (y)", variant="error", id="confirm")
                yield Button("Cancel (n)", variant="default", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()  # Enter alone never closes a position

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


class TypeToConfirm(ModalScreen[bool]):
    """For what cannot be taken back lightly: the operator types the word (HALT, RESUME)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, word: str, title: str, explanation: str):
        super().__init__(classes="dialog-screen")
        self.word = word
        self.title_text = title
        self.explanation = explanation

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog danger"):
            yield Label(self.title_text, id="dialog-title")
            yield Static(self.explanation, id="dialog-body")
            yield Input(placeholder=f"type {self.word} and press Enter", id="confirm-word")
            yield Static("", id="dialog-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.word:
            self.dismiss(True)
        else:
            self.query_one("#dialog-error", Static).update(f"type {self.word} exactly (Esc cancels)")
            event.input.value = ""

    def action_cancel(self) -> None:
        self.dismiss(False)


class QuitDialog(ModalScreen[str | None]):
    """Quitting with orders in flight: settle them first, or leave them to the next start."""

    BINDINGS = [
        Binding("s", "settle", "Settle, then quit"),
        Binding("q", "now", "Quit now"),
        Binding("escape,n", "stay", "Stay"),
    ]

    def __init__(self, in_flight: int):
        super().__init__(classes="dialog-screen")
        self.in_flight = in_flight

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(f"{self.in_flight} order(s) in flight", id="dialog-title")
            yield Static(
                "Settle: stop taking new entries and let every order in flight fill or fail, then quit.\n"
                "Quit now: stop at a clean point; what is in flight stays held and is settled from the chain "
                "when the engine next starts (its signed bytes are already saved).", id="dialog-body")
            with Horizontal(classes="buttons"):
                yield Button("Settle, then quit (s)", variant="primary", id="settle")
                yield Button("Quit now (q)", variant="warning", id="now")
                yield Button("Stay (esc)", variant="default", id="stay")

    def on_mount(self) -> None:
        self.query_one("#stay", Button).focus()

    @on(Button.Pressed, "#settle")
    def action_settle(self) -> None:
        self.dismiss("settle")

    @on(Button.Pressed, "#now")
    def action_now(self) -> None:
        self.dismiss("now")

    @on(Button.Pressed, "#stay")
    def action_stay(self) -> None:
        self.dismiss(None)


class InfoScreen(ModalScreen[None]):
    """A read-only text (the audit's result, the help): any of Esc, Enter, q closes it."""

    BINDINGS = [Binding("escape,enter,q,question_mark", "close", "Close")]

    def __init__(self, title: str, body: Text | str, danger: bool = False):
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.body = body
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog info" + (" danger" if self.danger else "")):
            yield Label(self.title_text, id="dialog-title")
            with VerticalScroll(id="dialog-scroll"):
                yield Static(self.body, id="dialog-body")
            yield Label("Esc closes", classes="hint")

    def show(self, title: str, body: Text | str, danger: bool = False) -> None:
        self.query_one("#dialog-title", Label).update(title)
        self.query_one("#dialog-body", Static).update(body)
        self.query_one("#dialog").set_class(danger, "danger")

    def action_close(self) -> None:
        self.dismiss(None)


HELP = """\
c        close the selected position (asks first)
p        pause (exits only) / resume; resuming from a halt asks for RESUME
H        halt: nothing automatic; asks for HALT
a        run the audit (replays the journal, checks every invariant)
r        the rollout checklist of the stage (evidence from the database)
s / S    sort positions by the next column / reverse the order
up/down  select a position; Tab moves between panels
ctrl+p   command palette (the same operator commands)
?        this help
q        quit (asks first when orders are in flight)

Every action goes through the engine's one command queue, exactly like
`botctl close`, `pause` and `halt` from another terminal (those show up here
live, in the Events panel)."""
