"""Collapse tab: pick ranges (heatmap click, range slider, typed), a merge method, preview the
plan live, build the collapsed model and see quick metrics; the Auto panel runs the LaCo search.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from laco_core.engine import Engine
from laco_core.errors import LacoError
from laco_core.evaluate import quick_metrics
from laco_core.pipeline import read_recipe
from laco_core.plan import layer_groups, parse_ranges, validate_ranges
from laco_core.recipe import RECIPE_FILE, TENSORS_FILE, TextSource
from laco_core.registry import REGISTRY
from laco_core.search.config import SearchConfig
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.search import SearchStep

from . import params_ui, plots
from .common import (
    LONG_GROUP,
    PROGRESS,
    SHORT_GROUP,
    base_of,
    fmt_params,
    gpu,
    remember,
    user_errors,
)
from .similarity_tab import proposed_range
from .state import Session
from .widgets import RangeSlider

METHOD_PARAMS = REGISTRY.method_params()
# the method-parameter controls, in the order their values reach ``build_collapse``
PARAM_NAMES = list(dict.fromkeys(d.name for defs in METHOD_PARAMS.values() for d in defs if d.cli))

METHOD_NOTES = {
    "official": "What the released LaCo code actually computes — in effect a layer drop that "
    "keeps the first layer's norms. Works well on this model.",
    "rdsc": "The paper's Eq. 1 (Reserving-Differences-while-Seeking-Common): θ* = θ_lo + Σ(θ_d − θ_lo). "
    "As printed, it **destroys** this model (similarity ≈ 0) — shown for honesty.",
    "average": "Plain mean of the group's weights (a common merging baseline).",
    "drop": "Keep layer lo, delete the rest of the range (ShortGPT-style layer removal).",
    "drop_linear": "Fitted on the bundled training text when you collapse (seconds per range): "
    "a linear map after layer lo's MLP stands in for the removed layers (ReplaceMe).",
    "drop_lsq": "Fitted on the bundled training text when you collapse (seconds per range): "
    "layer lo's MLP down projection is refitted to stand in for the removed layers. The best "
    "training-free choice on this model.",
}


def method_md(method: str) -> str:
    m = REGISTRY.methods.get(method)
    if m is None:
        return ""
    note = METHOD_NOTES.get(method, "")
    return f"**{m.name}** — {m.summary}  \n`{m.formula}`  \n{note}"


def preview_md(p: dict) -> str:
    """The numbers of ``search.preview`` as a small before/after table."""
    removed = 100 * (1 - p["params_after"] / p["params_before"])
    return (
        f"| | before | after |\n|---|---:|---:|\n"
        f"| layers | {p['layers_before']} | **{p['layers_after']}** |\n"
        f"| parameters | {fmt_params(p['params_before'])} | **{fmt_params(p['params_after'])}** |\n\n"
        f"**{removed:.1f} %** of the parameters removed.  \n"
        f"Estimate on the calibration prompts: final-state cosine **{p['cosine']:.4f}**, "
        f"KL **{p['kl']:.4f}** <small>({p['seconds']:.2f} s)</small>"
        + (
            f"  \n<small>Estimated as a plain {p['estimated_as']}: the fit is made when you "
            "build, and usually does better.</small>"
            if p.get("estimated_as")
            else ""
        )
    )


@user_errors
def add_range(value: list[int], plan_text: str) -> str:
    """Append the slider's range to the typed plan (kept sorted)."""
    lo, hi = sorted(int(v) for v in value)
    ranges = parse_ranges(plan_text or "") + [(lo, hi)]
    return ", ".join(f"{a}-{b}" for a, b in sorted(set(ranges)))


def propose(session: Session, evt: gr.SelectData) -> tuple[RangeSlider, str, str]:
    """A heatmap click proposes a range: it lands on the slider, ready to add."""
    plot = (evt._data or {}).get("plot", "")
    lo, hi = proposed_range(evt.index, plot)
    hi = min(hi, max(session.num_layers - 1, lo + 1))
    msg = (
        f"Proposed layers **{lo}–{hi}** (cell {evt.index[0]}, {evt.index[1]}; value "
        f"{evt.value:.3f}) — open **Collapse** and press **Add range**."
    )
    return RangeSlider(value=[lo, hi], maximum=max(session.num_layers - 1, 1)), msg, msg


def reset_slider(session: Session) -> RangeSlider:
    top = max(session.num_layers - 1, 1)
    return RangeSlider(value=[max(top - 4, 0), max(top - 1, 1)], maximum=top)


