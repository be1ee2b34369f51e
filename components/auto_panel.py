"""The Collapse tab's automatic panels: "Best collapse to X %" (the project's best pipeline,
``laco_core.presets.best_collapse``) and the expert search (LaCo Algorithm 1, greedy…).

Both run through ``engine.run`` on a worker thread (``jobs``) with a live bar, a log of every
scored candidate (accepted rows highlighted, the score column named by its objective) and a
Stop button that sets the engine's stop Event. The expert panel shows only the settings the
chosen strategy reads (``Strategy.uses``) and measures whether its threshold is destructive
on the loaded model.
"""

from __future__ import annotations

import logging
from functools import partial

import gradio as gr
import pandas as pd

from laco_core.engine import Engine
from laco_core.errors import LacoError
from laco_core.evaluate import quick_metrics
from laco_core.ops import run_search
from laco_core.plan import format_plan, layer_groups
from laco_core.presets import best_collapse
from laco_core.recipe import TextSource
from laco_core.registry import REGISTRY
from laco_core.search.config import SearchConfig, target_layers_of
from laco_core.steps.search import SearchStep
from laco_core.subblocks import ATTENTION

from . import api, jobs, plots
from .common import LONG_GROUP, base_of, gpu, public_message, remember, user_errors
from .state import Session, calibration_metrics

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


def _what(e: dict) -> str:
    """One log row's subject, in original layer numbering."""
    if "generation" in e:
        removed = ", ".join(map(str, e.get("removed", [])))
        return f"generation {e['generation']}: remove {removed}"
    lo, hi = (e.get("orig") or [e.get("lo"), e.get("hi")])[:2]
    if e.get("unit") == ATTENTION:
        return f"attention of layer {lo}"
    return f"layers {lo}–{hi}"


def search_columns(objective: str) -> list[jobs.Column]:
    """Log columns of a search; the score is named by its objective (``Objective.label``)."""
    label = REGISTRY.objective(objective).label
    return [
        ("n", "#", None),
        ("what", "candidate (original numbering)", None),
        ("layers", "model layers", None),
        ("score", label, lambda v: f"{v:.4f}"),
        ("threshold", "T", lambda v: f"{v:.2f}"),
        ("accepted", "accepted", lambda v: "✓" if v else ""),
    ]


def _numbered(events: list[dict]) -> list[dict]:
    return [{**e, "n": i + 1, "what": _what(e)} for i, e in enumerate(events)]


def search_fraction(
    events: list[dict], need: int | None, start: int, low: int, generations: int = 0
) -> float | None:
    """Share of a search done, from its log: layers removed of the target (then, for an
    evolutionary search, generations done), else how far the top-down scan has come (None
    when neither is known)."""
    share = 0.9 if not generations else 0.45
    gens = [e["generation"] for e in events if "generation" in e]
    if generations and gens:
        return 0.5 + 0.45 * min(1.0, max(gens) / generations)
    if need:
        removed = sum(
            e["hi"] - e["lo"] for e in events if e.get("accepted") and "lo" in e and "hi" in e
        )
        return 0.05 + share * min(1.0, removed / need)
    if events and start > low:
        lo = (events[-1].get("orig") or [start])[0]
        return 0.05 + share * min(1.0, max(0.0, (start - lo) / (start - low)))
    return None


def _finish_search(engine: Engine, session: Session, did: str, prompts: list[str]):
    """Record a search's build in the session, with its figures on the calibration prompts."""
    model, base = engine.model(did, session.token())
    metrics = calibration_metrics(quick_metrics(model, base.model, base.tokenizer, prompts))
    entry = remember(engine, session, did, metrics)
    plan = [tuple(r) for r in entry.info.get("plan", [])]
    return entry, plan, base


def _done_md(did: str, entry, plan, seconds: float, what: str) -> str:
    info, m = entry.info, entry.metrics
    removed = 100 * (1 - info["params_after"] / info["params_before"])
    return (
        f"### ✓ {what} in {jobs.duration(seconds)} — `{did}`\n"
        f"{info['layers_before']} → {info['layers_after']} layers, **{removed:.1f} %** of the "
        f"parameters removed; plan {format_plan(plan) or 'nothing accepted'}.  \n"
        f"On the calibration prompts: KL **{m.get('cal_kl', float('nan')):.3f}** nats/token, "
        f"top-1 agreement **{m.get('cal_top1', float('nan')):.1f} %**. It is now selected in "
        "Compare, Evaluate and Export."
    )


def _prompts(text: str) -> list[str]:
    prompts = [s.strip() for s in (text or "").splitlines() if s.strip()]
    if not prompts:
        raise LacoError("Add at least one calibration prompt (Similarity tab).")
    return prompts


