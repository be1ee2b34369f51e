"""docs/components.md, generated from the registry: every component, its summary and settings.

Nothing here names a component: each table of ``REGISTRY`` becomes a section, each entry a
row, and each declared ``ParamDef`` a row of that entry's settings table, so a component
listed in ``laco_core/registry.py`` appears on the page by itself. ``python -m
laco_core.docs_tables`` rewrites the page; a unit test checks that it is current.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

from .params import ParamDef
from .registry import REGISTRY, Registry

PAGE = Path(__file__).resolve().parents[1] / "docs" / "components.md"
COMMAND = "python -m laco_core.docs_tables"
_ROOT = PAGE.parents[1]


def components_markdown() -> str:
    """The page: one section per registry table, one row per component, one settings table
    per component that declares settings.

    Returns:
        Markdown text ending in a newline.
    """
    out = [
        "# Components",
        "",
        f"Generated from `laco_core.registry.REGISTRY` by `{COMMAND}`: do not edit by hand.",
        "Each table below is one table of the registry; a component's summary and settings are",
        "what its class declares (`summary`, `params`). To add one, see",
        "[extending.md](extending.md).",
        "",
    ]
    kinds = _kinds()
    for field in dataclasses.fields(Registry):
        out += _section(field.name, getattr(REGISTRY, field.name), kinds.get(field.name))
    return "\n".join(out).rstrip("\n") + "\n"


def _section(table: str, entries: typing.Mapping[str, Any], kind: type | None) -> list[str]:
    lines = [f"## {table}", ""]
    if kind is not None:
        what = _first_sentence(kind.__doc__)
        lines += [f"Base class `{kind.__name__}` in {_where(kind)}. {what}".rstrip(), ""]
    lines += ["| name | what it does | defined in | settings |", "|---|---|---|---|"]
    details: list[str] = []
    for name, component in entries.items():
        params = _declared(component)
        settings = ", ".join(f"`{d.name}`" for d in params) or "—"
        lines.append(
            f"| `{name}` | {_cell(_summary(component))} | {_where(component)} | {settings} |"
        )
        if params:
            details += _settings(table, name, params)
    return lines + [""] + details


def _settings(table: str, name: str, params: tuple[ParamDef, ...]) -> list[str]:
    lines = [
        f"### {table}: `{name}`",
        "",
        "| setting | type | default | range | what it sets |",
        "|---|---|---|---|---|",
    ]
    for d in params:
        # fitted tensors and fit descriptions: code sets them and the recipe records them
        allowed = d.describe_range() if d.cli else "set by code, recorded in the recipe"
        lines.append(
            f"| `{d.name}` | {d.type} | {_value(d.default)} | {_cell(allowed)} | {_cell(d.help)} |"
        )
    return lines + [""]


def _declared(component: Any) -> tuple[ParamDef, ...]:
    """The ``ParamDef``s a component declares in ``params`` (a step's dataclass field of that
    name holds values, not declarations, and is not one)."""
    declared = getattr(component, "params", ())
    if not isinstance(declared, (tuple, list)):
        return ()
    return tuple(d for d in declared if isinstance(d, ParamDef))


def _summary(component: Any) -> str:
    """The declared one-line ``summary``, else the docstring's first sentence."""
    return getattr(component, "summary", "") or _first_sentence(_own_doc(component))


def _own_doc(component: Any) -> str:
    """The docstring of the function or class itself: never a base class's, nor the signature
    a dataclass writes when it has none."""
    owner = _owner(component)
    doc = owner.__dict__.get("__doc__") if inspect.isclass(owner) else owner.__doc__
    return "" if not doc or doc.startswith(f"{owner.__name__}(") else doc


def _first_sentence(doc: str | None) -> str:
    paragraph = " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0].replace("``", "`")


def _where(component: Any) -> str:
    """The file that defines ``component``, relative to the repository."""
    try:
        path = Path(inspect.getsourcefile(_owner(component)) or "")
        return f"`{path.resolve().relative_to(_ROOT).as_posix()}`"
    except (TypeError, ValueError):
        return "—"


def _owner(component: Any) -> Any:
    """A registered function or class as is; an instance's class."""
    if inspect.isfunction(component) or inspect.isclass(component):
        return component
    return type(component)


def _kinds() -> dict[str, type]:
    """Registry table -> the class its entries are (or are instances of), from its annotations."""
    out = {}
    for name, hint in typing.get_type_hints(Registry).items():
        args = typing.get_args(hint)
        kind = args[1] if len(args) == 2 else None
        if typing.get_origin(kind) is type:
            kind = typing.get_args(kind)[0]
        if inspect.isclass(kind) and kind.__module__.startswith(__package__):
            out[name] = kind
    return out


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("``", "`")


def main() -> int:
    PAGE.write_text(components_markdown(), encoding="utf-8")
    print(f"wrote {PAGE.relative_to(_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