def prompt_list(prompts_text: str, limit: int | None = None) -> list[str]:
    prompts = [s.strip() for s in (prompts_text or "").splitlines() if s.strip()][:limit]
    if not prompts:
        raise LacoError("Add at least one calibration prompt (Similarity tab).")
    return prompts


@gpu
def preview(engine: Engine, session: Session, plan_text: str, method: str, prompts_text: str):
    """Live preview of a plan: before/after numbers, strip diagram, quick similarity estimate."""
    base = base_of(engine, session)
    if not (plan_text or "").strip():
        groups = [(i, i) for i in range(base.num_layers)]
        return "Add a range to see the plan.", plots.strip_diagram(groups, base.num_layers)
    ranges = validate_ranges(parse_ranges(plan_text), base.num_layers)
    est = engine.preview(base, prompt_list(prompts_text, 8), ranges, method)
    groups = layer_groups(ranges, base.num_layers)
    return preview_md(est), plots.strip_diagram(groups, base.num_layers)


def building_note() -> tuple[str, gr.Button]:
    return "Building the collapsed model…", gr.Button(interactive=False)


@gpu
def build_collapse(
    engine: Engine,
    session: Session,
    plan_text: str,
    method: str,
    prompts_text: str,
    *param_values,
    progress: gr.Progress = PROGRESS,
):
    """Build the collapsed model (untouched layers shared) and measure quick metrics.

    ``param_values`` are the method-parameter controls' values, in ``METHOD_PARAMS`` order.
    """
    base = base_of(engine, session)
    ranges = validate_ranges(parse_ranges(plan_text or ""), base.num_layers)
    params = REGISTRY.method(method).check(
        params_ui.values(METHOD_PARAMS, PARAM_NAMES, method, param_values) if param_values else {}
    )
    progress(0.2, desc="Merging layers…")
    step = CollapseStep([list(r) for r in ranges], method, params)
    did = engine.run(
        base, [step], session.token(), progress=lambda f, d: progress(0.2 + 0.5 * f, desc=d)
    )
    model, base = engine.model(did, session.token())
    progress(0.75, desc="Quick metrics on the calibration prompts…")
    prompts = [s.strip() for s in (prompts_text or "").splitlines() if s.strip()]
    metrics = quick_metrics(model, base.model, base.tokenizer, prompts) if prompts else {}
    metrics = {k: round(float(v), 5) for k, v in metrics.items()}
    entry = remember(engine, session, did, metrics)
    return (
        session,
        result_md(did, entry.info, metrics),
        {"id": did, "recipe": entry.recipe, "metrics": metrics},
        gr.Button(interactive=True),
    )


@gpu
def load_recipe(engine: Engine, session: Session, files, progress: gr.Progress = PROGRESS):
    """Register a recipe (``laco_recipe.json``, with its ``laco_recipe.safetensors`` when the
    steps fitted tensors) and build its model; it joins the session like any build."""
    paths = (
        [Path(f) for f in (files or [])]
        if isinstance(files, list)
        else [Path(files)]
        if files
        else []
    )
    if not paths:
        raise LacoError("Upload a laco_recipe.json (and its laco_recipe.safetensors, if any).")
    for p in paths:
        engine.limits.check("upload_bytes", p.stat().st_size, f"The upload {p.name}")
    folder = Path(tempfile.mkdtemp(prefix="laco-recipe-"))
    for p in paths:
        name = (
            RECIPE_FILE
            if p.suffix == ".json"
            else TENSORS_FILE
            if p.suffix == ".safetensors"
            else None
        )
        if name is None:
            raise LacoError(
                f"'{p.name}' is neither a recipe (.json) nor its tensors (.safetensors)."
            )
        shutil.copy(p, folder / name)
    if not (folder / RECIPE_FILE).exists():
        raise LacoError("The upload holds no .json recipe.")
    recipe = read_recipe(folder)
    progress(0.2, desc=f"Rebuilding {recipe.describe()}…")
    did = engine.add_recipe(recipe, session.token())
    engine.model(did, session.token())
    entry = remember(engine, session, did)
    info = entry.info
    md = (
        f"### ✓ Loaded `{did}` — {recipe.describe()}  \n"
        f"{info.get('layers_before', '?')} → {info.get('layers_after', '?')} layers on "
        f"`{recipe.base.spec}`; it is now selected in Compare, Evaluate and Export."
    )
    return session, md


