"""The Collapse tab's automatic panels: the expert search (LaCo Algorithm 1, greedy…) here,
and "★ Best collapse" (``best_panel``, re-exported for the tab's builder).

The expert search runs through ``engine.run`` on a worker thread (``search_job.follow``) with
a live bar, a log of every scored candidate (accepted rows highlighted, the score column named
by its objective) and a Stop button that sets the engine's stop Event. The panel shows only the
settings the chosen strategy reads (``Strategy.uses``) and measures whether its threshold is
destructive on the loaded model.
"""

from __future__ import annotations

import logging
from functools import partial

import gradio as gr
import pandas as pd

from laco_core.engine import Engine
from laco_core.errors import LacoError
from laco_core.ops import run_search
from laco_core.plan import format_plan
from laco_core.recipe import TextSource
from laco_core.registry import REGISTRY
from laco_core.search.config import SearchConfig, target_layers_of
from laco_core.steps.search import SearchStep

from . import api, jobs
from .best_panel import build_best, run_best
from .common import LONG_GROUP, base_of, gpu, user_errors
from .search_job import follow, prompts_of, search_columns
from .state import Session

log = logging.getLogger("laco.app")
# the expert search's settings, in the order of the panel's controls (``Strategy.uses`` names)
SETTINGS = [
    "merge_count",
    "low",
    "high",
    "interval",
    "threshold",
    "lazy",
    "early_exit",
    "generations",
    "population",
    "seed",
]
UNITS = ["layers", "blocks"]  # blocks: attention sub-blocks too (greedy, to a share of params)
# damage levels of the measured threshold check: KL(dense ‖ collapsed) in nats per token on
# the calibration prompts; e^KL is roughly the perplexity factor it costs
KL_NOTICEABLE, KL_DESTRUCTIVE = 0.25, 1.0


@gpu
def run_auto(
    engine: Engine,
    session: Session,
    prompts_text: str,
    merge_count: int,
    low: int,
    high: int,
    interval: int,
    threshold: float,
    lazy: bool,
    early_exit: bool,
    generations: int,
    population: int,
    seed: int,
    method: str,
    objective: str,
    strategy: str,
    units: str,
    target_layers: int,
    target_percent: float,
    inline_errors: bool = True,
    out: dict | None = None,
):
    """An expert collapse search (LaCo Algorithm 1, greedy, evolutionary…) with a live log.

    The target is a number of layers or a share of the parameters (at most one).
    """
    base = base_of(engine, session)
    prompts = prompts_of(prompts_text)
    if not REGISTRY.strategy(strategy).supports(REGISTRY.method(method)):
        raise LacoError(f"The {strategy} strategy cannot search with {method}: pick drop.")
    cfg = SearchConfig(
        merge_count=int(merge_count),
        low=int(low),
        high=int(high) or None,
        interval=int(interval),
        threshold=float(threshold),
        method=method,
        objective=objective,
        strategy=strategy,
        target_layers=int(target_layers or 0) or None,
        target_ratio=float(target_percent or 0) / 100 or None,
        lazy=bool(lazy),
        early_exit=bool(early_exit),
        generations=int(generations or 0),
        population=int(population or 1),
        seed=int(seed or 0),
        units=units or "layers",
    ).validate(base.num_layers)
    step = SearchStep(cfg, TextSource.of(prompts, "calibration_prompts"))
    need = target_layers_of(base.model, cfg)
    start = (cfg.high or base.num_layers) - cfg.merge_count
    yield from follow(
        engine,
        session,
        base,
        step,
        "auto",
        prompts,
        search_columns(objective),
        need,
        start,
        cfg.low,
        "Search done",
        inline_errors,
        out,
    )


def _log_frame(events: list[dict]) -> pd.DataFrame:
    """The search's events as a table (the scripted endpoint's log), newest last."""

    def cell(v):
        return (
            round(v, 4)
            if isinstance(v, float)
            else v
            if isinstance(v, (int, str, bool))
            else str(v)
        )

    return pd.DataFrame([{k: cell(v) for k, v in e.items()} for e in events])


@gpu
def api_auto(
    engine: Engine,
    session: Session,
    prompts_text: str,
    merge_count: int,
    low: int,
    high: int,
    interval: int,
    threshold: float,
    method: str,
    objective: str,
    strategy: str,
    target_layers: int,
):
    """``/auto_collapse`` for scripts: streams ``(result, log table, plan diagram)``; cancelling
    the call stops the search."""
    out: dict = {}
    updates = run_auto(
        engine,
        session,
        prompts_text,
        merge_count,
        low,
        high,
        interval,
        threshold,
        False,
        True,
        0,
        8,
        0,
        method,
        objective,
        strategy,
        "layers",
        target_layers,
        0,
        inline_errors=False,
        out=out,
    )

    def convert(u):
        if "events" in out:  # the last update: the result, its log and its plan
            return u[0], u[3], _log_frame(out["events"]), out["figure"]
        return u[0], u[3], gr.skip(), gr.skip()

    yield from api.relay(updates, convert)


