"""The collapse plan drawn on a similarity heatmap: the figure, what a click or drag means, chips.

Both maps are drawn in ONE numbering, the layers': cell (a, b) of the parameter map compares
the weights of layers a and b; cell (a, b) of the representation map compares the hidden
state entering layer min(a, b) with the one leaving layer max(a, b), i.e. how much the block
a..b changes the hidden state (hidden state k of the raw (L+1)×(L+1) matrix is the output of
layer k−1). A planned range lo..hi is the square lo..hi × lo..hi on either map.

Pure presentation and list logic: matrices and plans in, figures and strings out.
"""

from __future__ import annotations

import hashlib
import html

import numpy as np
import plotly.graph_objects as go

from laco_core.arch.plan import Range, format_plan, parse_ranges, validate_ranges
from laco_core.errors import LacoError

from .plots import range_colour, square_heatmap
from .state import removed_percent

MAPS = ["parameters", "representations"]
# the map the Collapse tab opens on: a merge's damage follows how alike the states entering
# and leaving a range are; the weights of different layers are near-orthogonal on the real
# models (``analysis.reading``) and say little about it
PLAN_MAP = MAPS[1]
MAP_ID = "plan-map"
AXES = ("layer b", "layer a")  # x, y: cell (a, b) is row a, column b
PREVIEWS_KEPT = 200  # per-range estimates kept per session (a few numbers each)


def block_matrix(states: np.ndarray) -> np.ndarray:
    """An (L+1)×(L+1) hidden-state similarity as L×L in layer numbering.

    Cell (a, b) = sim(state min(a, b), state max(a, b) + 1): the state entering layer
    min(a, b) against the state leaving layer max(a, b).
    """
    n = states.shape[0] - 1
    i = np.arange(n)
    return states[np.minimum.outer(i, i), np.maximum.outer(i, i) + 1]


def range_key(spec: str, method: str, prompts: list[str], r: Range) -> str:
    """Key of one range's estimate in the session's store."""
    digest = hashlib.sha1("\x1e".join(prompts).encode("utf-8")).hexdigest()[:10]
    return f"{spec}|{method}|{digest}|{r[0]}-{r[1]}"


def range_summary(p: dict | None) -> str:
    """One range's estimate in a line (hover label, chip)."""
    if not p:
        return "estimating…"
    removed = removed_percent(p)
    return f"−{p['layers_before'] - p['layers_after']} layers ({removed:.1f} % params) · KL {p['kl']:.3f}"


def plan_figure(
    analysis: dict,
    kind: str,
    ranges: list[Range],
    estimates: dict[Range, dict] | None = None,
    attention: list[int] | None = None,
) -> go.Figure:
    """The chosen map with every planned range drawn as a square (hover: its estimate).

    Args:
        analysis: ``engine.analysis`` output (``param``/``rep`` matrices).
        kind: ``parameters`` or ``representations``.
        ranges: The plan (sorted, valid).
        estimates: Per range, the preview of that range alone (``ops.preview`` numbers).
        attention: Layers whose attention sub-block the plan removes (marked × on the
            diagonal).
    """
    estimates = estimates or {}
    if kind == MAPS[1]:
        z = block_matrix(np.asarray(analysis["rep"]["cosine"], dtype=float))
        title = "Representations: cos(input of layer a, output of layer b)"
        zlabel, zmin, zmax = "cosine", None, None
        hover = (
            "merge layers %{customdata}<br>cos(state entering the first, state leaving the "
            "last) %{z:.4f}"
        )
    else:
        z = np.asarray(analysis["param"]["all"], dtype=float)
        title = "Parameters: cosine of layer a's and layer b's weights"
        zlabel = "cosine<br>(diagonal<br>excluded)"
        off = z[~np.eye(z.shape[0], dtype=bool)] if z.shape[0] > 1 else z.ravel()
        zmin, zmax = float(off.min()), float(off.max())
        hover = "layers %{y} × %{x}<br>cosine %{z:.4f}<br>click: merge %{customdata}"
    n = z.shape[0]
    idx = list(range(n))
    spans = [
        [f"{min(a, b)}–{max(a, b) if a != b else min(a + 1, n - 1)}" for a in idx] for b in idx
    ]
    layout = dict(
        template="plotly_white",
        height=470,
        dragmode=False,
        font=dict(size=11),
        hoverlabel=dict(namelength=-1),
    )
    fig = square_heatmap(z, spans, title, zlabel, hover, layout, "Viridis", (zmin, zmax), AXES)
    for lo, hi in sorted(ranges):
        a, b = lo - 0.5, hi + 0.5
        fig.add_trace(
            go.Scatter(
                x=[a, b, b, a, a],
                y=[a, a, b, b, a],
                mode="lines",
                fill="toself",
                fillcolor="rgba(255,255,255,0.08)",
                line=dict(color=range_colour(lo), width=3),
                hoveron="fills",
                hoverinfo="text",
                text=f"planned {lo}–{hi}: {range_summary(estimates.get((lo, hi)))}<br>"
                "click inside to remove",
                name=f"{lo}-{hi}",
                showlegend=False,
            )
        )
    if attention:
        fig.add_trace(
            go.Scatter(
                x=list(attention),
                y=list(attention),
                mode="markers",
                marker=dict(size=12, symbol="x-thin", line=dict(width=3, color="#111")),
                hovertemplate="attention of layer %{x} removed (its MLP stays)<extra></extra>",
                name="attention removed",
                showlegend=False,
            )
        )
    return fig


