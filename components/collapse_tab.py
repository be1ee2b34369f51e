"""Collapse tab: "Best collapse to X %" on top; then a plan made on the similarity heatmap
(click or drag adds a range, a click inside a drawn square or a chip's × removes it, the typed
plan box stays), a live preview, and the build; the expert search below.

Messages have their room reserved on the page, so nothing moves when one appears; an invalid
plan shows its error inline and blanks the preview.
"""

from __future__ import annotations

import logging
from functools import partial

import gradio as gr

from laco_core.engine import Engine
from laco_core.errors import LacoError
from laco_core.evaluate import quick_metrics
from laco_core.plan import Range, format_plan, layer_groups, parse_ranges, validate_ranges
from laco_core.registry import REGISTRY
from laco_core.search.curve import cliff_line, validation
from laco_core.steps.attention import AttentionStep
from laco_core.steps.collapse import CollapseStep
from laco_core.subblocks import attention_params

from . import api, auto_panel, jobs, params_ui, plan_map, plots, session_panel
from .common import (
    LONG_GROUP,
    SHORT_GROUP,
    base_of,
    fmt_params,
    gpu,
    public_message,
    remember,
    user_errors,
)
from .state import Session, calibration_metrics
from .widgets import PlanBridge, PlanChips, RangeSlider

log = logging.getLogger("laco.app")
METHOD_PARAMS = REGISTRY.method_params()
# the method-parameter controls, in the order their values reach ``build_collapse``
PARAM_NAMES = list(dict.fromkeys(d.name for defs in METHOD_PARAMS.values() for d in defs if d.cli))

METHOD_NOTES = {
    "official": "What the released LaCo code actually computes — in effect a layer drop that "
    "keeps the first layer's norms. Works well on this model.",
    "rdsc": "The paper's Eq. 1 (Reserving-Differences-while-Seeking-Common): θ* = θ_lo + Σ(θ_d − θ_lo). "
    "As printed, it **destroys** this model (similarity ≈ 0) — shown for honesty.",
    "average": "Plain mean of the group's weights (a common merging baseline).",
    "drop": "Keep layer lo, delete the rest of the range (ShortGPT-style layer removal).",
    "drop_linear": "Fitted on the bundled training text when you collapse (seconds per range): "
    "a linear map after layer lo's MLP stands in for the removed layers (ReplaceMe).",
    "drop_lsq": "Fitted on the bundled training text when you collapse (seconds per range): "
    "layer lo's MLP down projection is refitted to stand in for the removed layers. The best "
    "training-free choice on this model.",
}
NO_PREVIEW = "<div class='laco-preview-empty'>Add a range to see the plan.</div>"


def method_md(method: str) -> str:
    m = REGISTRY.methods.get(method)
    if m is None:
        return ""
    note = METHOD_NOTES.get(method, "")
    return f"**{m.name}** — {m.summary}  \n`{m.formula}`  \n{note}"


def preview_md(p: dict) -> str:
    """The numbers of ``search.preview`` as a small before/after table."""
    removed = 100 * (1 - p["params_after"] / p["params_before"])
    return (
        f"| | before | after |\n|---|---:|---:|\n"
        f"| layers | {p['layers_before']} | **{p['layers_after']}** |\n"
        f"| parameters | {fmt_params(p['params_before'])} | **{fmt_params(p['params_after'])}** |\n\n"
        f"**{removed:.1f} %** of the parameters removed.  \n"
        f"Estimate on the calibration prompts: final-state cosine **{p['cosine']:.4f}**, "
        f"KL **{p['kl']:.4f}** nats/token <small>({p['seconds']:.2f} s)</small>"
        + (
            f"  \n<small>Estimated as a plain {p['estimated_as']}: the fit is made when you "
            "build, and usually does better.</small>"
            if p.get("estimated_as")
            else ""
        )
    )


def prompt_list(prompts_text: str, limit: int | None = None) -> list[str]:
    prompts = [s.strip() for s in (prompts_text or "").splitlines() if s.strip()][:limit]
    if not prompts:
        raise LacoError("Add at least one calibration prompt (Similarity tab).")
    return prompts


