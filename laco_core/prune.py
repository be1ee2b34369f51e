"""Structured width pruning in the style of LLM-Pruner (Ma et al., 2023, arXiv 2305.11627).

Block strategy, implemented directly on the adapters' weight names:

* one coupled group per KV head ``h`` (GQA with ``n_rep = heads / kv_heads``): rows of k and v
  for head ``h``, rows of the query heads ``h·n_rep … (h+1)·n_rep − 1`` and the matching
  o_proj columns (whole KV groups go, so ``n_rep`` stays the same);
* one coupled group per MLP channel ``j``: gate and up row ``j`` and down column ``j``.

Hidden size, embeddings and norms are untouched. Importance is the Taylor estimate of the loss
change when a group is zeroed (LLM-Pruner Eq. 3-5), from gradients of one backward pass over the
calibration samples. Pruning is local: every layer in the range loses the same share.

The pruned model is a new model whose unpruned tensors are the original's tensors and whose
pruned layers hold new, smaller ``nn.Linear`` modules; the original is never modified.
Transformers' configs hold one size per model, so a pruned model is saved with a sidecar of
per-layer sizes (``laco_shapes.json``) and reloaded by :func:`load_pruned`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

from .adapters import Adapter, get_adapter, get_layers
from .errors import LacoError
from .merge import LAYER_MAP_ATTR, layer_map
from .models import SHAPES_SIDECAR, count_params

IMPORTANCES = ("param_first", "vectorize", "param_second", "param_mix", "l1", "l2", "random")
AGGREGATIONS = ("sum", "prod", "max", "last", "mean")
RECIPE_FILE = "laco_recipe.json"


@dataclass
class LayerShape:
    """Per-layer sizes of a (possibly pruned) decoder layer."""

    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int


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
    """

    model: PreTrainedModel
    shapes: dict[int, dict]
    importance_summary: dict
    params_before: int
    params_after: int
    recipe: dict = field(default_factory=dict)

    @property
    def removed_fraction(self) -> float:
        return 1.0 - self.params_after / self.params_before


# ---- geometry of one layer ------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
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


def _module_path(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0]


def _get(layer: nn.Module, name: str | None) -> torch.Tensor | None:
    return None if name is None else layer.get_parameter(name)


