"""The Evaluate tab's baselines: LaCo against layer drops and LLM-Pruner at target shares of
parameters, each scored on held-out text (``comparison.compare_all``); the run's table and
chart, and its points on the tab's Pareto plot; ``/baselines`` for scripts."""

from __future__ import annotations

import logging
import math
from functools import partial

import gradio as gr
import pandas as pd

from laco_core.assets import read_prompts, read_text
from laco_core.errors import LacoError
from laco_core.runtime import comparison
from laco_core.runtime.engine import Engine

from . import api, jobs, plots
from .common import LONG_GROUP, base_of, gpu, public_message
from .eval_overview import overview, points
from .handoff import Event
from .state import Session

log = logging.getLogger("laco.app")
BASELINE_COLUMNS = {
    "method": "method",
    "target_ratio": "target %",
    "params_removed": "params removed %",
    "layers": "layers",
    "ppl": "ppl held-out",
    "ratio": "ppl ratio held-out (×)",
    "kl": "KL held-out (nats)",
    "healed": "healed",
    "seconds": "time (s)",
    "note": "note",
}


def baselines_frame(rows: list[dict]) -> pd.DataFrame:
    """The baselines run as a table: shares in %, ratios to its own dense row, rounded."""
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    dense = t.loc[t["method"] == "dense", "ppl"]
    ref = float(dense.iloc[0]) if len(dense) else math.nan
    t["ratio"] = t["ppl"] / ref
    t["target_ratio"] = 100 * t["target_ratio"]
    t["params_removed"] = 100 * t["params_removed"]
    digits = {"target_ratio": 0, "params_removed": 1, "ppl": 2, "ratio": 2, "kl": 3, "seconds": 1}
    for k, d in digits.items():
        t[k] = pd.to_numeric(t[k], errors="coerce").round(d)
    cols = [c for c in BASELINE_COLUMNS if c in t]
    return t[cols].rename(columns=BASELINE_COLUMNS)


@gpu
def run_baselines(
    engine: Engine,
    session: Session,
    ratios_text: str,
    methods: list[str],
    heal_steps: int,
    inline_errors: bool = True,
):
    """Every chosen method at every target share of parameters, scored on held-out text."""
    try:
        ratios = [float(r) / 100 for r in ratios_text.replace(",", " ").replace("%", " ").split()]
    except ValueError as e:
        raise LacoError("Write target shares as percentages, e.g. 10, 20, 30.") from e
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise LacoError("Target shares must be between 0 and 100 %, e.g. 10, 20, 30.")
    if not methods:
        raise LacoError("Pick at least one method.")
    base = base_of(engine, session)

    def work(job: jobs.Job) -> pd.DataFrame:
        def report(done: int, total: int, message: str) -> None:
            job.event({"step": message})
            job.progress(done / max(total, 1), f"{message} ({done} of {total})")

        return comparison.compare_all(
            base.model,
            base.tokenizer,
            read_text(),
            read_prompts(),
            ratios,
            heal_steps=int(heal_steps),
            methods=list(methods),
            callback=report,
            stop=job.stop,
            activations_of=engine.activations_of(base),
            count=engine.count,
        )

    job = jobs.start(engine, session.token(), "baselines", work)
    try:
        yield session, jobs.bar_html(job), None, None, gr.skip(), gr.skip()
        for _ in job.ticks():
            yield gr.skip(), jobs.bar_html(job), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    finally:
        job.close()
    try:
        table = job.outcome()
    except LacoError as e:
        if not inline_errors:
            raise
        log.info("user error in run_baselines: %s", e)
        text = public_message(str(e))
        yield session, jobs.bar_html(job, "failed", text), None, None, gr.skip(), gr.skip()
        return
    session.baselines = table.astype(object).where(table.notna(), None).to_dict("records")
    frame = baselines_frame(session.baselines)
    yield (
        session,
        jobs.bar_html(job, "done", "Done."),
        frame,
        plots.baselines_chart(frame),
        plots.pareto(points(session)),
        overview(session)[0],
    )


@gpu
def api_baselines(
    engine: Engine, session: Session, ratios_text: str, methods: list[str], heal_steps: int
):
    """``/baselines`` for scripts: target ratios as fractions (0.1, 0.2), ``(table, plot)``."""
    try:
        ratios = [float(r) for r in (ratios_text or "").replace(",", " ").split()]
    except ValueError as e:
        raise LacoError("Write target ratios as numbers, e.g. 0.1, 0.2, 0.3.") from e
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise LacoError("Ratios must be fractions between 0 and 1, e.g. 0.1,0.2,0.3.")
    percent = ", ".join(f"{100 * r:g}" for r in ratios)
    updates = run_baselines(engine, session, percent, methods, heal_steps, inline_errors=False)
    yield from api.relay(updates, lambda u: (u[0], u[2], u[3]))


def build(engine: Engine, session: gr.State, table: gr.Dataframe, chart: gr.Plot) -> list[Event]:
    """The baselines accordion (its results join the tab's ``table`` and Pareto ``chart``).
    Returns the events that change the session."""
    with gr.Accordion("Baselines: LaCo vs layer drop vs LLM-Pruner (slow)", open=False):
        gr.Markdown(
            "Compresses the original to each target share of parameters with every method and "
            "scores each on the held-out text: **laco_paper** (Algorithm 1 as published), "
            "**laco_best** (our greedy search, KL objective), **shortgpt** (drop lowest Block "
            "Influence layers), **angular** (drop the most similar contiguous block) and "
            "**llm_pruner** (width pruning, Ma et al. 2023). Optional LoRA healing steps. The "
            "results join the table and the plot above."
        )
        with gr.Row(elem_classes=["laco-row"]):
            ratios = gr.Textbox("10, 20", label="Target shares of parameters to remove (%)")
            methods = gr.CheckboxGroup(
                list(comparison.METHODS), value=["laco_paper", "shortgpt"], label="Methods"
            )
            heal = gr.Slider(0, 200, 0, step=10, label="LoRA heal steps (0 = off; slow)")
        with gr.Row():
            run_btn = gr.Button("Run comparison", elem_id="baselines-run")
            stop_btn = gr.Button("■ Stop", variant="stop", min_width=80)
        bar = gr.HTML(jobs.bar_html(), elem_id="baselines-bar")
        own_table = gr.Dataframe(interactive=False, wrap=True)
        own_chart = gr.Plot(show_label=False)

    run = jobs.wire_long(
        run_btn,
        partial(run_baselines, engine),
        [session, ratios, methods, heal],
        [session, bar, own_table, own_chart, chart, table],
        stop_btn,
        "baselines",
        session,
        bar,
    )
    scripted = api.endpoint(
        partial(api_baselines, engine),
        [session, api.hidden(gr.Textbox), methods, heal],
        [session, api.hidden(gr.Dataframe), api.hidden(gr.Plot)],
        "baselines",
        concurrency_id=LONG_GROUP,
    )
    return [run, scripted]