def read_plan(plan_text: str, num_layers: int | None) -> tuple[list[Range], str]:
    """The typed plan as valid ranges and no error, or ``[]`` and the error (one line)."""
    if not (plan_text or "").strip():
        return [], ""
    try:
        return validate_ranges(parse_ranges(plan_text), num_layers or None), ""
    except LacoError as e:
        return [], str(e)


def msg_md(text: str, error: bool = False) -> str:
    if not text:
        return ""
    return f"<span class='laco-msg-error'>⚠ {text}</span>" if error else text


def _prompts8(prompts_text: str) -> list[str]:
    return [s.strip() for s in (prompts_text or "").splitlines() if s.strip()][:8]


def _estimates(session: Session, store: dict, method: str, prompts_text: str, ranges) -> dict:
    """Each range's own estimate, from the session's store (missing ones are left out)."""
    prompts = _prompts8(prompts_text)
    return {
        r: store[k]
        for r in ranges
        if (k := plan_map.range_key(session.spec, method, prompts, r)) in store
    }


def _plan_key(session: Session, method: str, prompts_text: str, ranges, attention=()) -> str:
    plan = format_plan(ranges) + "|A" + ",".join(map(str, sorted(attention)))
    return plan_map.range_key(session.spec, method, _prompts8(prompts_text), ("plan", plan))


def _figure(analysis: dict, kind: str, ranges, estimates, attention=()):
    if not analysis or "param" not in analysis:
        return gr.skip()
    return plan_map.plan_figure(analysis, kind, ranges, estimates, list(attention))


def read_full(plan_text: str, attn_text: str, num_layers: int | None):
    """The plan's ranges and attention removals, and the first error (one line)."""
    ranges, error = read_plan(plan_text, num_layers)
    if error:
        return ranges, [], error
    attention, error = plan_map.read_attention(attn_text, num_layers or 0, ranges)
    return ranges, attention, error


def _attn_key(session: Session, i: int) -> str:
    return f"{session.spec}|attention-params|{i}"


def _preview(
    session: Session,
    store: dict,
    method: str,
    prompts_text: str,
    ranges,
    error: str,
    attention=(),
):
    """The preview box and strip diagram of the CURRENT plan: numbers from the store once
    estimated; the strip and layer counts at once. Attention removals count in the
    parameters and in the damage estimate."""
    n = session.num_layers
    if error:
        blank = "<div class='laco-preview-empty'>No preview: the plan above has an error.</div>"
        return blank, plots.empty_strip("no valid plan")
    if not n:
        return NO_PREVIEW, gr.skip()
    strip = plots.strip_diagram(layer_groups(ranges, n), n, list(attention))
    if not ranges and not attention:
        return NO_PREVIEW, strip
    est = store.get(_plan_key(session, method, prompts_text, ranges, attention))
    if est is None or est["params_before"] is None:
        after = n - sum(hi - lo for lo, hi in ranges)
        return (
            f"| | before | after |\n|---|---:|---:|\n| layers | {n} | **{after}** |\n\n"
            "<small>Estimating parameters and damage…</small>"
        ), strip
    md = preview_md(est) if "kl" in est else _sizes_md(est)
    if attention:
        k = len(attention)
        kept = n - sum(hi - lo for lo, hi in ranges) - k
        md += (
            f"  \n<small>{k} attention sub-block{'s' if k > 1 else ''} removed: the KV cache "
            f"keeps {kept} of {n} layers.</small>"
        )
    return md, strip


def _sizes_md(p: dict) -> str:
    removed = 100 * (1 - p["params_after"] / p["params_before"])
    return (
        f"| | before | after |\n|---|---:|---:|\n"
        f"| layers | {p['layers_before']} | **{p['layers_after']}** |\n"
        f"| parameters | {fmt_params(p['params_before'])} | **{fmt_params(p['params_after'])}** |\n\n"
        f"**{removed:.1f} %** of the parameters removed."
    )


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
):
    """Everything the page shows of the CURRENT plan, instantly: the map with its squares,
    the chips, the message line (the plan's error; a valid plan clears an error and keeps any
    other note), the preview and the strip diagram. Estimates come from the store, so a slow
    estimate of an older plan can never be shown for a newer one."""
    ranges, attention, error = read_full(plan_text, attn_text, session.num_layers)
    est = _estimates(session, store or {}, method, prompts_text, ranges)
    if error:
        note = msg_md(error, True)
    else:
        note = "" if "laco-msg-error" in (shown or "") else gr.skip()
    md, strip = _preview(session, store or {}, method, prompts_text, ranges, error, attention)
    return (
        _figure(analysis, kind, ranges, est, attention),
        plan_map.chips_html(ranges, est, attention),
        note,
        md,
        strip,
    )


