"""Structured width pruning in the style of LLM-Pruner (Ma et al., 2023, arXiv 2305.11627).

Block strategy on the adapters' weight names: whole KV head groups and MLP channels go
(``surgery``), chosen by the Taylor importance of the loss change when a group is zeroed
(``importance``), from gradients of one backward pass over the calibration samples. Pruning
is local: every layer in the range loses the same share. Hidden size, embeddings and norms
are untouched. The pruned model shares every unpruned tensor with the original, which is
never modified; what was removed is recorded (``dropped``) so a recipe replays it exactly
without gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from ..arch.adapters import get_layers
from ..arch.sharing import count_params, shared_copy
from ..errors import LacoError
from .geometry import Geometry, attention_has_bias, is_pruned, layer_geometry, model_shapes
from .importance import (
    AGGREGATIONS,
    Importance,
    calibration_batch,
    gradients,
    group_importance,
)
from .surgery import prune_layer


@dataclass
class PrunedResult:
    """Outcome of :func:`prune_llm_pruner`.

    Attributes:
        model: The pruned model (shares every unpruned tensor with the original).
        shapes: Layer index -> ``LayerShape`` as a dict, for every layer of the model.
        importance_summary: Per pruned layer: which KV groups and how many channels were
            removed, and the importance scores of the groups.
        params_before: Parameters of the original model.
        params_after: Parameters of the pruned model.
        dropped: Layer index -> ``{"kv_heads": [...], "channels": [...]}`` removed.
    """

    model: PreTrainedModel
    shapes: dict[int, dict]
    importance_summary: dict
    params_before: int
    params_after: int
    dropped: dict[int, dict] = field(default_factory=dict)

    @property
    def removed_fraction(self) -> float:
        return 1.0 - self.params_after / self.params_before


def default_layer_range(num_layers: int) -> tuple[int, int]:
    """LLM-Pruner's default keeps the first 4 and the last 2 of 32 layers; scaled for depth."""
    first = max(1, round(num_layers * 4 / 32)) if num_layers > 3 else 0
    last = max(1, round(num_layers * 2 / 32)) if num_layers > 3 else 0
    return first, num_layers - last


def plan_amounts(g: Geometry, n_layers: int, target: int, has_bias: bool) -> tuple[int, int]:
    """KV groups and channels to remove per layer so ``n_layers`` layers lose ~``target`` params.

    Heads come in coarse steps (a KV group is a big share of the attention), so the head count
    is rounded from the uniform ratio and the MLP channels absorb the rest exactly.
    """
    head_size = g.head_group_params + (g.head_dim * (g.n_rep + 2) if has_bias else 0)
    per_layer = target / n_layers
    layer_total = g.kv_heads * head_size + g.inter * g.channel_params
    ratio = per_layer / layer_total
    heads = min(g.kv_heads - 1, max(0, round(ratio * g.kv_heads)))
    while heads > 0 and heads * head_size > per_layer:
        heads -= 1
    channels = round((per_layer - heads * head_size) / g.channel_params)
    if channels > g.inter - 1:
        most = n_layers * ((g.kv_heads - 1) * head_size + (g.inter - 1) * g.channel_params)
        raise LacoError(
            f"Cannot remove {target:,} parameters from {n_layers} layers (at most {most:,}): "
            "lower the ratio or widen the layer range."
        )
    return heads, max(0, channels)


