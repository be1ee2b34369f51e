"""Reserving-Differences-while-Seeking-Common, LaCo Eq. 1 as printed (Yang et al. 2024)."""

from __future__ import annotations

import torch

from ..arch.adapters import Adapter
from .base import LayerParams, MergeMethod, fp32_sum


def rdsc_tensor(base: torch.Tensor, others: list[torch.Tensor], alpha: float = 1.0) -> torch.Tensor:
    """θ_l + α Σ_k (θ_{l+k} − θ_l), accumulated in float32, returned in the base's dtype."""
    if not others:
        return base
    base32 = base.detach().float()
    diff = fp32_sum(others) - len(others) * base32
    return (base32 + alpha * diff).to(base.dtype)


class RDSC(MergeMethod):
    name = "rdsc"
    passthrough = "computes θ_LO + Σ_k (θ_LO+k − θ_LO) from several layers (Eq. 1): new tensors, which passthrough cannot compute"
    summary = "Paper Eq. 1: add every later layer's difference to layer lo, norms included."
    formula = "θ*_lo = θ_lo + Σ_{k=1..m} (θ_{lo+k} − θ_lo), on every tensor of the layer"
    note = (
        "The paper's Eq. 1 (Reserving-Differences-while-Seeking-Common) as printed. Summing the "
        "differences of m ≥ 2 layers overshoots: on ranges of three or more layers it can "
        "**destroy** the model (final-state similarity ≈ 0) — shown for honesty; "
        "rdsc_calibrated scales the step."
    )

    def merge(self, layers: list[LayerParams], adapter: Adapter, **params) -> LayerParams:
        base, rest = layers[0], layers[1:]
        return {n: rdsc_tensor(t, [layer[n] for layer in rest]) for n, t in base.items()}
