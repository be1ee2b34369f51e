"""The Collapse tab's plan editing: what a click or drag on the map, a chip's ×, the slider or
a click on a Similarity heatmap does to the plan, and the instant redraw of everything the
page shows of it (map, chips, message line, preview box, strip).

``param_values`` everywhere are the method-parameter controls' values (``PARAM_NAMES``
order): they pick the estimates shown and, when one is invalid, its error is shown inline
like a plan's.
"""

from __future__ import annotations

import gradio as gr

from laco_core.arch.plan import format_plan, parse_ranges
from laco_core.runtime.engine import Engine

from . import plan_map
from .common import user_errors
from .method_picker import read_params
from .plan_map import msg_md, read_full, read_plan
from .plan_preview import estimate, estimates, method_tag, preview_box
from .state import Session
from .widgets import RangeSlider


def _figure(analysis: dict, kind: str, ranges, estimated, attention=()):
    if not analysis or "param" not in analysis:
        return gr.skip()
    return plan_map.plan_figure(analysis, kind, ranges, estimated, list(attention))


def draw(
    session: Session,
    analysis: dict,
    kind: str,
    plan_text: str,
    method: str,
    prompts_text: str,
    store: dict,
    attn_text: str = "",
    shown: str = "",
    *param_values,
):
    """Everything the page shows of the CURRENT plan, instantly: the map with its squares,
    the chips, the message line (the plan's or a parameter's error; a valid plan clears an
    error and keeps any other note), the preview and the strip diagram. Estimates come from
    the store, so a slow estimate of an older plan can never be shown for a newer one."""
    ranges, attention, error = read_full(plan_text, attn_text, session.num_layers)
    params, bad = read_params(method, param_values)
    error = error or bad
    tag = method_tag(method, params)
    est = estimates(session, store or {}, tag, prompts_text, ranges)
    if error:
        note = msg_md(error, True)
    else:
        note = "" if "laco-msg-error" in (shown or "") else gr.skip()
    md, strip = preview_box(session, store or {}, tag, prompts_text, ranges, error, attention)
    return (
        _figure(analysis, kind, ranges, est, attention),
        plan_map.chips_html(ranges, est, attention),
        note,
        md,
        strip,
    )


def _drawn(session, analysis, kind, text, method, prompts_text, store, note, attn_text, values):
    fig, chips, error, md, strip = draw(
        session, analysis, kind, text, method, prompts_text, store, attn_text, "", *values
    )
    # ``draw`` returns a string for the message line only when there is an error to show
    return text, fig, chips, error if isinstance(error, str) else msg_md(note), md, strip


def click_map(
    session: Session,
    analysis: dict,
    kind: str,
    plan_text: str,
    method: str,
    prompts_text: str,
    store: dict,
    evt: gr.SelectData,
    attn_text: str = "",
    *param_values,
):
    """A click or drag on the map: add (or join) a range, or remove the one clicked inside."""
    ranges, error = read_plan(plan_text, session.num_layers)
    if error:
        note = msg_md(f"Fix the typed plan first: {error}", True)
        return gr.skip(), gr.skip(), gr.skip(), note, gr.skip(), gr.skip()
    index = list(evt.index) if len(evt.index) == 4 else [*evt.index, *evt.index]
    ranges, note = plan_map.gesture(ranges, index, session.num_layers or 2)
    text = format_plan(ranges)
    view = (session, analysis, kind, text, method, prompts_text, store)
    return _drawn(*view, note, attn_text, param_values)


def remove_chip(
    session: Session,
    analysis: dict,
    kind: str,
    plan_text: str,
    method: str,
    prompts_text: str,
    store: dict,
    evt: gr.SelectData,
    attn_text: str = "",
    *param_values,
):
    """A chip's ×: remove that range (or keep that layer's attention: ``a12``)."""
    ranges, _ = read_plan(plan_text, session.num_layers)
    which = str(evt.value)
    if which.startswith("a"):
        attention, _ = plan_map.read_attention(attn_text, session.num_layers or 0, ranges)
        attn_text = ", ".join(str(i) for i in attention if f"a{i}" != which)
        note = f"Layer {which[1:]} keeps its attention."
    else:
        ranges, note = plan_map.remove(ranges, which)
    text = format_plan(ranges)
    view = (session, analysis, kind, text, method, prompts_text, store)
    out = _drawn(*view, note, attn_text, param_values)
    return (out[0], attn_text, *out[1:])


def sim_click(session: Session, plan_text: str, evt: gr.SelectData):
    """A click on a Similarity-tab heatmap adds that range to the plan here."""
    ranges, error = read_plan(plan_text, session.num_layers)
    if error:
        note = msg_md(f"Fix the typed plan first: {error}", True)
        return gr.skip(), note
    i, j = (int(v) for v in evt.index[:2])
    ranges, note = plan_map.gesture(ranges, [i, j, i, j], session.num_layers or 2)
    return format_plan(ranges), f"{note} See the plan on the **Collapse** tab."


@user_errors
def add_range(value: list[int], plan_text: str) -> str:
    """Append the slider's range to the typed plan (kept sorted)."""
    lo, hi = sorted(int(v) for v in value)
    ranges = parse_ranges(plan_text or "") + [(lo, hi)]
    return ", ".join(f"{a}-{b}" for a, b in sorted(set(ranges)))


def reset_slider(session: Session) -> RangeSlider:
    top = max(session.num_layers - 1, 1)
    return RangeSlider(value=[max(top - 4, 0), max(top - 1, 1)], maximum=top)


def preview(
    engine: Engine,
    session: Session,
    analysis: dict,
    kind: str,
    plan_text: str,
    method: str,
    prompts_text: str,
    store: dict,
    attn_text: str = "",
    *param_values,
):
    """Estimate, then show (one call, for scripts): preview, strip, store, map, chips."""
    store = estimate(
        engine, session, plan_text, method, prompts_text, store, attn_text, *param_values
    )
    view = (session, analysis, kind, plan_text, method, prompts_text, store)
    fig, chips, _, md, strip = draw(*view, attn_text, "", *param_values)
    return md, strip, store, fig, chips
