"""The interface every merge method implements."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..adapters import Adapter
from ..errors import LacoError

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


def fitted_tensor(fit, method: str) -> torch.Tensor | None:
    """The tensor a fitted method's ``fit`` carries; None when the fit was skipped (the
    layer stays as the plain drop left it).

    Raises:
        LacoError: without a fit, or for a fit read back from JSON (its tensor is gone).
    """
    if fit is None:
        raise LacoError(
            f"{method} needs weights fitted on calibration data: use it in the automatic "
            f"search (laco auto --method {method}) or a collapse, which fit them."
        )
    tensor = getattr(fit, "transform", None)
    if tensor is None and not fit.get("skipped"):
        raise LacoError(
            f"This {method} recipe has lost its fitted matrices (read back from JSON?): "
            "run the search again to rebuild the model."
        )
    return tensor


def fp32_sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum in float32 whatever the storage dtype (bf16 sums of many layers lose bits)."""
    out = tensors[0].detach().float().clone()
    for t in tensors[1:]:
        out += t.detach().float()
    return out
