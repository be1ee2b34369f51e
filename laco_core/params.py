"""Declared parameters: what a merge method, objective, strategy or step accepts, in one place.

A component lists its parameters as ``ParamDef`` entries (name, type, default, range, help);
``validate`` checks user values against them and refuses unknown names, and the CLI flags and
the app's controls are generated from the same declarations, so adding a parameter to a
method needs no edit anywhere else.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import LacoError

_TYPES = {"float": float, "int": int, "bool": bool, "str": str, "choice": str, "auto_float": float}


@dataclass(frozen=True)
class ParamDef:
    """One parameter a component accepts.

    Attributes:
        name: Keyword name (``alpha``); the CLI flag is ``--alpha``.
        type: ``float``, ``int``, ``bool``, ``str``, ``choice`` (one of ``choices``),
            ``auto_float`` (a float, or the string ``auto`` meaning "chosen for you"), or, for
            values only code sets, ``tensor`` (stored beside a recipe as safetensors) and
            ``json`` (a JSON-safe description).
        default: Value used when the user gives none (None: unset, the component decides).
        low / high: Inclusive bounds for numbers (None: unbounded).
        choices: Allowed values of a ``choice``.
        help: One line for ``--help`` and the app's tooltip.
        cli: False for parameters only code sets (fitted tensors, per-merge values).
        short: A one-letter CLI alias (``-C``), for the few settings the papers name so.
    """

    name: str
    type: str = "float"
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    cli: bool = True
    short: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        if self.type == "bool":
            return "true or false"
        lo = "−∞" if self.low is None else f"{self.low:g}"
        hi = "∞" if self.high is None else f"{self.high:g}"
        extra = " or auto" if self.type == "auto_float" else ""
        return f"a number in [{lo}, {hi}]{extra}"

    def check(self, value: Any, owner: str) -> Any:
        """``value`` converted to this parameter's type, or a LacoError naming the range."""
        if value is None:
            return None
        if self.type in ("tensor", "json"):
            return value  # set by code (a fitted tensor, a fit's description), never typed
        what = f"{owner}: {self.name}"
        if self.type == "auto_float" and isinstance(value, str) and value.strip() == "auto":
            return "auto"
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise LacoError(f"{what} must be true or false, not {value!r}.")
        if self.type in ("str", "choice"):
            value = str(value)
            if self.type == "choice" and value not in self.choices:
                raise LacoError(f"{what} must be {self.describe_range()}, not {value!r}.")
            return value
        try:
            num = _TYPES[self.type](value)
        except (TypeError, ValueError):
            raise LacoError(f"{what} must be {self.describe_range()}, not {value!r}.") from None
        if self.type == "int" and isinstance(value, float) and not float(value).is_integer():
            raise LacoError(f"{what} must be a whole number, not {value!r}.")
        if isinstance(num, float) and not math.isfinite(num):
            raise LacoError(f"{what} must be a finite number, not {value!r}.")
        if (self.low is not None and num < self.low) or (self.high is not None and num > self.high):
            raise LacoError(f"{what} must be {self.describe_range()}, not {value!r}.")
        return num


def validate(
    defs: Sequence[ParamDef], values: dict | None, owner: str, internal: Iterable[str] = ()
) -> dict:
    """Check ``values`` against ``defs``: unknown names are refused, known ones converted.

    Args:
        defs: The component's declarations.
        values: User values (None: none given). Values that are None are dropped.
        owner: Name used in messages (``drop_lsq``).
        internal: Extra names code may pass that users cannot (e.g. ``fit``).

    Returns:
        The converted values (defaults are not filled in: the component applies them).

    Raises:
        LacoError: for an unknown name or a value outside its declared range.
    """
    by_name = {d.name: d for d in defs}
    allowed = set(internal)
    out = {}
    for name, value in (values or {}).items():
        if name in allowed:
            out[name] = value
            continue
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            raise LacoError(f"{owner} has no parameter '{name}' (its parameters: {known}).")
        checked = by_name[name].check(value, owner)
        if checked is not None:
            out[name] = checked
    return out


def defaults(defs: Sequence[ParamDef]) -> dict:
    """The declared defaults that are set (not None)."""
    return {d.name: d.default for d in defs if d.default is not None}


def add_arguments(
    parser: argparse.ArgumentParser,
    groups: dict[str, Sequence[ParamDef]],
    prefix: str = "param_",
    typed: bool = False,
) -> None:
    """Add one ``--flag`` per declared parameter (deduplicated across components).

    ``groups`` maps a component name (``drop_lsq``) to its parameters; a parameter several
    components declare gets one flag whose help names them all. Values stay strings here and
    are converted by ``validate`` once the component is known (``typed``: numbers converted
    by argparse already, for settings whose ranges the caller checks).
    Each value lands in ``args.<prefix><name>`` (None when the flag is not given).
    """
    seen: dict[str, list[str]] = {}
    first: dict[str, ParamDef] = {}
    for owner, defs in groups.items():
        for d in defs:
            if not d.cli:
                continue
            seen.setdefault(d.name, []).append(owner)
            first.setdefault(d.name, d)
    for name, owners in seen.items():
        d = first[name]
        kwargs: dict[str, Any] = {"default": None, "dest": prefix + name}
        if d.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = "|".join(d.choices) if d.type == "choice" else d.type.upper()
            if typed and d.type in ("int", "float"):
                kwargs["type"] = _TYPES[d.type]
        default = "" if d.default is None else f"; default {d.default}"
        whose = f"{', '.join(owners)}: " if owners != [""] else ""
        kwargs["help"] = f"{d.help} ({whose}{d.describe_range()}{default})"
        flags = [d.flag, "-" + d.short] if d.short else [d.flag]
        parser.add_argument(*flags, **kwargs)


def collect(args: argparse.Namespace, defs: Sequence[ParamDef], prefix: str = "param_") -> dict:
    """The values of ``defs`` given on the command line (flags left unset are omitted)."""
    out = {}
    for d in defs:
        value = getattr(args, prefix + d.name, None)
        if value is not None:
            out[d.name] = value
    return out


def given_but_unused(
    args: argparse.Namespace,
    all_defs: Iterable[ParamDef],
    used: Sequence[ParamDef],
    prefix: str = "param_",
) -> list[str]:
    """Flags the user set that the chosen component does not declare."""
    names = {d.name for d in used}
    return sorted(
        {
            d.flag
            for d in all_defs
            if d.name not in names and getattr(args, prefix + d.name, None) is not None
        }
    )
