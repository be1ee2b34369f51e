"""Evaluate tab: perplexity and agreement with the original on held-out text; "Evaluate all"
fills one table and one Pareto plot with every build and the baselines; the baselines
comparison; lm-evaluation-harness tasks in the papers' table.

Figures keep their source: calibration figures (measured when a model was built) and held-out
figures (measured here) sit in separate, labelled, rounded columns and never replace each
other. Every long job shows a bar with elapsed time and ETA and can be stopped.
"""

from __future__ import annotations

import logging
import math
import re
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from laco_core import comparison
from laco_core.assets import read_prompts, read_text
from laco_core.engine import Engine
from laco_core.errors import LacoError
from laco_core.evaluate import evaluate as evaluate_model
from laco_core.lmeval import paper_table, run_tasks, table_markdown

from . import api, jobs, plots
from .common import LONG_GROUP, SHORT_GROUP, base_of, gpu, model_of, public_message, user_errors
from .state import Session, heldout_metrics

log = logging.getLogger("laco.app")
SOURCES = ["bundled held-out text", "pasted text", "uploaded file"]
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


def eval_text(source: str, pasted: str, upload: str | None, max_words: int = 0) -> str:
    """The text to score, from the chosen source, cut to ``max_words`` words (0: all)."""
    if source == "pasted text":
        text = pasted or ""
    elif source == "uploaded file":
        if not upload:
            raise LacoError("Upload a UTF-8 .txt file first.")
        try:
            text = Path(upload).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise LacoError("The uploaded file is not UTF-8 text.") from e
    else:
        text = read_text()
    words = text.split()
    if len(words) < 20:
        raise LacoError("The text is too short to measure perplexity; give at least a paragraph.")
    return " ".join(words[: int(max_words)]) if max_words and len(words) > max_words else text


def source_desc(source: str, seq_len: int, max_words: int) -> str:
    words = f"first {int(max_words)} words" if max_words else "all of it"
    return f"{source}, {words}, {int(seq_len)}-token windows"


def metrics_md(did: str, m: dict) -> str:
    return (
        f"| held-out | original | `{did}` |\n|---|---:|---:|\n"
        f"| perplexity | {m['ref_ppl']:.2f} | **{m['ppl']:.2f}** (×{m['ppl'] / m['ref_ppl']:.2f}) |\n"
        f"| parameters | {m['ref_params'] / 1e6:.1f} M | {m['params'] / 1e6:.1f} M "
        f"({100 * (1 - m['params_ratio']):.1f} % removed) |\n\n"
        f"KL(original‖collapsed) **{m['kl']:.3f}** nats/token · top-1 agreement "
        f"**{100 * m['top1_agreement']:.1f} %**"
        + (f" · final-state cosine **{m['final_cosine']:.4f}**" if m.get("final_cosine") else "")
    )


def _score(engine: Engine, session: Session, did: str, text: str, seq_len: int, desc: str):
    did, model, base = model_of(engine, session, did)
    m = evaluate_model(model, base.tokenizer, text, reference=base.model, seq_len=int(seq_len))
    m = {k: float(v) for k, v in m.items() if v is not None}
    entry = session.get(did)
    entry.metrics.update(heldout_metrics(m))
    entry.metrics["ho_src"] = desc
    session.dense_ppl = m["ref_ppl"]
    return did, m


@gpu
def evaluate(
    engine: Engine,
    session: Session,
    did: str,
    source: str,
    pasted: str,
    upload: str | None,
    seq_len: int,
    max_words: int,
):
    """Perplexity of one build and its original on held-out text, KL/agreement between them."""
    text = eval_text(source, pasted, upload, int(max_words))
    engine.limits.check("text_chars", len(text), "The text to score")
    engine.limits.check("seq_len", int(seq_len), "The window length")
    desc = source_desc(source, seq_len, max_words)

    def work(job: jobs.Job):
        job.progress(None, "Scoring the model and its original…")
        return _score(engine, session, did, text, seq_len, desc)

    job = jobs.start(session.token(), "evalall", work)
    try:
        yield session, jobs.bar_html(job), "", None, gr.skip(), gr.skip(), gr.skip()
        for _ in job.ticks():
            yield (gr.skip(), jobs.bar_html(job), *[gr.skip()] * 5)
    finally:
        job.close()
    did, m = job.outcome()
    table, note = overview(session)
    yield (
        session,
        jobs.bar_html(job, "done", f"Scored {did}."),
        metrics_md(did, m),
        m,
        table,
        plots.pareto(points(session)),
        note,
    )


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


