"""The Collapse tab's merge-method picker: the chosen method's summary, formula and note, and
its parameter controls, all generated from what each method class declares (``summary``,
``formula``, ``note``, ``params``). The preview and the build read the same controls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import gradio as gr

from laco_core.errors import LacoError
from laco_core.registry import REGISTRY

from . import params_ui

METHOD_PARAMS = REGISTRY.method_params()
# the method-parameter controls, in the order their values reach the preview and the build
PARAM_NAMES = list(dict.fromkeys(d.name for defs in METHOD_PARAMS.values() for d in defs if d.cli))


@dataclass
class MethodPicker:
    method: gr.Radio
    controls: list[gr.components.Component]  # in ``PARAM_NAMES`` order


def method_md(method: str) -> str:
    """What the method does, its formula and its note, for the line under the picker."""
    if method not in REGISTRY.methods:
        return ""
    m = REGISTRY.method(method)
    return f"**{m.name}** — {m.summary}  \n`{m.formula}`  \n{m.note}"


def chosen_params(method: str, param_values: Sequence) -> dict:
    """The method's parameters from the controls' values (``PARAM_NAMES`` order; blank ones
    omitted; none given: the method's defaults), checked.

    Raises:
        LacoError: naming the method, the parameter and the accepted range.
    """
    raw = params_ui.values(METHOD_PARAMS, PARAM_NAMES, method, param_values) if param_values else {}
    return REGISTRY.method(method).check(raw)


def read_params(method: str, param_values: Sequence) -> tuple[dict, str]:
    """``chosen_params`` and no error, or ``{}`` and the error (one line)."""
    try:
        return chosen_params(method, param_values), ""
    except LacoError as e:
        return {}, str(e)


def build(selected: str = "official") -> MethodPicker:
    """The picker, its note and its controls (inside the current Blocks context); changing the
    method shows its note and only the controls it declares."""
    method = gr.Radio(
        list(REGISTRY.methods), value=selected, label="Merge method", elem_id="plan-method"
    )
    info = gr.Markdown(method_md(selected))
    with gr.Row():
        made = params_ui.controls(METHOD_PARAMS, selected)
    controls = [made[n] for n in PARAM_NAMES]
    instant = dict(api_visibility="private", queue=False, show_progress="hidden")
    method.change(method_md, method, info, **instant)
    method.change(
        partial(params_ui.visibility, METHOD_PARAMS, PARAM_NAMES), method, controls, **instant
    )
    return MethodPicker(method, controls)
