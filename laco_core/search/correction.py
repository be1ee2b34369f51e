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

``drop_lsq`` solves the same problem on a richer basis: the MLP's inner activations a
(N × intermediate), refitting W_down itself, W = argmin ‖A W − R‖² + λ ‖W − W_downᵀ‖², a
ridge that shrinks towards the kept layer as it was. Every ``drop_linear`` solution
W_downᵀ T is one such W, so on enough tokens it fits at least as well.

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

from ..adapters import get_adapter, get_layers
from ..merge import layer_map

DEFAULT_RIDGE = "auto"  # chosen per fit by two-fold cross-validation among RIDGES
RIDGES = (1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0, 10.0, 30.0)
FOLD_BLOCK = 64  # tokens per cross-validation block


class LinearFit(dict):
    """A fitted transform: a JSON-safe dict describing the fit, carrying the tensor itself.

    The dict part (``ridge``, ``tokens``, ``sha1``…) is what recipes and logs serialise; the
    tensor (T, H × H, or a new W_down, H × I: 330 k or 885 k numbers on the default model)
    rides along as ``.transform`` so an in-memory recipe (the engine's) rebuilds the model
    exactly without refitting. A recipe read back from JSON holds only the description:
    rebuild it by searching again.
    """

    transform: torch.Tensor | None = None

    @classmethod
    def of(cls, transform: torch.Tensor, **info) -> LinearFit:
        fit = cls(info)
        fit["sha1"] = hashlib.sha1(transform.float().cpu().numpy().tobytes()).hexdigest()[:12]
        fit.transform = transform
        return fit