def points(session: Session) -> pd.DataFrame:
    """Every model with both coordinates of the Pareto plot: params removed (%) and held-out
    perplexity ratio (× its own original): the builds, the baselines, the original."""
    rows = [{"label": "original", "kind": "original", "removed": 0.0, "ratio": 1.0}]
    for b in session.builds:
        r = b.metrics.get("ho_ratio")
        if r is not None and b.params_removed is not None:
            rows.append(
                {"label": b.id, "kind": "your models", "removed": b.params_removed, "ratio": r}
            )
    t = pd.DataFrame(session.baselines)
    if not t.empty and "ppl" in t:
        dense = t.loc[t["method"] == "dense", "ppl"]
        ref = float(dense.iloc[0]) if len(dense) else math.nan
        for _, r in t[t["method"] != "dense"].iterrows():
            if pd.notna(r["ppl"]) and pd.notna(r["params_removed"]):
                healed = " + LoRA" if r.get("healed") is True else ""
                rows.append(
                    {
                        "label": f"{r['method']}{healed} {100 * r['target_ratio']:.0f} %",
                        "kind": "baselines",
                        "removed": 100 * float(r["params_removed"]),
                        "ratio": float(r["ppl"]) / ref,
                    }
                )
    return pd.DataFrame(rows)


def overview(session: Session) -> tuple[pd.DataFrame, str]:
    """One table of every build (and the original), with a line on where the figures come from."""
    table = session.table()
    if table.empty:
        table = pd.DataFrame(columns=["id", "layers", "params removed %", "ppl held-out"])
    else:
        dense = pd.DataFrame(
            [
                {
                    "id": "original",
                    "layers": "",
                    "params removed %": 0.0,
                    "ppl held-out": round(session.dense_ppl, 2) if session.dense_ppl else None,
                    "ppl ratio held-out (×)": 1.0 if session.dense_ppl else None,
                }
            ]
        )
        table = pd.concat([dense, table], ignore_index=True)[list(table.columns)]
    srcs = sorted({b.metrics["ho_src"] for b in session.builds if "ho_src" in b.metrics})
    legend = (
        "<b>cal.</b>: on the calibration prompts, when the model was built · <b>held-out</b>: "
        "on held-out text, by Evaluate · KL = KL(original‖model), nats per token · ratio = "
        "perplexity ÷ the original's."
    )
    if not srcs:
        note = f"<small>{legend} Press <b>Evaluate all</b> for held-out figures.</small>"
    elif len(srcs) == 1:
        note = f"<small>{legend} Held-out text: {srcs[0]}.</small>"
    else:
        note = (
            "<span class='laco-msg-error'>⚠ The held-out columns come from different texts or "
            f"settings ({'; '.join(srcs)}): press **Evaluate all** to score every model alike.</span>"
        )
    if session.baselines:
        note += " <small>Baselines: their own run (first 8 windows of the bundled held-out text).</small>"
    return table, note


def show(session: Session):
    table, note = overview(session)
    return table, plots.pareto(points(session)), note


@gpu
def evaluate_all(
    engine: Engine,
    session: Session,
    source: str,
    pasted: str,
    upload: str | None,
    seq_len: int,
    max_words: int,
):
    """Every build of the session scored on one held-out text, streaming into the table."""
    text = eval_text(source, pasted, upload, int(max_words))
    engine.limits.check("text_chars", len(text), "The text to score")
    engine.limits.check("seq_len", int(seq_len), "The window length")
    if not session.builds:
        raise LacoError("No models yet: build one in the Collapse tab first.")
    desc = source_desc(source, seq_len, max_words)
    for b in session.builds:  # stale held-out figures go: the table fills from this run only
        for k in [k for k in b.metrics if k.startswith("ho_")]:
            del b.metrics[k]
    ids = [b.id for b in session.builds]

    def work(job: jobs.Job) -> None:
        for i, did in enumerate(ids):
            job.progress(i / len(ids), f"Scoring {did} ({i + 1} of {len(ids)})…")
            _score(engine, session, did, text, seq_len, desc)
            job.event({"model": did})

    job = jobs.start(session.token(), "evalall", work)
    seen = 0
    try:
        yield (session, jobs.bar_html(job), *show(session))
        for _ in job.ticks():
            if len(job.events) == seen:
                yield (gr.skip(), jobs.bar_html(job), gr.skip(), gr.skip(), gr.skip())
                continue
            seen = len(job.events)
            yield (gr.skip(), jobs.bar_html(job), *show(session))
    finally:
        job.close()
    try:
        job.outcome()
    except LacoError as e:
        log.info("user error in evaluate_all: %s", e)
        yield (session, jobs.bar_html(job, "failed", public_message(str(e))), *show(session))
        return
    yield (session, jobs.bar_html(job, "done", f"Scored {len(ids)} models."), *show(session))


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
        )

    job = jobs.start(session.token(), "baselines", work)
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
def api_evaluate(
    engine: Engine,
    session: Session,
    did: str,
    source: str,
    pasted: str,
    upload: str | None,
    seq_len: int,
    max_words: int,
):
    """``/evaluate`` for scripts: ``(result, metrics, table of the session's builds, plot)``."""
    updates = evaluate(engine, session, did, source, pasted, upload, seq_len, max_words)

    def convert(u):
        done = isinstance(u[3], dict)  # the last update carries the metrics
        return (u[0], u[2], u[3], session.table() if done else gr.skip(), u[5])

    yield from api.relay(updates, convert)


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


