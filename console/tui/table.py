"""LiveTable: a virtual table for live data, on Textual's Line API.

It holds only the row keys in display order and a cache of rendered rows. The
cells of a row are pulled from a provider when the row is on screen and its
cached strip is stale, so the cost of a repaint is the rows on screen, and the
cost of an update is O(changed rows): `touch(keys)` drops their cached strips
and asks for a repaint only if one of them is visible. 10,000 rows with a price
tick per second stay cheap, where a table that re-renders every visible cell on
any change (DataTable's caches are all keyed by one update counter: ~55 ms per
repaint at 120x40) does not.

Columns have a priority: when the terminal is narrow, the least important ones
are hidden before anything is cut; one column may flex to use spare room.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, NamedTuple, Sequence

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip


def _fit(text: str, width: int, right: bool) -> str:
    """`text` in exactly `width` cells: cut with an ellipsis, padded left (numbers) or right."""
    if text.isascii():
        size = len(text)
        if size > width:
            return text[: max(0, width - 1)] + "…"
        return text.rjust(width) if right else text.ljust(width)
    size = cell_len(text)  # wide characters (a token named with an emoji) take two cells
    if size > width:
        return set_cell_size(text, max(0, width - 1)) + "…"
    pad = " " * (width - size)
    return pad + text if right else text + pad


class Column(NamedTuple):
    key: str
    label: str
    width: int
    right: bool = False  # right-aligned (numbers)
    priority: int = 5  # higher stays longer when space is short
    flex: bool = False  # takes the spare width


Cells = Sequence[Any]  # each: str, or (str, style)


class LiveTable(ScrollView, can_focus=True):
    """Rows by key, rendered lazily; a row cursor; nothing rebuilt wholesale on updates."""

    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        height: 1fr;
        scrollbar-size-vertical: 1;
        scrollbar-size-horizontal: 1;
        & > .live-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .live-table--cursor { background: $block-cursor-blurred-background;
                                  color: $block-cursor-blurred-foreground; }
        & > .live-table--empty { color: $text-muted; text-style: italic; }
        &:focus > .live-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground;
                                        text-style: bold; }
    }
    """

    COMPONENT_CLASSES = {"live-table--header", "live-table--cursor", "live-table--empty"}

    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select", "Select", show=False),
    ]

    class Selected(Message):
        def __init__(self, table: "LiveTable", key: Hashable):
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> "LiveTable":
            return self.table

    def __init__(self, columns: Sequence[Column], cells: Callable[[Hashable], Cells], *, empty: str = "",
                 show_cursor: bool = True, name: str | None = None, id: str | None = None,
                 classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self.columns = list(columns)
        self._labels = {c.key: c.label for c in self.columns}
        self._cells = cells
        self.empty = empty
        self.show_cursor = show_cursor
        self._keys: list = []
        self._index: dict | None = {}
        self._cursor: Hashable | None = None
        self._cursor_at = 0  # where the cursor was, for when its row leaves
        self._cache: dict = {}
        self._layout_for: int = -1
        self._layout: list[tuple[int, int]] = []  # (column index, width)
        self._total = 0
        self._header: Strip | None = None
        self._styles: dict[str, Style] = {}
        self.on_row_painted: Callable[[Hashable], None] | None = None  # instrumentation (benchmarks)

    # ------------------------------------------------------------------ rows

    @property
    def keys(self) -> list:
        return self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._positions()

    def _positions(self) -> dict:
        if self._index is None:
            self._index = {key: i for i, key in enumerate(self._keys)}
        return self._index

    def index_of(self, key) -> int | None:
        return self._positions().get(key)

    def set_rows(self, keys: Iterable) -> None:
        """Replace the order (a sort, or a first load). Cached rows stay valid."""
        self._keys = list(keys)
        self._index = None
        self._rows_changed()

    def add(self, keys: Iterable, at_end: bool = True) -> None:
        new = [k for k in keys if k not in self._positions()]
        if not new:
            return
        self._keys.extend(new)
        index = self._index
        if index is not None:
            base = len(self._keys) - len(new)
            for offset, key in enumerate(new):
                index[key] = base + offset
        self._rows_changed()

    def remove_rows(self, keys: Iterable) -> None:
        gone = {k for k in keys if k in self._positions()}
        if not gone:
            return
        if self._cursor in gone:
            self._cursor_at = self._positions()[self._cursor]
        self._keys = [k for k in self._keys if k not in gone]
        self._index = None
        for key in gone:
            self._cache.pop(key, None)
        if self._cursor in gone:
            self._cursor = self._keys[min(self._cursor_at, len(self._keys) - 1)] if self._keys else None
        self._rows_changed()

    def touch(self, keys: Iterable) -> None:
        """These rows changed: drop their cached strips; repaint if one is on screen."""
        cache = self._cache
        visible = False
        positions = self._positions()
        top, bottom = self._window()
        for key in keys:
            cache.pop(key, None)
            if not visible:
                i = positions.get(key)
                visible = i is not None and top <= i < bottom
        if visible:
            self.refresh()

    def touch_all(self) -> None:
        self._cache.clear()
        self.refresh()

    def set_label(self, column: str, label: str) -> None:
        if self._labels.get(column) != label:
            self._labels[column] = label
            self._header = None
            self.refresh()

    def _rows_changed(self) -> None:
        if self._cursor is None and self._keys and self.show_cursor:
            self._cursor = self._keys[0]
        self._update_virtual_size()
        self.refresh()

    def _window(self) -> tuple[int, int]:
        top = int(self.scroll_offset.y)
        return top, top + max(0, self.size.height - 1)

    def visible_keys(self) -> list:
        top, bottom = self._window()
        return self._keys[top:bottom]

    # ------------------------------------------------------------------ cursor

    @property
    def cursor_key(self) -> Hashable | None:
        if self._cursor is not None and self._cursor not in self._positions():
            self._cursor = None
        return self._cursor

    def move_cursor(self, key: Hashable) -> None:
        if key in self._positions():
            old = self._cursor
            self._cursor = key
            self._cursor_at = self._positions()[key]
            self._scroll_to_cursor()
            if old != key:
                self.refresh()

    def _move(self, delta: int) -> None:
        if not self._keys:
            return
        current = self.index_of(self._cursor) if self._cursor is not None else None
        if current is None:
            current = min(self._cursor_at, len(self._keys) - 1)
            delta = 0 if delta else 0
        target = max(0, min(len(self._keys) - 1, current + delta))
        self.move_cursor(self._keys[target])

    def _scroll_to_cursor(self) -> None:
        i = self.index_of(self._cursor)
        if i is None:
            return
        rows = max(1, self.size.height - 1)
        top = int(self.scroll_offset.y)
        if i < top:
            self.scroll_to(y=i, animate=False, immediate=True)
        elif i >= top + rows:
            self.scroll_to(y=i - rows + 1, animate=False, immediate=True)

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_cursor_down(self) -> None:
        self._move(1)

    def action_page_up(self) -> None:
        self._move(-max(1, self.size.height - 2))

    def action_page_down(self) -> None:
        self._move(max(1, self.size.height - 2))

    def action_first(self) -> None:
        self._move(-len(self._keys))

    def action_last(self) -> None:
        self._move(len(self._keys))

    def action_select(self) -> None:
        if self.cursor_key is not None:
            self.post_message(self.Selected(self, self.cursor_key))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        i = int(self.scroll_offset.y) + offset.y - 1
        if 0 <= i < len(self._keys):
            self.move_cursor(self._keys[i])
            if event.chain == 2:
                self.action_select()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # ------------------------------------------------------------------ layout and rendering

    def on_resize(self, _event: events.Resize) -> None:
        self._update_virtual_size()
        self._scroll_to_cursor()

    def _update_virtual_size(self) -> None:
        self._plan(self.size.width)
        size = Size(self._total, len(self._keys) + 1)
        if size != self.virtual_size:
            self.virtual_size = size

    def _plan(self, width: int) -> None:
        """Which columns fit in `width`, and how wide each is."""
        if width == self._layout_for:
            return
        columns = self.columns
        chosen = set(range(len(columns)))
        need = lambda picked: 1 + sum(columns[i].width for i in picked) + max(0, len(picked) - 1)  # noqa: E731
        by_priority = sorted(range(len(columns)), key=lambda i: (columns[i].priority, -i))
        for i in by_priority:
            if need(chosen) <= width or len(chosen) <= 1:
                break
            chosen.discard(i)
        picked = sorted(chosen)
        spare = max(0, width - need(picked))
        layout = []
        flex = next((i for i in picked if columns[i].flex), None)
        for i in picked:
            extra = spare if i == flex else 0
            layout.append((i, columns[i].width + extra))
        self._layout = layout
        self._total = max(width, need(picked) + (0 if flex is not None else 0))
        self._layout_for = width
        self._cache.clear()
        self._header = None

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = Style.parse(name) if name else Style()
        return style

    def _strip(self, cells: Sequence[Any], base: Style, plain_style: bool = False) -> Strip:
        segments = [Segment(" ", base)]
        columns = self.columns
        first = True
        for i, width in self._layout:
            if not first:
                segments.append(Segment(" ", base))
            first = False
            cell = cells[i] if i < len(cells) else ""
            if isinstance(cell, tuple):
                text, style_name = cell
                style = base + self._style(style_name) if (style_name and not plain_style) else base
            else:
                text, style = cell, base
            segments.append(Segment(_fit(str(text), width, columns[i].right), style))
        used = sum(cell_len(s.text) for s in segments)
        if used < self._total:
            segments.append(Segment(" " * (self._total - used), base))
        return Strip(segments, self._total)

    def _render_row(self, key, base: Style) -> Strip:
        strip = self._strip(self._cells(key), base)
        hook = self.on_row_painted
        if hook is not None:
            hook(key)
        return strip

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        self._plan(width)
        scroll_x = int(self.scroll_offset.x)
        base = self.rich_style
        if y == 0:
            header = self._header
            if header is None:
                style = base + self.get_component_rich_style("live-table--header")
                labels = []
                for column in self.columns:
                    labels.append(self._labels.get(column.key, column.label))
                header = self._header = self._strip(labels, style)
            return header.crop(scroll_x, scroll_x + width)
        i = int(self.scroll_offset.y) + y - 1
        keys = self._keys
        if i >= len(keys):
            if not keys and y == 1 and self.empty:
                style = base + self.get_component_rich_style("live-table--empty")
                return Strip([Segment(" " + self.empty[: max(0, width - 1)], style)]).extend_cell_length(
                    width, base)
            return Strip.blank(width, base)
        key = keys[i]
        if self.show_cursor and key == self._cursor:
            style = base + self.get_component_rich_style("live-table--cursor")
            strip = self._render_row(key, style)
        else:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == base:
                strip = cached[1]
            else:
                strip = self._render_row(key, base)
                self._cache[key] = (base, strip)
        return strip.crop(scroll_x, scroll_x + width)

    # ------------------------------------------------------------------ for tests and people

    def row_text(self, key) -> str:
        """The row as plain text, every column (what a screen reader or a test wants)."""
        cells = self._cells(key)
        return " ".join(str(c[0] if isinstance(c, tuple) else c) for c in cells)

    def visible_labels(self) -> list[str]:
        self._plan(self.size.width)
        return [self.columns[i].key for i, _w in self._layout]
