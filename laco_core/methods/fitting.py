"""Training-free least-squares corrections of a removed block, fitted on calibration activations.

After layers lo+1..hi are removed, layer lo's MLP output m should stand for what the whole
block produced. With y_lo the kept layer's output and y* the DENSE model's state after the
last original layer the block stands for, the MLP update has to become r = y* − (y_lo − m).

* ``drop_linear`` (ReplaceMe, Shopkhoev et al. 2025, arXiv 2505.02819) follows m by a map T,
  T = argmin ‖M T − R‖² + λ‖T − I‖², folded into ``down_proj`` as Tᵀ W_down.
* ``drop_lsq`` refits W_down itself on the MLP's inner activations a (intermediate wide),
  W = argmin ‖A W − R‖² + λ‖W − W_downᵀ‖², a ridge shrinking towards the layer as it was.
  Every drop_linear solution W_downᵀ T is one such W, so on enough tokens it fits at least
  as well.

λ is ``ridge`` × mean diag(MᵀM), so one value suits any model scale; by default the ridge is
chosen per fit by two-fold cross-validation on the calibration tokens, and the fit is skipped
when no ridge beats the plain drop on held-out tokens. Because y* is the dense state, a later
fit also corrects the drift that earlier removals left in its input.

Layers with an RMS norm after the MLP (Gemma 2/3) give N(m) = g ⊙ m / rms(m), not m: the
update is non-linear in the weights, but only through each token's scale. The fit then
regresses on the closest output the norm can give (its size per token is fixed), each token
weighted by 1 / rms(m), in the norm's output units (``through_norm``).
"""

from __future__ import annotations

import hashlib
import math

import torch
from transformers import PreTrainedModel

from ..analysis.activations import ActivationCache, layer_types, run_layers
from ..arch.adapters import get_adapter, get_layers
from ..arch.plan import layer_map
from ..arch.sharing import private_copy

RIDGES = (1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0, 10.0, 30.0)
START_RIDGE = 1.0  # where the cross-validation's downhill walk starts
FOLD_BLOCK = 64  # tokens per cross-validation block (neighbouring tokens are correlated)


class FitContext:
    """What a fitted method reads: the model being collapsed, its layer inputs per calibration
    chunk, and the dense model's states (``cache``).

    The search is one (its current model changes as merges are accepted); ``PlanFitter``
    is another, for a fixed plan. ``score`` is only available inside a search.
    """

    cache: ActivationCache
    cur: PreTrainedModel

    def inputs_at(self, start: int) -> list[list[torch.Tensor]]:
        """Per chunk, inputs of the current model's layers, valid at least up to ``start``."""
        raise NotImplementedError

    @torch.inference_mode()
    def dense_after(self, k: int, orig: int) -> torch.Tensor:
        """The dense model's hidden state after ORIGINAL layer ``orig`` on chunk k.  # (1, T, H)"""
        chunk = self.cache.chunks[k]
        if orig + 1 < len(chunk.inputs):
            return chunk.inputs[orig + 1]
        dense = self.cache.model
        return run_layers(
            [get_layers(dense)[orig]], [layer_types(dense)[orig]], chunk.inputs[orig], chunk.kwargs
        )

    def can_score(self) -> bool:
        return False

    def score(self, lo: int, hi: int, params: dict) -> float:
        """The objective of merging lo..hi with ``params`` (searches only)."""
        raise NotImplementedError


class PlanFitter(FitContext):
    """A fit context for a fixed plan: ranges are fitted bottom-up on a model that changes.

    The current model's hidden state is carried upward: asking for the input of layer
    ``start`` runs only the layers between the last position asked for and ``start`` (a merge
    at ``lo`` never changes what enters layer ``lo``), so every layer runs once per plan.
    """

    def __init__(self, model: PreTrainedModel, cache: ActivationCache):
        self.cur = model
        self.cache = cache
        self.pos = 0
        self.hidden = [c.inputs[0] for c in cache.chunks]  # input of layer ``pos``, per chunk

    def inputs_at(self, start: int) -> list[list[torch.Tensor]]:
        if start < self.pos:  # a range below the last one: start again from the embeddings
            self.pos, self.hidden = 0, [c.inputs[0] for c in self.cache.chunks]
        layers, types = get_layers(self.cur), layer_types(self.cur)
        steps = list(layers[self.pos : start]), types[self.pos : start]
        self.hidden = [
            run_layers(*steps, h, c.kwargs)
            for h, c in zip(self.hidden, self.cache.chunks, strict=True)
        ]
        self.pos = start
        return [[None] * start + [h] for h in self.hidden]


