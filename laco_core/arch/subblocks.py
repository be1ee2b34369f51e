"""Sub-block removal: a decoder layer without its attention (BlockPruner, Zhong et al. 2024,
arXiv 2406.10594; LLM-Drop, He et al. 2024, arXiv 2406.15786).

Attention and MLP are separate residual branches, and attention branches are often far more
redundant than MLPs. A layer whose attention is removed keeps its MLP; its attention branch
adds nothing, so the layer also stops reading and writing the KV cache. Such a model cannot
be stated in a transformers config: it is saved with the per-layer shapes sidecar (heads 0)
and loaded by ``laco_core.load_pruned``.

The first layer of each attention type keeps its attention: transformers reads the cache's
length and mask sizes from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from ..errors import LacoError
from .adapters import get_adapter, get_layers
from .plan import layer_map
from .sharing import derive, share_layer

# the name a search's merges give an attention removal (it is not a merge method)
ATTENTION = "attention"


class NoAttention(nn.Module):
    """Stands in for a removed attention module: its branch adds zero, it touches no cache."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return torch.zeros_like(hidden_states), None


def has_attention(layer: nn.Module, model_or_config) -> bool:
    return not isinstance(
        layer.get_submodule(get_adapter(model_or_config).attn_prefix), NoAttention
    )


def attention_layers(model: PreTrainedModel) -> list[int]:
    """Indices of the layers that still have their attention (and a KV cache)."""
    return [i for i, layer in enumerate(get_layers(model)) if has_attention(layer, model)]


def protected(model: PreTrainedModel) -> set[int]:
    """Layers whose attention must stay: layer 0 and the first layer of each attention type."""
    types = getattr(model.config, "layer_types", None) or []
    out = {0}
    for t in dict.fromkeys(types):
        out.add(types.index(t))
    return out


def remove_attention(model: PreTrainedModel, layer: nn.Module) -> None:
    """Replace ``layer``'s attention by ``NoAttention`` (the layer must be a private object)."""
    prefix = get_adapter(model).attn_prefix
    parent, _, child = prefix.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, child, NoAttention())


def without_attention(model: PreTrainedModel, index: int, position: int | None = None) -> nn.Module:
    """A new module for ``model``'s layer ``index`` without its attention (tensors shared)."""
    layer = share_layer(get_layers(model)[index], index if position is None else position)
    remove_attention(model, layer)
    return layer


def drop_attention(model: PreTrainedModel, indices: Sequence[int]) -> PreTrainedModel:
    """``model`` with the attention of layers ``indices`` removed; every other tensor shared.

    Raises:
        LacoError: for an index outside the model, a protected layer, or a layer whose
            attention is already gone.
    """
    layers = get_layers(model)
    n = len(layers)
    drop = sorted(set(int(i) for i in indices))
    keep_first = protected(model)
    for i in drop:
        if not 0 <= i < n:
            raise LacoError(f"Layer {i} is outside the model's layers 0-{n - 1}.")
        if i in keep_first:
            raise LacoError(
                f"Layer {i}'s attention must stay: the KV cache's length and masks are read "
                "from the first layer of each attention type."
            )
        if not has_attention(layers[i], model):
            raise LacoError(f"Layer {i} has no attention left to remove.")
    new_layers = [
        without_attention(model, i) if i in drop else share_layer(layer, i)
        for i, layer in enumerate(layers)
    ]
    return derive(model, new_layers, [(i, i) for i in range(n)])


def attention_free(model: PreTrainedModel) -> list[int]:
    """Original indices of the layers of ``model`` whose attention was removed."""
    lm = layer_map(model)
    return [
        lm[i][0] for i, layer in enumerate(get_layers(model)) if not has_attention(layer, model)
    ]


def attention_params(model: PreTrainedModel, index: int) -> int:
    """Parameters the attention of layer ``index`` holds (what removing it saves)."""
    layer = get_layers(model)[index]
    module = layer.get_submodule(get_adapter(model).attn_prefix)
    return sum(p.numel() for p in module.parameters())