def prune_llm_pruner(
    model: PreTrainedModel,
    tokenizer,
    texts: list[str],
    ratio: float,
    importance: Importance,
    aggregation: str = "sum",
    layers: tuple[int, int] | None = None,
    num_samples: int = 10,
    seq_len: int = 64,
    seed: int = 0,
    grad_cache: dict | None = None,
) -> PrunedResult:
    """LLM-Pruner block pruning of heads and MLP channels (Ma et al., 2023).

    Args:
        model: The model to prune; left bit-for-bit unchanged.
        tokenizer: Its tokenizer (for the calibration samples).
        texts: Calibration texts; ``num_samples`` windows of ``seq_len`` tokens are cut from them.
        ratio: Fraction of ALL parameters to remove (0 < ratio < 1).
        importance: An ``Importance`` (``param_first`` is Σ|W⊙∇W|).
        aggregation: How member scores of a coupled group combine: one of ``AGGREGATIONS``.
        layers: Half-open range ``[lo, hi)`` of layers to prune (default: keep the first 4 and
            last 2 of 32, scaled to depth).
        num_samples: Calibration windows (LLM-Pruner: 10).
        seq_len: Tokens per window (LLM-Pruner: 64).
        seed: For the ``random`` importance.
        grad_cache: A dict kept by the caller to reuse gradients between calls on the same
            model and texts (e.g. several ratios); filled on first use.

    Raises:
        LacoError: for a bad aggregation, range or ratio, or an unreachable ratio.
    """
    if aggregation not in AGGREGATIONS:
        raise LacoError(
            f"Unknown aggregation '{aggregation}'; choose one of: {', '.join(AGGREGATIONS)}."
        )
    if not (math.isfinite(ratio) and 0 < ratio < 1):
        raise LacoError(
            f"Ratio {ratio} must be in (0, 1): the fraction of all parameters to remove."
        )
    if is_pruned(model):  # its per-layer sizes would be lost by the regular-shaped skeleton
        raise LacoError("This model is already width-pruned: prune the original model instead.")
    src_layers = get_layers(model)
    n = len(src_layers)
    lo, hi = layers if layers is not None else default_layer_range(n)
    if not 0 <= lo < hi <= n:
        raise LacoError(f"Layer range {lo}-{hi} is outside 0-{n} (half-open LO-HI, LO < HI).")
    params_before = count_params(model)
    layer_ids = list(range(lo, hi))
    g = layer_geometry(model, src_layers[lo])
    n_heads, n_channels = plan_amounts(
        g, len(layer_ids), round(ratio * params_before), attention_has_bias(model)
    )
    grads: dict = {i: {} for i in layer_ids}
    fisher: dict = {i: {} for i in layer_ids}
    if (n_heads or n_channels) and importance.needs is not None:
        second = importance.needs == "fisher"
        key = (id(model), lo, hi, num_samples, seq_len, second, hash(tuple(texts)))
        if grad_cache is not None and key in grad_cache:
            grads, fisher = grad_cache[key]
        else:
            batch = calibration_batch(tokenizer, texts, num_samples, seq_len)
            grads, fisher = gradients(model, layer_ids, batch, second)
            if grad_cache is not None:
                grad_cache[key] = (grads, fisher)

    gen = torch.Generator().manual_seed(seed)
    summary: dict = {
        "kv_heads_removed_per_layer": n_heads,
        "channels_removed_per_layer": n_channels,
        "layers": {},
    }
    dropped: dict[int, dict] = {}
    if n_heads or n_channels:
        for i in layer_ids:
            h_imp, c_imp = group_importance(
                model, src_layers[i], importance, aggregation, grads[i], fisher[i], gen
            )
            drop_h = sorted(torch.argsort(h_imp)[:n_heads].tolist())
            drop_c = sorted(torch.argsort(c_imp)[:n_channels].tolist())
            dropped[i] = {"kv_heads": drop_h, "channels": drop_c}
            summary["layers"][i] = {
                "kv_heads_removed": drop_h,
                "head_importance": [round(float(x), 6) for x in h_imp],
                "channels_removed": len(drop_c),
                "channel_importance_mean": float(c_imp.mean()),
            }
    new = apply_pruning(model, dropped)
    return PrunedResult(new, model_shapes(new), summary, params_before, count_params(new), dropped)


def apply_pruning(model: PreTrainedModel, dropped: dict) -> PreTrainedModel:
    """A model without the recorded groups (layer -> ``kv_heads``/``channels`` lists),
    sharing every other tensor with ``model``: what a pruning recipe replays."""
    new = shared_copy(model)
    layers = get_layers(new)
    for i, d in sorted((int(k), v) for k, v in dropped.items()):
        if not 0 <= i < len(layers):
            raise LacoError(f"The pruning recipe names layer {i}; this model has {len(layers)}.")
        prune_layer(new, layers[i], d.get("kv_heads", []), d.get("channels", []))
    return new
