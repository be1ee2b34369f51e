"""New models that share the original's tensors: the one place merge, prune and drops build models.

A derived model is a new object tree whose parameter and buffer slots point at the source's
tensors; only tensors a step really changes are new. Module objects are never shared, because
attention modules carry ``layer_idx`` (their KV-cache slot): renumbering a shared module would
silently break the source's cached generation.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from .adapters import decoder, get_adapter, get_layers
from .plan import LAYER_MAP_ATTR, Range, layer_map


def private_copy(module: nn.Module) -> nn.Module:
    """New module objects around the same parameter and buffer tensors (no copy of data).

    Hooks a caller left on the source (e.g. a recording hook) are not carried over.
    """
    memo = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    new = copy.deepcopy(module, memo)
    for m in new.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks):
            hooks.clear()
    return new


def set_layer_index(layer: nn.Module, index: int) -> None:
    """Give a decoder layer (and its attention) the KV-cache slot ``index``."""
    for module in layer.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = index


def replace_params(layer: nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Point the named parameters of ``layer`` at new tensors (the others stay shared).

    A tensor that already is a source ``nn.Parameter`` is put in place as it is (shared).
    """
    for name, t in params.items():
        owner, _, leaf = name.rpartition(".")
        module = layer.get_submodule(owner) if owner else layer
        if module._parameters.get(leaf) is t:
            continue
        module._parameters[leaf] = (
            t if isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)
        )


def share_layer(
    src: nn.Module, index: int, params: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """A new decoder layer at ``index`` whose tensors are ``src``'s, except ``params``."""
    layer = private_copy(src)
    if params:
        replace_params(layer, params)
    set_layer_index(layer, index)
    layer.eval()
    return layer


def derived_config(config, sources: Sequence[int], adapter):
    """Config with ``num_hidden_layers`` and per-layer lists (``layer_types``…) for new layers
    that take their per-layer entries from source layers ``sources`` (a merged layer sits at
    ``lo``'s position, so it keeps lo's attention type)."""
    new = copy.deepcopy(config)
    old_n = config.num_hidden_layers
    new.num_hidden_layers = len(sources)
    for attr in adapter.layer_config_lists:
        values = getattr(config, attr, None)
        if isinstance(values, (list, tuple)) and len(values) == old_n:
            setattr(new, attr, [values[i] for i in sources])
    return new


def layers_prefix(model: nn.Module) -> str:
    """Dotted prefix of the decoder layers, e.g. ``model.layers.``."""
    layers = get_layers(model)
    for name, module in model.named_modules():
        if module is layers:
            return name + "."
    raise RuntimeError("decoder layers not found in the module tree")


@torch.no_grad()
def derive(
    model: PreTrainedModel,
    layers: Sequence[nn.Module],
    groups: Sequence[Range],
    sources: Sequence[int] | None = None,
) -> PreTrainedModel:
    """A new model with ``model``'s embeddings, final norm and head and the given layers.

    Args:
        model: The source (an original, or a model built here).
        layers: The new model's decoder layers, new module objects (``share_layer``).
        groups: For each new layer, the range of ``model``'s layers it stands for (indices of
            ``model``); sets the original-index layer map.
        sources: For each new layer, the source layer whose per-layer config entries it
            keeps (default: the first of its group).

    Returns:
        The model in eval mode; every non-layer tensor is ``model``'s own.
    """
    if len(layers) != len(groups):
        raise ValueError("one group per layer")
    sources = [lo for lo, _ in groups] if sources is None else list(sources)
    config = derived_config(model.config, sources, get_adapter(model))
    with torch.device("meta"):
        new = type(model)(config)
    new.generation_config = copy.deepcopy(model.generation_config)
    prefix = layers_prefix(model)
    src_params = dict(model.named_parameters(remove_duplicate=False))
    src_buffers = dict(model.named_buffers(remove_duplicate=False))
    for mod_name, module in new.named_modules():
        if (mod_name + ".").startswith(prefix):
            continue  # the layers are replaced below
        p = mod_name + "." if mod_name else ""
        for name, t in list(module._parameters.items()):
            if t is not None:
                module._parameters[name] = src_params[p + name]
        for name, t in list(module._buffers.items()):
            if t is not None:
                module._buffers[name] = src_buffers[p + name]
    dec = decoder(new)
    dec.layers = nn.ModuleList(layers)
    for j, layer in enumerate(dec.layers):
        set_layer_index(layer, j)
    leftover = [k for k, v in new.state_dict().items() if v.is_meta]
    if leftover:  # a name the mapping missed would silently stay unallocated
        raise RuntimeError(f"Unmapped tensors in derived model: {leftover[:5]}")
    parent = layer_map(model)
    setattr(new, LAYER_MAP_ATTR, [(parent[lo][0], parent[hi][1]) for lo, hi in groups])
    new.eval()
    return new


def shared_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A new model object whose every tensor is the source's (layer shapes kept as they are)."""
    layers = get_layers(model)
    return derive(
        model,
        [share_layer(layer, i) for i, layer in enumerate(layers)],
        [(i, i) for i in range(len(layers))],
    )


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def layer_sources(original: nn.Module, derived: nn.Module) -> list[int | None]:
    """For each layer of ``derived``, the layer of ``original`` whose every tensor it shares
    (it IS that layer, unchanged), or None when it holds new or mixed tensors."""
    owner: dict[int, int] = {}
    sizes = []
    for i, layer in enumerate(get_layers(original)):
        params = list(layer.parameters())
        sizes.append(len(params))
        for p in params:
            owner[p.untyped_storage().data_ptr()] = i
    out: list[int | None] = []
    for layer in get_layers(derived):
        params = list(layer.parameters())
        found = {owner.get(p.untyped_storage().data_ptr()) for p in params}
        i = found.pop() if len(found) == 1 and None not in found else None
        # the whole layer, not part of it (a layer whose attention was removed is not a copy)
        out.append(i if i is not None and len(params) == sizes[i] else None)
    return out


def shared_fraction(original: nn.Module, derived: nn.Module) -> float:
    """Fraction of the derived model's parameter elements that share storage with the original."""
    orig_ptrs = {p.data_ptr() for p in original.parameters()}
    total = shared = 0
    for p in derived.parameters():
        total += p.numel()
        shared += p.numel() if p.data_ptr() in orig_ptrs else 0
    return shared / max(total, 1)


def new_bytes(base: nn.Module, derived: nn.Module) -> int:
    """Bytes of the derived model's tensors that the base does not hold (its own cost)."""
    have = {t.untyped_storage().data_ptr() for t in [*base.parameters(), *base.buffers()]}
    return model_bytes(derived, exclude=have)


def model_bytes(model: nn.Module, exclude: set[int] | None = None) -> int:
    """Bytes of distinct parameter storage, not counting storages in ``exclude``."""
    seen = set(exclude or ())
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total