def _follow(
    engine,
    session,
    base,
    step,
    panel,
    prompts,
    columns,
    need,
    start,
    low,
    what,
    inline=True,
    out=None,
):
    """Shared body of both panels: run ``step`` as a job, stream bar + log, finish the build.

    With ``inline`` False, an error of the job is raised instead of shown; ``out`` (a dict)
    receives the raw events and the plan diagram, for scripts."""
    owner = session.token()
    generations = int(getattr(step.config, "generations", 0) or 0)

    def work(job: jobs.Job):
        def on_event(e: dict) -> None:
            if "curve" in e:  # the size–quality curve so far (a walking search)
                return
            if e.get("pending"):  # a greedy step under way: its ranges are logged at its end
                job.progress(
                    None, f"Step {e['step']}: {e['scored']} of {e['of']} candidates scored"
                )
                return
            job.event(e)
            f = search_fraction(job.events, need, start, low, generations)
            done = need and f is not None and f >= 0.95
            refit = getattr(step.config, "refit", None)
            job.progress(
                f,
                f"Refitting the kept layers ({refit})…"
                if done and refit
                else f"{len(job.events)} candidates scored",
            )

        did = engine.run(base, [step], owner, events=on_event, progress=job.progress, stop=job.stop)
        job.progress(0.97, "Measuring the result on the calibration prompts…")
        return did

    job = jobs.start(owner, panel, work)
    empty = jobs.log_html([], columns, "Candidates appear here as they are scored.")
    try:
        yield session, jobs.bar_html(job), empty, "", None  # stale results cleared at once
        for _ in job.ticks():
            rows = jobs.log_html(_numbered(job.events), columns)
            yield gr.skip(), jobs.bar_html(job), rows, gr.skip(), gr.skip()
    finally:
        job.close()
    rows = jobs.log_html(_numbered(job.events), columns, "No candidate was scored.")
    try:
        did = job.outcome()
        entry, plan, base = _finish_search(engine, session, did, prompts)
    except LacoError as e:
        if not inline:
            raise
        log.info("user error in %s: %s", panel, e)
        text = public_message(str(e))
        yield session, jobs.bar_html(job, "failed", text), rows, f"⚠ {text}", None
        return
    figure = plots.strip_diagram(layer_groups(plan, base.num_layers), base.num_layers)
    if out is not None:
        out.update(events=list(job.events), figure=figure)
    yield (
        session,
        jobs.bar_html(job, "done", "Done."),
        rows,
        _done_md(did, entry, plan, job.elapsed, what),
        gr.Plot(figure, visible=True),
    )


@gpu
def run_best(engine: Engine, session: Session, percent: float, prompts_text: str):
    """ "Best collapse to X %": ``presets.best_collapse`` through ``engine.run``, live."""
    base = base_of(engine, session)
    ratio = float(percent) / 100
    if not 0 < ratio < 1:
        raise LacoError("Choose a share of parameters to remove between 1 and 99 %.")
    steps = best_collapse(target_ratio=ratio)
    cfg = steps[0].config
    need = target_layers_of(base.model, cfg)
    columns = search_columns(cfg.objective)
    yield from _follow(
        engine,
        session,
        base,
        steps[0],
        "best",
        _prompts(prompts_text),
        columns,
        need,
        base.num_layers,
        0,
        f"Best collapse to {percent:g} %",
    )


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
    prompts = _prompts(prompts_text)
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
    yield from _follow(
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
    prompts = _prompts(prompts_text)[:8]
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


def build_best(engine: Engine, session: gr.State, prompts: gr.Textbox) -> dict:
    """The "Best collapse to X %" panel (top of the Collapse tab)."""
    with gr.Row(equal_height=True, elem_classes=["laco-row"]):
        percent = gr.Slider(
            5, 45, 20, step=1, label="Parameters to remove (%)", scale=3, elem_id="best-pct"
        )
        run_btn = gr.Button(
            "★ Best collapse to 20 %", variant="primary", scale=2, elem_id="best-run"
        )
        stop_btn = gr.Button("■ Stop", variant="stop", scale=1, min_width=90, elem_id="best-stop")
    gr.Markdown(
        "<small>The best training-free pipeline measured on this project: a greedy search of "
        "layer drops scored by KL to the original on 16 training paragraphs, then every kept "
        "layer's MLP refitted (`drop_lsq`). Several minutes on a 2-core CPU.</small>"
    )
    bar = gr.HTML(jobs.bar_html(), elem_id="best-bar")
    with gr.Accordion("Best collapse: live log", open=False):
        log_box = gr.HTML(jobs.log_html([], search_columns("kl"), ""), elem_id="best-log")
    result = gr.Markdown("", elem_id="best-result")
    strip = gr.Plot(show_label=False, visible=False, elem_id="best-strip")

    percent.change(
        lambda p: gr.Button(value=f"★ Best collapse to {p:g} %"),
        percent,
        run_btn,
        api_visibility="private",
        queue=False,
    )
    ev = run_btn.click(
        partial(run_best, engine),
        [session, percent, prompts],
        [session, bar, log_box, result, strip],
        api_name="best_collapse",
        concurrency_id=LONG_GROUP,
        show_progress="hidden",
    )
    jobs.wire_stop(stop_btn, "best", session, bar, [ev])
    return {"built": ev}


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
