"""RDSC with a calibrated step size α: LaCo Eq. 1 scaled between drop (α=0) and Eq. 1 (α=1)."""

from __future__ import annotations

import torch

from ..adapters import Adapter
from .base import LayerParams, MergeMethod
from .rdsc import rdsc_tensor


class CalibratedRDSC(MergeMethod):
    """θ*_lo = θ_lo + α Σ_k (θ_{lo+k} − θ_lo) on every tensor of the layer.

    Eq. 1 of LaCo (Yang et al. 2024) sums the differences of m layers, which for m ≥ 2
    overshoots badly; α shrinks the step. The automatic search picks α per merge on
    calibration data and records it; ``alpha_attn`` / ``alpha_mlp`` / ``alpha_norm``
    override α for one tensor group. With α = 0 the merge is a plain drop (tensors shared).
    ``down_scale`` (one factor per hidden channel) rescales the rows of the MLP's output
    projection: the search fits it in closed form so the merged layer's residual update
    matches, on calibration activations, the update of all the layers it replaces.
    """

    name = "rdsc_calibrated"
    summary = "Eq. 1 with step α in [0, 1] (0 = drop, 1 = Eq. 1), α chosen on calibration data."
    formula = "θ*_lo = θ_lo + α Σ_{k=1..m} (θ_{lo+k} − θ_lo)"

    def merge(
        self,
        layers: list[LayerParams],
        adapter: Adapter,
        alpha: float = 0.5,
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
