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
# a merged range's colour: warm hues and white, far from viridis (the maps' blue-green-yellow)
MERGE_COLOURS = ["#ff1f5b", "#ffffff", "#ff8c00", "#e040fb", "#ffb3c6", "#c1121f"]


def range_colour(lo: int) -> str:
    """A range's colour, fixed by its first layer: it stays when others come and go."""
    return MERGE_COLOURS[lo % len(MERGE_COLOURS)]


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
    hover: str | None = None,
) -> go.Figure:
    """An all-pairs matrix with integer axes (index = layer), origin top-left, square cells
    (:func:`square_heatmap`). Clicking a cell gives ``x``/``y`` = the indices.

    Args:
        off_diagonal_scale: Fit the colour range to the off-diagonal cells. Weight cosines of
            different layers are small next to the diagonal's 1, which would otherwise
            flatten every off-diagonal difference into one colour (say so in ``zlabel``).
        hover: The hover line (``%{customdata}`` is the range ``min–max`` of the cell).
    """
    z = _array(matrix)
    n = z.shape[0]
    zmin = zmax = None
    if off_diagonal_scale and n > 1:
        off = z[~np.eye(n, dtype=bool)]
        zmin, zmax = float(off.min()), float(off.max())
    idx = list(range(n))
    spans = [[f"{min(a, b)}–{max(a, b)}" for a in idx] for b in idx]
    line = hover or f"{axis_title} %{{y}} × {axis_title} %{{x}}<br>{zlabel} %{{z:.4f}}"
    return square_heatmap(
        z, spans, title, zlabel, line, _LAYOUT, colorscale, (zmin, zmax), (axis_title,) * 2
    )


