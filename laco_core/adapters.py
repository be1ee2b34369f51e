"""Architecture knowledge as data: where a decoder's layers, norms, attention and MLP weights live.

Every other module asks the adapter instead of branching on ``model_type``. Adding an
architecture whose layout matches an existing one is a one-line entry in ``ADAPTERS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .errors import LacoError


@dataclass(frozen=True)
class Adapter:
    """Weight-name templates for one family of decoder-only transformers.

    Names are relative to one decoder layer (``model.model.layers[i]``).

    Attributes:
        name: Human-readable family name.
        attn_prefix: Submodule holding self-attention (its weights and any q/k norms).
        mlp_prefix: Submodule holding the feed-forward block.
        q, k, v, o: Attention projection weights; ``None`` when fused into ``qkv``.
        qkv: Fused q/k/v projection (rows ordered q, k, v), e.g. Phi-3.
        gate, up, down: MLP projection weights; ``gate``/``up`` are ``None`` when fused.
        gate_up: Fused gate/up projection (rows ordered gate, up), e.g. Phi-3.
        attn_biases: Bias names on the q/k/v projections (Qwen2), pruned with their rows.
        layer_config_lists: Config attributes that hold one entry per layer.
    """

    name: str
    attn_prefix: str = "self_attn"
    mlp_prefix: str = "mlp"
    q: str | None = "self_attn.q_proj.weight"
    k: str | None = "self_attn.k_proj.weight"
    v: str | None = "self_attn.v_proj.weight"
    o: str = "self_attn.o_proj.weight"
    qkv: str | None = None
    gate: str | None = "mlp.gate_proj.weight"
    up: str | None = "mlp.up_proj.weight"
    down: str = "mlp.down_proj.weight"
    gate_up: str | None = None
    attn_biases: tuple[str, ...] = ()
    layer_config_lists: tuple[str, ...] = field(default=("layer_types",))

    def is_block_param(self, name: str) -> bool:
        """True for a parameter inside the attention or MLP submodule of a layer."""
        return name.startswith(self.attn_prefix + ".") or name.startswith(self.mlp_prefix + ".")


_LLAMA = Adapter(name="llama")
_QWEN2 = Adapter(
    name="qwen2",
    attn_biases=("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
)
_PHI3 = Adapter(
    name="phi3",
    q=None,
    k=None,
    v=None,
    qkv="self_attn.qkv_proj.weight",
    gate=None,
    up=None,
    gate_up="mlp.gate_up_proj.weight",
)

# model_type -> adapter. Gemma2/3 and Qwen3 keep the Llama names; their extra norms
# (pre/post feed-forward, q_norm/k_norm) are found generically by parameter name.
ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _QWEN2,
    "qwen3": _LLAMA,
    "gemma2": _LLAMA,
    "gemma3_text": _LLAMA,
    "phi3": _PHI3,
}


def supported() -> str:
    """Comma-separated list of supported ``model_type`` values."""
    return ", ".join(sorted(ADAPTERS))


def get_adapter(model_or_config) -> Adapter:
    """Return the adapter for a model or config, or raise LacoError naming what is supported."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise LacoError(f"Architecture '{model_type}' is not supported; supported: {supported()}.")
    return ADAPTERS[model_type]


def decoder(model: nn.Module) -> nn.Module:
    """The decoder stack (``model.model`` for *ForCausalLM) found through transformers' metadata."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def get_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers."""
    return decoder(model).layers


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied after the last decoder layer."""
    return decoder(model).norm


def num_layers(model: nn.Module) -> int:
    return len(get_layers(model))


def module_kind(param_name: str) -> str:
    """Short kind of a per-layer parameter: ``self_attn.q_proj.weight`` -> ``q_proj``.

    Biases keep a suffix so they form their own kind (``q_proj.bias``).
    """
    parts = param_name.split(".")
    kind = parts[-2] if len(parts) >= 2 else parts[0]
    return kind + ".bias" if parts[-1] == "bias" else kind


def kind_group(adapter: Adapter, param_name: str) -> str:
    """Coarse group of a parameter for the UI: ``norms``, ``attention`` or ``mlp``."""
    if "norm" in module_kind(param_name):
        return "norms"
    if param_name.startswith(adapter.attn_prefix + "."):
        return "attention"
    if param_name.startswith(adapter.mlp_prefix + "."):
        return "mlp"
    return "other"