def _drawn(session, analysis, kind, text, method, prompts_text, store, note, attn_text=""):
    fig, chips, _, md, strip = draw(
        session, analysis, kind, text, method, prompts_text, store, attn_text
    )
    return text, fig, chips, msg_md(note), md, strip


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
):
    """A click or drag on the map: add (or join) a range, or remove the one clicked inside."""
    ranges, error = read_plan(plan_text, session.num_layers)
    if error:
        note = msg_md(f"Fix the typed plan first: {error}", True)
        return gr.skip(), gr.skip(), gr.skip(), note, gr.skip(), gr.skip()
    index = list(evt.index) if len(evt.index) == 4 else [*evt.index, *evt.index]
    ranges, note = plan_map.gesture(ranges, index, session.num_layers or 2)
    text = format_plan(ranges)
    return _drawn(session, analysis, kind, text, method, prompts_text, store, note, attn_text)


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
    out = _drawn(session, analysis, kind, text, method, prompts_text, store, note, attn_text)
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


@gpu
def estimate(
    engine: Engine,
    session: Session,
    plan_text: str,
    method: str,
    prompts_text: str,
    store: dict,
    attn_text: str = "",
) -> dict:
    """The slow part of a plan change: the what-if estimate of the whole plan and of each
    range alone (for hover labels and chips), from cached activations, into the store; and
    what each attention removal saves."""
    base = base_of(engine, session)
    ranges, attention, error = read_full(plan_text, attn_text, base.num_layers)
    if error or (not ranges and not attention):
        return store
    store = dict(store or {})
    if attention:
        store[f"{session.spec}|params"] = base.num_params
    for i in attention:
        store.setdefault(_attn_key(session, i), attention_params(base.model, i))
    prompts = prompt_list(prompts_text, 8)
    whole = _plan_key(session, method, prompts_text, ranges, attention)
    if whole not in store:
        store[whole] = engine.preview(base, prompts, ranges, method, attention=attention)
    for r in ranges:
        key = plan_map.range_key(session.spec, method, prompts, r)
        if key not in store:
            single = len(ranges) == 1 and not attention
            one = store[whole] if single else engine.preview(base, prompts, [r], method)
            store[key] = {
                k: one[k]
                for k in (
                    "kl",
                    "cosine",
                    "layers_before",
                    "layers_after",
                    "params_before",
                    "params_after",
                )
            }
    if len(store) > plan_map.PREVIEWS_KEPT:
        store = dict(list(store.items())[-plan_map.PREVIEWS_KEPT :])
    return store


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
):
    """Estimate, then show (one call, for scripts): preview, strip, store, map, chips."""
    store = estimate(engine, session, plan_text, method, prompts_text, store, attn_text)
    fig, chips, _, md, strip = draw(
        session, analysis, kind, plan_text, method, prompts_text, store, attn_text
    )
    return md, strip, store, fig, chips


