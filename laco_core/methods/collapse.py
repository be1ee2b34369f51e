"""Building collapsed models from a merge method object (names are resolved a level above).

A collapsed model shares every untouched tensor with its source (``sharing.derive``); only the
tensors a merge creates are new.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from ..arch.adapters import get_adapter, get_layers
from ..arch.plan import Range, layer_groups, validate_ranges
from ..arch.sharing import derive, share_layer
from ..errors import LacoError


@torch.no_grad()
def merged_layer(
    model: PreTrainedModel, lo: int, hi: int, method, params: dict, index: int | None = None
) -> nn.Module:
    """The one decoder layer that merging ``model``'s layers lo..hi produces, on its own.

    What a search needs per candidate: a new module (its own ``layer_idx``) whose tensors are
    the merge's result, shared with ``model`` where the method keeps a source tensor.

    Args:
        model: The model whose layers are merged.
        lo, hi: Inclusive range in ``model``'s indices (lo == hi: layer lo as it is).
        method: A ``MergeMethod``; ``params`` must already be fitted if it needs a fit.
        params: The method's parameters.
        index: The new layer's KV-cache slot (default lo).
    """
    layers = get_layers(model)
    src = layers[lo]
    merged = None
    names = [{n for n, _ in layers[i].named_parameters()} for i in range(lo, hi + 1)]
    if hi > lo and any(x != names[0] for x in names) and not method.keeps_lo:
        raise LacoError(
            f"Layers {lo}-{hi} differ in their tensors (some have no attention): merge them "
            "with a method that keeps layer lo (a drop, plain or fitted)."
        )
    if hi > lo:
        merged = method.merge(
            [dict(layers[i].named_parameters()) for i in range(lo, hi + 1)],
            get_adapter(model),
            **params,
        )
    return share_layer(src, lo if index is None else index, merged)


@torch.no_grad()
def collapse_model(
    model: PreTrainedModel,
    ranges: Sequence[Range],
    method,
    params: dict | Sequence[dict] | None = None,
) -> PreTrainedModel:
    """Merge each range of ``model`` into one layer at its ``lo`` with ``method``.

    Args:
        model: The model to collapse (left unchanged).
        ranges: The plan in ``model``'s indices.
        method: A ``MergeMethod``.
        params: The method's parameters, one dict for every range or one per range (fitted
            methods fit each range on its own).

    Returns:
        The collapsed model, in eval mode, with its original-index layer map set.
    """
    layers = get_layers(model)
    ranges = validate_ranges(ranges, len(layers))
    per_range = (
        [dict(params or {})] * len(ranges) if params is None or isinstance(params, dict) else params
    )
    if len(per_range) != len(ranges):
        raise ValueError("one parameter dict per range")
    by_lo = {lo: p for (lo, _), p in zip(ranges, per_range, strict=True)}
    groups = layer_groups(ranges, len(layers))
    new_layers = [
        merged_layer(model, lo, hi, method, by_lo[lo], index=j)
        if hi > lo
        else share_layer(layers[lo], j)
        for j, (lo, hi) in enumerate(groups)
    ]
    return derive(model, new_layers, groups)
