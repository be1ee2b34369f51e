"""The "★ Best collapse" panel: the project's best pipeline (``presets.best_collapse``) to a
size or within a quality budget, with its size–quality curve drawn live beside the log.

A size is a number of layers, a share of the transformer layers' parameters (embedding and
head excluded: the same depth on every model, the default) or a share of all parameters (the
papers' convention: on an embedding-heavy model it means many more layers). A budget keeps the
smallest model whose validation perplexity after the refit stays within Q× the dense model's.
The result gives the size three ways and calls out a model past ``CLIFF``× on one loud line.
"""

from __future__ import annotations

import math
from functools import partial

import gradio as gr

from laco_core.arch.plan import format_plan
from laco_core.errors import LacoError
from laco_core.presets import best_collapse
from laco_core.runtime.engine import Engine
from laco_core.search.config import size_report, target_layers_of
from laco_core.search.curve import CLIFF, QualityCurve, cliff_line

from . import api, curve_plot, jobs
from .common import LONG_GROUP, base_of, gpu, public_message
from .heal_progress import heal_md
from .search_job import follow, prompts_of, search_columns, step_curve
from .state import Session

SIZE, BUDGET = "to a size", "within a quality budget"
MODES = [SIZE, BUDGET]
# unit label -> (``best_collapse`` argument, scale of the value typed: % are fractions there)
UNITS = {
    "% of layer parameters": ("target_block_ratio", 0.01),
    "layers": ("target_layers", 1),
    "% of all parameters": ("target_ratio", 0.01),
}
DEFAULT_UNIT, DEFAULT_VALUE, DEFAULT_BUDGET = "% of layer parameters", 20.0, 1.5
MAX_HEAL_MINUTES = 60  # "then heal": a time budget, sampling included (0: no heal)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def target_of(mode: str, unit: str, value, budget) -> dict:
    """The panel's controls as ``best_collapse``'s one target (numbers unchecked: the engine
    checks them and says what to fix)."""
    if mode == BUDGET:
        return {"max_ppl_ratio": _number(budget)}
    if unit not in UNITS:
        raise LacoError(f"Choose a unit of size: {', '.join(UNITS)}.")
    key, scale = UNITS[unit]
    v = _number(value)
    if scale == 1 and math.isfinite(v):
        if v != int(v):
            raise LacoError(f"Layers to remove is a whole number, not {v:g}.")
        v = int(v)
    return {key: v * scale}


def heal_seconds_of(minutes) -> float | None:
    """ "then heal for N minutes" as the heal's budget in seconds (None: no heal)."""
    m = _number(0 if minutes in (None, "") else minutes)
    if not (math.isfinite(m) and 0 <= m <= MAX_HEAL_MINUTES):
        raise LacoError(f"Heal for 0 to {MAX_HEAL_MINUTES} minutes (0: no heal), not {minutes}.")
    return 60 * m if m else None


def label_of(mode: str, unit: str, value, budget, heal_minutes=0) -> str:
    """What the button does, in words."""
    m = _number(heal_minutes or 0)
    then = f", then heal {m:g} min" if math.isfinite(m) and m > 0 else ""
    if mode == BUDGET:
        return f"Best collapse within {_number(budget):g}× perplexity{then}"
    v = _number(value)
    return f"Best collapse: remove {v:g} {'layer' if unit == 'layers' and v == 1 else unit}{then}"


def button_label(mode: str, unit: str, value, budget, heal_minutes=0) -> gr.Button:
    """The run button says what it will do."""
    return gr.Button(value="★ " + label_of(mode, unit, value, budget, heal_minutes))


def _pc(share: float, digits: int = 1) -> str:
    return f"{100 * share:.{digits}f} %"