def solve(
    mtm: torch.Tensor, mtr: torch.Tensor, ridge: float, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """argmin ‖M X − R‖² + λ ‖X − P‖² = (MᵀM + λI)⁻¹ (MᵀR + λP), λ = ridge · mean diag(MᵀM).

    ``mtm`` (F, F) and ``mtr`` (F, H) in float64; the prior P (F, H) defaults to the identity
    (F = H: the map of a plain drop).
    """
    f = mtm.shape[0]
    eye = torch.eye(f, dtype=mtm.dtype, device=mtm.device)
    prior = eye if prior is None else prior
    lam = ridge * float(mtm.diagonal().mean().clamp_min(1e-12))
    return torch.linalg.solve(mtm + lam * eye, mtr + lam * prior)  # (F, H)


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


def choose_ridge(a: Moments, b: Moments, prior: torch.Tensor | None = None) -> float | None:
    """The ridge of ``RIDGES`` with the least two-fold held-out error, None if the prior wins.

    Fitting 330 k numbers (drop_linear) or 885 k (drop_lsq) on a few thousand tokens
    overfits; cross-validation picks the shrinkage toward the plain drop (the prior: T = I,
    or the kept layer's own W_down) that the calibration data supports.
    """
    if a.n == 0 or b.n == 0:
        return None
    if prior is None:
        prior = torch.eye(a.mm.shape[0], dtype=a.mm.dtype)
    best, best_err = None, a.error(prior) + b.error(prior)
    for ridge in RIDGES:
        err = a.error(solve(b.mm, b.mr, ridge, prior)) + b.error(solve(a.mm, a.mr, ridge, prior))
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
def fit_block(search, lo: int, hi: int, params: dict, basis: str = "output") -> LinearFit:
    """Fit the correction of the candidate that replaces the current model's layers lo..hi
    by layer lo: ``drop_linear``'s map T (``basis="output"``) or ``drop_lsq``'s new W_down
    (``basis="inner"``).

    ``search`` is the running search (``laco_core.search.core._Search``): its current model,
    per-chunk layer inputs and dense activation cache. Called once per candidate.

    Returns:
        The fit: T (H, H) or W_down (H, I) as ``.transform``; one without a tensor
        (``skipped`` says why, the merge is then a plain drop) when layer lo has a post-MLP
        norm or no ``mlp`` module, or when no ridge beats the plain drop on held-out tokens.
    """
    from .activations import layer_types, run_layers

    ridge = params.get("ridge", DEFAULT_RIDGE)
    # drop keeps layer lo as it is; a private module object (sharing its tensors) takes the
    # hook, since other candidates scored in parallel run the current model's layer lo
    layer = private_copy(get_layers(search.cur)[lo])
    if getattr(layer, "mlp", None) is None or has_post_mlp_norm(layer):
        return LinearFit(skipped="post-MLP norm" if hasattr(layer, "mlp") else "no mlp module")
    down = layer.get_submodule(get_adapter(search.cur).down.rsplit(".", 1)[0])
    cand_type = layer_types(search.cur)[lo]
    orig_end = layer_map(search.cur)[hi][1]
    inputs = search.inputs_at(lo)
    folds = [Moments(), Moments()]
    grabbed: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = down.register_forward_hook(lambda mod, args, out: grabbed.append((args[0], out)))
    try:
        for k, c in enumerate(search.cache.chunks):
            grabbed.clear()
            y = run_layers([layer], [cand_type], inputs[k][lo], c.kwargs)  # (B, T, H)
            inner, m = grabbed[0]  # (B, T, I) and the MLP update (B, T, H)
            features = m if basis == "output" else inner
            target = dense_output(search, k, orig_end)  # (B, T, H)
            r = target - y + m  # what the MLP update should have been (B, T, H)
            # two folds of alternate 64-token blocks (neighbouring tokens are correlated)
            fold = (torch.arange(c.mask.shape[1], device=c.mask.device) // FOLD_BLOCK) % 2  # (T,)
            for f, acc in enumerate(folds):
                sel = c.mask & (fold == f)  # (B, T)
                acc.add(features[sel].double(), r[sel].double())
    finally:
        handle.remove()
    # the plain drop as a solution: T = I on the output, the layer's own W_downᵀ on the inner
    prior = None if basis == "output" else down.weight.detach().T.double()  # (I, H)
    total = folds[0] + folds[1]
    if ridge == "auto":
        ridge = choose_ridge(*folds, prior=prior)
        if ridge is None:
            return LinearFit(skipped="no ridge beats the plain drop on held-out tokens")
    x = solve(total.mm, total.mr, float(ridge), prior).float()  # (H, H) or (I, H)
    tensor = x if basis == "output" else x.T.contiguous()  # W_down is (H, I)
    return LinearFit.of(tensor, ridge=ridge, tokens=total.n, target="dense", basis=basis)


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
    method: str = "drop_linear",
) -> tuple[PreTrainedModel, list[dict]]:
    """Drop the layers of a fixed plan with a fitted correction per range.

    Ranges are fitted bottom-up, so each map also corrects the drift the lower removals
    left in its input (its target is the dense state after the range).

    Args:
        model: The dense model.
        tokenizer: Its tokenizer.
        prompts: Calibration texts.
        ranges: The plan in ``model``'s layer indices, e.g. ``[(2, 3), (12, 18)]``.
        ridge: Ridge of the fit (relative to the mean diagonal of MᵀM), or ``"auto"``.
        cache: An ``ActivationCache`` of ``model`` on ``prompts`` to reuse.
        method: A fitted method: ``drop_linear`` (map on the MLP output) or ``drop_lsq``
            (refitted MLP down projection).

    Returns:
        The collapsed model and its replayable steps (indices of the model at each step).
    """
    from ..merge import build_collapsed, get_method, parse_ranges, validate_ranges
    from .activations import ActivationCache

    fitted = get_method(method)
    if not fitted.fitted:
        raise ValueError(f"{method} is not a fitted method")
    if isinstance(ranges, str):
        ranges = parse_ranges(ranges)
    ranges = validate_ranges(ranges, len(get_layers(model)))
    if cache is None:
        cache = ActivationCache(model, tokenizer, prompts)
    state = _PlanFitter(model, cache)
    steps, shift = [], 0
    for lo, hi in ranges:
        lo, hi = lo - shift, hi - shift
        fit = fit_block(state, lo, hi, {"ridge": ridge}, fitted.fit_basis)
        params = {"ridge": ridge, "fit": fit}
        state.cur = build_collapsed(state.cur, [(lo, hi)], method, **params)
        steps.append({"lo": lo, "hi": hi, "method": method, "params": params})
        shift += hi - lo
    return state.cur, steps


def collapse_any(
    model: PreTrainedModel, tokenizer, ranges, method: str, **params
) -> tuple[PreTrainedModel, list[dict] | None]:
    """A manual collapse with any registry method.

    A fitted method (``drop_lsq``, ``drop_linear``) is fitted range by range on the
    paragraphs of the bundled training text (``ridge`` from ``params``, default
    cross-validated) and its replayable steps are returned; any other method is built
    directly and the steps are None.
    """
    from ..assets import read_paragraphs
    from ..merge import build_collapsed, get_method

    if not get_method(method).fitted:
        return build_collapsed(model, ranges, method, **params), None
    ridge = params.get("ridge", DEFAULT_RIDGE)
    return fit_collapse(model, tokenizer, read_paragraphs(), ranges, ridge, method=method)
