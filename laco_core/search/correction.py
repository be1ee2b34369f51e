"""Training-free linear correction of a removed block, fitted on calibration activations.

After layers lo+1..hi are removed, layer lo's MLP output m is followed by a linear map T
(H × H) chosen so that the kept layer's output approximates what the whole block produced,
the idea of ReplaceMe (Shopkhoev et al. 2025, arXiv 2505.02819). With y_lo the kept layer's
output (attention and MLP updates added to its input) and y* the target state after the
block, the MLP update has to become r = y* − (y_lo − m), so we solve the ridge problem

    T = argmin ‖M T − R‖² + λ ‖T − I‖²   ⇒   (MᵀM + λI) T = MᵀR + λI

over all real calibration tokens (rows of M, R). λ is ``ridge`` × mean diag(MᵀM), so the same
value suits any model scale; λ → ∞ gives T = I, a plain drop. By default the ridge is chosen
per fit by two-fold cross-validation on the calibration tokens (and the fit is skipped when
no ridge beats the plain drop on held-out tokens). Since m = a W_downᵀ with a the
MLP's inner activation, m T = a (Tᵀ W_down)ᵀ: T folds into the rows of ``down_proj`` and the
result is an ordinary checkpoint.

The target y* is the DENSE model's state after the last original layer the block stands for,
so a later step of a greedy search also corrects the drift that earlier removals left in its
input. Layers with a norm after the MLP (Gemma 2/3 ``post_feedforward_layernorm``) are not
corrected: the norm makes the update non-linear in T, so they are plainly dropped.
"""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn
from transformers import PreTrainedModel

from ..adapters import get_layers
from ..merge import layer_map

DEFAULT_RIDGE = "auto"  # chosen per fit by two-fold cross-validation among RIDGES
RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
FOLD_BLOCK = 64  # tokens per cross-validation block


class LinearFit(dict):
    """A fitted transform: a JSON-safe dict describing the fit, carrying the tensor itself.

    The dict part (``ridge``, ``tokens``, ``sha1``…) is what recipes and logs serialise; the
    (H, H) matrix, 330 k numbers for a 576-wide model, rides along as ``.transform`` so an
    in-memory recipe (the engine's) rebuilds the model exactly without refitting. A recipe
    read back from JSON holds only the description: rebuild it by searching again.
    """

    transform: torch.Tensor | None = None

    @classmethod
    def of(cls, transform: torch.Tensor, **info) -> LinearFit:
        fit = cls(info)
        fit["sha1"] = hashlib.sha1(transform.float().cpu().numpy().tobytes()).hexdigest()[:12]
        fit.transform = transform
        return fit


def solve(mtm: torch.Tensor, mtr: torch.Tensor, ridge: float) -> torch.Tensor:
    """T = (MᵀM + λI)⁻¹ (MᵀR + λI) with λ = ridge · mean diag(MᵀM); inputs (H, H), float64."""
    h = mtm.shape[0]
    eye = torch.eye(h, dtype=mtm.dtype, device=mtm.device)
    lam = ridge * float(mtm.diagonal().mean().clamp_min(1e-12))
    return torch.linalg.solve(mtm + lam * eye, mtr + lam * eye)  # (H, H)


class Moments:
    """Sufficient statistics MᵀM, MᵀR, ‖R‖² and the row count of a least-squares problem."""

    def __init__(self):
        self.mm = self.mr = None
        self.rr, self.n = 0.0, 0

    def add(self, m: torch.Tensor, r: torch.Tensor) -> None:
        """Add rows ``m`` (N, H) and their targets ``r`` (N, H)."""
        mm, mr = m.T @ m, m.T @ r  # (H, H)
        self.mm = mm if self.mm is None else self.mm + mm
        self.mr = mr if self.mr is None else self.mr + mr
        self.rr += float(r.square().sum())
        self.n += m.shape[0]

    def __add__(self, other: Moments) -> Moments:
        out = Moments()
        out.mm, out.mr = self.mm + other.mm, self.mr + other.mr
        out.rr, out.n = self.rr + other.rr, self.n + other.n
        return out

    def error(self, t: torch.Tensor) -> float:
        """‖M T − R‖² = tr(Tᵀ MᵀM T) − 2 tr(Tᵀ MᵀR) + ‖R‖²."""
        return float((t * (self.mm @ t)).sum() - 2 * (t * self.mr).sum()) + self.rr


def choose_ridge(a: Moments, b: Moments) -> float | None:
    """The ridge of ``RIDGES`` with the least two-fold held-out error, None if T = I is better.

    Fitting 330 k numbers on a few thousand tokens overfits; cross-validation picks the
    shrinkage toward the plain drop that the calibration data supports.
    """
    if a.n == 0 or b.n == 0:
        return None
    eye = torch.eye(a.mm.shape[0], dtype=a.mm.dtype)
    best, best_err = None, a.error(eye) + b.error(eye)
    for ridge in RIDGES:
        err = a.error(solve(b.mm, b.mr, ridge)) + b.error(solve(a.mm, a.mr, ridge))
        if err < best_err:
            best, best_err = ridge, err
    return best


def private_copy(module: nn.Module) -> nn.Module:
    """New module objects around the same parameter and buffer tensors (no copy of data)."""
    memo = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo)


def has_post_mlp_norm(layer: nn.Module) -> bool:
    return any("post_feedforward" in n for n, _ in layer.named_parameters())