@gpu
def build_collapse(
    engine: Engine,
    session: Session,
    plan_text: str,
    method: str,
    prompts_text: str,
    attn_text: str = "",
    *param_values,
    inline_errors: bool = True,
):
    """Build the collapsed model (untouched layers shared) and measure quick metrics, with a
    live bar; Stop sets the engine's stop Event. ``attn_text`` names layers whose attention
    sub-block goes too (their MLPs stay; the export then needs ``load_pruned``). An error of
    the job shows in the bar (``inline_errors``) or is raised (scripts).

    ``param_values`` are the method-parameter controls' values, in ``METHOD_PARAMS`` order.
    """
    base = base_of(engine, session)
    ranges, attention, error = read_full(plan_text, attn_text, base.num_layers)
    if error:
        raise LacoError(error)
    if not attention:
        ranges = validate_ranges(ranges, base.num_layers)  # an empty plan says so
    params = REGISTRY.method(method).check(
        params_ui.values(METHOD_PARAMS, PARAM_NAMES, method, param_values) if param_values else {}
    )
    prompts = [s.strip() for s in (prompts_text or "").splitlines() if s.strip()]
    steps = [AttentionStep(attention)] if attention else []
    if ranges:
        steps.append(CollapseStep([list(r) for r in ranges], method, params))
    owner = session.token()

    def work(job: jobs.Job):
        job.progress(0.05, "Merging layers…")
        did = engine.run(
            base,
            steps,
            owner,
            progress=lambda f, d: job.progress(0.05 + 0.8 * f, d),
            stop=job.stop,
        )
        job.progress(0.9, "Quick metrics on the calibration prompts…")
        model, b = engine.model(did, owner)
        m = quick_metrics(model, b.model, b.tokenizer, prompts) if prompts else None
        job.progress(0.95, "Validation perplexity on the training texts' validation slice…")
        valid = validation(model, b.model, b.tokenizer)
        out = calibration_metrics(m) if m else {}
        return did, {**out, "valid_ratio": valid["ppl_ratio"], "valid_text": valid["text"]}

    job = jobs.start(owner, "build", work)
    try:
        yield session, jobs.bar_html(job), "", None
        for _ in job.ticks():
            yield gr.skip(), jobs.bar_html(job), gr.skip(), gr.skip()
    finally:
        job.close()
    try:
        did, metrics = job.outcome()
    except LacoError as e:
        if not inline_errors:
            raise
        log.info("user error in build_collapse: %s", e)
        text = public_message(str(e))
        yield session, jobs.bar_html(job, "failed", text), msg_md(text, True), None
        return
    entry = remember(engine, session, did, metrics)
    yield (
        session,
        jobs.bar_html(job, "done", "Built."),
        result_md(did, entry.info, metrics),
        {"id": did, "recipe": entry.recipe, "metrics": metrics},
    )


@gpu
def api_collapse(
    engine: Engine, session: Session, plan_text: str, method: str, prompts_text: str, *params
):
    """``/collapse`` for scripts: ``(result, build JSON)``, errors raised."""
    updates = build_collapse(
        engine, session, plan_text, method, prompts_text, "", *params, inline_errors=False
    )
    yield from api.relay(updates, lambda u: (u[0], u[2], u[3]))


def result_md(did: str, info: dict, metrics: dict) -> str:
    removed = 100 * (1 - info["params_after"] / info["params_before"])
    md = (
        f"### ✓ Built `{did}` — {info['layers_before']} → {info['layers_after']} layers, "
        f"{removed:.1f} % parameters removed\n"
    )
    if "cal_kl" in metrics:
        md += (
            f"On the calibration prompts: KL(original‖collapsed) **{metrics['cal_kl']:.4f}** "
            f"nats/token · top-1 agreement **{metrics['cal_top1']:.1f} %**"
            + (
                f" · final-state cosine **{metrics['cal_cos']:.4f}**"
                if "cal_cos" in metrics
                else ""
            )
            + "  \n"
        )
    if "valid_ratio" in metrics:
        md += (
            f"Validation perplexity (`{metrics['valid_text']}`): **{metrics['valid_ratio']:.2f}×** "
            "the original's.  \n"
        )
        if (loud := cliff_line(metrics["valid_ratio"])) is not None:
            md = f"<div class='laco-msg-error'>⚠ {loud}</div>\n\n" + md
    kv = info.get("kv_cache_layers")
    if info.get("attention_removed") and kv:
        md += (
            f"Attention removed in layers {', '.join(map(str, info['attention_removed']))}: the "
            f"KV cache keeps {kv[1]} of {kv[0]} layers ({100 * (1 - kv[1] / kv[0]):.0f} % smaller "
            "per token); the export loads with `laco_core.load_pruned`.  \n"
        )
    return md + "It is now selected in **Compare**, **Evaluate** and **Export**."


