"""What the two least-squares drops share: their parameters, the fit hook and its record."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..arch.adapters import Adapter
from ..params import ParamDef
from .base import LayerParams, MergeMethod, fitted_tensor
from .fitting import fit_down

RIDGE = ParamDef(
    "ridge",
    "auto_float",
    default="auto",
    low=0.0,
    high=1e6,
    help="ridge of the least-squares fit, relative to mean diag(MᵀM); auto: cross-validated",
)
FIT_INFO = ParamDef("fit", "json", cli=False, help="what the fit found (ridge, tokens, sha1)")


def fitted_params(tensor: str, help: str) -> tuple[ParamDef, ...]:
    """A fitted drop's parameters: the ridge, the fit's record and the fitted ``tensor``."""
    return (RIDGE, FIT_INFO, ParamDef(tensor, "tensor", cli=False, help=help))


class FittedDrop(MergeMethod):
    """Keep layer lo, delete lo+1..hi, and fit a correction of lo's MLP output on calibration
    activations (``laco_core.methods.fitting.fit_down``). Subclasses say what is fitted (``basis``),
    under which parameter name the tensor is kept (``tensor``), and how it replaces lo's
    down projection (``apply``).
    """

    fitted = True
    keeps_lo = True
    basis: ClassVar[str]  # ``output`` (a map on the MLP output) or ``inner`` (W_down itself)
    tensor: ClassVar[str]

    def is_fitted(self, params: dict) -> bool:
        info = params.get("fit")
        return info is not None and (params.get(self.tensor) is not None or "skipped" in info)

    def fit(self, ctx, lo: int, hi: int, params: dict) -> dict:
        if self.is_fitted(params):
            return params
        tensor, info = fit_down(ctx, lo, hi, params.get("ridge", "auto"), basis=self.basis)
        return {**params, self.tensor: tensor, "fit": info}

    def apply(self, down: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
        """Layer lo's new down projection (H, I) from its own and the fitted tensor."""
        raise NotImplementedError

    def merge(self, layers: list[LayerParams], adapter: Adapter, **params) -> LayerParams:
        out = dict(layers[0])
        tensor = fitted_tensor(params, self.tensor, self.name)
        if tensor is not None:  # None: this layer could not be fitted, a plain drop
            out[adapter.down] = self.apply(out[adapter.down], tensor)
        return out
