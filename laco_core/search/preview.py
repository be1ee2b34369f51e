"""What-if preview: the damage of a proposed plan, estimated from cached activations."""

from __future__ import annotations

import time

from transformers import PreTrainedModel

from ..analysis.activations import ActivationCache
from ..arch.adapters import get_layers
from ..arch.plan import Range, validate_ranges
from ..arch.sharing import count_params
from ..arch.subblocks import drop_attention
from ..methods.collapse import collapse_model
from .objectives import KL, Cosine, Partial


def preview(
    model: PreTrainedModel,
    cache: ActivationCache,
    ranges: list[Range],
    method,
    params: dict | None = None,
    estimated_as: str | None = None,
    attention: list[int] | None = None,
) -> dict:
    """Cosine and KL of a plan against ``model``, running only layers from the first change.

    Args:
        model: The dense model (the one ``cache`` was built from).
        cache: Its activations on the calibration prompts.
        ranges: Plan in ``model``'s indices.
        method: The merge method to estimate with (for a fitted method the caller passes
            the plain drop it starts from, its fit needing more text than a preview has).
        params: The method's parameters.
        estimated_as: Recorded in the result when the estimate uses another method.
        attention: Layers (``model``'s indices) whose attention is removed first.

    Returns:
        ``cosine``, ``kl`` (mean next-token KL), ``layers_before/after``,
        ``params_before/after``, ``seconds`` and, when given, ``estimated_as``.
    """
    t0 = time.perf_counter()
    n = len(get_layers(model))
    ranges = validate_ranges(ranges, n) if ranges or not attention else []
    cand = drop_attention(model, attention) if attention else model
    if ranges:
        cand = collapse_model(cand, ranges, method, params or {})
    start = min([lo for lo, _ in ranges] + list(attention or []))
    finals = cache.finals(cand, start)
    kl, total = KL(), Partial()
    kl.prepare(cache, model)
    for c, h in zip(cache.chunks, finals, strict=True):
        total.add(*kl.stat(cache, cand, c, h), len(c.lengths))
    out = {
        "cosine": Cosine().score(cache, cand, finals),
        "kl": total.total / total.count,
        "layers_before": n,
        "layers_after": len(get_layers(cand)),
        "attention_removed": sorted(attention or []),
        "params_before": count_params(model),
        "params_after": count_params(cand),
        "seconds": time.perf_counter() - t0,
    }
    if estimated_as:
        out["estimated_as"] = estimated_as
    return out
