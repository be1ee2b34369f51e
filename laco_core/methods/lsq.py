"""Drop with the kept layer's MLP output projection refitted by least squares."""

from __future__ import annotations

import torch

from ..errors import LacoError
from .fitted_drop import FittedDrop, fitted_params


class DropLsq(FittedDrop):
    """Keep layer lo, delete lo+1..hi, and refit lo's ``down_proj`` on calibration data.

    The new W_down (hidden × intermediate) is the ridge least-squares solution, shrunk
    towards the original, that makes the kept layer's output match the dense model's state
    after the removed block (``laco_core.methods.fitting``). It regresses on the MLP's inner
    activations, a richer basis than ``drop_linear``'s map on the MLP output, whose every
    solution W_downᵀ T it contains.
    """

    name = "drop_lsq"
    basis, tensor = "inner", "down_weight"
    params = fitted_params(tensor, "the refitted W_down (H × I)")
    passthrough = "refits layer LO's MLP down-projection by least squares on calibration activations: a fitted tensor, not a copied layer"
    summary = (
        "Drop lo+1..hi and refit lo's MLP down projection by least squares on calibration data."
    )
    formula = "W_down,lo ← argmin ‖A Wᵀ − R‖² + λ‖W − W_down,lo‖²"
    note = (
        "Fitted when you build (seconds per range), on the bundled training text: layer "
        "lo's MLP down projection is refitted to stand in for the removed layers. It regresses "
        "on the MLP's inner activations, so it can fit anything drop_linear can. The preview "
        "estimates it as a plain drop."
    )

    def apply(self, down: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
        if tuple(tensor.shape) != tuple(down.shape):
            raise LacoError(
                f"drop_lsq fit has shape {tuple(tensor.shape)}, the layer's down projection "
                f"{tuple(down.shape)}: it belongs to another model."
            )
        return tensor.to(device=down.device, dtype=down.dtype)
