"""The interface every merge method implements, with its declared parameters and fit hook."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..arch.adapters import Adapter
from ..errors import LacoError
from ..params import ParamDef, validate

LayerParams = dict[str, torch.Tensor]  # parameter name relative to a decoder layer -> tensor


class MergeMethod:
    """Collapses the parameters of consecutive layers lo..hi into one layer.

    ``merge`` may return a source tensor object itself (not a copy) for a weight it keeps
    unchanged; the model builder then shares that tensor instead of allocating a new one.

    A method declares its parameters in ``params``; ``check`` refuses anything else. A method
    that needs calibration data implements ``fit``: every caller (each search strategy, the
    manual collapse, a recipe rebuilt without its tensors) calls ``fit`` the same way before
    ``merge``, so no path can build an unfitted candidate.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for the UI
    formula: ClassVar[str]
    note: ClassVar[str] = ""
    """What to know before choosing it (cost, when it works); the app shows it under the summary."""
    params: ClassVar[tuple[ParamDef, ...]] = ()
    # True when ``merge`` needs what ``fit`` computes on calibration activations
    fitted: ClassVar[bool] = False
    # True when the result is layer lo's tensors alone (so lo..hi may differ in shape, e.g.
    # layers whose attention was removed)
    keeps_lo: ClassVar[bool] = False
    # why mergekit's passthrough (which copies whole layers) cannot express this method's
    # result; None when it can (a pure layer drop)
    passthrough: ClassVar[str | None] = (
        "computes new tensors from the range's layers; passthrough only copies whole layers"
    )

    def merge(self, layers: list[LayerParams], adapter: Adapter, **params) -> LayerParams:
        raise NotImplementedError

    def check(self, params: dict | None) -> dict:
        """``params`` validated against the declarations (unknown names refused)."""
        return validate(self.params, params, self.name)

    def fit(self, ctx, lo: int, hi: int, params: dict) -> dict:
        """``params`` completed with what this method fits on calibration data.

        Args:
            ctx: A ``laco_core.methods.fitting.FitContext`` (the search, or a fixed-plan fitter).
            lo, hi: The range, in the indices of ``ctx.cur``.
            params: Checked parameters; the result must make ``merge`` deterministic.
        """
        return params

    def cheap(self, params: dict) -> dict | None:
        """Parameters for a quick first look at a range (a greedy step screens every range
        with them and fits only the best few); None when the method has no cheaper form."""
        return None

    def is_fitted(self, params: dict) -> bool:
        """True when ``params`` already hold what ``fit`` computes."""
        return not self.fitted or "fit" in params


def fitted_tensor(params: dict, key: str, method: str) -> torch.Tensor | None:
    """The tensor a fitted method's ``fit`` stored under ``key``; None when the fit was skipped
    (the layer stays as the plain drop left it).

    Raises:
        LacoError: when the method was never fitted, or its tensor was lost.
    """
    info = params.get("fit")
    if info is None:
        raise LacoError(
            f"{method} needs weights fitted on calibration data; this merge was never fitted."
        )
    tensor = params.get(key)
    if tensor is None and not info.get("skipped"):
        raise LacoError(
            f"This {method} merge has lost its fitted tensor (a recipe without its "
            "laco_recipe.safetensors?): rebuild it from its calibration text instead."
        )
    return tensor


def fp32_sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum in float32 whatever the storage dtype (bf16 sums of many layers lose bits)."""
    out = tensors[0].detach().float().clone()
    for t in tensors[1:]:
        out += t.detach().float()
    return out
