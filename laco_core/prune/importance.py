"""Importance of LLM-Pruner's coupled groups (Ma et al. 2023, arXiv 2305.11627, Eq. 3-5).

Each importance scores every element of a projection; the scores of a coupled group (a KV
head group, an MLP channel) are summed per member, finished, then aggregated across members.
The registry (``laco_core.registry``) lists the importances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel

from ..arch.adapters import get_adapter, get_layers
from ..arch.sharing import layers_prefix, shared_copy
from ..arch.tokens import body_ids, start_ids, with_start
from ..errors import LacoError
from .geometry import attn_slices, layer_geometry, mlp_slices

AGGREGATIONS = ("sum", "prod", "max", "last", "mean")


class Importance:
    """How much zeroing a weight element would change the loss (higher: keep).

    Attributes:
        name: Registry name (``--importance``).
        needs: ``grad`` (first-order Taylor), ``fisher`` (also per-sample squared
            gradients), or None (weights alone).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    needs: ClassVar[str | None] = None

    def elements(self, w: torch.Tensor, grad, fisher) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, per_group: torch.Tensor) -> torch.Tensor:
        """From the per-group sum of element scores to the member's group score."""
        return per_group


class TaylorFirst(Importance):
    name, needs = "param_first", "grad"
    summary = "Σ |W ⊙ ∇W| (first-order Taylor, LLM-Pruner's default)"

    def elements(self, w, grad, fisher):
        return (w * grad).abs()


class Vectorize(Importance):
    name, needs = "vectorize", "grad"
    summary = "|Σ W ⊙ ∇W| over the group (vector-wise Taylor)"

    def elements(self, w, grad, fisher):
        return w * grad

    def finish(self, per_group):
        return per_group.abs()


class TaylorSecond(Importance):
    name, needs = "param_second", "fisher"
    summary = "Σ |½ W² F| with the diagonal Fisher as Hessian estimate"

    def elements(self, w, grad, fisher):
        return (0.5 * w * fisher * w).abs()


class TaylorMix(Importance):
    name, needs = "param_mix", "fisher"
    summary = "Σ |W ∇W − ½ W² F| (first and second order)"

    def elements(self, w, grad, fisher):
        return (w * grad - 0.5 * w * fisher * w).abs()


class L1(Importance):
    name = "l1"
    summary = "Σ |W| (magnitude)"

    def elements(self, w, grad, fisher):
        return w.abs()


class L2(Importance):
    name = "l2"
    summary = "‖W‖₂ of the group"

    def elements(self, w, grad, fisher):
        return w * w

    def finish(self, per_group):
        return per_group.sqrt()


class Random(Importance):
    name = "random"
    summary = "random scores (a floor every importance should beat)"


def aggregate(scores: list[torch.Tensor], aggregation: str) -> torch.Tensor:
    """Combine the members' scores of every group ``(members, groups) -> (groups,)``."""
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
    importance: Importance,
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
    if isinstance(importance, Random):
        return (
            torch.rand(g.kv_heads, generator=generator),
            torch.rand(g.inter, generator=generator),
        )
    grads, fisher = grads or {}, fisher or {}

    def scores(name: str) -> torch.Tensor:
        w = layer.get_parameter(name).detach().float()
        return importance.elements(w, grads.get(name), fisher.get(name))

    head_scores = []
    cache: dict[str, torch.Tensor] = {}
    for name, off, rows in attn_slices(a, g).values():
        s = cache.setdefault(name, scores(name))
        part = s[off : off + g.kv_heads * rows]  # (kv_heads * rows, hidden)
        head_scores.append(importance.finish(part.reshape(g.kv_heads, -1).sum(1)))
    s_o = scores(a.o)  # (hidden, heads * head_dim)
    head_scores.append(importance.finish(s_o.reshape(g.hidden, g.kv_heads, -1).sum((0, 2))))

    chan_scores = []
    for name, off in mlp_slices(a, g).values():
        s = cache.setdefault(name, scores(name))
        chan_scores.append(importance.finish(s[off : off + g.inter].sum(1)))
    chan_scores.append(importance.finish(scores(a.down).sum(0)))  # (inter,)
    return aggregate(head_scores, aggregation), aggregate(chan_scores, aggregation)


def calibration_batch(
    tokenizer, texts: Sequence[str], num_samples: int, seq_len: int
) -> torch.Tensor:
    """``(N, seq_len)`` token windows cut from the joined calibration texts."""
    if num_samples < 1 or seq_len < 2:
        raise LacoError("Calibration needs at least 1 sample of at least 2 tokens.")
    start = start_ids(tokenizer)
    body = seq_len - len(start)  # each sample: the start ids, then ``body`` text tokens
    ids = torch.tensor(body_ids(tokenizer, "\n\n".join(texts)), dtype=torch.long)
    n = min(num_samples, ids.numel() // max(body, 1))
    if n < 1:
        raise LacoError(
            f"Calibration text has {ids.numel()} tokens, fewer than seq_len={seq_len}: "
            "give more text."
        )
    return with_start(tokenizer, ids[: n * body].reshape(n, body))  # (n, seq_len)


def gradient_view(model: PreTrainedModel, trainable: dict[int, list[str]]) -> PreTrainedModel:
    """A model sharing ``model``'s storage through NEW parameter objects, so gradients and
    ``requires_grad`` flags stay private: only ``trainable`` (layer -> names) require grad."""
    view = shared_copy(model)
    layers = get_layers(view)
    targets = {(i, n) for i, names in trainable.items() for n in names}
    for i, layer in enumerate(layers):
        for name, p in list(layer.named_parameters()):
            owner, _, leaf = name.rpartition(".")
            module = layer.get_submodule(owner) if owner else layer
            module._parameters[leaf] = nn.Parameter(p.data, requires_grad=(i, name) in targets)
    prefix = layers_prefix(view)
    for name, module in view.named_modules():
        if (name + ".").startswith(prefix):
            continue
        for leaf, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[leaf] = nn.Parameter(p.data, requires_grad=False)
    return view


def gradients(
    model: PreTrainedModel, layer_ids: Sequence[int], batch: torch.Tensor, second_order: bool
) -> tuple[dict[int, dict[str, torch.Tensor]], dict[int, dict[str, torch.Tensor]]]:
    """Gradients of the LM loss w.r.t. the prunable projections of ``layer_ids``.

    Runs on a gradient view of ``model``, whose flags and ``.grad`` are its own: the model
    (which other users may be running) is never touched. With ``second_order`` each sample
    is run alone to accumulate the squared per-sample gradients (diagonal Fisher).
    """
    names = get_adapter(model).projections()
    view = gradient_view(model, {i: names for i in layer_ids})
    layers = get_layers(view)
    params = {(i, n): layers[i].get_parameter(n) for i in layer_ids for n in names}
    batch = batch.to(next(model.parameters()).device)
    grads: dict[int, dict[str, torch.Tensor]] = {i: {} for i in layer_ids}
    fisher: dict[int, dict[str, torch.Tensor]] = {i: {} for i in layer_ids}
    with torch.enable_grad():  # callers may run under no_grad / inference_mode
        if second_order:
            for row in batch:
                view(input_ids=row[None], labels=row[None], use_cache=False).loss.backward()
                for (i, n), p in params.items():
                    g = p.grad.detach().float()
                    fisher[i][n] = fisher[i].get(n, 0) + g * g / len(batch)
                    p.grad = None
        view(input_ids=batch, labels=batch, use_cache=False).loss.backward()
    for (i, n), p in params.items():
        grads[i][n] = p.grad.detach().float()
        p.grad = None
    return grads, fisher