def result_md(did: str, info: dict, metrics: dict) -> str:
    removed = 100 * (1 - info["params_after"] / info["params_before"])
    md = (
        f"### ✓ Built `{did}` — {info['layers_before']} → {info['layers_after']} layers, "
        f"{removed:.1f} % parameters removed\n"
    )
    if metrics:
        md += (
            f"KL(original‖collapsed) **{metrics['kl']:.4f}** · top-1 agreement "
            f"**{100 * metrics['top1_agreement']:.1f} %** · final-state cosine "
            f"**{metrics['final_cosine']:.4f}**  \n"
        )
    return md + "It is now selected in **Compare**, **Evaluate** and **Export**."


def _cell(v):
    if isinstance(v, float):
        return round(v, 4)
    return v if isinstance(v, (int, str, bool)) else str(v)


def _log_frame(events: list[dict]) -> pd.DataFrame:
    """The search's callback events as a table, newest last."""
    rows = [{k: _cell(v) for k, v in e.items()} for e in events]
    return pd.DataFrame(rows)


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
    method: str,
    objective: str,
    strategy: str,
    target_layers: int,
    progress: gr.Progress = PROGRESS,
):
    """A collapse search (LaCo Algorithm 1 and others) with a live decision log.

    The search runs on a worker thread; closing this generator (a cancel, a closed tab) stops
    it at the next layer it would run.
    """
    base = base_of(engine, session)
    prompts = prompt_list(prompts_text)
    cfg = SearchConfig(
        merge_count=int(merge_count),
        low=int(low),
        high=int(high) or None,
        interval=int(interval),
        threshold=float(threshold),
        method=method,
        objective=objective,
        strategy=strategy,
        target_layers=int(target_layers) or None,
    ).validate(base.num_layers)
    step = SearchStep(cfg, TextSource.of(prompts, "calibration_prompts"))
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    box: dict = {}
    owner = session.token()

    def work() -> None:  # the search runs here; the generator below streams its log
        try:
            box["id"] = engine.run(base, [step], owner, events=events.put, stop=stop)
        except BaseException as e:  # surfaced in the UI thread below
            box["error"] = e
        finally:
            events.put(None)

    threading.Thread(target=work, daemon=True).start()
    log: list[dict] = []
    try:
        yield session, "Searching…", _log_frame(log), gr.skip()
        while (ev := events.get()) is not None:
            log.append(ev)
            progress(
                min(0.95, len(log) / max(base.num_layers, 1)), desc=f"{len(log)} candidates scored"
            )
            yield session, f"Searching… {len(log)} candidates scored", _log_frame(log), gr.skip()
    finally:
        stop.set()  # a closed generator cancels the search; a finished one is unaffected
    if "error" in box:
        raise box["error"]
    did = box["id"]
    entry = remember(engine, session, did)
    info = entry.info
    plan = ", ".join(f"{lo}-{hi}" for lo, hi in info.get("plan", []))
    groups = layer_groups([tuple(r) for r in info.get("plan", [])], base.num_layers)
    seconds = engine.recipe(did, owner).steps[-1].seconds or 0.0
    md = (
        f"### ✓ Search done in {seconds:.1f} s — `{did}`: {base.num_layers} → "
        f"{len(groups)} layers, accepted {plan or 'nothing'}\nIt is now selected in Compare, "
        "Evaluate and Export."
    )
    yield session, md, _log_frame(log), plots.strip_diagram(groups, base.num_layers)


