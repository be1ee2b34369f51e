"""Training-free linear correction of a removed block, fitted on calibration activations.

After layers lo+1..hi are removed, layer lo's MLP output m is followed by a linear map T
(H × H) chosen so that the kept layer's output approximates what the whole block produced,
the idea of ReplaceMe (Shopkhoev et al. 2025, arXiv 2505.02819). With y_lo the kept layer's
output (attention and MLP updates added to its input) and y* the target state after the
block, the MLP update has to become r = y* − (y_lo − m), so we solve the ridge problem

    T = argmin ‖M T − R‖² + λ ‖T − I‖²   ⇒   (MᵀM + λI) T = MᵀR + λI

over all real calibration tokens (rows of M, R). λ is ``ridge`` × mean diag(MᵀM), so the same
value suits any model scale; λ → ∞ gives T = I, a plain drop. Since m = a W_downᵀ with a the
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

from ..adapters import get_layers
from ..merge import layer_map

DEFAULT_RIDGE = 1e-2


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

    ridge = float(params.get("ridge", DEFAULT_RIDGE))
    # drop keeps layer lo as it is; a private module object (sharing its tensors) takes the
    # hook, since other candidates scored in parallel run the current model's layer lo
    layer = private_copy(get_layers(search.cur)[lo])
    mlp = getattr(layer, "mlp", None)
    if mlp is None or has_post_mlp_norm(layer):
        return LinearFit(skipped="post-MLP norm" if mlp is not None else "no mlp module")
    cand_type = layer_types(search.cur)[lo]
    orig_end = layer_map(search.cur)[hi][1]
    inputs = search.inputs_at(lo)
    mtm = mtr = None
    tokens = 0
    grabbed: list[torch.Tensor] = []
    handle = mlp.register_forward_hook(lambda mod, args, out: grabbed.append(out))
    try:
        for k, c in enumerate(search.cache.chunks):
            grabbed.clear()
            y = run_layers([layer], [cand_type], inputs[k][lo], c.kwargs)  # (B, T, H)
            m = grabbed[0][c.mask].double()  # (N, H) MLP update of real tokens
            target = dense_output(search, k, orig_end)[c.mask].double()  # (N, H)
            r = target - y[c.mask].double() + m  # what the MLP update should be (N, H)
            mtm = m.T @ m if mtm is None else mtm + m.T @ m  # (H, H)
            mtr = m.T @ r if mtr is None else mtr + m.T @ r  # (H, H)
            tokens += m.shape[0]
    finally:
        handle.remove()
    t = solve(mtm, mtr, ridge).float()
    return LinearFit.of(t, ridge=ridge, tokens=tokens, target="dense")
