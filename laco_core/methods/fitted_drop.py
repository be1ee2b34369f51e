"""What the two least-squares drops share: their parameters, the fit hook and its record."""

from __future__ import annotations

from typing import ClassVar

from ..params import ParamDef
from .base import MergeMethod
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


class FittedDrop(MergeMethod):
    """Keep layer lo, delete lo+1..hi, and fit a correction of lo's MLP output on calibration
    activations (``laco_core.methods.fitting.fit_down``). Subclasses say what is fitted (``basis``),
    under which parameter name the tensor is kept (``tensor``), and how ``merge`` applies it.
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