def task_list(text: str) -> list[str]:
    tasks = [t for t in re.split(r"[,\s]+", text or "") if t]
    if not tasks:
        raise LacoError("Name at least one lm-eval task, e.g. laco_mc.")
    return tasks


@gpu
def run_lmeval(engine: Engine, session: Session, tasks_text: str, limit: int, picks: list[str]):
    """lm-evaluation-harness tasks on the original and the chosen builds: the papers' table
    (accuracy per task, average, % of the original's average)."""
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

    job = jobs.start(session.token(), "lmeval", work)
    try:
        yield jobs.bar_html(job), ""
        for _ in job.ticks():
            yield jobs.bar_html(job), gr.skip()
    finally:
        job.close()
    try:
        results = job.outcome()
    except LacoError as e:
        log.info("user error in run_lmeval: %s", e)
        text = public_message(str(e))
        yield jobs.bar_html(job, "failed", text), f"<span class='laco-msg-error'>⚠ {text}</span>"
        return
    md = table_markdown(paper_table(results, "original"))
    limit_note = f"the first {limit} questions of each task" if limit else "every question"
    yield (
        jobs.bar_html(job, "done", "Done."),
        f"{md}\n<small>Accuracy in %, on {limit_note}.</small>",
    )


@user_errors
def _choices(session: Session):
    return (
        gr.Dropdown(choices=session.choices(), value=session.current),
        gr.Dropdown(choices=session.choices()),
    )


