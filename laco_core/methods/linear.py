"""Drop with a fitted linear correction folded into the kept layer (ReplaceMe)."""

from __future__ import annotations

import torch

from .fitted_drop import FittedDrop, fitted_params


def fold_into_down(down: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """W_down (H, I) ← Tᵀ W_down, so that a W_downᵀ T = a (Tᵀ W_down)ᵀ."""
    t = transform.to(device=down.device, dtype=torch.float32)
    return (t.T @ down.float()).to(down.dtype)  # (H, I)


class DropLinear(FittedDrop):
    """Keep layer lo, delete lo+1..hi, and fold a map T into lo's MLP output projection.

    T (hidden × hidden) is fitted by ridge least squares on calibration activations so the
    kept layer's output approximates the dense model's state after the removed block
    (Shopkhoev et al. 2025, arXiv 2505.02819; ``laco_core.methods.fitting``).
    """

    name = "drop_linear"
    basis, tensor = "output", "transform"
    params = fitted_params(tensor, "the fitted map T (hidden × hidden)")
    passthrough = "folds a linear map fitted on calibration activations into layer LO's MLP down-projection: a fitted tensor, not a copied layer"
    summary = "Drop lo+1..hi and fold a least-squares linear map into lo's MLP output (ReplaceMe)."
    formula = "W_down,lo ← Tᵀ W_down,lo,  T = argmin ‖M T − R‖² + λ‖T − I‖²"
    note = (
        "Fitted when you build (seconds per range), on the bundled training text: a linear map "
        "after layer lo's MLP stands in for the removed layers (ReplaceMe). The preview "
        "estimates it as a plain drop."
    )

    def apply(self, down: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
        return fold_into_down(down, tensor)
