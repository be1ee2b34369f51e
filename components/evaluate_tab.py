"""Evaluate tab: perplexity and agreement with the original on held-out text; "Evaluate all"
fills one table and one Pareto plot with every build and the baselines (``eval_overview``);
the baselines comparison (``baselines_panel``); lm-evaluation-harness tasks in the papers'
table (``lmeval_panel``).

Figures keep their source: calibration figures (measured when a model was built) and held-out
figures (measured here) sit in separate, labelled, rounded columns and never replace each
other. Every long job shows a bar with elapsed time and ETA and can be stopped.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import gradio as gr

from laco_core.analysis.evaluate import evaluate as evaluate_model
from laco_core.assets import read_text
from laco_core.errors import LacoError
from laco_core.runtime.engine import Engine

from . import api, baselines_panel, jobs, lmeval_panel, plots
from .common import LONG_GROUP, SHORT_GROUP, gpu, model_of, public_message, user_errors
from .eval_overview import overview, points, show
from .handoff import EvaluateTab, Event
from .state import Session, heldout_metrics

log = logging.getLogger("laco.app")
SOURCES = ["bundled held-out text", "pasted text", "uploaded file"]


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


def _text_to_score(
    engine: Engine, source: str, pasted: str, upload: str | None, seq_len: int, max_words: int
) -> tuple[str, str]:
    """The text to score, checked against the engine's limits, and its description."""
    text = eval_text(source, pasted, upload, int(max_words))
    engine.limits.check("text_chars", len(text), "The text to score")
    engine.limits.check("seq_len", int(seq_len), "The window length")
    return text, source_desc(source, seq_len, max_words)


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


def _score(engine: Engine, session: Session, did: str, text: str, seq_len: int, desc: str, stop):
    did, model, base = model_of(engine, session, did)
    m = evaluate_model(
        model, base.tokenizer, text, reference=base.model, seq_len=int(seq_len), stop=stop
    )
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
    text, desc = _text_to_score(engine, source, pasted, upload, seq_len, max_words)

    def work(job: jobs.Job):
        job.progress(None, "Scoring the model and its original…")
        return _score(engine, session, did, text, seq_len, desc, job.stop)

    job = jobs.start(engine, session.token(), "evalall", work)
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
    text, desc = _text_to_score(engine, source, pasted, upload, seq_len, max_words)
    if not session.builds:
        raise LacoError("No models yet: build one in the Collapse tab first.")
    for b in session.builds:  # stale held-out figures go: the table fills from this run only
        for k in [k for k in b.metrics if k.startswith("ho_")]:
            del b.metrics[k]
    ids = [b.id for b in session.builds]

    def work(job: jobs.Job) -> None:
        for i, did in enumerate(ids):
            job.progress(i / len(ids), f"Scoring {did} ({i + 1} of {len(ids)})…")
            _score(engine, session, did, text, seq_len, desc, job.stop)
            job.event({"model": did})

    job = jobs.start(engine, session.token(), "evalall", work)
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


@user_errors
def _choices(session: Session):
    """The model pickers after the session lists models: Evaluate's on the current build,
    lm-eval's with every build of the session's base selected; the kept lm-eval scores."""
    return (
        gr.Dropdown(choices=session.choices(), value=session.current),
        gr.Dropdown(choices=session.choices(), value=lmeval_panel.picked(session)),
        lmeval_panel.table_md(session),
    )


def build(engine: Engine, session: gr.State, listed: list[Event]) -> EvaluateTab:
    """Build the Evaluate tab; its pickers follow ``listed``, the events after which the
    session lists new models. Returns the events that change the session."""
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
                0,
                step=100,
                label="Words to score (0 = all)",
                info="0 scores the whole text (the figures the docs and `laco eval` give); "
                "fewer words: faster, noisier.",
                elem_id="eval-words",
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

    baselines = baselines_panel.build(engine, session, table, chart)
    lmeval = lmeval_panel.build(engine, session)

    # ---- listeners ----------------------------------------------------------------------
    for ev in listed:
        ev.then(
            _choices, session, [pick, lmeval.picks, lmeval.table], api_visibility="private"
        ).then(show, session, [table, chart, note], api_visibility="private")
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
    return EvaluateTab(changed=[one, every, scripted_eval, lmeval.run, *baselines])
