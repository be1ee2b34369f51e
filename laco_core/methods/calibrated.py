"""RDSC with a calibrated step size α: LaCo Eq. 1 scaled between drop (α=0) and Eq. 1 (α=1)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..analysis.activations import layer_types, run_layers
from ..arch.adapters import Adapter, get_adapter, get_layers
from ..params import ParamDef
from .base import LayerParams, MergeMethod
from .collapse import merged_layer
from .rdsc import rdsc_tensor

MANUAL_ALPHA = 0.5  # α of a collapse outside a search, where nothing scores candidates
_UNIT = dict(low=0.0, high=1.0)


class CalibratedRDSC(MergeMethod):
    """θ*_lo = θ_lo + α Σ_k (θ_{lo+k} − θ_lo) on every tensor of the layer.

    Eq. 1 of LaCo (Yang et al. 2024) sums the differences of m layers, which for m ≥ 2
    overshoots badly; α shrinks the step. Inside a search, α is chosen per merge by a
    golden-section search of the objective on the calibration prompts (``fit``);
    ``alpha_attn`` / ``alpha_mlp`` / ``alpha_norm`` override α for one tensor group. With
    α = 0 the merge is a plain drop (tensors shared). ``correct`` also fits ``down_scale``,
    one factor per hidden channel on the rows of the MLP's output projection, in closed form
    so the merged layer's residual update matches the update of all the layers it replaces.
    """

    name = "rdsc_calibrated"
    passthrough = "adds an α-weighted sum of the range's layer differences, α (and an optional rescale) fitted on calibration data: computed tensors, not copied layers"
    summary = "Eq. 1 with step α in [0, 1] (0 = drop, 1 = Eq. 1), α chosen on calibration data."
    formula = "θ*_lo = θ_lo + α Σ_{k=1..m} (θ_{lo+k} − θ_lo)"
    note = (
        "Eq. 1 with its step shrunk: α = 0 is a plain drop, α = 1 the paper's formula. A collapse "
        "by hand uses the α you set (0.5 when blank; per tensor group where set). In a search, "
        "α is chosen per merge on the calibration prompts, and **correct** also fits a "
        "per-channel scale of the merged MLP output."
    )
    params = (
        ParamDef(
            "alpha",
            help="step size; unset: chosen per merge by the search, 0.5 in a manual collapse",
            **_UNIT,
        ),
        ParamDef("alpha_attn", help="α for attention tensors (default α)", **_UNIT),
        ParamDef("alpha_mlp", help="α for MLP tensors (default α)", **_UNIT),
        ParamDef("alpha_norm", help="α for norm tensors (default α)", **_UNIT),
        ParamDef(
            "correct",
            "bool",
            help="also fit a per-channel scale of the merged MLP output on the calibration data",
        ),
        ParamDef(
            "alpha_evals", "int", default=6, low=2, high=50, help="objective evaluations per α"
        ),
        ParamDef("down_scale", "json", cli=False, help="fitted per-channel output scale"),
    )

    def merge(
        self,
        layers: list[LayerParams],
        adapter: Adapter,
        alpha: float = MANUAL_ALPHA,
        alpha_attn: float | None = None,
        alpha_mlp: float | None = None,
        alpha_norm: float | None = None,
        down_scale: list[float] | None = None,
        **params,
    ) -> LayerParams:
        base, rest = layers[0], layers[1:]
        out = {}
        for n, t in base.items():
            if n.startswith(adapter.attn_prefix + ".") and "norm" not in n.rsplit(".", 2)[-2]:
                a = alpha if alpha_attn is None else alpha_attn
            elif n.startswith(adapter.mlp_prefix + "."):
                a = alpha if alpha_mlp is None else alpha_mlp
            else:  # layer norms and q/k norms
                a = alpha if alpha_norm is None else alpha_norm
            # share the source tensor when nothing changes (drop), as MergeMethod allows
            out[n] = t if a == 0 else rdsc_tensor(t, [layer[n] for layer in rest], float(a))
        if down_scale is not None:
            w = out[adapter.down]
            scale = torch.tensor(down_scale, dtype=torch.float32, device=w.device)  # (H,)
            out[adapter.down] = (w.float() * scale[:, None]).to(w.dtype)  # rows = hidden channels
        return out

    def is_fitted(self, params: dict) -> bool:
        return "alpha" in params and (not params.get("correct") or "down_scale" in params)

    def cheap(self, params: dict) -> dict | None:
        return None if "alpha" in params else {**params, "alpha": 0.0}

    def fit(self, ctx, lo: int, hi: int, params: dict) -> dict:
        if self.is_fitted(params):
            return params
        if "alpha" in params:  # α given: only the output scale is left to fit
            scale = fit_down_scale(ctx, lo, hi, self, params)
            return params if scale is None else {**params, "down_scale": scale}
        if not ctx.can_score():
            return self.fit(ctx, lo, hi, {**params, "alpha": MANUAL_ALPHA})
        seen: dict[float, tuple[float, dict]] = {}

        def f(a: float) -> float:
            a = round(a, 4)
            if a not in seen:
                seen[a] = ctx.score(lo, hi, {**params, "alpha": a})
            return seen[a][0]

        golden_section_max(f, 0.0, 1.0, int(params.get("alpha_evals", 6)))
        f(0.0)  # drop is always a candidate: calibration never does worse than it
        best = max(seen, key=lambda x: seen[x][0])
        return seen[best][1]


def golden_section_max(f: Callable[[float], float], a: float, b: float, evals: int) -> float:
    """Maximise a unimodal ``f`` on [a, b] with ``evals`` evaluations; returns the best x."""
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = f(x1), f(x2)
    for _ in range(max(evals - 2, 0)):
        if f1 >= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = f(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = f(x2)
    return x1 if f1 >= f2 else x2


@torch.inference_mode()
def fit_down_scale(ctx, lo: int, hi: int, method, params: dict) -> list[float] | None:
    """Least-squares per-channel scale s of the merged MLP output (rows of down_proj).

    With x the input of layer lo, D the update layers lo..hi of the current model add to x,
    and A, F the merged layer's attention and MLP updates (A + F its total),
    s_c = Σ (D − A)_c F_c / Σ F_c² over real calibration tokens. None for layers with a norm
    after the MLP (the scale would act non-linearly) or without an MLP.
    """
    model = ctx.cur
    if get_adapter(model).post_mlp_norm is not None:
        return None
    layer = merged_layer(model, lo, hi, method, params)
    mlp = getattr(layer, "mlp", None)
    if mlp is None:
        return None
    inputs = ctx.inputs_at(hi)
    cur_layers, types = get_layers(model), layer_types(model)
    num = den = None
    grabbed: list[torch.Tensor] = []
    for k, c in enumerate(ctx.cache.chunks):
        target = run_layers([cur_layers[hi]], [types[hi]], inputs[k][hi], c.kwargs)  # (1, T, H)
        grabbed.clear()
        handle = mlp.register_forward_hook(lambda m, a, out: grabbed.append(out))
        try:
            y = run_layers([layer], [types[lo]], inputs[k][lo], c.kwargs)  # (1, T, H)
        finally:
            handle.remove()
        f = grabbed[0][c.mask].double()  # (N, H) MLP update of every token
        rest = (target - y)[c.mask].double() + f  # D − A  (N, H)
        n_, d_ = (rest * f).sum(0), (f * f).sum(0)
        num = n_ if num is None else num + n_
        den = d_ if den is None else den + d_
    scale = (num / den.clamp_min(1e-12)).clamp(0.0, 4.0)
    return [round(float(v), 6) for v in scale]
