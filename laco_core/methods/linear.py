"""Drop with a fitted linear correction folded into the kept layer (ReplaceMe)."""

from __future__ import annotations

import torch

from ..adapters import Adapter
from .base import LayerParams, MergeMethod, fitted_tensor


def fold_into_down(down: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """W_down (H, I) ← Tᵀ W_down, so that a W_downᵀ T = a (Tᵀ W_down)ᵀ."""
    t = transform.to(device=down.device, dtype=torch.float32)
    return (t.T @ down.float()).to(down.dtype)  # (H, I)


class DropLinear(MergeMethod):
    """Keep layer lo, delete lo+1..hi, and fold a map T into lo's MLP output projection.

    T (hidden × hidden) is fitted by ridge least squares on calibration activations so the
    kept layer's output approximates the dense model's state after the removed block
    (Shopkhoev et al. 2025, arXiv 2505.02819; see ``laco_core.search.correction``). It only
    exists where activations do, so this method is used through the automatic search,
    which fits T per candidate and passes it as ``fit``.
    """

    name = "drop_linear"
    summary = "Drop lo+1..hi and fold a least-squares linear map into lo's MLP output (ReplaceMe)."
    formula = "W_down,lo ← Tᵀ W_down,lo,  T = argmin ‖M T − R‖² + λ‖T − I‖²"
    fitted = True

    def merge(self, layers: list[LayerParams], adapter: Adapter, fit=None, **params) -> LayerParams:
        out = dict(layers[0])
        transform = fitted_tensor(fit, self.name)
        if transform is not None:  # None: this layer could not be corrected, a plain drop
            out[adapter.down] = fold_into_down(out[adapter.down], transform)
        return out
