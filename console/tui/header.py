"""The header: a mode badge nobody can miss, the stage, the engine state, and money per chain."""

from __future__ import annotations

from typing import Callable

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from console.tui.model import HeaderView


class StatusHeader(Widget):
    DEFAULT_CSS = """
    StatusHeader { height: auto; }
    """

    COMPONENT_CLASSES = {
        "status-header--paper", "status-header--testnet", "status-header--live",
        "status-header--running", "status-header--paused", "status-header--halted",
        "status-header--reconciling", "status-header--stopped", "status-header--label",
        "status-header--chain", "status-header--warn",
    }

    view: reactive[HeaderView | None] = reactive(None, layout=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_painted: Callable[[HeaderView | None], None] | None = None  # instrumentation (benchmarks)

    def _cls(self, name: str) -> Style:
        return self.get_component_rich_style(f"status-header--{name}")

    def render(self) -> Text:
        view = self.view
        hook = self.on_painted
        if hook is not None:
            hook(view)
        if view is None:
            return Text(" starting…")
        wide = self.size.width >= 100
        label = self._cls("label")
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {view.mode} ", self._cls(view.mode.lower()))
        text.append(" stage ", label)
        text.append(view.stage)
        state = view.state.lower()
        state_style = self._cls(state if state in ("running", "paused", "halted", "stopped") else "reconciling")
        text.append("  ")
        text.append(f" {view.state} ", state_style)
        if view.review:
            text.append("  REVIEW: botctl reconcile", self._cls("warn"))
        if view.breakers:
            text.append(f"  BREAKER: {'; '.join(view.breakers)}: no entries (botctl resume)", self._cls("warn"))
        if view.height is not None:
            text.append("  block ", label)
            text.append(str(view.height))
        text.append("  open ", label)
        text.append(str(view.open_positions))
        text.append("  in flight ", label)
        text.append(str(view.in_flight))
        if view.unknown:
            text.append(f" ({view.unknown} unknown)", self._cls("warn"))
        names = ("cash", "reserved", "open value", "realized", "unrealized") if wide else \
            ("cash", "rsvd", "open", "real", "unreal")
        width = max((len(c.chain) for c in view.chains), default=0)
        for line in view.chains:
            text.append("\n")
            text.append(f" {line.chain:<{width}}", self._cls("chain"))
            for name, value in zip(names, (line.cash, line.reserved, line.open_value, line.realized,
                                           line.unrealized)):
                text.append(f"  {name} ", label)
                if isinstance(value, tuple):
                    text.append(value[0], value[1])
                else:
                    text.append(value)
                if name.startswith("open"):
                    text.append(f" ({line.open_positions})", label)
        return text
