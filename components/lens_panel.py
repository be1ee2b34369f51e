"""The logit lens on the Compare tab: what each layer would predict, the original beside one of
your models at equal original depth (``laco_core.analysis.lens``), with the merged ranges
marked and KL(original ‖ collapsed) per layer."""

from __future__ import annotations

import html
from functools import partial

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from gradio.events import Dependency as Event
from plotly.subplots import make_subplots

from laco_core.analysis.lens import LensView, logit_lens
from laco_core.runtime.engine import Engine

from .common import SHORT_GROUP, gpu, model_of
from .state import Session

EXAMPLE = "The capital of France is Paris, and the capital of Germany is"


def figure(view: LensView, label: str) -> go.Figure:
    """Top-1 probability per (layer, position), hover: the token; and KL per layer."""
    n, t = len(view.dense), len(view.tokens)
    xs = [f"{i}:{s}" for i, s in enumerate(view.tokens)]

    def grid(rows, at=lambda r: r.layers[1]):
        z = np.full((n, t), np.nan)
        text = np.full((n, t), "", dtype=object)
        for r in rows:
            z[at(r)] = [p for _, p in r.top1]
            text[at(r)] = [html.escape(tok) for tok, _ in r.top1]
        return z, text

    fig = make_subplots(
        1, 3, shared_yaxes=True, column_widths=[0.4, 0.4, 0.2], horizontal_spacing=0.03,
        subplot_titles=("original", label, "KL(original ‖ model)"),
    )  # fmt: skip
    for col, rows in ((1, view.dense), (2, view.collapsed)):
        z, text = grid(rows)
        fig.add_trace(
            go.Heatmap(
                z=z, x=xs, y=list(range(n)), text=text, zmin=0, zmax=1, colorscale="Viridis",
                showscale=col == 1, colorbar={"title": "top-1 p", "x": -0.12},
                hovertemplate="layer %{y} · %{x}<br>predicts %{text} (%{z:.2f})<extra></extra>",
            ),
            1, col,
        )  # fmt: skip
    kl = [k if k is not None else 0 for k in view.kl]
    fig.add_trace(go.Bar(x=kl, y=list(range(n)), orientation="h", marker_color="#c0392b"), 1, 3)
    for lo, hi in view.merged:  # the layers a merge took away: no row of their own
        fig.add_hrect(y0=lo - 0.5, y1=hi - 0.5, col=2, fillcolor="white", opacity=0.5, line_width=0)
    fig.update_yaxes(title_text="original layer", col=1)
    fig.update_layout(height=260 + 16 * n, margin={"l": 60, "r": 10, "t": 40, "b": 80})
    return fig


def summary(view: LensView, label: str) -> str:
    """Where the model parts from the original, in a line or two."""
    known = [(i, k) for i, k in enumerate(view.kl) if k is not None]
    first = next((i for i, k in known if k > 0.01), None)
    last_d, last_c = view.dense[-1].last[0], view.collapsed[-1].last[0]
    parts = f"parts from the original at layer {first}" if first is not None else "matches"
    return (
        f"**{html.escape(label)}** {parts} (KL above 0.01 nats); after the prompt the original "
        f"predicts `{html.escape(last_d[0])}` ({last_d[1]:.2f}), {html.escape(label)} "
        f"`{html.escape(last_c[0])}` ({last_c[1]:.2f}); final-layer KL {known[-1][1]:.3f}."
    )


@gpu
def run_lens(engine: Engine, session: Session, did: str | None, prompt: str):
    """The lens of the original and of the picked model on ``prompt``."""
    did, model, base = model_of(engine, session, did)
    view = logit_lens(base.model, base.tokenizer, prompt, model)
    label = session.get(did).label if session.get(did) else did
    return summary(view, label), figure(view, label)


def build(engine: Engine, session: gr.State, listed: list[Event]) -> None:
    """The lens panel (an accordion) with its model picker following ``listed``."""
    with gr.Accordion("Logit lens: what each layer would predict", open=False):
        gr.Markdown(
            "Each layer's output read through the final norm and the LM head, as if the model "
            "ended there. Your model's layers sit at the original depth where their range "
            "ends; merged-away layers have no row. Where the colours part, and the KL bar "
            "grows, is where the collapse changed the computation."
        )
        with gr.Row(elem_classes=["laco-row"]):
            prompt = gr.Textbox(EXAMPLE, label="Prompt (64 tokens at most)", scale=3)
            with gr.Column(scale=2, min_width=240):
                pick = gr.Dropdown([], allow_custom_value=True, label="Model", elem_id="lens-model")
                run_btn = gr.Button("Read the layers", elem_id="lens-run")
        md = gr.Markdown("", elem_id="lens-summary")
        plot = gr.Plot(show_label=False, elem_id="lens-plot")
    for ev in listed:
        ev.then(
            lambda s: gr.Dropdown(choices=s.choices(), value=s.current),
            session,
            pick,
            api_visibility="private",
        )
    run_btn.click(
        partial(run_lens, engine),
        [session, pick, prompt],
        [md, plot],
        api_name="logit_lens",
        concurrency_id=SHORT_GROUP,
    )