@user_errors
def visibility(strategy: str, target: int, percent: float, method: str) -> list:
    """Show only the settings the strategy reads (T is unused by greedy with a target; units
    are greedy's), and only the merge methods it can search with."""
    strat = REGISTRY.strategies.get(strategy)
    uses = set(strat.uses) if strat else set()
    if strategy == "greedy" and (int(target or 0) > 0 or float(percent or 0) > 0):
        uses.discard("threshold")
    methods = [m for m, obj in REGISTRY.methods.items() if strat is None or strat.supports(obj)]
    return [
        *(gr.update(visible=name in uses) for name in SETTINGS),
        gr.update(visible=strategy == "greedy"),
        gr.update(choices=methods, value=method if method in methods else methods[0]),
    ]


@gpu
def check_threshold(
    engine: Engine,
    session: Session,
    prompts_text: str,
    merge_count: int,
    low: int,
    high: int,
    interval: int,
    threshold: float,
    method: str,
    objective: str,
    strategy: str,
    seen: dict,
):
    """Measure what the paper strategy accepts at T on the loaded model, and its damage.

    Runs Algorithm 1 at T on the calibration prompts (a plain method stands in for a fitted
    one), then the what-if preview of the plan it accepts: a warning beside T says how many
    layers go and the KL it costs. Remembered per setting for the session.
    """
    if strategy != "paper":
        yield (
            "<small>T stops a greedy search without a target once the best score falls to T.</small>",
            seen,
        )
        return
    base = base_of(engine, session)
    prompts = prompts_of(prompts_text)[:8]
    plain = method if not REGISTRY.method(method).fitted else "drop"
    key = f"{base.spec}|{plain}|{objective}|{merge_count}|{low}|{high}|{interval}|{threshold:.2f}|{len(prompts)}"
    if key not in seen:
        yield (
            f"<small>Measuring what Algorithm 1 accepts at T = {threshold:.2f} on this model…</small>",
            seen,
        )
        cfg = SearchConfig(
            merge_count=int(merge_count),
            low=int(low),
            high=int(high) or None,
            interval=int(interval),
            threshold=float(threshold),
            method=plain,
            objective=objective,
            strategy="paper",
        )
        res = run_search(base.model, base.tokenizer, prompts, cfg)
        plan = [tuple(r) for r in res.plan]
        est = engine.preview(base, prompts, plan, plain) if plan else None
        seen = {
            **seen,
            key: {"plan": plan, "kl": est["kl"] if est else 0.0, "removed": res.layers_removed},
        }
    r = seen[key]
    yield threshold_md(float(threshold), r["plan"], r["removed"], r["kl"]), seen


def threshold_md(threshold: float, plan: list, removed: int, kl: float) -> str:
    """The warning beside T, from a measured plan and its KL."""
    if not plan:
        return (
            f"<small>At T = {threshold:.2f} Algorithm 1 accepts nothing on these prompts.</small>"
        )
    what = f"At T = {threshold:.2f} Algorithm 1 removes **{removed} layers** ({format_plan(plan)})"
    cost = f"estimated KL(original‖collapsed) **{kl:.2f}** nats/token on the calibration prompts"
    if kl >= KL_DESTRUCTIVE:
        return f"<span class='laco-msg-error'>⚠ Destructive on this model.</span> {what}: {cost}. Raise T."
    if kl >= KL_NOTICEABLE:
        return f"⚠ Noticeable damage. {what}: {cost}."
    return f"<span class='laco-msg-ok'>✓</span> {what}: {cost}."


# ---- builders --------------------------------------------------------------------------------


