"""Similarity tab: parameter and representation similarity heatmaps, adjacent-layer chart, CSV.

Clicking a heatmap cell proposes a collapse range (wired by the Collapse tab, which owns it).
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import gradio as gr
import torch

from laco_core.analysis import reading, similarity
from laco_core.assets import read_prompts
from laco_core.errors import LacoError
from laco_core.runtime.engine import Engine

from . import plan_preview, plots
from .common import PROGRESS, SHORT_GROUP, base_of, gpu, user_errors
from .handoff import ModelTab, SimilarityTab
from .plan_map import block_matrix
from .state import Session
from .widgets import ClickBridge

PARAM_PLOT, REP_PLOT = "sim-param", "sim-rep"
# the first 8 of our 24 calibration prompts: enough for stable matrices, and the analysis that
# runs on page load stays within a couple of seconds on 2 CPU cores
DEFAULT_PROMPTS = 8
# the heatmap metrics: the analysis's matrix, title, colour-bar label, colour scale, hover name
_REP_MAPS = {
    "cosine": (
        "cosine",
        "cos(input of layer a, output of layer b)",
        "cosine",
        "Viridis",
        "cos(in, out)",
    ),
    "angular distance": (
        "angular",
        "angular distance, input of a → output of b",
        "angular<br>distance",
        "Viridis_r",
        "angular distance",
    ),
}
METRICS = [*_REP_MAPS, "Block Influence"]
MODULE_ORDER = ["all", "attention", "mlp", "norms"]


def param_figure(analysis: dict, module: str):
    mats = analysis.get("param", {})
    if module not in mats:
        raise LacoError(f"No parameter similarity for '{module}'; run Analyze first.")
    return plots.heatmap(
        mats[module],
        f"Parameters ({module}): cosine of layer a's and b's weights",
        axis_title="layer",
        zlabel="cosine<br>(diagonal<br>excluded)",
        off_diagonal_scale=True,
    )


def rep_figure(analysis: dict, metric: str):
    """The representation map in layer numbering (``plan_map.block_matrix``): cell (a, b)
    compares the hidden state entering layer min(a, b) with the one leaving layer max(a, b)."""
    rep = analysis.get("rep")
    if not rep:
        raise LacoError("No representation similarity yet; run Analyze first.")
    if metric == "Block Influence":
        return plots.influence_bar(rep["block_influence"])
    key, title, zlabel, colorscale, measure = _REP_MAPS.get(metric, _REP_MAPS["cosine"])
    return plots.heatmap(
        block_matrix(rep[key]),
        f"Representations: {title}",
        axis_title="layer",
        zlabel=zlabel,
        colorscale=colorscale,
        hover=f"block %{{customdata}}: {measure} %{{z:.4f}}",
    )


def compute(engine: Engine, session: Session, prompts: list[str]) -> dict:
    """Both similarity families of the session's base model on ``prompts``.

    The engine memoises them per model and prompt set (every visitor who opens the default
    model with the default prompts shares one computation) under its memory budget.
    """
    return engine.analysis(base_of(engine, session), prompts)


def precompute(engine: Engine) -> None:
    """Start-up work: the default model's analysis on the default prompts, then the first
    preview's activations of it, built in the background."""
    prompts = read_prompts()[:DEFAULT_PROMPTS]
    compute(engine, Session(), prompts)
    plan_preview.warm(engine, engine.load("default"), "\n".join(prompts))


def warm_after_load(engine: Engine, session: Session, prompts_text: str) -> None:
    """After a load: the session's base model's preview activations on its calibration
    prompts, built in the background so that the first preview is as quick as the rest."""
    plan_preview.warm(engine, base_of(engine, session), prompts_text)


@gpu
def analyze(
    engine: Engine,
    session: Session,
    prompts_text: str,
    module: str,
    metric: str,
    progress: gr.Progress = PROGRESS,
):
    """Both similarity families for the session's base model: figures, module choices, CSVs."""
    prompts = [p.strip() for p in (prompts_text or "").splitlines() if p.strip()]
    if not prompts:
        raise LacoError("Add at least one calibration prompt (one per line).")
    progress(0.1, desc=f"Similarity on {len(prompts)} prompts…")
    analysis = compute(engine, session, prompts)
    keys = sorted(analysis["param"], key=lambda k: (MODULE_ORDER + [k]).index(k))
    if module not in analysis["param"] or not module:  # first look: the map that shows most
        module = reading.most_structured(analysis["param"])
    files = write_csvs(analysis, engine.exports.new("similarity-csv"))
    return (
        analysis,
        gr.Dropdown(choices=keys, value=module),
        param_figure(analysis, module),
        rep_figure(analysis, metric),
        plots.adjacent_chart(analysis["param"]["all"], analysis["rep"]["cosine"]),
        files,
    )


