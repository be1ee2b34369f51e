"""Drop with a fitted linear correction folded into the kept layer (ReplaceMe)."""

from __future__ import annotations

import torch

from ..adapters import Adapter
from ..fitting import fit_down
from ..params import ParamDef
from .base import LayerParams, MergeMethod, fitted_tensor

RIDGE = ParamDef(
    "ridge",
    "auto_float",
    default="auto",
    low=0.0,
    high=1e6,
    help="ridge of the least-squares fit, relative to mean diag(MᵀM); auto: cross-validated",
)
FIT_INFO = ParamDef("fit", "json", cli=False, help="what the fit found (ridge, tokens, sha1)")


def fold_into_down(down: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """W_down (H, I) ← Tᵀ W_down, so that a W_downᵀ T = a (Tᵀ W_down)ᵀ."""
    t = transform.to(device=down.device, dtype=torch.float32)
    return (t.T @ down.float()).to(down.dtype)  # (H, I)


class DropLinear(MergeMethod):
    """Keep layer lo, delete lo+1..hi, and fold a map T into lo's MLP output projection.

    T (hidden × hidden) is fitted by ridge least squares on calibration activations so the
    kept layer's output approximates the dense model's state after the removed block
    (Shopkhoev et al. 2025, arXiv 2505.02819; ``laco_core.fitting``).
    """

    name = "drop_linear"
    keeps_lo = True
    passthrough = "folds a linear map fitted on calibration activations into layer LO's MLP down-projection: a fitted tensor, not a copied layer"
    summary = "Drop lo+1..hi and fold a least-squares linear map into lo's MLP output (ReplaceMe)."
    formula = "W_down,lo ← Tᵀ W_down,lo,  T = argmin ‖M T − R‖² + λ‖T − I‖²"
    fitted = True
    params = (
        RIDGE,
        FIT_INFO,
        ParamDef("transform", "tensor", cli=False, help="the fitted map T (hidden × hidden)"),
    )

    def is_fitted(self, params: dict) -> bool:
        info = params.get("fit")
        return info is not None and (params.get("transform") is not None or "skipped" in info)

    def fit(self, ctx, lo: int, hi: int, params: dict) -> dict:
        if self.is_fitted(params):
            return params
        tensor, info = fit_down(ctx, lo, hi, params.get("ridge", "auto"), basis="output")
        return {**params, "transform": tensor, "fit": info}

    def merge(self, layers: list[LayerParams], adapter: Adapter, **params) -> LayerParams:
        out = dict(layers[0])
        transform = fitted_tensor(params, "transform", self.name)
        if transform is not None:  # None: this layer could not be corrected, a plain drop
            out[adapter.down] = fold_into_down(out[adapter.down], transform)
        return out
