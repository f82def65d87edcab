"""No class under console/ reuses a name its Textual base class already uses.

The console once kept its own "engine closed" flag in `self._closed`, which is also Textual's
`MessagePump._closed`: once set, Textual dropped the app's own exit message and `q` left the process
running with the book's lock held. Nothing failed loudly; only a real run showed it. So every class
in console/ that derives from a Textual class is read (its source, with ast) for the names it binds:
`self.X = ...` anywhere in it, class-level assignments, and methods. A name its Textual bases
already have is allowed only where it is the documented way to use them:
- a public method overriding a public one, callable as the base's is (compose, render, on_mount...);
- a public settable attribute of the base (a reactive such as border_title, a property with a setter);
- a public class-level setting overriding a plain class-level value (BINDINGS, DEFAULT_CSS, CSS_PATH...).
A private name of a base (`_closed`, `_attach`...) is never reused, except the few in DELIBERATE.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import textwrap
from pathlib import Path

import pytest

import console

CONSOLE = Path(console.__file__).parent

# (class, name): why the base's private attribute is replaced on purpose. Each is checked to still
# exist on the base: after a Textual upgrade renames it, the replacement would silently do nothing.
DELIBERATE = {
    ("console.tui.driver.TerminalDriver", "_file"):
        "the output the driver's writer thread writes to: wrapped so that a closed terminal is let go of",
}


def textual_classes() -> list[type]:
    """Every class defined in a console/ module with a Textual class among its bases."""
    found = []
    for path in sorted(CONSOLE.rglob("*.py")):
        name = ".".join(path.relative_to(CONSOLE.parent).with_suffix("").parts)
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == name and any(
                    base.__module__.split(".")[0] == "textual" for base in cls.__mro__[1:]):
                found.append(cls)
    return found


@functools.lru_cache(maxsize=None)
def self_attributes(cls: type) -> frozenset[str]:
    """Names bound as `self.X` (assigned, annotated, augmented, or a `for`/`with` target) in the class body."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return frozenset()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
    return frozenset(names)


def class_level(cls: type) -> dict[str, str]:
    """Names bound directly in the class body: "def" for methods, "value" for the rest."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = "def"
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names[leaf.id] = "value"
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = "value"
    return names


def textual_bases(cls: type) -> list[type]:
    return [base for base in cls.__mro__[1:] if base.__module__.split(".")[0] == "textual"]


def base_names(cls: type) -> dict[str, object]:
    """What the Textual bases define: class attributes (with their value) and instance attributes
    that their own code binds on self (value None: the base sets them in __init__ or later)."""
    names: dict[str, object] = {}
    for base in textual_bases(cls):
        for name in self_attributes(base):
            names.setdefault(name, None)
        for name in getattr(base, "__slots__", ()):
            names.setdefault(name, None)
    for name in dir(textual_bases(cls)[0]):
        names[name] = inspect.getattr_static(textual_bases(cls)[0], name)
    return names


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def settable(value: object) -> bool:
    """A descriptor the base means to be assigned: a reactive (border_title...), a property with a setter."""
    if isinstance(value, property):
        return value.fset is not None
    return hasattr(type(value), "__set__")


def same_call(override, base) -> bool:
    """The override accepts every call the base's signature allows (Textual calls the base's way)."""
    try:
        ours, theirs = inspect.signature(override), inspect.signature(base)
    except (TypeError, ValueError):
        return True
    mine = list(ours.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in mine) and any(p.kind is p.VAR_KEYWORD for p in mine):
        return True
    positional = [p for p in mine if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    wanted = [p for p in theirs.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < len(wanted) and not any(p.kind is p.VAR_POSITIONAL for p in mine):
        return False
    required = [p for p in positional if p.default is p.empty]
    return len(required) <= len(wanted)


def clashes(cls: type) -> list[str]:
    base = base_names(cls)
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    found = []
    for name in sorted(self_attributes(cls)):
        if name in base and (qualified, name) not in DELIBERATE and (is_private(name) or not settable(base[name])):
            found.append(f"{qualified} sets self.{name}, which {textual_origin(cls, name)} already has")
    for name, kind in sorted(class_level(cls).items()):
        if name not in base or (qualified, name) in DELIBERATE or name.startswith("__"):
            continue
        theirs = base[name]
        if is_private(name):
            ok = False
        elif kind == "def":
            ours = vars(cls)[name]
            if isinstance(theirs, (classmethod, staticmethod)) and type(ours) is type(theirs):
                ours, theirs = ours.__func__, theirs.__func__
            ok = callable(theirs) and not isinstance(theirs, property) and same_call(ours, theirs)
        elif settable(theirs):  # a reactive may be declared again (another default), not replaced by a value
            ok = settable(vars(cls)[name])
        else:
            ok = not callable(theirs) and not hasattr(type(theirs), "__get__")
        if not ok:
            found.append(f"{qualified} defines {name} ({kind}), which {textual_origin(cls, name)} already has")
    return found


def textual_origin(cls: type, name: str) -> str:
    for base in textual_bases(cls):
        if name in vars(base) or name in self_attributes(base):
            return f"{base.__module__}.{base.__qualname__}"
    return "a Textual base"


CLASSES = textual_classes()


def test_the_console_has_textual_classes_to_check():
    names = {cls.__name__ for cls in CLASSES}
    assert {"BotctlApp", "MainScreen", "QuitDialog", "StatusHeader", "LiveTable", "TerminalDriver"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_no_console_class_reuses_a_name_of_its_textual_base(cls):
    assert clashes(cls) == []


THROWAWAY = """
from textual.app import App
from textual.reactive import reactive
from textual.widget import Widget


class Flag(App):
    def __init__(self):
        super().__init__()
        self._closed = False  # the flag that made `q` hang


class PrivateMethod(App):
    def _attach(self):
        pass


class ClassLevelPrivate(Widget):
    _parent = None


class OtherArguments(Widget):
    def remove(self, keys):  # Textual calls widget.remove() to take it off the screen
        pass


class PlainOverProperty(Widget):
    def __init__(self):
        super().__init__()
        self.size = 3


class ValueOverReactive(Widget):
    border_title = "plain"


class Fine(Widget):
    DEFAULT_CSS = "Fine { height: 1; }"
    can_focus = True
    border_subtitle = reactive("sub")

    def __init__(self):
        super().__init__()
        self.border_title = "ok"
        self.mine = 1

    def render(self):
        return ""

    def on_mount(self) -> None:
        pass
"""


def test_the_check_catches_each_kind_of_reuse(tmp_path, monkeypatch):
    """The check itself, on throwaway subclasses: each kind of reuse is caught, the intended uses are not."""
    import sys

    (tmp_path / "throwaway_widgets.py").write_text(THROWAWAY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "throwaway_widgets", raising=False)
    module = importlib.import_module("throwaway_widgets")
    caught = {name: clashes(getattr(module, name)) for name in (
        "Flag", "PrivateMethod", "ClassLevelPrivate", "OtherArguments", "PlainOverProperty", "ValueOverReactive",
        "Fine")}
    assert caught.pop("Fine") == []
    assert caught["Flag"] == ["throwaway_widgets.Flag sets self._closed, which "
                              "textual.message_pump.MessagePump already has"]
    for name, found in caught.items():
        assert len(found) == 1, (name, found)


def test_deliberate_replacements_still_have_something_to_replace():
    for (qualified, name), why in DELIBERATE.items():
        module, _, cls_name = qualified.rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name)
        assert name in base_names(cls), f"{qualified}.{name} ({why}) no longer replaces anything in Textual"