@torch.inference_mode()
def dense_output(search, k: int, orig: int) -> torch.Tensor:
    """The dense model's hidden state after ORIGINAL layer ``orig`` on chunk ``k`` (B, T, H)."""
    from .activations import layer_types, run_layers

    chunk = search.cache.chunks[k]
    if orig + 1 < len(chunk.inputs):
        return chunk.inputs[orig + 1]
    dense = search.dense
    return run_layers(
        [get_layers(dense)[orig]], [layer_types(dense)[orig]], chunk.inputs[orig], chunk.kwargs
    )


@torch.inference_mode()
def fit_block(search, lo: int, hi: int, params: dict) -> LinearFit:
    """Fit T for the candidate that replaces the current model's layers lo..hi by layer lo.

    ``search`` is the running search (``laco_core.search.core._Search``): its current model,
    per-chunk layer inputs and dense activation cache. Called once per candidate.

    Returns:
        The fit; one without a transform (``skipped`` says why, the merge is then a plain
        drop) when layer lo has a post-MLP norm or no ``mlp`` module.
    """
    from .activations import layer_types, run_layers

    ridge = params.get("ridge", DEFAULT_RIDGE)
    # drop keeps layer lo as it is; a private module object (sharing its tensors) takes the
    # hook, since other candidates scored in parallel run the current model's layer lo
    layer = private_copy(get_layers(search.cur)[lo])
    mlp = getattr(layer, "mlp", None)
    if mlp is None or has_post_mlp_norm(layer):
        return LinearFit(skipped="post-MLP norm" if mlp is not None else "no mlp module")
    cand_type = layer_types(search.cur)[lo]
    orig_end = layer_map(search.cur)[hi][1]
    inputs = search.inputs_at(lo)
    folds = [Moments(), Moments()]
    grabbed: list[torch.Tensor] = []
    handle = mlp.register_forward_hook(lambda mod, args, out: grabbed.append(out))
    try:
        for k, c in enumerate(search.cache.chunks):
            grabbed.clear()
            y = run_layers([layer], [cand_type], inputs[k][lo], c.kwargs)  # (B, T, H)
            target = dense_output(search, k, orig_end)  # (B, T, H)
            r = target - y + grabbed[0]  # what the MLP update should have been (B, T, H)
            # two folds of alternate 64-token blocks (neighbouring tokens are correlated)
            fold = (torch.arange(c.mask.shape[1], device=c.mask.device) // FOLD_BLOCK) % 2  # (T,)
            for f, acc in enumerate(folds):
                sel = c.mask & (fold == f)  # (B, T)
                acc.add(grabbed[0][sel].double(), r[sel].double())
    finally:
        handle.remove()
    total = folds[0] + folds[1]
    if ridge == "auto":
        ridge = choose_ridge(*folds)
        if ridge is None:
            return LinearFit(skipped="no ridge beats the plain drop on held-out tokens")
    t = solve(total.mm, total.mr, float(ridge)).float()
    return LinearFit.of(t, ridge=ridge, tokens=total.n, target="dense")


class _PlanFitter:
    """What ``fit_block`` reads from a search, for a fixed plan: current model, inputs, cache."""

    def __init__(self, model: PreTrainedModel, cache):
        self.dense = self.cur = model
        self.cache = cache

    def inputs_at(self, start: int) -> list[list[torch.Tensor]]:
        from .activations import layer_types, run_layers

        layers, types = get_layers(self.cur), layer_types(self.cur)
        out = []
        for c in self.cache.chunks:
            h = run_layers(list(layers[:start]), types[:start], c.inputs[0], c.kwargs)
            out.append([None] * start + [h])
        return out


def fit_collapse(
    model: PreTrainedModel,
    tokenizer,
    prompts: list[str],
    ranges,
    ridge: float | str = DEFAULT_RIDGE,
    cache=None,
) -> tuple[PreTrainedModel, list[dict]]:
    """Drop the layers of a fixed plan with a fitted map per range (``drop_linear``).

    Ranges are fitted bottom-up, so each map also corrects the drift the lower removals
    left in its input (its target is the dense state after the range).

    Args:
        model: The dense model.
        tokenizer: Its tokenizer.
        prompts: Calibration texts.
        ranges: The plan in ``model``'s layer indices, e.g. ``[(2, 3), (12, 18)]``.
        ridge: Ridge of the fit (relative to the mean diagonal of MᵀM), or ``"auto"``.
        cache: An ``ActivationCache`` of ``model`` on ``prompts`` to reuse.

    Returns:
        The collapsed model and its replayable steps (indices of the model at each step).
    """
    from ..merge import build_collapsed, parse_ranges, validate_ranges
    from .activations import ActivationCache

    if isinstance(ranges, str):
        ranges = parse_ranges(ranges)
    ranges = validate_ranges(ranges, len(get_layers(model)))
    if cache is None:
        cache = ActivationCache(model, tokenizer, prompts)
    state = _PlanFitter(model, cache)
    steps, shift = [], 0
    for lo, hi in ranges:
        lo, hi = lo - shift, hi - shift
        fit = fit_block(state, lo, hi, {"ridge": ridge})
        params = {"ridge": ridge, "fit": fit}
        state.cur = build_collapsed(state.cur, [(lo, hi)], "drop_linear", **params)
        steps.append({"lo": lo, "hi": hi, "method": "drop_linear", "params": params})
        shift += hi - lo
    return state.cur, steps
