"""Architecture knowledge as data: where a decoder's layers, norms, attention and MLP weights live.

Every other module asks the adapter instead of branching on ``model_type``; the tiny random
models the tests use are generated from the same table (``tiny_config``). Adding an
architecture whose layout matches an existing one is one entry in ``ADAPTERS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import nn

from ..errors import LacoError


@dataclass(frozen=True)
class Adapter:
    """Weight-name templates for one family of decoder-only transformers.

    Names are relative to one decoder layer (``model.model.layers[i]``).

    Attributes:
        name: The ``model_type`` this entry serves.
        config_class: The transformers config class (used to build tiny test models).
        attn_prefix: Submodule holding self-attention (its weights and any q/k norms).
        mlp_prefix: Submodule holding the feed-forward block.
        q, k, v, o: Attention projection weights; ``None`` when fused into ``qkv``.
        qkv: Fused q/k/v projection (rows ordered q, k, v), e.g. Phi-3.
        gate, up, down: MLP projection weights; ``gate``/``up`` are ``None`` when fused.
        gate_up: Fused gate/up projection (rows ordered gate, up), e.g. Phi-3.
        attn_biases: Bias names on the q/k/v projections (Qwen2), pruned with their rows.
        post_attn_norm: A norm applied to the attention OUTPUT before the residual add
            (Gemma 2/3); it makes that output non-linear in ``o``'s weights.
        post_mlp_norm: A norm applied to the MLP OUTPUT before the residual add (Gemma 2/3);
            fitted corrections of ``down`` skip such layers (the output is not linear in it).
        layer_config_lists: Config attributes that hold one entry per layer.
        tiny: Overrides of the tiny test config for this family (``tiny_config``).
    """

    name: str
    config_class: str = "LlamaConfig"
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
    post_attn_norm: str | None = None
    post_mlp_norm: str | None = None
    layer_config_lists: tuple[str, ...] = field(default=("layer_types",))
    tiny: tuple[tuple[str, object], ...] = ()

    def is_block_param(self, name: str) -> bool:
        """True for a parameter inside the attention or MLP submodule of a layer."""
        return name.startswith(self.attn_prefix + ".") or name.startswith(self.mlp_prefix + ".")

    @property
    def down_module(self) -> str:
        """Dotted path of the MLP output projection module inside a layer (``mlp.down_proj``)."""
        return self.down.rsplit(".", 1)[0]

    def projections(self) -> list[str]:
        """Every attention and MLP projection weight name of a layer."""
        names = (self.q, self.k, self.v, self.qkv, self.o, self.gate, self.up, self.gate_up)
        return [n for n in (*names, self.down) if n]


_LLAMA = Adapter(name="llama")
_SLIDING = (("sliding_window", 16),)  # small enough that sliding layers differ from full ones
_GEMMA_NORMS = {
    "post_attn_norm": "post_attention_layernorm.weight",
    "post_mlp_norm": "post_feedforward_layernorm.weight",
}

# model_type -> adapter. Qwen3/Gemma keep the Llama names; their q_norm/k_norm and extra
# layer norms are found generically by parameter name.
ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA,
    "mistral": replace(_LLAMA, name="mistral", config_class="MistralConfig", tiny=_SLIDING),
    "qwen2": replace(
        _LLAMA,
        name="qwen2",
        config_class="Qwen2Config",
        attn_biases=("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
        tiny=_SLIDING,
    ),
    "qwen3": replace(_LLAMA, name="qwen3", config_class="Qwen3Config", tiny=_SLIDING),
    "gemma2": replace(
        _LLAMA, name="gemma2", config_class="Gemma2Config", tiny=_SLIDING, **_GEMMA_NORMS
    ),
    "gemma3_text": replace(
        _LLAMA,
        name="gemma3_text",
        config_class="Gemma3TextConfig",
        tiny=(*_SLIDING, ("sliding_window_pattern", 2), ("alternate_layer_types", True)),
        **_GEMMA_NORMS,
    ),
    "phi3": replace(
        _LLAMA,
        name="phi3",
        config_class="Phi3Config",
        q=None,
        k=None,
        v=None,
        qkv="self_attn.qkv_proj.weight",
        gate=None,
        up=None,
        gate_up="mlp.gate_up_proj.weight",
    ),
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


def tiny_config(arch: str = "llama", layers: int = 6, **overrides):
    """A 4-head, 2-KV-head (GQA) config with hidden size 32 for ``arch``, from this table."""
    import transformers

    adapter = ADAPTERS[arch]
    kwargs: dict = dict(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    extra = dict(adapter.tiny)
    if extra.pop("alternate_layer_types", False):
        kwargs["layer_types"] = [
            "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)
        ]
    kwargs.update(extra)
    kwargs.update(overrides)
    return getattr(transformers, adapter.config_class)(**kwargs)