def best_done(did, entry, plan, seconds, what, model, base) -> str:
    """The result: sizes three ways, the validation figure, one loud line past the cliff."""
    size = size_report(model, base.model)
    d = step_curve(entry)
    curve = QualityCurve.from_dict(d) if d else None
    built = [list(r) for r in plan]
    point = next((p for p in (curve.points if curve else []) if p.plan == built), None)
    loud = cliff_line(point.ratio) if point else None
    head = f"<div class='laco-msg-error'>⚠ {loud}</div>\n\n" if loud else ""
    lines = [
        f"### ✓ {what} in {jobs.duration(seconds)} — `{did}`",
        f"{base.num_layers} → {size['layers']} layers; removed **{_pc(size['layers_removed'])}**"
        f" of the layers, **{_pc(size['block_params_removed'])}** of the layer parameters, "
        f"**{_pc(size['params_removed'])}** of all parameters (embedding and head: "
        f"{_pc(size['embedding_share'], 0)} of what remains); plan {format_plan(plan) or '–'}.",
    ]
    if point is not None:
        after = " after the refit" if point.ppl_ratio_refit is not None else ""
        knee = curve.knee()
        lines.append(
            f"Validation perplexity **{point.ratio:.2f}×** the dense model's{after} on "
            f"`{curve.text}`"
            + (f"; the curve's knee is at {knee} layer{'s' * (knee != 1)}." if knee else ".")
        )
    m = entry.metrics
    lines.append(
        f"On the calibration prompts: KL **{m.get('cal_kl', math.nan):.3f}** nats/token, top-1 "
        f"agreement **{m.get('cal_top1', math.nan):.1f} %**. It is now selected in Compare, "
        "Evaluate and Export."
    )
    healed = heal_md(entry.recipe)
    if healed:
        lines.insert(-1, healed)
    return head + "  \n".join(lines)


@gpu
def run_best(
    engine: Engine,
    session: Session,
    mode: str,
    unit: str,
    value: float,
    budget: float,
    prompts_text: str,
    heal_minutes: float = 0,
    inline: bool = True,
):
    """ "★ Best collapse": ``presets.best_collapse`` through ``engine.run``, live, with the
    size–quality curve, then the default heal for ``heal_minutes`` when above 0. A bad
    target is answered inline with the engine's sentence (with ``inline`` False it is
    raised), and nothing is built."""
    base = base_of(engine, session)
    try:
        target = target_of(mode, unit, value, budget)
        step, *then = best_collapse(**target, heal_seconds=heal_seconds_of(heal_minutes))
        cfg = step.config.validate(base.num_layers)
        need = target_layers_of(base.model, cfg)
        prompts = prompts_of(prompts_text)
    except LacoError as e:
        if not inline:
            raise
        text = public_message(str(e))
        yield session, jobs.bar_html(), gr.skip(), f"⚠ {text}", gr.skip(), gr.skip()
        return
    draw = partial(curve_plot.size_quality, target=need, budget=cfg.max_ppl_ratio, cliff=CLIFF)
    yield from follow(
        engine,
        session,
        base,
        step,
        "best",
        prompts,
        search_columns(cfg.objective),
        need,
        0,  # a budget's walk has no known end: an indeterminate bar
        0,
        label_of(mode, unit, value, budget, heal_minutes),
        inline,
        curve=lambda d, built: draw(d, built=built),
        done=best_done,
        then=then,
    )


@gpu
def api_best(
    engine: Engine,
    session: Session,
    percent: float,
    prompts_text: str,
    unit: str = "",
    value: float = 0,
    max_ppl_ratio: float = 0,
):
    """``/best_collapse`` for scripts: ``(percent of all parameters, prompts)`` as before, or
    a size in ``unit`` (a key of ``UNITS``) with ``value``, or a ``max_ppl_ratio`` budget.
    Streams ``(bar, log, result, plan diagram)``; an error is raised; cancelling stops it."""
    mode = BUDGET if max_ppl_ratio else SIZE
    if not unit:  # the endpoint's first form: a percent of all parameters
        unit, value = "% of all parameters", percent
    updates = run_best(engine, session, mode, unit, value, max_ppl_ratio, prompts_text, 0, False)
    yield from api.relay(updates, lambda u: u[:5])


