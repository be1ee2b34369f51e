"""Evaluate tab: perplexity and agreement with the original, the session's table of builds,
and the baselines comparison (LaCo vs layer drop vs LLM-Pruner, optionally LoRA-healed)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from laco_core import comparison
from laco_core.assets import read_prompts, read_text
from laco_core.engine import Engine
from laco_core.errors import LacoError
from laco_core.evaluate import evaluate as evaluate_model

from . import plots
from .common import LONG_GROUP, PROGRESS, SHORT_GROUP, base_of, build_choices, gpu, model_of
from .state import Session

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
def evaluate(
    engine: Engine,
    session: Session,
    did: str,
    source: str,
    pasted: str,
    upload: str | None,
    seq_len: int,
    max_words: int,
    progress: gr.Progress = PROGRESS,
):
    """Perplexity of the collapsed model and the original, KL/agreement between them."""
    text = eval_text(source, pasted, upload, int(max_words))
    engine.limits.check("text_chars", len(text), "The text to score")
    engine.limits.check("seq_len", int(seq_len), "The window length")
    did, model, base = model_of(engine, session, did)
    progress(0.2, desc="Scoring both models…")
    m = evaluate_model(model, base.tokenizer, text, reference=base.model, seq_len=int(seq_len))
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
def run_baselines(
    engine: Engine,
    session: Session,
    ratios_text: str,
    methods: list[str],
    heal_steps: int,
    progress: gr.Progress = PROGRESS,
):
    """Every chosen method at every target ratio, scored on the held-out text (minutes)."""
    try:
        ratios = [float(r) for r in ratios_text.replace(",", " ").split()]
    except ValueError as e:
        raise LacoError("Write target ratios as numbers, e.g. 0.1, 0.2, 0.3.") from e
    if not methods:
        raise LacoError("Pick at least one method.")
    base = base_of(engine, session)

    def report(done: int, total: int, message: str) -> None:
        progress(done / max(total, 1), desc=message)

    table = comparison.compare_all(
        base.model,
        base.tokenizer,
        read_text(),
        read_prompts(),
        ratios,
        heal_steps=int(heal_steps),
        methods=list(methods),
        callback=report,
    )
    return table, plots.baselines_chart(table)


def build(engine: Engine, session: gr.State, collapse: dict) -> dict:
    """Build the Evaluate tab."""
    gr.Markdown(
        "Perplexity on held-out text (lower is better) and how closely the collapsed "
        "model follows the original: KL divergence of next-token distributions, top-1 "
        "agreement and cosine of the final hidden states."
    )
    with gr.Row():
        with gr.Column(scale=2):
            pick = gr.Dropdown(
                [], allow_custom_value=True, label="Collapsed model", elem_id="eval-model"
            )
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
            run_btn = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
        with gr.Column(scale=3):
            result = gr.Markdown("", elem_id="eval-result")
            with gr.Accordion("Raw metrics", open=False):
                raw = gr.JSON()
    gr.Markdown("#### Every model built in this session")
    table = gr.Dataframe(interactive=False, elem_id="eval-table")
    chart = gr.Plot(label="Parameters removed vs perplexity")

    with gr.Accordion("Baselines: LaCo vs layer drop vs LLM-Pruner (slow)", open=False):
        gr.Markdown(
            "Compresses the original to each target share of parameters with every method and "
            "scores each on the held-out text: **laco_paper** (Algorithm 1 as published), "
            "**laco_best** (our greedy search, KL objective), **shortgpt** (drop lowest Block "
            "Influence layers), **angular** (drop the most similar contiguous block) and "
            "**llm_pruner** (width pruning, Ma et al. 2023). Optional LoRA healing steps."
        )
        with gr.Row():
            ratios = gr.Textbox("0.1, 0.2", label="Target ratios (fraction of parameters)")
            methods = gr.CheckboxGroup(
                list(comparison.METHODS), value=["laco_paper", "shortgpt"], label="Methods"
            )
            heal = gr.Slider(0, 200, 0, step=10, label="LoRA heal steps (0 = off; slow)")
        base_btn = gr.Button("Run comparison")
        base_table = gr.Dataframe(interactive=False)
        base_chart = gr.Plot()

    # ---- listeners ----------------------------------------------------------------------
    for ev in collapse["built"]:
        ev.then(build_choices, session, pick, api_visibility="private").then(
            show_table, session, [table, chart], api_visibility="private"
        )
    source.change(
        lambda s: (gr.Textbox(visible=s == SOURCES[1]), gr.File(visible=s == SOURCES[2])),
        source,
        [pasted, upload],
        api_visibility="private",
    )
    run_btn.click(
        partial(evaluate, engine),
        [session, pick, source, pasted, upload, seq_len, max_words],
        [session, result, raw, table, chart],
        api_name="evaluate",
        concurrency_id=SHORT_GROUP,
    )
    base_btn.click(
        partial(run_baselines, engine),
        [session, ratios, methods, heal],
        [base_table, base_chart],
        api_name="baselines",
        concurrency_id=LONG_GROUP,
    )
    return {"pick": pick}
