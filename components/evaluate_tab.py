"""Evaluate tab: perplexity and agreement with the original, the session's table of builds,
and the baselines comparison (LaCo vs layer drop vs LLM-Pruner, optionally LoRA-healed)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from laco_core.assets import read_prompts, read_text
from laco_core.engine import Engine
from laco_core.errors import LacoError
from laco_core.evaluate import evaluate as evaluate_model

from . import plots
from .common import GPU_GROUP, base_of, build_choices, gpu, pick_build
from .state import Session

try:
    from laco_core import comparison
except ImportError:  # lands separately; the panel says so until then
    comparison = None

SOURCES = ["bundled held-out text", "pasted text", "uploaded file"]


def eval_text(source: str, pasted: str, upload: str | None) -> str:
    """The text to score, from the chosen source."""
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
    if len(text.split()) < 20:
        raise LacoError("The text is too short to measure perplexity; give at least a paragraph.")
    return text


def metrics_md(did: str, m: dict) -> str:
    return (
        f"| | original | `{did}` |\n|---|---:|---:|\n"
        f"| perplexity | {m['ref_ppl']:.2f} | **{m['ppl']:.2f}** |\n"
        f"| parameters | {m['ref_params'] / 1e6:.1f} M | {m['params'] / 1e6:.1f} M "
        f"({100 * m['params_ratio']:.1f} %) |\n\n"
        f"KL(original‖collapsed) **{m['kl']:.4f}** · top-1 agreement "
        f"**{100 * m['top1_agreement']:.1f} %** · final-state cosine **{m['final_cosine']:.4f}**"
    )


@gpu
def evaluate(engine: Engine, session: Session, did: str, source: str, pasted: str,
             upload: str | None, seq_len: int, progress: gr.Progress = gr.Progress()):  # noqa: B008
    """Perplexity of the collapsed model and the original, KL/agreement between them."""
    did = pick_build(session, did)
    text = eval_text(source, pasted, upload)
    base = base_of(engine, session)
    derived = engine.get(did)
    progress(0.2, desc="Scoring both models…")
    with engine.lock:
        m = evaluate_model(derived.model, base.tokenizer, text, reference=base.model,
                           seq_len=int(seq_len))
    m = {k: float(v) for k, v in m.items()}
    build = session.get(did)
    build.metrics.update({k: round(m[k], 4) for k in ("ppl", "kl", "top1_agreement")})
    session.dense_ppl = m["ref_ppl"]
    table = session.table()
    return session, metrics_md(did, m), m, table, plots.params_vs_ppl(table, m["ref_ppl"])


def show_table(session: Session):
    table = session.table()
    return table, plots.params_vs_ppl(table, session.dense_ppl)


@gpu
def run_baselines(engine: Engine, session: Session, ratios_text: str, heal: bool,
                  progress: gr.Progress = gr.Progress()):  # noqa: B008
    """Every method at every target ratio on the held-out text (slow: minutes)."""
    if comparison is None:
        raise LacoError("The baselines comparison is not available in this build.")
    try:
        ratios = [float(r) for r in ratios_text.replace(",", " ").split()]
    except ValueError as e:
        raise LacoError("Write target ratios as numbers, e.g. 0.1, 0.2, 0.3.") from e
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise LacoError("Target ratios must lie strictly between 0 and 1.")
    base = base_of(engine, session)
    progress(0.05, desc="Pruning, merging and scoring…")
    with engine.lock:
        table = comparison.compare_all(base.model, base.tokenizer, read_text(), read_prompts(),
                                       ratios, heal=bool(heal))
    return table, plots.baselines_chart(table)


def build(engine: Engine, session: gr.State, collapse: dict) -> dict:
    """Build the Evaluate tab."""
    gr.Markdown("Perplexity on held-out text (lower is better) and how closely the collapsed "
                "model follows the original: KL divergence of next-token distributions, top-1 "
                "agreement and cosine of the final hidden states.")
    with gr.Row():
        with gr.Column(scale=2):
            pick = gr.Dropdown([], label="Collapsed model", elem_id="eval-model")
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Text")
            pasted = gr.Textbox(label="Pasted text", lines=4, visible=False)
            upload = gr.File(label="Text file (.txt)", file_types=[".txt"], type="filepath",
                             visible=False)
            seq_len = gr.Slider(64, 1024, 256, step=64, label="Window length (tokens)")
            run_btn = gr.Button("📏 Evaluate", variant="primary", elem_id="eval-run")
        with gr.Column(scale=3):
            result = gr.Markdown("", elem_id="eval-result")
            with gr.Accordion("Raw metrics", open=False):
                raw = gr.JSON()
    gr.Markdown("#### Every model built in this session")
    table = gr.Dataframe(interactive=False, elem_id="eval-table")
    chart = gr.Plot(label="Parameters removed vs perplexity")

    with gr.Accordion("⚖️ Baselines: LaCo vs layer drop vs LLM-Pruner (slow)", open=False):
        gr.Markdown("Prunes the original to each target ratio with every method, optionally "
                    "heals with a short LoRA run, and scores each on the held-out text.")
        with gr.Row():
            ratios = gr.Textbox("0.1, 0.2, 0.3", label="Target ratios (fraction of parameters)")
            heal = gr.Checkbox(False, label="Also LoRA-heal each (much slower)")
            base_btn = gr.Button("Run comparison")
        base_table = gr.Dataframe(interactive=False)
        base_chart = gr.Plot()

    # ---- listeners ----------------------------------------------------------------------
    for ev in collapse["built"]:
        ev.then(build_choices, session, pick, api_visibility="private").then(
            show_table, session, [table, chart], api_visibility="private")
    source.change(lambda s: (gr.Textbox(visible=s == SOURCES[1]), gr.File(visible=s == SOURCES[2])),
                  source, [pasted, upload], api_visibility="private")
    run_btn.click(partial(evaluate, engine), [session, pick, source, pasted, upload, seq_len],
                  [session, result, raw, table, chart], api_name="evaluate", concurrency_id=GPU_GROUP)
    base_btn.click(partial(run_baselines, engine), [session, ratios, heal], [base_table, base_chart],
                   api_name="baselines", concurrency_id=GPU_GROUP)
    return {"pick": pick}
