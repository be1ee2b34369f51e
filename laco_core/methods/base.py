"""The interface every merge method implements."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..adapters import Adapter

LayerParams = dict[str, torch.Tensor]  # parameter name relative to a decoder layer -> tensor


class MergeMethod:
    """Collapses the parameters of consecutive layers lo..hi into one layer.

    ``merge`` may return a source tensor object itself (not a copy) for a weight it keeps
    unchanged; the model builder then shares that tensor instead of allocating a new one.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for the UI
    formula: ClassVar[str]
    # True when the merge needs parameters fitted on calibration activations (passed as
    # ``fit``): the automatic search fits them per candidate
    fitted: ClassVar[bool] = False
    # what a fitted method's least squares regresses on (``search.correction.fit_block``):
    # ``output``, the MLP output (hidden wide), or ``inner``, the MLP inner activations
    fit_basis: ClassVar[str] = "output"

    def merge(self, layers: list[LayerParams], adapter: Adapter, **params) -> LayerParams:
        raise NotImplementedError


def fp32_sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum in float32 whatever the storage dtype (bf16 sums of many layers lose bits)."""
    out = tensors[0].detach().float().clone()
    for t in tensors[1:]:
        out += t.detach().float()
    return out