class Moments:
    """Sufficient statistics MᵀM, MᵀR, ‖R‖² and the row count of a least-squares problem."""

    def __init__(self):
        self.mm = self.mr = None
        self.rr, self.n = 0.0, 0

    def add(self, m: torch.Tensor, r: torch.Tensor) -> None:
        """Add rows ``m`` (N, F) and their targets ``r`` (N, H).

        Each chunk's products are taken in float32 (a few hundred rows: well within its
        precision) and accumulated in float64 across chunks.
        """
        m, r = m.float(), r.float()
        mm, mr = (m.T @ m).double(), (m.T @ r).double()  # (F, F), (F, H)
        self.mm = mm if self.mm is None else self.mm + mm
        self.mr = mr if self.mr is None else self.mr + mr
        self.rr += float(r.double().square().sum())
        self.n += m.shape[0]

    def __add__(self, other: Moments) -> Moments:
        out = Moments()
        out.mm, out.mr = self.mm + other.mm, self.mr + other.mr
        out.rr, out.n = self.rr + other.rr, self.n + other.n
        return out

    def error(self, t: torch.Tensor) -> float:
        """‖M T − R‖² = tr(Tᵀ MᵀM T) − 2 tr(Tᵀ MᵀR) + ‖R‖²."""
        return float((t * (self.mm @ t)).sum() - 2 * (t * self.mr).sum()) + self.rr


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
    a = mtm + lam * eye  # symmetric positive definite for λ > 0: Cholesky halves the work
    if lam > 0:
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            return torch.cholesky_solve(mtr + lam * prior, chol)  # (F, H)
    return torch.linalg.solve(a, mtr + lam * prior)  # (F, H)


def choose_ridge(a: Moments, b: Moments, prior: torch.Tensor | None = None) -> float | None:
    """The ridge of ``RIDGES`` with the least two-fold held-out error, None if the prior wins.

    Fitting hundreds of thousands of numbers on a few thousand tokens overfits;
    cross-validation picks the shrinkage toward the plain drop (the prior: T = I, or the kept
    layer's own W_down) that the calibration data supports.
    """
    if a.n == 0 or b.n == 0:
        return None
    if prior is None:
        prior = torch.eye(a.mm.shape[0], dtype=a.mm.dtype)
    errors: dict[int, float] = {}

    def cv(i: int) -> float:  # two-fold held-out error of RIDGES[i]
        if i not in errors:
            r = RIDGES[i]
            e = a.error(solve(b.mm, b.mr, r, prior)) + b.error(solve(a.mm, a.mr, r, prior))
            errors[i] = e if math.isfinite(e) else math.inf  # a singular fold loses
        return errors[i]

    # the held-out error is unimodal in the ridge: walk downhill from the middle of the grid
    i = RIDGES.index(START_RIDGE)
    for _ in RIDGES:  # each move goes strictly downhill, so at most one pass over the grid
        around = [j for j in (i - 1, i + 1) if 0 <= j < len(RIDGES)]
        j = min(around, key=cv)
        if cv(j) >= cv(i):
            break
        i = j
    return RIDGES[i] if cv(i) < a.error(prior) + b.error(prior) else None


