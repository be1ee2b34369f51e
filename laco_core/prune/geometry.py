"""Sizes of a decoder layer read from its weights, and where its coupled groups live."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from ..arch.adapters import Adapter, get_adapter, get_layers


@dataclass
class LayerShape:
    """Per-layer sizes of a (possibly pruned) decoder layer."""

    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int


@dataclass(frozen=True)
class Geometry:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int

    @property
    def n_rep(self) -> int:
        return self.heads // self.kv_heads

    @property
    def head_group_params(self) -> int:
        """Parameters in one KV group: q rows + k, v rows + o columns (biases counted apart)."""
        return self.hidden * self.head_dim * (2 * self.n_rep + 2)

    @property
    def channel_params(self) -> int:
        return 3 * self.hidden


def module_path(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0]


def layer_geometry(model: PreTrainedModel, layer: nn.Module) -> Geometry:
    """Sizes of one layer read from its weights (works for pruned layers too)."""
    a = get_adapter(model)
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    n_rep = cfg.num_attention_heads // cfg.num_key_value_heads
    attn = dict(layer.named_parameters())
    heads = attn[a.o].shape[1] // head_dim if a.o in attn else 0  # 0: attention removed
    inter = layer.get_parameter(a.down).shape[1]
    return Geometry(cfg.hidden_size, heads, heads // n_rep, head_dim, inter)


def attn_slices(a: Adapter, g: Geometry) -> dict[str, tuple[str, int, int]]:
    """Member -> (param name, row offset, rows per KV group) for q, k, v; o is by columns."""
    q_rows = g.heads * g.head_dim
    kv_rows = g.kv_heads * g.head_dim
    if a.qkv is not None:
        return {
            "q": (a.qkv, 0, g.n_rep * g.head_dim),
            "k": (a.qkv, q_rows, g.head_dim),
            "v": (a.qkv, q_rows + kv_rows, g.head_dim),
        }
    return {
        "q": (a.q, 0, g.n_rep * g.head_dim),
        "k": (a.k, 0, g.head_dim),
        "v": (a.v, 0, g.head_dim),
    }


def mlp_slices(a: Adapter, g: Geometry) -> dict[str, tuple[str, int]]:
    """Member -> (param name, row offset) for gate and up."""
    if a.gate_up is not None:
        return {"gate": (a.gate_up, 0), "up": (a.gate_up, g.inter)}
    return {"gate": (a.gate, 0), "up": (a.up, 0)}


def bias_of(layer: nn.Module, weight_name: str) -> torch.Tensor | None:
    return getattr(layer.get_submodule(module_path(weight_name)), "bias", None)


def attention_has_bias(model: PreTrainedModel) -> bool:
    a = get_adapter(model)
    return bias_of(get_layers(model)[0], a.qkv or a.q) is not None


def model_shapes(model: PreTrainedModel) -> dict[int, dict]:
    """Layer index -> sizes, read from the weights (pruned or not)."""
    out = {}
    for i, layer in enumerate(get_layers(model)):
        g = layer_geometry(model, layer)
        out[i] = LayerShape(g.heads, g.kv_heads, g.inter).__dict__
    return out


def is_pruned(model: PreTrainedModel) -> bool:
    """True when some layer's sizes differ from the config (needs ``save_pruned`` to save)."""
    cfg = model.config
    regular = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size)
    return any(
        (s["num_attention_heads"], s["num_key_value_heads"], s["intermediate_size"]) != regular
        for s in model_shapes(model).values()
    )
