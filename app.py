"""LaCo Explorer: a Gradio app over laco_core. This file only assembles the tabs and launches.

Run ``python app.py`` (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).
"""

from __future__ import annotations

import os

import gradio as gr

from components import (
    collapse_tab,
    compare_tab,
    evaluate_tab,
    export_tab,
    limits_panel,
    logs,
    model_tab,
    page_memory,
    session_panel,
    similarity_tab,
    style,
)
from components.common import LONG_GROUP, SHORT_GROUP
from components.state import Session
from components.widgets import PlotResizer
from laco_core.runtime.engine import Engine

TITLE = "LaCo Explorer"
INTRO = """
# LaCo Explorer
Explore **layer collapse** (LaCo, Yang et al. 2024, [arXiv 2402.11187](https://arxiv.org/abs/2402.11187))
on a real language model: see which layers are alike, merge runs of them into one, and compare,
evaluate and export the smaller model. Work left to right: **Model → Similarity → Collapse →
Compare → Evaluate → Export** — or press **Best collapse** on the Collapse tab. Your models stay
in this browser across reloads.
"""

CSS = """
.laco-hidden { display: none !important; }
.laco-answer { min-height: 8em; padding: 10px 12px; border-radius: 8px; white-space: pre-wrap;
  background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary);
  font-size: 0.95em; line-height: 1.45; }
.laco-diverge { background: #ffd6a5; color: inherit; border-radius: 3px; padding: 0 1px; }
.laco-panel { border-radius: 10px; }
.laco-drag-box { z-index: 10; }
footer { display: none !important; }
"""
# Requests of each concurrency group served at once. Short requests are brief but many: four
# at once keeps a 1 s request from waiting behind a streaming compare. Long jobs share the
# cores: two at once (and one per session, enforced by the engine).
CONCURRENCY = {SHORT_GROUP: 4, LONG_GROUP: 2}
# Requests waiting at most; beyond, a visitor is told the queue is full instead of waiting on.
QUEUE_SIZE = 64
# Gradio's copies of files sent to browsers (zips, CSVs): swept every 10 min, kept 1 h.
DELETE_CACHE = (600, 3600)


def build_app(engine: Engine) -> gr.Blocks:
    """The whole UI over one shared engine; per-user state is a ``Session`` in ``gr.State``.

    Args:
        engine: Owner of every model and cache.
    """
    with gr.Blocks(title=TITLE, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        session = gr.State(Session())
        work = session_panel.build(engine, session)
        PlotResizer()
        restored = session_panel.restore_on_load(demo, work, session)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("1 · Model", id="model") as t1:
                model = model_tab.build(engine, session, restored)
                limits_panel.build(engine)
            with gr.Tab("2 · Similarity", id="similarity") as t2:
                sim = similarity_tab.build(engine, session, model)
            with gr.Tab("3 · Collapse", id="collapse") as t3:
                collapse = collapse_tab.build(engine, session, model, sim)
            # a restored session or a loaded file lists its models wherever builds do
            listed = [*collapse.built, restored, work.loaded]
            with gr.Tab("4 · Compare", id="compare") as t4:
                prompt = compare_tab.build(engine, session, listed)
            with gr.Tab("5 · Evaluate", id="evaluate") as t5:
                evaluate = evaluate_tab.build(engine, session, listed)
            with gr.Tab("6 · Export", id="export") as t6:
                export_tab.build(engine, session, listed)
        items = dict(zip(page_memory.TABS, (t1, t2, t3, t4, t5, t6), strict=True))
        page_memory.wire(session, work, model, collapse, tabs, items, prompt)
        session_panel.keep_after([model.loaded, *collapse.built, *evaluate.changed], work, session)
    return demo


def configure(demo: gr.Blocks) -> gr.Blocks:
    """Queue with separate concurrency groups: quick requests (preview, analysis, compare,
    evaluate) never wait behind long jobs (searches, heals, baselines, exports)."""
    demo.queue(default_concurrency_limit=2, max_size=QUEUE_SIZE)
    for fn in demo.fns.values():
        if fn.concurrency_id in CONCURRENCY:
            fn.concurrency_limit = CONCURRENCY[fn.concurrency_id]
    return demo


def launch_kwargs(engine: Engine | None = None) -> dict:
    """Theme and CSS belong in ``launch()`` in Gradio 6; uploads are capped by the limits."""
    kwargs = {"theme": gr.themes.Soft(primary_hue="indigo"), "css": CSS + style.CSS}
    if engine is not None:
        kwargs["max_file_size"] = engine.limits.upload_bytes
    return kwargs


def main() -> None:
    """Create the engine, preload the default model, serve."""
    logs.quiet()
    engine = Engine()  # budget: LACO_MEMORY_GB, else 60 % of this machine's memory
    engine.load("default")  # first visitors should not wait for it
    similarity_tab.precompute(engine)  # nor for the heatmaps
    demo = build_app(engine)
    configure(demo)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(engine),
    )


if __name__ == "__main__":
    main()
