"""Collapse tab: "Best collapse to X %" on top; then a plan made on the similarity heatmap
(click or drag adds a range, a click inside a drawn square or a chip's × removes it, the typed
plan box stays), a live preview, and the build; the expert search below.

This module lays the tab out and wires it; the handlers live in ``plan_editor`` (the plan and
its instant redraw), ``plan_preview`` (the estimates), ``method_picker`` (the merge method and
its parameters, which the preview and the build share) and ``collapse_build``.

Messages have their room reserved on the page, so nothing moves when one appears; an invalid
plan or method parameter shows its error inline and blanks the preview.
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from laco_core.runtime.engine import Engine

from . import api, auto_panel, jobs, links, method_picker, plan_map
from .collapse_build import api_collapse, build_collapse
from .common import LONG_GROUP, SHORT_GROUP
from .handoff import CollapseTab, ModelTab, SimilarityTab
from .plan_editor import add_range, click_map, draw, remove_chip, reset_slider, sim_click
from .plan_preview import NO_PREVIEW, estimate
from .state import Session
from .widgets import PlanBridge, PlanChips, RangeSlider, ShareLink

RESULT_LINK = "Link to this result (its recipe steps, not the weights):"


def build(engine: Engine, session: gr.State, model: ModelTab, sim: SimilarityTab) -> CollapseTab:
    """Build the Collapse tab; its ``built`` lists the events that add a model."""
    prompts = sim.prompts
    gr.Markdown(
        "Make the model smaller. The quickest way is the **best collapse** below; or plan your "
        "own collapse on the similarity map and build it; the **expert search** at the bottom "
        "runs LaCo's Algorithm 1 and other strategies."
    )
    best = auto_panel.build_best(engine, session, prompts)
    best_link = ShareLink("", what=RESULT_LINK, elem_id="best-link")

    gr.Markdown("### Plan by hand")
    store = gr.State({})
    with gr.Row(elem_classes=["laco-row"]):
        with gr.Column(scale=3, min_width=300):
            kind = gr.Radio(  # opens on what the layers do: the map that informs a plan
                plan_map.MAPS, value=plan_map.PLAN_MAP, label="Similarity map", elem_id="plan-kind"
            )
            fig = gr.Plot(show_label=False, elem_id=plan_map.MAP_ID)
            bridge = PlanBridge(plan_map.MAP_ID)
            gr.Markdown(
                "<small>**Click** a cell (a, b) to merge layers a…b; **drag** across cells for a "
                "longer range; **click inside** a drawn square to remove it; **hover** a square "
                "for its estimate. One numbering on both maps: layers.</small>"
            )
        with gr.Column(scale=2, min_width=280):
            chips = PlanChips(plan_map.chips_html([]), elem_id="plan-chips")
            plan = gr.Textbox(
                "",
                label="Plan (inclusive, 0-based layer ranges)",
                placeholder="20-23, 10-12",
                elem_id="plan",
            )
            attn = gr.Textbox(
                "",
                label="Also remove the attention of layers (their MLPs stay; optional)",
                placeholder="12, 14",
                elem_id="plan-attn",
            )
            msg = gr.Markdown("", elem_id="plan-msg")
            share = ShareLink(
                links.plan_query(Session(), "", "official", ""),
                what="Link to this plan (opens the Collapse tab with it):",
                elem_id="plan-share",
            )
            with gr.Accordion("Or pick a range with a slider", open=False):
                slider = RangeSlider(
                    value=[24, 27], maximum=29, label="Layer range", elem_id="range-slider"
                )
                with gr.Row():
                    add_btn = gr.Button("+ Add range", size="sm")
                    clear_btn = gr.Button("Clear plan", size="sm")
            picker = method_picker.build("official")
            gr.Markdown("#### Preview")
            preview_box = gr.Markdown(NO_PREVIEW, elem_id="preview")
    strip = gr.Plot(show_label=False, elem_id="strip")
    with gr.Row(elem_classes=["laco-row"]):
        build_btn = gr.Button("Build collapsed model", variant="primary", elem_id="build", scale=3)
        stop_btn = gr.Button("■ Stop", variant="stop", elem_id="build-stop", scale=1)
    bar = gr.HTML(jobs.bar_html(), elem_id="build-bar")
    result = gr.Markdown("", elem_id="build-result")
    with gr.Accordion("Build details (JSON)", open=False):
        result_json = gr.JSON()
    auto = auto_panel.build_auto(engine, session, prompts)
    auto_link = ShareLink("", what=RESULT_LINK, elem_id="auto-link")

    # ---- listeners ----------------------------------------------------------------------
    method, controls = picker.method, picker.controls
    view = [session, sim.analysis, kind, plan, method, prompts, store, attn]
    # the redraw's inputs: the message shown (an error it may clear) and the parameters
    redraw = [*view, msg, *controls]
    shown = [fig, chips, msg, preview_box, strip]
    instant = dict(api_visibility="private", queue=False, show_progress="hidden")

    def then_estimate(ev):
        """After an instant redraw: estimate (slow), then redraw from the store."""
        return ev.then(
            partial(estimate, engine),
            [session, plan, method, prompts, store, attn, *controls],
            store,
            trigger_mode="always_last",
            concurrency_id=SHORT_GROUP,
            api_visibility="private",
            show_progress="hidden",
        ).then(draw, redraw, shown, **instant)

    # Clicks draw at once (one round trip); every change of the plan, whatever made it (a
    # click, a chip's ×, typing, the slider, Clear, the Similarity tab, a link), then
    # redraws and estimates through ``plan.change``.
    bridge.select(click_map, [*view, *controls], [plan, *shown], **instant)
    chips.select(remove_chip, [*view, *controls], [plan, attn, *shown], **instant)
    for box in (plan, attn):
        then_estimate(box.change(draw, redraw, shown, trigger_mode="always_last", **instant))
    sim.bridge.select(sim_click, [session, plan], [plan, sim.hint], **instant)
    gr.on(
        [plan.change, method.change, attn.change, *(c.change for c in controls)],
        links.plan_query,
        [session, plan, method, attn, *controls],
        share,
        trigger_mode="always_last",
        **instant,
    )
    for ev, link in ((best["built"], best_link), (auto["built"], auto_link)):
        ev.then(links.result_query, session, link, **instant)
    add_btn.click(add_range, [slider, plan], plan, **instant)
    clear_btn.click(lambda: "", None, plan, **instant)
    kind.change(draw, redraw, shown, **instant)
    # the preview merges with the method's parameters, as the build will
    then_estimate(
        gr.on(
            [method.change, *(c.change for c in controls)],
            draw,
            redraw,
            shown,
            trigger_mode="always_last",
            **instant,
        )
    )
    model.loaded.then(reset_slider, session, slider, api_visibility="private")
    for ev in sim.analyzed:
        then_estimate(ev.then(draw, redraw, shown, **instant))

    built = jobs.wire_long(
        build_btn,
        partial(build_collapse, engine),
        [session, plan, method, prompts, attn, *controls],
        [session, bar, result, result_json],
        stop_btn,
        "build",
        session,
        bar,
    )
    scripted = api.endpoint(
        partial(api_collapse, engine),
        [session, plan, method, prompts, *controls],
        [session, api.hidden(gr.Markdown), api.hidden(gr.JSON)],
        "collapse",
        concurrency_id=LONG_GROUP,
    )
    return CollapseTab(
        plan,
        attn,
        method,
        kind,
        msg,
        controls,
        built=[best["built"], built, auto["built"], scripted, auto["scripted"]],
    )