def layer_geometry(model: PreTrainedModel, layer: nn.Module) -> _Geometry:
    """Sizes of one layer read from its weights (works for pruned layers too)."""
    a = get_adapter(model)
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    n_rep = cfg.num_attention_heads // cfg.num_key_value_heads
    o = _get(layer, a.o)
    heads = o.shape[1] // head_dim
    down = _get(layer, a.down)
    return _Geometry(cfg.hidden_size, heads, heads // n_rep, head_dim, down.shape[1])


def _attn_slices(a: Adapter, g: _Geometry) -> dict[str, tuple[str, int, int]]:
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


def _mlp_slices(a: Adapter, g: _Geometry) -> dict[str, tuple[str, int]]:
    """Member -> (param name, row offset) for gate and up."""
    if a.gate_up is not None:
        return {"gate": (a.gate_up, 0), "up": (a.gate_up, g.inter)}
    return {"gate": (a.gate, 0), "up": (a.up, 0)}


# ---- importance ------------------------------------------------------------------------------


def _element_scores(w: torch.Tensor, importance: str, grad, fisher) -> torch.Tensor:
    """Per-element score (before per-group reduction) for one weight."""
    w = w.detach().float()
    if importance in ("param_first", "vectorize"):
        s = w * grad  # first-order Taylor term W ⊙ ∇W
        return s if importance == "vectorize" else s.abs()
    if importance == "param_second":
        return (0.5 * w * fisher * w).abs()  # diagonal Fisher as Hessian estimate
    if importance == "param_mix":
        return (w * grad - 0.5 * w * fisher * w).abs()
    if importance == "l1":
        return w.abs()
    if importance == "l2":
        return w * w
    raise LacoError(f"Unknown importance '{importance}'; choose one of: {', '.join(IMPORTANCES)}.")


def _finish(per_group: torch.Tensor, importance: str) -> torch.Tensor:
    if importance == "vectorize":
        return per_group.abs()  # |Σ W ⊙ ∇W| over the group
    if importance == "l2":
        return per_group.sqrt()
    return per_group


def _aggregate(scores: list[torch.Tensor], aggregation: str) -> torch.Tensor:
    stacked = torch.stack(scores)  # (members, groups)
    if aggregation == "sum":
        return stacked.sum(0)
    if aggregation == "mean":
        return stacked.mean(0)
    if aggregation == "max":
        return stacked.max(0).values
    if aggregation == "prod":
        return stacked.prod(0)
    if aggregation == "last":
        return stacked[-1]  # o_proj / down_proj, the group's last member
    raise LacoError(
        f"Unknown aggregation '{aggregation}'; choose one of: {', '.join(AGGREGATIONS)}."
    )


def group_importance(
    model: PreTrainedModel,
    layer: nn.Module,
    importance: str,
    aggregation: str,
    grads: dict[str, torch.Tensor] | None = None,
    fisher: dict[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance of every KV group ``(kv_heads,)`` and every MLP channel ``(inter,)`` of a layer.

    Args:
        grads / fisher: Param name (relative to the layer) -> gradient / mean squared
            per-sample gradient; needed by the Taylor importances.
    """
    a = get_adapter(model)
    g = layer_geometry(model, layer)
    if importance == "random":
        return (
            torch.rand(g.kv_heads, generator=generator),
            torch.rand(g.inter, generator=generator),
        )
    grads, fisher = grads or {}, fisher or {}

    def scores(name: str) -> torch.Tensor:
        return _element_scores(
            layer.get_parameter(name), importance, grads.get(name), fisher.get(name)
        )

    head_scores = []
    cache: dict[str, torch.Tensor] = {}
    for name, off, rows in _attn_slices(a, g).values():
        s = cache.setdefault(name, scores(name))
        part = s[off : off + g.kv_heads * rows]  # (kv_heads * rows, hidden)
        head_scores.append(_finish(part.reshape(g.kv_heads, -1).sum(1), importance))
    s_o = scores(a.o)  # (hidden, heads * head_dim)
    head_scores.append(_finish(s_o.reshape(g.hidden, g.kv_heads, -1).sum((0, 2)), importance))

    chan_scores = []
    for name, off in _mlp_slices(a, g).values():
        s = cache.setdefault(name, scores(name))
        chan_scores.append(_finish(s[off : off + g.inter].sum(1), importance))
    chan_scores.append(_finish(scores(a.down).sum(0), importance))  # (inter,)
    return _aggregate(head_scores, aggregation), _aggregate(chan_scores, aggregation)


def _calibration_batch(
    tokenizer, texts: Sequence[str], num_samples: int, seq_len: int
) -> torch.Tensor:
    """``(N, seq_len)`` token windows cut from the joined calibration texts."""
    ids = tokenizer("\n\n".join(texts), return_tensors="pt", add_special_tokens=False).input_ids[0]
    n = min(num_samples, ids.numel() // seq_len)
    if n < 1:
        raise LacoError(
            f"Calibration text has {ids.numel()} tokens, fewer than seq_len={seq_len}: give more text."
        )
    return ids[: n * seq_len].reshape(n, seq_len)


def _gradients(
    model: PreTrainedModel,
    layer_ids: Sequence[int],
    batch: torch.Tensor,
    second_order: bool,
) -> tuple[dict[int, dict[str, torch.Tensor]], dict[int, dict[str, torch.Tensor]]]:
    """Gradients of the LM loss w.r.t. the prunable projections of ``layer_ids``.

    Only those weights require grad during the pass; their previous flags are restored and
    their ``.grad`` cleared in ``finally``. With ``second_order`` each sample is run alone to
    accumulate the squared per-sample gradients (diagonal Fisher).
    """
    a = get_adapter(model)
    layers = get_layers(model)
    names = [n for n in (a.q, a.k, a.v, a.qkv, a.o, a.gate, a.up, a.gate_up, a.down) if n]
    params = {(i, n): layers[i].get_parameter(n) for i in layer_ids for n in names}
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    device = next(model.parameters()).device
    batch = batch.to(device)
    grads: dict[int, dict[str, torch.Tensor]] = {i: {} for i in layer_ids}
    fisher: dict[int, dict[str, torch.Tensor]] = {i: {} for i in layer_ids}
    try:
        model.eval()
        for p in flags:
            p.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        if second_order:
            for row in batch:
                out = model(input_ids=row[None], labels=row[None], use_cache=False)
                out.loss.backward()
                for (i, n), p in params.items():
                    g = p.grad.detach().float()
                    fisher[i][n] = fisher[i].get(n, 0) + g * g / len(batch)
                    p.grad = None
        out = model(input_ids=batch, labels=batch, use_cache=False)
        out.loss.backward()
        for (i, n), p in params.items():
            grads[i][n] = p.grad.detach().float()
    finally:
        for p in params.values():
            p.grad = None
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    return grads, fisher


# ---- planning the per-layer amounts --------------------------------------------------------


def default_layer_range(num_layers: int) -> tuple[int, int]:
    """LLM-Pruner's default keeps the first 4 and the last 2 of 32 layers; scaled for depth."""
    first = max(1, round(num_layers * 4 / 32)) if num_layers > 3 else 0
    last = max(1, round(num_layers * 2 / 32)) if num_layers > 3 else 0
    return first, num_layers - last


def _plan_amounts(g: _Geometry, n_layers: int, target: int, has_bias: bool) -> tuple[int, int]:
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
        heads_needed = g.kv_heads - 1
        channels_max = g.inter - 1
        most = n_layers * (heads_needed * head_size + channels_max * g.channel_params)
        raise LacoError(
            f"Cannot remove {target:,} parameters from {n_layers} layers (at most {most:,}): "
            "lower the ratio or widen the layer range."
        )
    return heads, max(0, channels)


# ---- building the pruned model -------------------------------------------------------------


def shared_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A new model object whose parameters and buffers ARE the source's tensors.

    The skeleton is built on the meta device (no allocation) and every slot is pointed at the
    source's tensor of the same name, so module objects (and ``layer_idx``) are never shared.
    The source must have regular (unpruned) shapes; pruned layers are swapped in afterwards.
    """
    with torch.device("meta"):
        new = type(model)(copy.deepcopy(model.config))
    new.generation_config = copy.deepcopy(model.generation_config)
    src_params = dict(model.named_parameters(remove_duplicate=False))
    src_buffers = dict(model.named_buffers(remove_duplicate=False))
    for mod_name, module in new.named_modules():
        prefix = mod_name + "." if mod_name else ""
        for pname, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[pname] = src_params[prefix + pname]
        for bname, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[bname] = src_buffers[prefix + bname]
    leftover = [k for k, v in new.state_dict().items() if v.is_meta]
    if leftover:  # a missed name would silently stay unallocated
        raise RuntimeError(f"Unmapped tensors in copy: {leftover[:5]}")
    setattr(new, LAYER_MAP_ATTR, list(layer_map(model)))
    new.eval()
    return new


def _new_linear(weight: torch.Tensor, bias: torch.Tensor | None, empty: bool = False) -> nn.Linear:
    """A Linear holding copies of ``weight``/``bias`` (or uninitialised tensors of their shape)."""
    make = torch.empty_like if empty else torch.clone
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    lin.weight = nn.Parameter(make(weight.detach()), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(make(bias.detach()), requires_grad=False)
    return lin


def _set_module(layer: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, child, module)


def _bias(layer: nn.Module, weight_name: str) -> torch.Tensor | None:
    return getattr(layer.get_submodule(_module_path(weight_name)), "bias", None)


def _set_head_counts(model: PreTrainedModel, layer: nn.Module, heads: int, kv_heads: int) -> None:
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

    if drop_heads:
        sl = _attn_slices(a, g)
        q_idx = rows(sl["q"][1], sl["q"][2], keep_kv)
        k_idx = rows(sl["k"][1], sl["k"][2], keep_kv)
        v_idx = rows(sl["v"][1], sl["v"][2], keep_kv)
        if a.qkv is not None:
            idx = torch.cat([q_idx, k_idx, v_idx])
            w, b = layer.get_parameter(a.qkv), _bias(layer, a.qkv)
            _set_module(
                layer,
                _module_path(a.qkv),
                _new_linear(w[idx], None if b is None else b[idx], empty),
            )
        else:
            for name, idx in ((a.q, q_idx), (a.k, k_idx), (a.v, v_idx)):
                w, b = layer.get_parameter(name), _bias(layer, name)
                _set_module(
                    layer,
                    _module_path(name),
                    _new_linear(w[idx], None if b is None else b[idx], empty),
                )
        w_o = layer.get_parameter(a.o)
        _set_module(
            layer,
            _module_path(a.o),
            _new_linear(w_o[:, rows(0, sl["q"][2], keep_kv)], _bias(layer, a.o), empty),
        )
        _set_head_counts(model, layer, len(keep_kv) * g.n_rep, len(keep_kv))

    if len(drop_channels):
        if a.gate_up is not None:
            idx = torch.cat([keep_ch, keep_ch + g.inter])
            w, b = layer.get_parameter(a.gate_up), _bias(layer, a.gate_up)
            _set_module(
                layer,
                _module_path(a.gate_up),
                _new_linear(w[idx], None if b is None else b[idx], empty),
            )
        else:
            for name in (a.gate, a.up):
                w, b = layer.get_parameter(name), _bias(layer, name)
                _set_module(
                    layer,
                    _module_path(name),
                    _new_linear(w[keep_ch], None if b is None else b[keep_ch], empty),
                )
        w_d = layer.get_parameter(a.down)
        _set_module(
            layer, _module_path(a.down), _new_linear(w_d[:, keep_ch], _bias(layer, a.down), empty)
        )
        mlp = layer.get_submodule(a.mlp_prefix)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = int(keep_ch.numel())
    return LayerShape(len(keep_kv) * g.n_rep, len(keep_kv), int(keep_ch.numel()))


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


def _attention_has_bias(model: PreTrainedModel) -> bool:
    a = get_adapter(model)
    layer = get_layers(model)[0]
    return _bias(layer, a.qkv or a.q) is not None


def prune_llm_pruner(
    model: PreTrainedModel,
    tokenizer,
    texts: list[str],
    ratio: float,
    importance: str = "param_first",
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
        ratio: Fraction of ALL parameters to remove (0 <= ratio < 1).
        importance: One of ``IMPORTANCES``; ``param_first`` is Σ|W⊙∇W|.
        aggregation: How member scores of a coupled group combine: one of ``AGGREGATIONS``.
        layers: Half-open range ``[lo, hi)`` of layers to prune (default: keep the first 4 and
            last 2 of 32, scaled to depth).
        num_samples: Calibration windows (LLM-Pruner: 10).
        seq_len: Tokens per window (LLM-Pruner: 64).
        seed: For the ``random`` importance.
        grad_cache: A dict kept by the caller to reuse gradients between calls on the same
            model and texts (e.g. several ratios); filled on first use.

    Returns:
        PrunedResult with the new model, per-layer shapes and importance summary.

    Raises:
        LacoError: for an unknown importance/aggregation, a bad range or an unreachable ratio.
    """
    if importance not in IMPORTANCES:
        raise LacoError(
            f"Unknown importance '{importance}'; choose one of: {', '.join(IMPORTANCES)}."
        )
    if aggregation not in AGGREGATIONS:
        raise LacoError(
            f"Unknown aggregation '{aggregation}'; choose one of: {', '.join(AGGREGATIONS)}."
        )
    if not 0 <= ratio < 1:
        raise LacoError(
            f"Ratio {ratio} must be in [0, 1): the fraction of all parameters to remove."
        )
    if is_pruned(model):  # its per-layer sizes would be lost by the regular-shaped skeleton
        raise LacoError("This model is already width-pruned: prune the original model instead.")
    src_layers = get_layers(model)
    n = len(src_layers)
    lo, hi = layers if layers is not None else default_layer_range(n)
    if not 0 <= lo < hi <= n:
        raise LacoError(f"Layer range {lo}-{hi} is outside 0-{n} (half-open LO-HI, LO < HI).")
    params_before = count_params(model)
    target = round(ratio * params_before)
    layer_ids = list(range(lo, hi))
    g = layer_geometry(model, src_layers[lo])
    n_heads, n_channels = _plan_amounts(g, len(layer_ids), target, _attention_has_bias(model))

    grads: dict = {i: {} for i in layer_ids}
    fisher: dict = {i: {} for i in layer_ids}
    if (n_heads or n_channels) and importance in (
        "param_first",
        "vectorize",
        "param_second",
        "param_mix",
    ):
        second = importance in ("param_second", "param_mix")
        key = (id(model), lo, hi, num_samples, seq_len, second, hash(tuple(texts)))
        if grad_cache is not None and key in grad_cache:
            grads, fisher = grad_cache[key]
        else:
            batch = _calibration_batch(tokenizer, texts, num_samples, seq_len)
            grads, fisher = _gradients(model, layer_ids, batch, second)
            if grad_cache is not None:
                grad_cache[key] = (grads, fisher)

    new = shared_copy(model)
    new_layers = get_layers(new)
    gen = torch.Generator().manual_seed(seed)
    summary: dict = {
        "kv_heads_removed_per_layer": n_heads,
        "channels_removed_per_layer": n_channels,
        "layers": {},
    }
    if n_heads or n_channels:
        for i in layer_ids:
            h_imp, c_imp = group_importance(
                model, src_layers[i], importance, aggregation, grads[i], fisher[i], gen
            )
            drop_h = sorted(torch.argsort(h_imp)[:n_heads].tolist())
            drop_c = sorted(torch.argsort(c_imp)[:n_channels].tolist())
            prune_layer(new, new_layers[i], drop_h, drop_c)
            summary["layers"][i] = {
                "kv_heads_removed": drop_h,
                "head_importance": [round(float(x), 6) for x in h_imp],
                "channels_removed": len(drop_c),
                "channel_importance_mean": float(c_imp.mean()),
            }
    params_after = count_params(new)
    recipe = {
        "kind": "llm_pruner",
        "ratio": ratio,
        "importance": importance,
        "aggregation": aggregation,
        "layers": [lo, hi],
        "num_samples": num_samples,
        "seq_len": seq_len,
        "seed": seed,
        "params_before": params_before,
        "params_after": params_after,
    }
    return PrunedResult(new, model_shapes(new), summary, params_before, params_after, recipe)


# ---- saving and loading --------------------------------------------------------------------


def save_pruned(
    result_or_model, tokenizer, out_dir: str | Path, recipe: dict | None = None
) -> Path:
    """Write a pruned (or healed pruned) model: safetensors, tokenizer, shapes sidecar, recipe.

    Args:
        result_or_model: A PrunedResult or any model (shapes are read from its weights).
        tokenizer: Saved beside the weights.
        out_dir: Created if missing.
        recipe: Written as ``laco_recipe.json`` (default: the result's recipe).
    """
    is_model = isinstance(result_or_model, nn.Module)  # a CausalLM has a `.model` attribute too
    model = result_or_model if is_model else result_or_model.model
    if recipe is None:
        recipe = {} if is_model else result_or_model.recipe
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    sidecar = {"format": 1, "layers": {str(i): s for i, s in model_shapes(model).items()}}
    (out / SHAPES_SIDECAR).write_text(json.dumps(sidecar, indent=1))
    (out / RECIPE_FILE).write_text(json.dumps(recipe, indent=1, default=str))
    return out


def _skeleton(config, dtype: torch.dtype) -> PreTrainedModel:
    """A model of ``config`` without spending time on random initialisation where possible."""
    from transformers import AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def apply_shapes(model: PreTrainedModel, shapes: dict) -> None:
    """Resize each layer's projections (uninitialised) to the sizes in ``shapes``."""
    for key, s in shapes.items():
        layer = get_layers(model)[int(key)]
        g = layer_geometry(model, layer)
        drop_h = list(range(s["num_key_value_heads"], g.kv_heads))
        drop_c = list(range(s["intermediate_size"], g.inter))
        if drop_h or drop_c:
            prune_layer(model, layer, drop_h, drop_c, empty=True)


def load_pruned(path: str | Path, dtype: torch.dtype = torch.float32):
    """Load a model saved by :func:`save_pruned`, rebuilding the per-layer sizes first.

    Returns:
        ``(model, tokenizer)``, the model in eval mode.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path)
    sidecar = json.loads((path / SHAPES_SIDECAR).read_text())
    config = AutoConfig.from_pretrained(path)
    model = _skeleton(config, dtype)
    apply_shapes(model, sidecar["layers"])
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise LacoError(f"No .safetensors weights in {path}; save the model with save_pruned.")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = (
        {k for k in missing if k.endswith("lm_head.weight")}
        if config.tie_word_embeddings
        else set()
    )
    if set(missing) - tied or unexpected:
        raise LacoError(
            f"Weights in {path} do not match its shapes sidecar: {sorted(set(missing) - tied)[:3]}"
            f" {unexpected[:3]}"
        )
    if tied:
        model.tie_weights()
    model.to(dtype).eval()
    model.requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(path)
    return model, tok


def _rebuild(engine, base, recipe: dict) -> PreTrainedModel:
    """Engine rebuilder: redo an LLM-Pruner run from its recipe on the base model."""
    from .assets import read_prompts

    with engine.lock:
        return prune_llm_pruner(
            base.model,
            base.tokenizer,
            read_prompts(),
            recipe["ratio"],
            recipe["importance"],
            recipe["aggregation"],
            tuple(recipe["layers"]),
            recipe["num_samples"],
            recipe["seq_len"],
            recipe.get("seed", 0),
        ).model


def register_rebuilder() -> None:
    """Let the engine rebuild evicted LLM-Pruner models (kind ``llm_pruner``; done on import)."""
    from .engine import REBUILDERS

    REBUILDERS["llm_pruner"] = _rebuild


register_rebuilder()


__all__ = [
    "AGGREGATIONS",
    "IMPORTANCES",
    "PrunedResult",
    "apply_shapes",
    "default_layer_range",
    "group_importance",
    "is_pruned",
    "load_pruned",
    "model_shapes",
    "prune_layer",
    "prune_llm_pruner",
    "save_pruned",
    "shared_copy",
]
