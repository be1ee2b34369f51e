"""Layer surgery: smaller projection modules without the pruned groups (LLM-Pruner block style).

* one coupled group per KV head ``h`` (GQA with ``n_rep = heads / kv_heads``): rows of k and v
  for head ``h``, rows of the query heads ``h·n_rep … (h+1)·n_rep − 1`` and the matching
  o_proj columns (whole KV groups go, so ``n_rep`` stays the same);
* one coupled group per MLP channel ``j``: gate and up row ``j`` and down column ``j``.

New modules hold new tensors; the layer they are put in must be a private module object
(``sharing.share_layer``), never the original's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from ..arch.adapters import get_adapter, get_layers
from ..arch.subblocks import remove_attention
from ..errors import LacoError
from .geometry import LayerShape, attn_slices, bias_of, layer_geometry, module_path


def new_linear(weight: torch.Tensor, bias: torch.Tensor | None, empty: bool = False) -> nn.Linear:
    """A Linear holding copies of ``weight``/``bias`` (or uninitialised tensors of their shape)."""
    make = torch.empty_like if empty else torch.clone
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    lin.weight = nn.Parameter(make(weight.detach()), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(make(bias.detach()), requires_grad=False)
    return lin


def set_module(layer: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, child, module)


def set_head_counts(model: PreTrainedModel, layer: nn.Module, heads: int, kv_heads: int) -> None:
    """Give the attention module its own config copy and attributes with the new head counts.

    Some forwards (Phi-3) read ``self.config.num_attention_heads``; the config is shared by all
    layers, so a pruned layer needs its own shallow copy.
    """
    attn = layer.get_submodule(get_adapter(model).attn_prefix)
    if getattr(attn, "config", None) is not None:
        attn.config = copy.copy(attn.config)
        attn.config.num_attention_heads = heads
        attn.config.num_key_value_heads = kv_heads
    for attr, value in (
        ("num_heads", heads),
        ("num_attention_heads", heads),
        ("num_key_value_heads", kv_heads),
    ):
        if hasattr(attn, attr):
            setattr(attn, attr, value)


def prune_layer(
    model: PreTrainedModel,
    layer: nn.Module,
    drop_heads: Sequence[int],
    drop_channels: Sequence[int],
    empty: bool = False,
) -> LayerShape:
    """Replace ``layer``'s projections by smaller Linear modules without the given groups.

    ``layer`` must belong to a model built by :func:`shared_copy` (its tensors are read, never
    written: new modules hold new tensors). With ``empty`` the new modules are left
    uninitialised (for loading weights into). Returns the layer's new sizes.
    """
    a = get_adapter(model)
    g = layer_geometry(model, layer)
    dropped_h, dropped_c = set(drop_heads), set(drop_channels)
    keep_kv = [h for h in range(g.kv_heads) if h not in dropped_h]
    keep_ch = torch.tensor([j for j in range(g.inter) if j not in dropped_c], dtype=torch.long)
    if not keep_kv or keep_ch.numel() == 0:
        raise LacoError("Pruning would remove every head or channel of a layer; lower the ratio.")

    def rows(offset: int, per_group: int, groups: list[int]) -> torch.Tensor:
        idx = [offset + h * per_group + r for h in groups for r in range(per_group)]
        return torch.tensor(idx, dtype=torch.long)

    def keep_outputs(name: str, idx: torch.Tensor) -> None:  # rows of W and of the bias
        w, b = layer.get_parameter(name), bias_of(layer, name)
        set_module(
            layer, module_path(name), new_linear(w[idx], None if b is None else b[idx], empty)
        )

    def keep_inputs(name: str, idx: torch.Tensor) -> None:  # columns of W; the bias stays whole
        w = layer.get_parameter(name)
        set_module(layer, module_path(name), new_linear(w[:, idx], bias_of(layer, name), empty))

    if drop_heads:
        sl = attn_slices(a, g)
        q_idx = rows(sl["q"][1], sl["q"][2], keep_kv)
        k_idx = rows(sl["k"][1], sl["k"][2], keep_kv)
        v_idx = rows(sl["v"][1], sl["v"][2], keep_kv)
        if a.qkv is not None:
            keep_outputs(a.qkv, torch.cat([q_idx, k_idx, v_idx]))
        else:
            for name, idx in ((a.q, q_idx), (a.k, k_idx), (a.v, v_idx)):
                keep_outputs(name, idx)
        keep_inputs(a.o, rows(0, sl["q"][2], keep_kv))
        set_head_counts(model, layer, len(keep_kv) * g.n_rep, len(keep_kv))

    if len(drop_channels):
        if a.gate_up is not None:
            keep_outputs(a.gate_up, torch.cat([keep_ch, keep_ch + g.inter]))
        else:
            for name in (a.gate, a.up):
                keep_outputs(name, keep_ch)
        keep_inputs(a.down, keep_ch)
        mlp = layer.get_submodule(a.mlp_prefix)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = int(keep_ch.numel())
    return LayerShape(len(keep_kv) * g.n_rep, len(keep_kv), int(keep_ch.numel()))


def apply_shapes(model: PreTrainedModel, shapes: dict) -> None:
    """Resize each layer's projections (uninitialised) to the sizes in ``shapes``; a layer
    with 0 heads loses its attention (``subblocks.NoAttention``)."""
    for key, s in shapes.items():
        layer = get_layers(model)[int(key)]
        if s["num_attention_heads"] == 0:
            remove_attention(model, layer)
        g = layer_geometry(model, layer)
        drop_h = list(range(s["num_key_value_heads"], g.kv_heads)) if g.kv_heads else []
        drop_c = list(range(s["intermediate_size"], g.inter))
        if drop_h or drop_c:
            prune_layer(model, layer, drop_h, drop_c, empty=True)