def show_mode(mode: str) -> list:
    """Show the size controls or the budget's."""
    return [gr.update(visible=mode == SIZE), gr.update(visible=mode == BUDGET)]


def build_best(engine: Engine, session: gr.State, prompts: gr.Textbox) -> dict:
    """The "★ Best collapse" panel (top of the Collapse tab)."""
    with gr.Row(equal_height=True, elem_classes=["laco-row"]):
        mode = gr.Radio(MODES, value=SIZE, label="Best collapse", scale=2, elem_id="best-mode")
        with gr.Column(scale=3) as size_row, gr.Row():
            value = gr.Number(DEFAULT_VALUE, label="Remove", elem_id="best-value")
            unit = gr.Dropdown(list(UNITS), value=DEFAULT_UNIT, label="of", elem_id="best-unit")
        with gr.Column(scale=3, visible=False) as budget_row:
            budget = gr.Number(
                DEFAULT_BUDGET,
                label="Max validation perplexity ÷ dense (after the refit)",
                elem_id="best-budget",
            )
        heal = gr.Number(
            0,
            label="then heal (min, 0: no)",
            minimum=0,
            maximum=MAX_HEAL_MINUTES,
            scale=1,
            min_width=110,
            elem_id="best-heal",
        )
        run_btn = gr.Button(
            "★ " + label_of(SIZE, DEFAULT_UNIT, DEFAULT_VALUE, DEFAULT_BUDGET),
            variant="primary",
            scale=2,
            elem_id="best-run",
        )
        stop_btn = gr.Button("■ Stop", variant="stop", scale=1, min_width=90, elem_id="best-stop")
    gr.Markdown(
        "<small>The best training-free pipeline measured on this project: a greedy search of "
        "layer drops scored by KL to the original on 16 training paragraphs, then every kept "
        "layer's MLP refitted (`drop_lsq`). *% of layer parameters* means the same depth on "
        "every model; *% of all parameters* counts the embedding too (63 % of Gemma 3 270M: "
        "20 % of it is 10 of 18 layers). A budget keeps the smallest model whose validation "
        "perplexity stays within it. Several minutes on a 2-core CPU. *then heal* distils "
        "the result from the original on the training text and the original's own samples "
        "(LoRA, the best validation score kept) within that many minutes, sampling "
        "included.</small>"
    )
    bar = gr.HTML(jobs.bar_html(), elem_id="best-bar")
    with gr.Row(elem_classes=["laco-row"]):
        with gr.Column(scale=3), gr.Accordion("Best collapse: live log", open=True):
            log_box = gr.HTML(jobs.log_html([], search_columns("kl"), ""), elem_id="best-log")
        with gr.Column(scale=2):
            curve = gr.Plot(show_label=False, visible=False, elem_id="best-curve")
    result = gr.Markdown("", elem_id="best-result")
    strip = gr.Plot(show_label=False, visible=False, elem_id="best-strip")

    mode.change(show_mode, mode, [size_row, budget_row], api_visibility="private", queue=False)
    gr.on(
        [mode.change, unit.change, value.change, budget.change, heal.change],
        button_label,
        [mode, unit, value, budget, heal],
        run_btn,
        api_visibility="private",
        queue=False,
    )
    ev = jobs.wire_long(
        run_btn,
        partial(run_best, engine),
        [session, mode, unit, value, budget, prompts, heal],
        [session, bar, log_box, result, strip, curve],
        stop_btn,
        "best",
        session,
        bar,
    )
    scripted = api.endpoint(
        partial(api_best, engine),
        [
            session,
            api.hidden(gr.Number, value=20),
            prompts,
            api.hidden(gr.Textbox, value=""),
            api.hidden(gr.Number, value=0),
            api.hidden(gr.Number, value=0),
        ],
        [session, bar, log_box, result, strip],
        "best_collapse",
        concurrency_id=LONG_GROUP,
    )
    return {"built": ev, "scripted": scripted}


__all__ = ["api_best", "build_best", "run_best", "target_of"]