def square_heatmap(
    z: np.ndarray,
    spans: list[list[str]],
    title: str,
    zlabel: str,
    hover: str,
    layout: dict,
    colorscale: str = "Viridis",
    zrange: tuple[float | None, float | None] = (None, None),
    axis_titles: tuple[str, str] = ("layer", "layer"),
) -> go.Figure:
    """An n×n matrix drawn as square cells with integer axes (index = layer), origin top-left.

    The axes' ranges are fixed to the matrix and both are constrained to their domain, so a
    narrow window shrinks the square instead of stretching an axis; the colour bar sits inside
    the figure's width.

    Args:
        spans: Per cell, the range it stands for (``%{customdata}`` in ``hover``).
        hover: The hover line, without plotly's ``<extra>`` box.
        layout: Template, height, font and the like; title and margin are set here.
        axis_titles: The x axis's and the y axis's.
    """
    n = z.shape[0]
    idx = list(range(n))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=idx,
            y=idx,
            zmin=zrange[0],
            zmax=zrange[1],
            colorscale=colorscale,
            customdata=spans,
            colorbar=dict(title=dict(text=zlabel, side="top"), thickness=12, len=0.9, x=1.02),
            hovertemplate=hover + "<extra></extra>",
        )
    )
    fig.update_layout(
        **{**layout, "margin": dict(l=44, r=10, t=36, b=40)},
        title=dict(text=title, font=dict(size=13), x=0.01, xanchor="left"),
    )
    tick = max(1, n // 10)
    fig.update_xaxes(
        title=axis_titles[0], range=[-0.5, n - 0.5], dtick=tick, constrain="domain", showgrid=False
    )
    fig.update_yaxes(
        title=axis_titles[1],
        range=[n - 0.5, -0.5],
        dtick=tick,
        scaleanchor="x",
        constrain="domain",
        showgrid=False,
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


def _per_layer(values: np.ndarray, name: str, hover: str, **extra) -> go.Scatter:
    """One line with a marker per layer: ``values[i]`` at x = i."""
    return go.Scatter(
        x=list(range(len(values))),
        y=values,
        mode="lines+markers",
        name=name,
        hovertemplate=hover,
        **extra,
    )


def adjacent_chart(param_matrix, rep_matrix=None) -> go.Figure:
    """Similarity of layer i and i+1, read off the superdiagonals of the all-pairs matrices:
    parameters (cosine of layers i and i+1's weights) and representations (cosine of the
    hidden states entering and leaving layer i)."""
    fig = go.Figure()
    p = np.diag(_array(param_matrix), 1)
    fig.add_trace(
        _per_layer(
            p,
            "parameters (layer i vs i+1)",
            "layers %{x}–%{customdata}<br>%{y:.4f}<extra></extra>",
            customdata=[i + 1 for i in range(len(p))],
            yaxis="y2",  # weight cosines are ~0.01–0.1, hidden-state ones ~0.9: own scales
        )
    )
    if rep_matrix is not None:
        r = np.diag(_array(rep_matrix), 1)  # cos(h_i, h_{i+1}): across layer i
        fig.add_trace(
            _per_layer(
                r, "representations (in vs out of layer i)", "layer %{x}<br>%{y:.4f}<extra></extra>"
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


def strip_diagram(
    groups: Sequence[Sequence[int]], num_layers: int, no_attention: Sequence[int] = ()
) -> go.Figure:
    """Which original layers (top row) become which layer of the collapsed model (bottom row).

    Args:
        groups: For every layer of the collapsed model, the inclusive range of original layers
            it stands for (``merge.layer_groups``).
        num_layers: Layers of the original model.
        no_attention: Original layers whose attention sub-block is removed (marked ×).
    """
    fig = go.Figure()
    colour_of: dict[int, str] = {}
    for new, (lo, hi) in enumerate(groups):
        colour = range_colour(lo) if hi > lo else "#b8c4d6"
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
    if no_attention:
        new_of = {lo: k for k, (lo, _) in enumerate(groups)}
        xs = [i for i in no_attention if i in new_of]
        fig.add_trace(
            go.Scatter(
                x=[*xs, *(new_of[i] for i in xs)],
                y=[1] * len(xs) + [0] * len(xs),
                mode="markers",
                marker=dict(size=11, symbol="x-thin", line=dict(width=2, color="#111")),
                showlegend=False,
                hovertemplate="attention removed (the MLP stays)<extra></extra>",
            )
        )
    title = f"{num_layers} layers → {len(groups)} layers"
    if no_attention:
        title += f", {len(no_attention)} without attention (×)"
    fig.update_layout(
        **{**_LAYOUT, "height": 220, "margin": dict(l=90, r=20, t=36, b=30)},
        title=title,
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


def empty_strip(note: str) -> go.Figure:
    """The strip diagram's place, empty, with a note (keeps the page from moving)."""
    fig = go.Figure()
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(**{**_LAYOUT, "height": 220})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def frontier(removed: Sequence[float], ratio: Sequence[float]) -> list[int]:
    """Indices of the Pareto-optimal points (more removed, lower ratio), by share removed.

    A point is on the frontier when no other point removes at least as much with a lower
    or equal ratio (one of the two strictly better).
    """
    order = sorted(range(len(removed)), key=lambda i: (-removed[i], ratio[i]))
    best, keep = float("inf"), []
    for i in order:
        if ratio[i] < best:
            keep.append(i)
            best = ratio[i]
    return sorted(keep, key=lambda i: removed[i])


_KINDS = {
    "original": dict(symbol="star", size=15, color="#111"),
    "your models": dict(symbol="circle", size=11, color="#e4572e"),
    "baselines": dict(symbol="diamond", size=10, color="#2e86ab"),
}


def pareto(points: pd.DataFrame) -> go.Figure:
    """Parameters removed (%) against held-out perplexity ratio (× the original), every model,
    with the frontier of the best trade-offs drawn as a line."""
    fig = go.Figure()
    if not points.empty:
        idx = frontier(list(points["removed"]), list(points["ratio"]))
        f = points.iloc[idx]
        fig.add_trace(
            go.Scatter(
                x=f["removed"],
                y=f["ratio"],
                mode="lines",
                line=dict(color="#999", dash="dash", width=1.5),
                name="frontier",
                hoverinfo="skip",
            )
        )
        for kind, style in _KINDS.items():
            t = points[points["kind"] == kind]
            if t.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=t["removed"],
                    y=t["ratio"],
                    mode="markers",
                    marker=style,
                    name=kind,
                    text=t["label"],
                    hovertemplate="%{text}<br>%{x:.1f} % removed<br>perplexity ×%{y:.2f}<extra></extra>",
                )
            )
    fig.update_layout(
        **{**_LAYOUT, "height": 380},
        title=dict(text="Parameters removed vs held-out perplexity", font=dict(size=13)),
        legend=dict(orientation="h", y=-0.2),
    )
    top = float(points["removed"].max()) if not points.empty else 0.0
    fig.update_xaxes(title="parameters removed (%)", range=[-1, max(40.0, 1.15 * top)])
    fig.update_yaxes(title="perplexity ÷ original's (log)", type="log")
    return fig


def baselines_chart(table: pd.DataFrame) -> go.Figure:
    """Held-out perplexity ratio per method across shares removed (``baselines_frame`` output)."""
    fig = go.Figure()
    x, y = "params removed %", "ppl ratio held-out (×)"
    if not table.empty and x in table and y in table:
        for (method, healed), t in table.groupby(["method", "healed"]):
            if method == "dense":
                continue
            t = t.dropna(subset=[x, y]).sort_values(x)
            name = f"{method}{' + LoRA' if healed is True else ''}"
            fig.add_trace(go.Scatter(x=t[x], y=t[y], mode="lines+markers", name=name))
    fig.update_layout(
        **{**_LAYOUT, "height": 380},
        title=dict(text="Baselines: parameters removed vs perplexity", font=dict(size=13)),
        legend=dict(orientation="h", y=-0.2),
    )
    fig.update_xaxes(title="parameters removed (%)")
    fig.update_yaxes(title="perplexity ÷ original's (log)", type="log")
    return fig