def build_auto(engine: Engine, session: gr.State, prompts: gr.Textbox) -> dict:
    """The expert search panel (an accordion)."""
    with gr.Accordion("Expert search: LaCo Algorithm 1, greedy…", open=False) as acc:
        gr.Markdown(
            "**paper**: LaCo's Algorithm 1 — try merging C layers starting at l (from H−C down "
            "to L); accept when the score against the original on the calibration prompts stays "
            "above T, then jump I layers down. **greedy**: each step removes the range of 2..C "
            "layers that costs least, until the target (with units *blocks*, single attention "
            "sub-blocks too). **evo**: evolution of the set of removed layers, seeded by greedy "
            "(plain drops, needs a target). Settings a strategy does not read are hidden."
        )
        with gr.Row(elem_classes=["laco-row"]):
            strategy = gr.Dropdown(list(REGISTRY.strategies), value="paper", label="Strategy")
            objective = gr.Dropdown(
                list(REGISTRY.objectives),
                value="cosine",
                label="Objective",
                info="The score: higher is more like the original.",
            )
            method = gr.Dropdown(list(REGISTRY.methods), value="official", label="Merge method")
            target = gr.Number(0, label="Layers to remove (0 = no target)", precision=0, minimum=0)
            percent = gr.Number(
                0, label="or parameters to remove, % (0 = no target)", minimum=0, maximum=95
            )
        with gr.Row(elem_classes=["laco-row"]):
            c = gr.Number(4, label="C: layers per merge", precision=0, minimum=2)
            lo = gr.Number(1, label="L: lowest layer", precision=0, minimum=0)
            hi = gr.Number(0, label="H: highest layer (0 = last)", precision=0, minimum=0)
            interval = gr.Number(2, label="I: jump after a merge", precision=0, minimum=1)
        with gr.Row(elem_classes=["laco-row"]):
            with gr.Column(scale=2):
                t = gr.Slider(0.0, 1.0, 0.65, step=0.01, label="T: threshold", elem_id="auto-t")
                warning = gr.Markdown("", elem_id="t-warning")
            with gr.Column(scale=1):
                lazy = gr.Checkbox(False, label="lazy re-scoring", visible=False)
                early = gr.Checkbox(True, label="early exit")
                units = gr.Radio(UNITS, value="layers", label="Units", visible=False)
        with gr.Row(elem_classes=["laco-row"]):
            gens = gr.Number(20, label="Generations", precision=0, minimum=0, visible=False)
            pop = gr.Number(
                8, label="Offspring per generation", precision=0, minimum=1, visible=False
            )
            seed = gr.Number(0, label="Seed", precision=0, visible=False)
        with gr.Row(elem_classes=["laco-row"]):
            run_btn = gr.Button("Run search", variant="primary", elem_id="auto-run", scale=3)
            stop_btn = gr.Button("■ Stop", variant="stop", elem_id="auto-stop", scale=1)
        bar = gr.HTML(jobs.bar_html(), elem_id="auto-bar")
        log_box = gr.HTML(jobs.log_html([], search_columns("cosine"), ""), elem_id="auto-log")
        result = gr.Markdown("", elem_id="auto-result")
        strip = gr.Plot(show_label=False, visible=False, elem_id="auto-strip")
    seen = gr.State({})

    controls = [c, lo, hi, interval, t, lazy, early, gens, pop, seed]
    gr.on(
        [strategy.change, target.change, percent.change],
        visibility,
        [strategy, target, percent, method],
        [*controls, units, method],
        api_visibility="private",
        queue=False,
    )
    gr.on(
        [
            acc.expand,
            t.release,
            strategy.change,
            objective.change,
            method.change,
            c.change,
            lo.change,
            hi.change,
            interval.change,
        ],
        partial(check_threshold, engine),
        [session, prompts, c, lo, hi, interval, t, method, objective, strategy, seen],
        [warning, seen],
        trigger_mode="always_last",
        concurrency_id="threshold-check",
        concurrency_limit=1,
        api_visibility="private",
        show_progress="minimal",
    )
    ev = run_btn.click(
        partial(run_auto, engine),
        [
            session,
            prompts,
            c,
            lo,
            hi,
            interval,
            t,
            lazy,
            early,
            gens,
            pop,
            seed,
            method,
            objective,
            strategy,
            units,
            target,
            percent,
        ],
        [session, bar, log_box, result, strip],
        api_visibility="private",
        concurrency_id=LONG_GROUP,
        show_progress="hidden",
    )
    jobs.wire_stop(stop_btn, "auto", session, bar, [ev])
    scripted = api.endpoint(
        partial(api_auto, engine),
        [session, prompts, c, lo, hi, interval, t, method, objective, strategy, target],
        [session, api.hidden(gr.Markdown), api.hidden(gr.Dataframe), api.hidden(gr.Plot)],
        "auto_collapse",
        concurrency_id=LONG_GROUP,
    )
    return {"built": ev, "warning": warning, "scripted": scripted}


__all__ = ["build_auto", "build_best", "check_threshold", "run_auto", "run_best"]
