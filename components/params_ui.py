"""Controls generated from declared parameters: a new method parameter needs no UI edit.

One control per distinct ``ParamDef`` name across the components given; each is shown only
while the selected component declares it.
"""

from __future__ import annotations

from collections.abc import Sequence

import gradio as gr

from laco_core.params import ParamDef


def controls(
    groups: dict[str, Sequence[ParamDef]], selected: str
) -> dict[str, gr.components.Component]:
    """Create the controls (inside the current Blocks context), name -> component."""
    made: dict[str, gr.components.Component] = {}
    for defs in groups.values():
        for d in defs:
            if not d.cli or d.name in made:
                continue
            visible = any(x.name == d.name for x in groups.get(selected, ()))
            label = d.name.replace("_", " ")
            if d.type == "bool":
                c = gr.Checkbox(bool(d.default), label=label, info=d.help, visible=visible)
            elif d.type == "choice":
                c = gr.Dropdown(
                    list(d.choices), value=d.default, label=label, info=d.help, visible=visible
                )
            elif d.type in ("float", "int") and d.default is not None:
                c = gr.Number(
                    d.default,
                    label=label,
                    info=f"{d.help} ({d.describe_range()}; blank: default)",
                    minimum=d.low,
                    maximum=d.high,
                    precision=0 if d.type == "int" else None,
                    visible=visible,
                )
            else:  # str, auto_float, unset numbers: typed text (blank: the method decides)
                c = gr.Textbox(
                    "" if d.default is None else str(d.default),
                    label=label,
                    info=f"{d.help} ({d.describe_range()})",
                    visible=visible,
                )
            made[d.name] = c
    return made


def visibility(groups: dict[str, Sequence[ParamDef]], names: Sequence[str], selected: str) -> list:
    """Updates showing only the controls the selected component declares."""
    own = {d.name for d in groups.get(selected, ())}
    return [gr.update(visible=n in own) for n in names]


def values(
    groups: dict[str, Sequence[ParamDef]], names: Sequence[str], selected: str, raw: Sequence
) -> dict:
    """The selected component's parameters from the controls' values (blank ones omitted)."""
    own = {d.name for d in groups.get(selected, ())}
    out = {}
    for name, value in zip(names, raw, strict=True):
        if name in own and value not in (None, ""):
            out[name] = value
    return out
