"""Uniform parameter averaging of the merged layers."""

from __future__ import annotations

from ..arch.adapters import Adapter
from .base import LayerParams, MergeMethod, fp32_sum


class Average(MergeMethod):
    name = "average"
    passthrough = "averages the range's layers into new tensors; passthrough copies layers, it does not combine them"
    summary = "Mean of the layers' parameters, every tensor."
    formula = "θ*_lo = (1/(m+1)) Σ_{k=0..m} θ_{lo+k}"
    note = "Plain mean of the range's weights, norms included (a common merging baseline)."

    def merge(self, layers: list[LayerParams], adapter: Adapter, **params) -> LayerParams:
        n = len(layers)
        return {
            name: (fp32_sum([layer[name] for layer in layers]) / n).to(t.dtype)
            for name, t in layers[0].items()
        }