def fit_info(tensor: torch.Tensor, **info) -> dict:
    """The JSON-safe description of a fitted tensor (its sha1 identifies it in recipes)."""
    sha = hashlib.sha1(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
    return {**info, "sha1": sha[:12]}


def norm_gain(norm: torch.nn.Module, width: int, like: torch.Tensor) -> torch.Tensor:
    """The per-channel gain g of an RMS ``norm`` (g ⊙ x / rms(x)), read as ``norm(1)``. (H,)"""
    one = torch.ones(1, 1, width, dtype=like.dtype, device=like.device)
    return norm(one)[0, 0]


def through_norm(
    want: torch.Tensor, m: torch.Tensor, gain: torch.Tensor, steps: int = 48
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearise an RMS norm g ⊙ x / rms(x) after the MLP update ``m``.

    The norm's output has a fixed size per token: the closest it can come to ``want`` is
    g ⊙ n with n = g ⊙ want / (g² + λ), λ set so rms(n) = 1 (a Lagrange multiplier, found by
    bisection per token). An error δ in the update moves the output by about g ⊙ δ / rms(m),
    so the fit regresses features × 1 / rms(m) on n, in output units (× g) when solved.
    Returns g ⊙ n and the token weights 1 / rms(m). # want, m: (B, T, H); (B, T, H), (B, T, 1)
    """
    gw, g2 = gain * want, gain * gain  # (B, T, H), (H,)

    def size(lam: torch.Tensor) -> torch.Tensor:  # rms(n(λ)) − 1, decreasing in λ
        return (gw / (g2 + lam)).pow(2).mean(-1, keepdim=True).sqrt() - 1

    lo = torch.full_like(want[..., :1], -float(g2.min()) * (1 - 1e-6))  # (B, T, 1)
    hi = gw.abs().amax(-1, keepdim=True).clamp_min(1e-6)  # rms(n(hi)) ≤ 1
    for _ in range(steps):
        mid = (lo + hi) / 2
        big = size(mid) > 0
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    n = gw / (g2 + hi)
    weight = 1 / m.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-6)
    return gain * n, weight


@torch.inference_mode()
def fit_down(
    ctx: FitContext, lo: int, hi: int, ridge: float | str = "auto", basis: str = "output"
) -> tuple[torch.Tensor | None, dict]:
    """Fit the correction of replacing the current model's layers lo..hi by layer lo.

    Args:
        ctx: The fit context (current model, its layer inputs, the dense states).
        lo, hi: The range, in the current model's indices.
        ridge: Ridge relative to mean diag(MᵀM), or ``"auto"`` (two-fold cross-validation).
        basis: ``output``: drop_linear's map T (H, H) on the MLP output; ``inner``:
            drop_lsq's new W_down (H, I) on the MLP's inner activations.

    Returns:
        ``(tensor, info)``; the tensor is None (``info["skipped"]`` says why, the merge is
        then a plain drop) when layer lo has no MLP, or when no ridge beats the plain drop
        on held-out tokens.
    """
    model = ctx.cur
    adapter = get_adapter(model)
    # a private module object (sharing its tensors) takes the hook, since other candidates
    # scored in parallel run the current model's layer lo
    layer = private_copy(get_layers(model)[lo])
    if getattr(layer, "mlp", None) is None:
        return None, {"skipped": "no mlp module"}
    post = gain = None
    down = layer.get_submodule(adapter.down_module)
    if adapter.post_mlp_norm is not None:
        post = layer.get_submodule(adapter.post_mlp_norm.rsplit(".", 1)[0])
        gain = norm_gain(post, down.weight.shape[0], down.weight).double()  # (H,)
    cand_type = layer_types(model)[lo]
    orig_end = layer_map(model)[hi][1]
    inputs = ctx.inputs_at(lo)
    folds = [Moments(), Moments()]
    grabbed: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = down.register_forward_hook(lambda mod, args, out: grabbed.append((args[0], out)))
    try:
        for k, c in enumerate(ctx.cache.chunks):
            grabbed.clear()
            y = run_layers([layer], [cand_type], inputs[k][lo], c.kwargs)  # (B, T, H)
            inner, m = grabbed[0]  # (B, T, I) and the MLP update (B, T, H)
            features = m if basis == "output" else inner
            if post is None:
                r = ctx.dense_after(k, orig_end) - y + m  # what the MLP update should be (B, T, H)
            else:  # what the normed update should be, taken back through the norm
                want = (ctx.dense_after(k, orig_end) - y + post(m)).double()
                r, w = through_norm(want, m.double(), gain)
                features = features.double() * w
            fold = (torch.arange(c.mask.shape[1], device=c.mask.device) // FOLD_BLOCK) % 2  # (T,)
            for f, acc in enumerate(folds):
                sel = c.mask & (fold == f)  # (B, T)
                acc.add(features[sel].double(), r[sel].double())
    finally:
        handle.remove()
    # the plain drop as a solution: T = I on the output, the layer's own W_downᵀ on the inner
    prior = None if basis == "output" else down.weight.detach().T.double()  # (I, H)
    if gain is not None:  # solved in the norm's output units: X' = X diag(g)
        base = torch.eye(gain.numel(), dtype=gain.dtype) if prior is None else prior
        prior = base * gain
    total = folds[0] + folds[1]
    if ridge == "auto":
        ridge = choose_ridge(*folds, prior=prior)
        if ridge is None:
            return None, {"skipped": "no ridge beats the plain drop on held-out tokens"}
    x = solve(total.mm, total.mr, float(ridge), prior)  # (H, H) or (I, H)
    if gain is not None:  # back to the update's own units; a channel the norm zeroes keeps
        dead = gain == 0  # whatever it had (nothing it holds reaches the output)
        x = torch.where(dead, base, x / torch.where(dead, torch.ones_like(gain), gain))
    x = x.float()
    tensor = x if basis == "output" else x.T.contiguous()  # W_down is (H, I)
    return tensor, fit_info(tensor, ridge=ridge, tokens=total.n, basis=basis)
