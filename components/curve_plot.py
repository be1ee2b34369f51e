"""The size–quality curve of a walking search (``QualityCurve.to_dict()`` in, a Plotly figure
out), in ``plots``' style. No model work here."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from .plots import _LAYOUT


def _refit(point: dict) -> float:
    return point.get("ppl_ratio_refit") or 0.0


def size_quality(
    curve: dict | None,
    target: int | None = None,
    budget: float | None = None,
    built: Sequence | None = None,
    cliff: float | None = None,
) -> go.Figure:
    """A walking search's size–quality curve (``QualityCurve.to_dict()``): layers removed
    against validation perplexity ÷ dense (log), as searched and after the refit, from the
    dense model (0, 1); the knee, the budget, the size target and the built plan marked."""
    points = (curve or {}).get("points", [])
    fig = go.Figure()
    xs = [0] + [p["layers_removed"] for p in points]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[1.0] + [p["ppl_ratio"] for p in points],
            mode="lines+markers",
            name="searched plan",
            line=dict(color="#2e86ab"),
            hovertemplate="%{x} layers removed<br>perplexity ×%{y:.3f}<extra>searched</extra>",
        )
    )
    refit = [p for p in points if p.get("ppl_ratio_refit") is not None]
    if refit:
        fig.add_trace(
            go.Scatter(
                x=[p["layers_removed"] for p in refit],
                y=[p["ppl_ratio_refit"] for p in refit],
                mode="markers",
                name="after refit",
                marker=dict(color="#e4572e", size=10, symbol="diamond"),
                hovertemplate="%{x} layers removed<br>perplexity ×%{y:.3f}<extra>refit</extra>",
            )
        )
    mine = [p for p in points if built is not None and p["plan"] == [list(r) for r in built]]
    if mine:
        fig.add_trace(
            go.Scatter(
                x=[mine[-1]["layers_removed"]],
                y=[_refit(mine[-1]) or mine[-1]["ppl_ratio"]],
                mode="markers",
                name="built",
                marker=dict(color="#111", size=18, symbol="circle-open", line=dict(width=2)),
                hovertemplate="built: %{x} layers removed, ×%{y:.3f}<extra></extra>",
            )
        )
    knee = (curve or {}).get("knee")
    if knee is not None:
        fig.add_vline(x=knee, line=dict(color="#76b041", dash="dot"), annotation_text="knee")
    if target:
        fig.add_vline(x=target, line=dict(color="#6a4c93", dash="dash"), annotation_text="target")
    budget = budget or (curve or {}).get("max_ppl_ratio")
    if budget:
        fig.add_hline(y=budget, line=dict(color="#6a4c93", dash="dash"), annotation_text="budget")
    if cliff is not None and any(max(p["ppl_ratio"], _refit(p)) > cliff for p in points):
        fig.add_hline(
            y=cliff, line=dict(color="#c00", width=1), annotation_text=f"{cliff:g}× cliff"
        )
    title = "Size–quality curve" + ("" if points else ": drawn after the first accepted step")
    fig.update_layout(
        **{**_LAYOUT, "height": 320, "margin": dict(l=60, r=20, t=40, b=40)},
        title=dict(text=title, font=dict(size=13)),
        legend=dict(orientation="h", y=-0.25),
    )
    fig.update_xaxes(
        title="layers removed", range=[-0.3, max(xs + [target or 0, 1]) + 0.5], dtick=1
    )
    fig.update_yaxes(title="validation perplexity ÷ dense (log)", type="log")
    return fig
