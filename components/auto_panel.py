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

from laco_core.errors import LacoError
from laco_core.recipe import TextSource
from laco_core.registry import REGISTRY
from laco_core.runtime.engine import Engine
from laco_core.search.config import SearchConfig, target_layers_of
from laco_core.steps.search import SearchStep

from . import api, jobs, params_ui
from .best_panel import build_best, run_best
from .common import LONG_GROUP, base_of, gpu, user_errors
from .search_job import follow, prompts_of, search_columns
from .settings import COMMON, SearchControls, declared, settings_of
from .state import Session
from .threshold_check import check_threshold

log = logging.getLogger("laco.app")
UNITS = ["layers", "blocks"]  # blocks: attention sub-blocks too (to a share of params)


@gpu
def run_auto(
    engine: Engine,
    session: Session,
    prompts_text: str,
    method: str,
    objective: str,
    strategy: str,
    units: str,
    target_layers: int,
    target_percent: float,
    common: dict | None = None,
    strategy_params: dict | None = None,
    method_params: dict | None = None,
    objective_params: dict | None = None,
    inline_errors: bool = True,
    out: dict | None = None,
):
    """An expert collapse search (LaCo Algorithm 1, greedy, evolutionary…) with a live log.

    The target is a number of layers or a share of the parameters (at most one);
    ``common`` holds ``SEARCH_PARAMS`` / ``RUN_PARAMS`` values (unset: their defaults), the
    other dicts the chosen strategy's, method's and objective's own settings.
    """
    base = base_of(engine, session)
    prompts = prompts_of(prompts_text)
    if not REGISTRY.strategy(strategy).supports(REGISTRY.method(method)):
        able = [n for n, m in REGISTRY.methods.items() if REGISTRY.strategy(strategy).supports(m)]
        raise LacoError(
            f"The {strategy} strategy cannot search with {method}: pick {', '.join(able)}."
        )
    cfg = SearchConfig(
        **(common or {}),
        method=method,
        objective=objective,
        strategy=strategy,
        target_layers=int(target_layers or 0) or None,
        target_ratio=float(target_percent or 0) / 100 or None,
        method_params=dict(method_params or {}),
        strategy_params=dict(strategy_params or {}),
        objective_params=dict(objective_params or {}),
        units=units or "layers",
    ).validate(base.num_layers)
    REGISTRY.search_components(cfg)  # a bad setting is refused before any work
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
    own = {d.name for d in REGISTRY.strategy(strategy).params}
    updates = run_auto(
        engine,
        session,
        prompts_text,
        method,
        objective,
        strategy,
        "layers",
        target_layers,
        0,
        {
            "merge_count": int(merge_count),
            "low": int(low),
            "threshold": float(threshold),
            **({"high": int(high)} if int(high or 0) else {}),
        },
        {"interval": int(interval)} if "interval" in own else {},
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
    """Show only the settings the strategy reads (``Strategy.reads``, with or without a
    target) and declares, the units it can remove, and the merge methods it can search with.

    Returns updates for: the common controls (``COMMON`` order), the strategies' controls
    (``REGISTRY.strategy_params()`` order), the units and the method dropdown.
    """
    strat = REGISTRY.strategy(strategy)
    reads = strat.reads(int(target or 0) > 0 or float(percent or 0) > 0)
    own = {d.name for d in strat.params}
    methods = [m for m, obj in REGISTRY.methods.items() if strat.supports(obj)]
    return [
        *(gr.update(visible=d.name in reads) for d in COMMON),
        *(gr.update(visible=n in own) for n in _strategy_names()),
        gr.update(visible=len(strat.units) > 1, choices=list(strat.units)),
        gr.update(choices=methods, value=method if method in methods else methods[0]),
    ]


def _strategy_names() -> list[str]:
    """Each strategy setting's name once, in the order the controls are made."""
    return list(dict.fromkeys(d.name for ds in REGISTRY.strategy_params().values() for d in ds))


# ---- builders --------------------------------------------------------------------------------


def build_auto(engine: Engine, session: gr.State, prompts: gr.Textbox) -> dict:
    """The expert search panel (an accordion); its settings are generated from what the
    strategies, the search and the merge methods declare."""
    with gr.Accordion("Expert search: LaCo Algorithm 1, greedy…", open=False) as acc:
        gr.Markdown(
            "  \n".join(f"**{n}**: {x.summary}" for n, x in REGISTRY.strategies.items())
            + "  \nSettings a strategy does not read are hidden."
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
        units = gr.Radio(UNITS, value="layers", label="Units", visible=False)
        warning = gr.Markdown("", elem_id="t-warning")
        controls = SearchControls.make(
            {"strategy": "paper", "objective": "cosine", "method": "official"}
        )
        common, own = controls.common, controls.strategy
        with gr.Row(elem_classes=["laco-row"]):
            run_btn = gr.Button("Run search", variant="primary", elem_id="auto-run", scale=3)
            stop_btn = gr.Button("■ Stop", variant="stop", elem_id="auto-stop", scale=1)
        bar = gr.HTML(jobs.bar_html(), elem_id="auto-bar")
        log_box = gr.HTML(jobs.log_html([], search_columns("cosine"), ""), elem_id="auto-log")
        result = gr.Markdown("", elem_id="auto-result")
        strip = gr.Plot(show_label=False, visible=False, elem_id="auto-strip")
    seen = gr.State({})
    keys = controls.keys()
    gr.on(
        [strategy.change, target.change, percent.change],
        visibility,
        [strategy, target, percent, method],
        [*common.values(), *own.values(), units, method],
        api_visibility="private",
        queue=False,
    )
    for group, picker in (("method", method), ("objective", objective)):
        shown = getattr(controls, group)
        picker.change(
            partial(params_ui.visibility, declared(group), list(shown)),
            [picker],
            list(shown.values()),
            api_visibility="private",
            queue=False,
        )
    gr.on(
        [acc.expand, strategy.change, objective.change, method.change]
        + [c.change for c in [*common.values(), *own.values()]],
        partial(_check, engine, keys),
        [session, prompts, method, objective, strategy, seen, *controls.inputs()],
        [warning, seen],
        trigger_mode="always_last",
        concurrency_id="threshold-check",
        concurrency_limit=1,
        api_visibility="private",
        show_progress="minimal",
    )
    ev = jobs.wire_long(
        run_btn,
        partial(_run, engine, keys),
        [session, prompts, method, objective, strategy, units, target, percent, *controls.inputs()],
        [session, bar, log_box, result, strip],
        stop_btn,
        "auto",
        session,
        bar,
    )
    c = common
    scripted = api.endpoint(
        partial(api_auto, engine),
        [session, prompts, c["merge_count"], c["low"], c["high"], own["interval"]]
        + [c["threshold"], method, objective, strategy, target],
        [session, api.hidden(gr.Markdown), api.hidden(gr.Dataframe), api.hidden(gr.Plot)],
        "auto_collapse",
        concurrency_id=LONG_GROUP,
    )
    return {"built": ev, "warning": warning, "scripted": scripted}


def _run(engine, keys, session, prompts, method, objective, strategy, units, target, percent, *raw):
    """The Run button: the generated controls' values into ``run_auto``."""
    got = settings_of(keys, raw, {"strategy": strategy, "objective": objective, "method": method})
    yield from run_auto(
        engine,
        session,
        prompts,
        method,
        objective,
        strategy,
        units,
        target,
        percent,
        got.common,
        got.strategy,
        got.method,
        got.objective,
    )


def _check(engine, keys, session, prompts, method, objective, strategy, seen, *raw):
    yield from check_threshold(
        engine, session, prompts, method, objective, strategy, seen, keys, *raw
    )


__all__ = ["build_auto", "build_best", "check_threshold", "run_auto", "run_best"]
