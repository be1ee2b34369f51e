"""What-if preview: the objective of a proposed plan, estimated from cached activations."""

from __future__ import annotations

import time

from transformers import PreTrainedModel

from ..adapters import get_layers
from ..merge import build_collapsed, get_method, parse_ranges, validate_ranges
from ..models import count_params
from .activations import ActivationCache
from .objectives import cosine_score, kl_value

# the app keeps one per base model: the dense per-layer inputs, computed once
PreviewCache = ActivationCache


def preview(
    model: PreTrainedModel,
    tokenizer,
    prompts: list[str],
    ranges,
    method: str = "official",
    cache: ActivationCache | None = None,
    **method_params,
) -> dict:
    """Cosine and KL of a collapse plan against ``model``, running only layers from the first merge.

    Args:
        model: The dense model (the one ``cache`` was built from).
        tokenizer: Its tokenizer.
        prompts: Calibration prompts (ignored when ``cache`` is given).
        ranges: Plan in ``model``'s indices (``"20-23"`` or pairs).
        method: Merge method name.
        cache: A ``PreviewCache`` of ``model`` to reuse (built here when None).
        **method_params: Parameters of the method (e.g. ``alpha``).

    Returns:
        ``cosine``, ``kl`` (mean next-token KL), ``layers_before/after``,
        ``params_before/after`` and ``seconds``; ``estimated_as`` names the method the numbers
        are for when it differs from ``method``: a fitted method (``drop_lsq``…) is previewed
        as the plain drop it starts from, its fit needing more text than a preview has time for.

    Raises:
        LacoError: for an invalid plan.
    """
    t0 = time.perf_counter()
    if cache is None:
        cache = PreviewCache(model, tokenizer, prompts)
    n = len(get_layers(model))
    ranges = validate_ranges(parse_ranges(ranges) if isinstance(ranges, str) else ranges, n)
    fitted = get_method(method).fitted
    if fitted:
        method, method_params = "drop", {}
    cand = build_collapsed(model, ranges, method, **method_params)
    finals = cache.finals(cand, ranges[0][0])
    out = {
        "cosine": cosine_score(cache, finals),
        "kl": kl_value(cache, cand, finals),
        "layers_before": n,
        "layers_after": len(get_layers(cand)),
        "params_before": count_params(model),
        "params_after": count_params(cand),
        "seconds": time.perf_counter() - t0,
    }
    if fitted:
        out["estimated_as"] = "drop"
    return out
