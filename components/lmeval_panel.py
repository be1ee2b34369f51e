"""The Evaluate tab's lm-evaluation-harness panel: zero-shot tasks on the original and the
chosen builds, laid out as the papers' accuracy table, every score ± its standard error and
each model's share of the dense average labelled when it is within noise.

Scores are kept in the session (``Session.record_lmeval``): they come back after a reload,
travel in the session file and go into each build's export (card and recipe)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import partial

import gradio as gr

from laco_core.errors import LacoError
from laco_core.exchange.lmeval import run_tasks
from laco_core.exchange.lmeval_table import NOISE_RULE
from laco_core.runtime.engine import Engine

from . import jobs
from .common import base_of, gpu, model_of, public_message
from .handoff import Event
from .state import Session

log = logging.getLogger("laco.app")


def task_list(text: str) -> list[str]:
    tasks = [t for t in re.split(r"[,\s]+", text or "") if t]
    if not tasks:
        raise LacoError("Name at least one lm-eval task, e.g. laco_mc.")
    return tasks


def table_md(session: Session) -> str:
    """Every lm-eval score the session keeps, with how to read it ("" when none)."""
    md = session.lmeval_markdown()
    if not md:
        return ""
    return (
        f"{md}\n<small>Accuracy in % ± standard error; questions: how many of each task's "
        f"questions were scored. {NOISE_RULE}</small>"
    )


def picked(session: Session) -> list[str]:
    """The session's models the picker starts with: every build of the session's base."""
    return [
        did
        for _, did in session.choices()
        if (session.get(did).recipe.get("base") or {}).get("spec") == session.spec
    ]


@gpu
def run_lmeval(engine: Engine, session: Session, tasks_text: str, limit: int, picks: list[str]):
    """lm-evaluation-harness tasks on the original and the chosen builds: the papers' table
    (accuracy ± stderr per task, average, % of the original's average, within noise or not),
    kept in the session."""
    tasks = task_list(tasks_text)
    limit = int(limit or 0) or None
    chosen = [model_of(engine, session, d) for d in (picks or [])]
    base = chosen[0][2] if chosen else base_of(engine, session)
    for did, _, b in chosen:
        if b is not base:
            raise LacoError(f"'{did}' was built on `{b.spec}`: score models of one base at a time.")
    models = [("original", base.model), *((did, m) for did, m, _ in chosen)]

    def work(job: jobs.Job) -> dict:
        results = {}
        for i, (label, model) in enumerate(models):

            def prog(done: int, total: int, what: str, i: int = i, label: str = label) -> None:
                job.progress(
                    (i + done / max(total, 1)) / len(models), f"{label}: {what} {done}/{total}"
                )

            results[label] = run_tasks(model, base.tokenizer, tasks, limit=limit, progress=prog)
            job.event({"model": label})
        return results

    job = jobs.start(engine, session.token(), "lmeval", work)
    try:
        yield session, jobs.bar_html(job), gr.skip()
        for _ in job.ticks():
            yield gr.skip(), jobs.bar_html(job), gr.skip()
    finally:
        job.close()
    try:
        results = job.outcome()
    except LacoError as e:
        log.info("user error in run_lmeval: %s", e)
        text = public_message(str(e))
        error = f"<span class='laco-msg-error'>⚠ {text}</span>"
        yield session, jobs.bar_html(job, "failed", text), f"{error}\n\n{table_md(session)}"
        return
    session.record_lmeval(results)  # labels: "original" and the builds' ids (model_of's)
    limit_note = f"the first {limit} questions of each task" if limit else "every question"
    yield (
        session,
        jobs.bar_html(job, "done", f"Done: {', '.join(tasks)} on {limit_note}."),
        table_md(session),
    )


def build(engine: Engine, session: gr.State) -> LmEvalPanel:
    """The lm-eval accordion. Returns its model picker and table (the tab keeps them
    current) and its run event (it changes the session)."""
    with gr.Accordion("lm-evaluation-harness: the papers' accuracy table", open=False):
        gr.Markdown(
            "Zero-shot tasks scored by lm-evaluation-harness on the original and your models, "
            "laid out like the LaCo and LLM-Pruner tables (accuracy in %, average, % of the "
            "original's average), each score ± its standard error. `laco_mc` is our own "
            "offline task (52 questions); standard tasks (piqa, hellaswag, arc_easy…) need "
            "their datasets from the Hub. Scores stay in your session and go into each "
            "model's export."
        )
        with gr.Row(elem_classes=["laco-row"]):
            tasks = gr.Textbox("laco_mc", label="Tasks (comma-separated)", elem_id="lmeval-tasks")
            limit = gr.Number(0, label="Questions per task (0 = all)", precision=0, minimum=0)
            picks = gr.Dropdown(
                [],
                multiselect=True,
                allow_custom_value=True,
                label="Your models (beside the original)",
                elem_id="lmeval-models",
            )
        with gr.Row():
            run_btn = gr.Button("Run tasks", elem_id="lmeval-run")
            stop_btn = gr.Button("■ Stop", variant="stop", min_width=80)
        bar = gr.HTML(jobs.bar_html(), elem_id="lmeval-bar")
        table = gr.Markdown("", elem_id="lmeval-table")

    run = jobs.wire_long(
        run_btn,
        partial(run_lmeval, engine),
        [session, tasks, limit, picks],
        [session, bar, table],
        stop_btn,
        "lmeval",
        session,
        bar,
        api_name="lm_eval",
    )
    return LmEvalPanel(picks, table, run)


@dataclass
class LmEvalPanel:
    picks: gr.Dropdown  # the models beside the original
    table: gr.Markdown  # every score the session keeps
    run: Event  # a run (it changes the session)
