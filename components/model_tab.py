"""Model tab: pick a spec, dtype and device; load it; show what was loaded."""

from __future__ import annotations

import logging
from functools import partial

import gradio as gr

from laco_core.errors import LacoError
from laco_core.loading.models import DTYPES, EMBEDDED
from laco_core.runtime.engine import Engine

from .common import PROGRESS, SHORT_GROUP, fmt_params, gpu
from .handoff import Fanout, ModelTab
from .state import Session

log = logging.getLogger("laco.app")
SPEC_CHOICES = [
    *EMBEDDED,
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
]


def describe_md(info: dict) -> str:
    """Human summary of ``LoadedModel.describe()``."""
    return (
        f"### ✓ {info['architecture']} — {info['layers']} layers, {fmt_params(info['params'])} parameters\n"
        f"`{info['spec']}` · {info['dtype']} · {info['device']} · hidden {info['hidden_size']} · "
        f"loaded in {info['load_seconds']:.2f} s  \n<small>source: {info['source']}</small>"
    )


@gpu
def load_model(
    engine: Engine,
    spec: str,
    dtype: str,
    device: str,
    session: Session,
    progress: gr.Progress = PROGRESS,
) -> tuple[Session, str, dict]:
    """Load (or fetch from the engine cache) a base model and make it this session's base."""
    progress(0.1, desc=f"Loading {spec or 'default'}…")
    loaded = engine.load(spec or "default", dtype or "auto", device or "auto")
    if (loaded.spec, dtype, device) != (session.spec, session.dtype, session.device):
        session.current = None  # builds of another base stay listed but are not picked
    session.spec, session.dtype, session.device = loaded.spec, dtype or "auto", device or "auto"
    session.num_layers = loaded.num_layers
    info = loaded.describe()
    return session, describe_md(info), info


@gpu
def load_session_model(engine: Engine, session: Session, progress: gr.Progress = PROGRESS):
    """Page load: the session's own base model (a restored session may use another one).

    A base that no longer loads (e.g. a Hub id while offline) falls back to the default.
    """
    note = ""
    try:
        loaded = engine.load(session.spec or "default", session.dtype, session.device)
    except LacoError as e:
        log.info("user error in load_session_model: %s", e)
        note = (
            f"  \n<small>⚠ `{session.spec}` did not load ({e}); the default model is used.</small>"
        )
        loaded = engine.load("default")
        session.spec, session.dtype, session.device = "default", "auto", "auto"
    session.num_layers = loaded.num_layers
    info = loaded.describe()
    return (
        session,
        describe_md(info) + note,
        info,
        gr.Dropdown(value=session.spec),
        gr.Dropdown(value=session.dtype),
        gr.Dropdown(value=session.device),
    )


def build(engine: Engine, session: gr.State, start) -> ModelTab:
    """Build the Model tab; later tabs chain on its ``loaded``.

    Args:
        start: The page-load event (after the session was restored) that loads the session's
            base model.
    """
    embedded = "; ".join(f"**{m.spec}** is {m.name} ({m.note})" for m in EMBEDDED.values())
    gr.Markdown(
        f"Pick a causal LM. Embedded, offline: {embedded}; **default** is loaded when the app "
        "starts. Any Hub id of a supported architecture (Llama, Mistral, Qwen2/3, Gemma2/3, "
        "Phi-3), a local `save_pretrained` folder or a `.gguf` file works."
    )
    with gr.Row(elem_classes=["laco-row"]):
        spec = gr.Dropdown(
            SPEC_CHOICES,
            value="default",
            label="Model",
            allow_custom_value=True,
            scale=3,
            elem_id="model-spec",
        )
        dtype = gr.Dropdown(["auto", *DTYPES], value="auto", label="dtype", scale=1)
        device = gr.Dropdown(["auto", "cpu", "cuda", "mps"], value="auto", label="Device", scale=1)
        load_btn = gr.Button(
            "Load", variant="primary", scale=1, min_width=100, elem_id="model-load"
        )
    summary = gr.Markdown("Loading the default model…", elem_id="model-summary")
    with gr.Accordion("Details", open=False):
        info = gr.JSON(label="describe()")

    on_start = start.then(
        partial(load_session_model, engine),
        session,
        [session, summary, info, spec, dtype, device],
        concurrency_id=SHORT_GROUP,
        api_visibility="private",
    )
    on_click = load_btn.click(
        partial(load_model, engine),
        inputs=[spec, dtype, device, session],
        outputs=[session, summary, info],
        api_name="load_model",
        concurrency_id=SHORT_GROUP,
    )
    loaded = Fanout([on_start, on_click])
    return ModelTab(loaded)