def build(engine: Engine, session: gr.State, model: dict, sim: dict) -> dict:
    """Build the Collapse tab. Returns handles; ``built`` lists events that add a model."""
    gr.Markdown(
        "Merge runs of consecutive layers into one. Add ranges by **clicking a heatmap cell**, "
        "with the **two-handle slider**, or type them (`20-23, 10-12`; inclusive, 0-based)."
    )
    with gr.Row():
        with gr.Column(scale=3):
            slider = RangeSlider(
                value=[24, 27], maximum=29, label="Layer range", elem_id="range-slider"
            )
            proposal = gr.Markdown("", elem_id="collapse-proposal")
            with gr.Row():
                add_btn = gr.Button("+ Add range", size="sm")
                clear_btn = gr.Button("Clear", size="sm")
            plan = gr.Textbox("", label="Plan (ranges)", placeholder="20-23, 10-12", elem_id="plan")
            method = gr.Radio(list(REGISTRY.methods), value="official", label="Merge method")
            method_info = gr.Markdown(method_md("official"))
            with gr.Row():
                param_controls = params_ui.controls(METHOD_PARAMS, "official")
        with gr.Column(scale=2):
            gr.Markdown("#### Preview")
            preview_box = gr.Markdown("Add a range to see the plan.", elem_id="preview")
    strip = gr.Plot(label="Which layers merge into which", elem_id="strip")
    build_btn = gr.Button("Build collapsed model", variant="primary", elem_id="build")
    result = gr.Markdown("", elem_id="build-result")
    with gr.Accordion("Build details (JSON)", open=False):
        result_json = gr.JSON()

    with gr.Accordion("Load a recipe", open=False):
        gr.Markdown(
            "Any exported `laco_recipe.json` (with its `laco_recipe.safetensors` when it has "
            "one) rebuilds the same model; without the tensors, fitted steps are fitted again."
        )
        recipe_files = gr.File(
            label="Recipe files", file_count="multiple", file_types=[".json", ".safetensors"]
        )
        load_btn = gr.Button("Load recipe", elem_id="load-recipe")
        loaded_md = gr.Markdown("", elem_id="load-result")

    with gr.Accordion("Auto: LaCo search (Algorithm 1)", open=False):
        gr.Markdown(
            "Top-down greedy search of the paper: try merging C layers starting at l (from H−C "
            "down to L); accept when the similarity of the final hidden states with the "
            "original on the calibration prompts stays above T, then jump I layers down."
        )
        with gr.Row():
            a_c = gr.Number(4, label="C: layers per merge", precision=0, minimum=2)
            a_l = gr.Number(1, label="L: lowest layer", precision=0, minimum=0)
            a_h = gr.Number(0, label="H: highest layer (0 = last)", precision=0, minimum=0)
            a_i = gr.Number(2, label="I: min. interval", precision=0, minimum=1)
            a_t = gr.Slider(0.0, 1.0, 0.65, step=0.01, label="T: threshold")
        with gr.Row():
            a_method = gr.Dropdown(list(REGISTRY.methods), value="official", label="Merge method")
            a_obj = gr.Dropdown(list(REGISTRY.objectives), value="cosine", label="Objective")
            a_strategy = gr.Dropdown(list(REGISTRY.strategies), value="paper", label="Strategy")
            a_target = gr.Number(0, label="Target layers (0 = off)", precision=0, minimum=0)
        auto_btn = gr.Button("Run search", variant="primary", elem_id="auto-run")
        auto_md = gr.Markdown("", elem_id="auto-result")
        auto_log = gr.Dataframe(label="Decision log", interactive=False, max_height=300)
        auto_strip = gr.Plot(label="Accepted plan")

    # ---- listeners ----------------------------------------------------------------------
    prompts = sim["prompts"]
    model["loaded"].then(reset_slider, session, slider, api_visibility="private")
    sim["bridge"].select(
        propose, session, [slider, proposal, sim["hint"]], api_visibility="private"
    )
    add_btn.click(add_range, [slider, plan], plan, api_visibility="private")
    clear_btn.click(lambda: "", None, plan, api_visibility="private")
    method.change(method_md, method, method_info, api_visibility="private")
    controls = [param_controls[n] for n in PARAM_NAMES]
    method.change(
        partial(params_ui.visibility, METHOD_PARAMS, PARAM_NAMES),
        method,
        controls,
        api_visibility="private",
    )
    live = partial(preview, engine)
    gr.on(
        [plan.change, method.change],
        live,
        [session, plan, method, prompts],
        [preview_box, strip],
        trigger_mode="always_last",
        concurrency_id=SHORT_GROUP,
        api_visibility="private",
        show_progress="hidden",
    )
    model["loaded"].then(
        live,
        [session, plan, method, prompts],
        [preview_box, strip],
        concurrency_id=SHORT_GROUP,
        api_visibility="private",
        show_progress="hidden",
    )
    built = build_btn.click(
        building_note, None, [result, build_btn], api_visibility="private"
    ).then(
        partial(build_collapse, engine),
        [session, plan, method, prompts, *controls],
        [session, result, result_json, build_btn],
        api_name="collapse",
        concurrency_id=LONG_GROUP,
    )
    built.failure(
        lambda: ("", gr.Button(interactive=True)),
        None,
        [result, build_btn],
        api_visibility="private",
    )
    auto = auto_btn.click(
        partial(run_auto, engine),
        [session, prompts, a_c, a_l, a_h, a_i, a_t, a_method, a_obj, a_strategy, a_target],
        [session, auto_md, auto_log, auto_strip],
        api_name="auto_collapse",
        concurrency_id=LONG_GROUP,
    )
    loaded = load_btn.click(
        partial(load_recipe, engine),
        [session, recipe_files],
        [session, loaded_md],
        api_name="load_recipe",
        concurrency_id=LONG_GROUP,
    )
    return {"plan": plan, "method": method, "slider": slider, "built": [built, auto, loaded]}