def build(engine: Engine, session: gr.State, collapse: dict) -> dict:
    """Build the Evaluate tab. Returns the events that change the session."""
    gr.Markdown(
        "Perplexity on held-out text (lower is better) and how closely each model follows "
        "the original: KL divergence of next-token distributions (nats per token) and top-1 "
        "agreement. The held-out text is never used to calibrate, fit or heal."
    )
    with gr.Row(elem_classes=["laco-row"]):
        with gr.Column(scale=2, min_width=280):
            pick = gr.Dropdown([], allow_custom_value=True, label="Model", elem_id="eval-model")
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Text")
            pasted = gr.Textbox(label="Pasted text", lines=4, visible=False)
            upload = gr.File(
                label="Text file (.txt)", file_types=[".txt"], type="filepath", visible=False
            )
            seq_len = gr.Slider(64, 1024, 256, step=64, label="Window length (tokens)")
            max_words = gr.Slider(
                0,
                5000,
                600,
                step=100,
                label="Words to score (0 = all)",
                info="Fewer words: faster, noisier.",
            )
            with gr.Row():
                run_btn = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
                all_btn = gr.Button("Evaluate all", variant="primary", elem_id="eval-all")
                all_stop = gr.Button("■ Stop", variant="stop", min_width=80)
        with gr.Column(scale=3, min_width=280):
            result = gr.Markdown("", elem_id="eval-result")
            with gr.Accordion("Raw metrics", open=False):
                raw = gr.JSON()
    all_bar = gr.HTML(jobs.bar_html(), elem_id="eval-all-bar")
    gr.Markdown("#### Every model: your builds, the baselines and the original")
    note = gr.Markdown("", elem_id="eval-note")
    table = gr.Dataframe(interactive=False, elem_id="eval-table", wrap=True)
    chart = gr.Plot(show_label=False, elem_id="eval-pareto")

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
            base_btn = gr.Button("Run comparison", elem_id="baselines-run")
            base_stop = gr.Button("■ Stop", variant="stop", min_width=80)
        base_bar = gr.HTML(jobs.bar_html(), elem_id="baselines-bar")
        base_table = gr.Dataframe(interactive=False, wrap=True)
        base_chart = gr.Plot(show_label=False)

    with gr.Accordion("lm-evaluation-harness: the papers' accuracy table", open=False):
        gr.Markdown(
            "Zero-shot tasks scored by lm-evaluation-harness on the original and your models, "
            "laid out like the LaCo and LLM-Pruner tables (accuracy in %, average, % of the "
            "original's average). `laco_mc` is our own offline task (52 questions); standard "
            "tasks (piqa, hellaswag, arc_easy…) need their datasets from the Hub."
        )
        with gr.Row(elem_classes=["laco-row"]):
            tasks = gr.Textbox("laco_mc", label="Tasks (comma-separated)", elem_id="lmeval-tasks")
            limit = gr.Number(0, label="Questions per task (0 = all)", precision=0, minimum=0)
            lm_picks = gr.Dropdown(
                [],
                multiselect=True,
                allow_custom_value=True,
                label="Your models (beside the original)",
                elem_id="lmeval-models",
            )
        with gr.Row():
            lm_btn = gr.Button("Run tasks", elem_id="lmeval-run")
            lm_stop = gr.Button("■ Stop", variant="stop", min_width=80)
        lm_bar = gr.HTML(jobs.bar_html(), elem_id="lmeval-bar")
        lm_table = gr.Markdown("", elem_id="lmeval-table")

    # ---- listeners ----------------------------------------------------------------------
    for ev in collapse["built"]:
        ev.then(_choices, session, [pick, lm_picks], api_visibility="private").then(
            show, session, [table, chart, note], api_visibility="private"
        )
    source.change(
        lambda s: (gr.Textbox(visible=s == SOURCES[1]), gr.File(visible=s == SOURCES[2])),
        source,
        [pasted, upload],
        api_visibility="private",
        queue=False,
    )
    one = run_btn.click(
        partial(evaluate, engine),
        [session, pick, source, pasted, upload, seq_len, max_words],
        [session, all_bar, result, raw, table, chart, note],
        api_visibility="private",
        concurrency_id=SHORT_GROUP,
        show_progress="hidden",
    )
    every = all_btn.click(
        partial(evaluate_all, engine),
        [session, source, pasted, upload, seq_len, max_words],
        [session, all_bar, table, chart, note],
        api_name="evaluate_all",
        concurrency_id=LONG_GROUP,
        show_progress="hidden",
    )
    jobs.wire_stop(all_stop, "evalall", session, all_bar, [every, one])
    base = base_btn.click(
        partial(run_baselines, engine),
        [session, ratios, methods, heal],
        [session, base_bar, base_table, base_chart, chart, table],
        api_visibility="private",
        concurrency_id=LONG_GROUP,
        show_progress="hidden",
    )
    jobs.wire_stop(base_stop, "baselines", session, base_bar, [base])
    lm = lm_btn.click(
        partial(run_lmeval, engine),
        [session, tasks, limit, lm_picks],
        [lm_bar, lm_table],
        api_name="lm_eval",
        concurrency_id=LONG_GROUP,
        show_progress="hidden",
    )
    jobs.wire_stop(lm_stop, "lmeval", session, lm_bar, [lm])
    scripted_eval = api.endpoint(
        partial(api_evaluate, engine),
        [session, pick, source, pasted, upload, seq_len, max_words],
        [
            session,
            api.hidden(gr.Markdown),
            api.hidden(gr.JSON),
            api.hidden(gr.Dataframe),
            api.hidden(gr.Plot),
        ],
        "evaluate",
        concurrency_id=SHORT_GROUP,
    )
    scripted_base = api.endpoint(
        partial(api_baselines, engine),
        [session, api.hidden(gr.Textbox), methods, heal],
        [session, api.hidden(gr.Dataframe), api.hidden(gr.Plot)],
        "baselines",
        concurrency_id=LONG_GROUP,
    )
    return {
        "pick": pick,
        "changed": [one, every, base, scripted_eval, scripted_base],
        "show": (show, [table, chart, note]),
    }
