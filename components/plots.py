"""Figures for the app: matrices and DataFrames in, Plotly figures out. No model work here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

_LAYOUT = dict(
    template="plotly_white",
    margin=dict(l=60, r=20, t=50, b=50),
    font=dict(size=12),
    height=460,
)
_MERGE_COLOURS = ["#e4572e", "#17bebb", "#ffc914", "#76b041", "#6a4c93", "#f28482", "#2e86ab"]


def _array(matrix) -> np.ndarray:
    if isinstance(matrix, pd.DataFrame):
        return matrix.to_numpy(dtype=float)
    if hasattr(matrix, "detach"):
        return matrix.detach().float().cpu().numpy()
    return np.asarray(matrix, dtype=float)


def heatmap(
    matrix,
    title: str,
    axis_title: str = "layer",
    zlabel: str = "similarity",
    colorscale: str = "Viridis",
    off_diagonal_scale: bool = False,
) -> go.Figure:
    """An all-pairs matrix with integer axes (index = layer or hidden state), origin top-left.

    Clicking a cell gives ``x``/``y`` = the indices, which the click bridge sends to Python.

    Args:
        off_diagonal_scale: Fit the colour range to the off-diagonal cells. Weight cosines of
            different layers are small next to the diagonal's 1, which would otherwise
            flatten every off-diagonal difference into one colour.
    """
    z = _array(matrix)
    zmin = zmax = None
    if off_diagonal_scale and z.shape[0] > 1:
        off = z[~np.eye(z.shape[0], dtype=bool)]
        zmin, zmax = float(off.min()), float(off.max())
    idx = list(range(z.shape[0]))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=idx,
            y=idx,
            zmin=zmin,
            zmax=zmax,
            colorscale=colorscale,
            colorbar=dict(title=zlabel),
            hovertemplate=f"{axis_title} %{{y}} × {axis_title} %{{x}}<br>{zlabel} %{{z:.4f}}<extra></extra>",
        )
    )
    fig.update_layout(**_LAYOUT, title=title)
    fig.update_xaxes(title=axis_title, dtick=max(1, len(idx) // 15), constrain="domain")
    fig.update_yaxes(
        title=axis_title, autorange="reversed", dtick=max(1, len(idx) // 15), scaleanchor="x"
    )
    return fig


def influence_bar(values, title: str = "Block Influence (1 − cos(h_in, h_out))") -> go.Figure:
    """One bar per layer: how much each layer changes the hidden state (low = removable)."""
    v = _array(values)
    fig = go.Figure(
        go.Bar(
            x=list(range(len(v))),
            y=v,
            marker_color="#2e86ab",
            hovertemplate="layer %{x}<br>BI %{y:.4f}<extra></extra>",
        )
    )
    fig.update_layout(**_LAYOUT, title=title)
    fig.update_xaxes(title="layer", dtick=max(1, len(v) // 15))
    fig.update_yaxes(title="block influence")
    return fig


def adjacent_chart(param_matrix, rep_matrix=None) -> go.Figure:
    """Similarity of layer i and i+1, read off the superdiagonals of the all-pairs matrices:
    parameters (cosine of layers i and i+1's weights) and representations (cosine of the
    hidden states entering and leaving layer i)."""
    fig = go.Figure()
    p = np.diag(_array(param_matrix), 1)
    fig.add_trace(
        go.Scatter(
            x=list(range(len(p))),
            y=p,
            mode="lines+markers",
            name="parameters (layer i vs i+1)",
            hovertemplate="layers %{x}–%{customdata}<br>%{y:.4f}<extra></extra>",
            customdata=[i + 1 for i in range(len(p))],
            yaxis="y2",  # weight cosines are ~0.01–0.1, hidden-state ones ~0.9: own scales
        )
    )
    if rep_matrix is not None:
        r = np.diag(_array(rep_matrix), 1)  # cos(h_i, h_{i+1}): across layer i
        fig.add_trace(
            go.Scatter(
                x=list(range(len(r))),
                y=r,
                mode="lines+markers",
                name="representations (in vs out of layer i)",
                hovertemplate="layer %{x}<br>%{y:.4f}<extra></extra>",
            )
        )
    fig.update_layout(
        **{**_LAYOUT, "height": 340},
        title="Adjacent-layer similarity",
        legend=dict(orientation="h", y=-0.25),
        yaxis=dict(title="representation cosine"),
        yaxis2=dict(title="parameter cosine", overlaying="y", side="right", showgrid=False),
    )
    fig.update_xaxes(title="layer i")
    return fig


def strip_diagram(groups: Sequence[Sequence[int]], num_layers: int) -> go.Figure:
    """Which original layers (top row) become which layer of the collapsed model (bottom row).

    Args:
        groups: For every layer of the collapsed model, the inclusive range of original layers
            it stands for (``merge.layer_groups``).
        num_layers: Layers of the original model.
    """
    fig = go.Figure()
    colour_of: dict[int, str] = {}
    k = 0
    for new, (lo, hi) in enumerate(groups):
        colour = "#b8c4d6"
        if hi > lo:
            colour = _MERGE_COLOURS[k % len(_MERGE_COLOURS)]
            k += 1
        for old in range(lo, hi + 1):
            colour_of[old] = colour
            fig.add_trace(
                go.Scatter(
                    x=[old, new],
                    y=[1, 0],
                    mode="lines",
                    line=dict(color=colour, width=2 if hi > lo else 1),
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
    fig.add_trace(
        go.Scatter(
            x=list(range(num_layers)),
            y=[1] * num_layers,
            mode="markers+text",
            marker=dict(
                size=16,
                symbol="square",
                color=[colour_of.get(i, "#b8c4d6") for i in range(num_layers)],
            ),
            text=[str(i) for i in range(num_layers)],
            textposition="top center",
            showlegend=False,
            hovertemplate="original layer %{x}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=list(range(len(groups))),
            y=[0] * len(groups),
            mode="markers+text",
            marker=dict(
                size=16,
                symbol="square",
                color=[colour_of.get(lo, "#b8c4d6") if hi > lo else "#b8c4d6" for lo, hi in groups],
            ),
            text=[str(i) for i in range(len(groups))],
            textposition="bottom center",
            showlegend=False,
            customdata=[f"{lo}–{hi}" if hi > lo else str(lo) for lo, hi in groups],
            hovertemplate="new layer %{x} ← original %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        **{**_LAYOUT, "height": 220, "margin": dict(l=90, r=20, t=36, b=30)},
        title=f"{num_layers} layers → {len(groups)} layers",
    )
    fig.update_xaxes(visible=False, range=[-1, num_layers])
    fig.update_yaxes(
        range=[-0.45, 1.45],
        tickvals=[0, 1],
        ticktext=["collapsed", "original"],
        showgrid=False,
        zeroline=False,
    )
    return fig


def params_vs_ppl(table: pd.DataFrame, dense_ppl: float | None = None) -> go.Figure:
    """Parameters removed (%) against perplexity for every evaluated model of the session."""
    fig = go.Figure()
    if not table.empty and "ppl" in table and "params_removed_%" in table:
        t = table.dropna(subset=["ppl"])
        fig.add_trace(
            go.Scatter(
                x=t["params_removed_%"],
                y=t["ppl"],
                mode="markers+text",
                text=t["id"],
                textposition="middle left",
                marker=dict(size=11),
                name="this session",
                hovertemplate="%{text}<br>removed %{x:.1f}%<br>ppl %{y:.2f}<extra></extra>",
            )
        )
    if dense_ppl is not None:
        fig.add_trace(
            go.Scatter(
                x=[0],
                y=[dense_ppl],
                mode="markers",
                marker=dict(size=13, symbol="star"),
                name="original",
            )
        )
    fig.update_layout(**{**_LAYOUT, "height": 380}, title="Parameters removed vs perplexity")
    fig.update_xaxes(title="parameters removed (%)")
    fig.update_yaxes(title="perplexity", type="log")
    return fig


def baselines_chart(table: pd.DataFrame) -> go.Figure:
    """Perplexity per method across target ratios (``comparison.compare_all`` output)."""
    fig = go.Figure()
    if not table.empty:
        x = "params_removed" if "params_removed" in table else "target_ratio"
        for (method, healed), t in table.groupby(
            ["method", "healed"] if "healed" in table else ["method", "method"]
        ):
            name = f"{method}{' + LoRA' if healed is True else ''}"
            t = t.sort_values(x)
            fig.add_trace(go.Scatter(x=t[x], y=t["ppl"], mode="lines+markers", name=name))
    fig.update_layout(
        **{**_LAYOUT, "height": 400}, title="Baselines: parameters removed vs perplexity"
    )
    fig.update_xaxes(title="parameters removed")
    fig.update_yaxes(title="perplexity", type="log")
    return fig


def loss_curve(losses: Sequence[float]) -> go.Figure:
    fig = go.Figure(go.Scatter(y=list(losses), mode="lines"))
    fig.update_layout(**{**_LAYOUT, "height": 300}, title="LoRA loss")
    return fig
