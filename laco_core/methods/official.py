"""What the released LaCo code computes, as opposed to the paper's Eq. 1."""

from __future__ import annotations

from ..arch.adapters import Adapter
from .base import LayerParams, MergeMethod


class Official(MergeMethod):
    """The official loop updates ``W_lo += W_d − W_lo`` in place for each d in the group, so
    every attention/MLP tensor of layer lo ends equal to layer hi's, while the layer-level
    norms (outside those submodules) stay layer lo's. In effect: layers lo..hi−1's blocks
    are dropped. Nothing new is allocated: the result shares the source tensors.
    """

    name = "official"
    passthrough = "keeps layer LO's norms with layer HI's attention and MLP weights, one layer built from two source layers; passthrough copies whole layers only"
    summary = (
        "Released LaCo code: layer lo's norms with layer hi's attention and MLP (≈ layer drop)."
    )
    formula = "θ*_lo = θ_hi for attention/MLP tensors; layer norms stay θ_lo"
    note = (
        "What the released LaCo code actually computes — in effect a layer drop that keeps the "
        "first layer's norms. Nothing new is allocated."
    )

    def merge(self, layers: list[LayerParams], adapter: Adapter, **params) -> LayerParams:
        lo, hi = layers[0], layers[-1]
        return {n: (hi[n] if adapter.is_block_param(n) else t) for n, t in lo.items()}