# ---- gestures -------------------------------------------------------------------------------


def gesture(ranges: list[Range], index: list, num_layers: int) -> tuple[list[Range], str]:
    """What a press at (x0, y0) and release at (x1, y1) do to the plan.

    A click inside a planned square removes that range. Otherwise the cells span a range
    min..max of the four indices (a click on the diagonal: the cell and the next layer); a
    range overlapping planned ones is joined with them.

    Returns:
        The new plan (sorted) and a one-line message.
    """
    x0, y0, x1, y1 = (int(v) for v in index)
    top = max(num_layers - 1, 1)
    if (x0, y0) == (x1, y1):
        for lo, hi in ranges:
            if lo <= x0 <= hi and lo <= y0 <= hi:
                rest = [r for r in ranges if r != (lo, hi)]
                return sorted(rest), f"Removed {lo}–{hi}."
    lo, hi = max(0, min(x0, y0, x1, y1)), min(top, max(x0, y0, x1, y1))
    if hi <= lo:
        lo, hi = (lo, lo + 1) if lo < top else (top - 1, top)
    joined = [r for r in ranges if not (r[1] < lo or r[0] > hi)]
    if joined:
        lo, hi = min([lo, *(r[0] for r in joined)]), max([hi, *(r[1] for r in joined)])
        rest = [r for r in ranges if r not in joined]
        return sorted([*rest, (lo, hi)]), (
            f"Joined {format_plan(joined)} into {lo}–{hi} (ranges cannot overlap)."
        )
    return sorted([*ranges, (lo, hi)]), f"Added {lo}–{hi}."


def remove(ranges: list[Range], which: str) -> tuple[list[Range], str]:
    """Drop the range written ``"lo-hi"`` from the plan."""
    if which.startswith("a"):
        return ranges, ""
    try:
        lo, hi = (int(v) for v in which.split("-"))
    except ValueError:
        return ranges, ""
    rest = [r for r in ranges if r != (lo, hi)]
    return rest, (f"Removed {lo}–{hi}." if len(rest) < len(ranges) else "")


def read_plan(plan_text: str, num_layers: int | None) -> tuple[list[Range], str]:
    """The typed plan as valid ranges and no error, or ``[]`` and the error (one line)."""
    if not (plan_text or "").strip():
        return [], ""
    try:
        return validate_ranges(parse_ranges(plan_text), num_layers or None), ""
    except LacoError as e:
        return [], str(e)


def read_full(
    plan_text: str, attn_text: str, num_layers: int | None
) -> tuple[list[Range], list[int], str]:
    """The plan's ranges and attention removals, and the first error (one line)."""
    ranges, error = read_plan(plan_text, num_layers)
    if error:
        return ranges, [], error
    attention, error = read_attention(attn_text, num_layers or 0, ranges)
    return ranges, attention, error


def read_attention(text: str, num_layers: int, ranges: list[Range]) -> tuple[list[int], str]:
    """Layers whose attention sub-block to remove (``"12, 14"``), or ``[]`` and the error.

    A layer inside a merged range is refused: the range's layers become one layer.
    """
    items = [t for t in (text or "").replace(";", ",").replace(" ", ",").split(",") if t]
    try:
        layers = sorted({int(t.lstrip("aA")) for t in items})
    except ValueError:
        return [], f"Cannot read the attention layers '{text}': write them as 12, 14."
    for i in layers:
        if not 0 <= i < max(num_layers, 1):
            return [], f"Layer {i} is outside the model's layers 0-{num_layers - 1}."
        inside = next(((lo, hi) for lo, hi in ranges if lo <= i <= hi), None)
        if inside:
            return [], (
                f"Layer {i} is in the merged range {inside[0]}-{inside[1]}: remove attention "
                "outside the ranges."
            )
    return layers, ""


def chips_html(
    ranges: list[Range],
    estimates: dict[Range, dict] | None = None,
    attention: list[int] | None = None,
) -> str:
    """Every planned range as a chip (its colour on the map, its estimate, a × to remove), and
    every attention removal (``a12``)."""
    attention = attention or []
    if not ranges and not attention:
        return (
            "<div class='laco-chips'><span class='laco-chips-empty'>No ranges yet: click or "
            "drag on the map, or type them below.</span></div>"
        )
    estimates = estimates or {}
    out = []
    for lo, hi in sorted(ranges):
        est = html.escape(range_summary(estimates.get((lo, hi))))
        out.append(
            f"<span class='laco-chip' style='--chip-colour:{range_colour(lo)}'><b>{lo}–{hi}</b>"
            f"<small>{est}</small><button data-range='{lo}-{hi}' title='remove {lo}–{hi}' "
            f"aria-label='remove {lo}–{hi}'>×</button></span>"
        )
    for i in attention:
        out.append(
            f"<span class='laco-chip' style='--chip-colour:#111'><b>attention {i}</b>"
            f"<small>MLP stays</small><button data-range='a{i}' title='keep the attention of "
            f"layer {i}' aria-label='keep the attention of layer {i}'>×</button></span>"
        )
    return f"<div class='laco-chips'>{''.join(out)}</div>"


def msg_md(text: str, error: bool = False) -> str:
    """The message line under the plan: a note, or an error marked as one."""
    if not text:
        return ""
    return f"<span class='laco-msg-error'>⚠ {text}</span>" if error else text