def build(engine: Engine, session: gr.State, model: dict, sim: dict) -> dict:
    """Build the Collapse tab. Returns handles; ``built`` lists events that add a model."""
    prompts = sim["prompts"]
    gr.Markdown(
        "Make the model smaller. The quickest way is the **best collapse** below; or plan your "
        "own collapse on the similarity map and build it; the **expert search** at the bottom "
        "runs LaCo's Algorithm 1 and other strategies."
    )
    best = auto_panel.build_best(engine, session, prompts)

    gr.Markdown("### Plan by hand")
    store = gr.State({})
    with gr.Row(elem_classes=["laco-row"]):
        with gr.Column(scale=3, min_width=300):
            kind = gr.Radio(
                plan_map.MAPS, value=plan_map.MAPS[0], label="Similarity map", elem_id="plan-kind"
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
            share = gr.Markdown(session_panel.share_md("", "official"), elem_id="plan-share")
            with gr.Accordion("Or pick a range with a slider", open=False):
                slider = RangeSlider(
                    value=[24, 27], maximum=29, label="Layer range", elem_id="range-slider"
                )
                with gr.Row():
                    add_btn = gr.Button("+ Add range", size="sm")
                    clear_btn = gr.Button("Clear plan", size="sm")
            method = gr.Radio(list(REGISTRY.methods), value="official", label="Merge method")
            method_info = gr.Markdown(method_md("official"))
            with gr.Row():
                param_controls = params_ui.controls(METHOD_PARAMS, "official")
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

    # ---- listeners ----------------------------------------------------------------------
    analysis = sim["analysis"]
    view = [session, analysis, kind, plan, method, prompts, store, attn]
    shown = [fig, chips, msg, preview_box, strip]
    instant = dict(api_visibility="private", queue=False, show_progress="hidden")

    def then_estimate(ev):
        """After an instant redraw: estimate (slow), then redraw from the store."""
        return ev.then(
            partial(estimate, engine),
            [session, plan, method, prompts, store, attn],
            store,
            trigger_mode="always_last",
            concurrency_id=SHORT_GROUP,
            api_visibility="private",
            show_progress="hidden",
        ).then(draw, [*view, msg], shown, **instant)

    # Clicks draw at once (one round trip); every change of the plan, whatever made it (a
    # click, a chip's ×, typing, the slider, Clear, the Similarity tab, a link), then
    # redraws and estimates through ``plan.change``.
    bridge.select(click_map, view, [plan, *shown], **instant)
    chips.select(remove_chip, view, [plan, attn, *shown], **instant)
    for box in (plan, attn):
        then_estimate(box.change(draw, [*view, msg], shown, trigger_mode="always_last", **instant))
    sim["bridge"].select(sim_click, [session, plan], [plan, sim["hint"]], **instant)
    gr.on(
        [plan.change, method.change, attn.change],
        session_panel.share_md,
        [plan, method, attn],
        share,
        **instant,
    )
    add_btn.click(add_range, [slider, plan], plan, **instant)
    clear_btn.click(lambda: "", None, plan, **instant)
    kind.change(draw, [*view, msg], shown, **instant)
    method.change(method_md, method, method_info, **instant)
    controls = [param_controls[n] for n in PARAM_NAMES]
    method.change(
        partial(params_ui.visibility, METHOD_PARAMS, PARAM_NAMES), method, controls, **instant
    )
    then_estimate(method.change(draw, [*view, msg], shown, **instant))
    model["loaded"].then(reset_slider, session, slider, api_visibility="private")
    for ev in sim["analyzed"]:
        then_estimate(ev.then(draw, [*view, msg], shown, **instant))

    built = build_btn.click(
        partial(build_collapse, engine),
        [session, plan, method, prompts, attn, *controls],
        [session, bar, result, result_json],
        api_visibility="private",
        concurrency_id=LONG_GROUP,
        show_progress="hidden",
    )
    scripted = api.endpoint(
        partial(api_collapse, engine),
        [session, plan, method, prompts, *controls],
        [session, api.hidden(gr.Markdown), api.hidden(gr.JSON)],
        "collapse",
        concurrency_id=LONG_GROUP,
    )
    jobs.wire_stop(stop_btn, "build", session, bar, [built])
    return {
        "plan": plan,
        "attn": attn,
        "method": method,
        "slider": slider,
        "built": [best["built"], built, auto["built"], scripted, auto["scripted"]],
    }