def write_csvs(analysis: dict, out: Path | None = None) -> list[str]:
    """Every matrix as a labelled CSV in ``out`` (default a fresh temporary folder; the app
    passes a folder of the engine's export store, swept by age and size)."""
    out = Path(out or tempfile.mkdtemp(prefix="laco-sim-"))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, m in analysis["param"].items():
        labels = [f"layer_{i}" for i in range(m.shape[0])]
        p = out / f"param_similarity_{key}.csv"
        similarity.matrix_frame(torch.from_numpy(m), labels).to_csv(p)
        paths.append(str(p))
    for key in ("cosine", "angular"):
        m = analysis["rep"][key]
        labels = ["embeddings"] + [f"after_layer_{i}" for i in range(m.shape[0] - 1)]
        p = out / f"representation_{key}.csv"
        similarity.matrix_frame(torch.from_numpy(m), labels).to_csv(p)
        paths.append(str(p))
    return paths


@user_errors
def read_maps(analysis: dict) -> str:
    """The one line a researcher should read from the parameter maps."""
    return reading.param_reading(analysis["param"]) if analysis.get("param") else ""


def replot_param(analysis: dict, module: str):
    return param_figure(analysis, module) if analysis else gr.skip()


@user_errors
def replot_rep(analysis: dict, metric: str):
    return rep_figure(analysis, metric) if analysis else gr.skip()


def build(engine: Engine, session: gr.State, model: ModelTab) -> SimilarityTab:
    """Build the Similarity tab; the base model's load event triggers the analysis."""
    gr.Markdown(
        "Which layers are alike? **Parameter similarity** compares the weights of two layers "
        "(cosine of the flattened tensors). **Representation similarity** compares the hidden "
        "states the calibration prompts produce after each layer; **Block Influence** "
        "(ShortGPT) is 1 − cos(input, output) of each layer — low means the layer changes "
        "little. Both maps use one numbering, the layers': on the representation map, cell "
        "(a, b) compares the hidden state entering layer a with the one leaving layer b. "
        "**Click a cell** to add that range of layers to the plan (Collapse tab)."
    )
    analysis = gr.State({})
    with gr.Row(elem_classes=["laco-row"]):
        module = gr.Dropdown(MODULE_ORDER, value=None, label="Parameters of", scale=1)
        metric = gr.Radio(METRICS, value="cosine", label="Representation metric", scale=2)
        analyze_btn = gr.Button("Analyze", variant="primary", scale=1, min_width=100)
    hint = gr.Markdown("", elem_id="sim-hint")
    read_line = gr.Markdown("", elem_id="sim-reading")
    with gr.Row(equal_height=True, elem_classes=["laco-row"]):
        param_plot = gr.Plot(show_label=False, elem_id=PARAM_PLOT)
        rep_plot = gr.Plot(show_label=False, elem_id=REP_PLOT)
    bridge = ClickBridge([PARAM_PLOT, REP_PLOT])
    adj_plot = gr.Plot(show_label=False, elem_id="sim-adjacent")
    with gr.Row(elem_classes=["laco-row"]):
        with gr.Column(scale=3):
            prompts = gr.Textbox(
                "\n".join(read_prompts()[:DEFAULT_PROMPTS]),
                lines=6,
                max_lines=12,
                label="Calibration prompts (one per line; also used by preview, quick metrics and search)",
            )
        with gr.Column(scale=2), gr.Accordion("Download the matrices (CSV)", open=False):
            csv = gr.File(label="Matrices as CSV", file_count="multiple", interactive=False)

    outputs = [analysis, module, param_plot, rep_plot, adj_plot, csv]
    run = partial(analyze, engine)
    on_load = model.loaded.then(
        run,
        [session, prompts, module, metric],
        outputs,
        concurrency_id=SHORT_GROUP,
        api_visibility="private",
    )
    on_click = analyze_btn.click(
        run,
        [session, prompts, module, metric],
        outputs,
        api_name="analyze",
        concurrency_id=SHORT_GROUP,
    )
    for ev in (on_load, on_click):
        ev.then(read_maps, analysis, read_line, api_visibility="private", queue=False)
    model.loaded.then(
        partial(warm_after_load, engine), [session, prompts], None, api_visibility="private"
    )
    module.input(replot_param, [analysis, module], param_plot, api_visibility="private")
    metric.input(replot_rep, [analysis, metric], rep_plot, api_visibility="private")
    return SimilarityTab(bridge, hint, prompts, analysis, analyzed=[on_load, on_click])
