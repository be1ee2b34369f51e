"""Plain layer removal: the baseline every merge should beat."""

from __future__ import annotations

from ..arch.adapters import Adapter
from .base import LayerParams, MergeMethod


class Drop(MergeMethod):
    name = "drop"
    keeps_lo = True
    passthrough = None  # a list of kept whole layers: exactly mergekit's passthrough slices
    summary = "Keep layer lo unchanged and delete layers lo+1..hi."
    formula = "θ*_lo = θ_lo"
    note = (
        "Keep layer lo, delete the rest of the range (ShortGPT-style layer removal); the kept "
        "layer shares its tensors with the original."
    )

    def merge(self, layers: list[LayerParams], adapter: Adapter, **params) -> LayerParams:
        return dict(layers[0])
