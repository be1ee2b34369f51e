"""The library's operations by name: collapse, search, preview, fit, prune.

Low-level modules take component objects; these functions resolve names through the
registry, validate parameters against the declarations, and call them. Scripts, tests and
the benchmarks use this module; the engine and the CLI use it or ``pipeline``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from transformers import PreTrainedModel

from .analysis.activations import ActivationCache
from .arch.adapters import get_layers
from .arch.plan import Range, parse_ranges, validate_ranges
from .errors import LacoError
from .methods.base import MergeMethod
from .methods.collapse import collapse_model
from .prune.llm_pruner import PrunedResult
from .prune.llm_pruner import prune_llm_pruner as _prune
from .registry import REGISTRY
from .search.config import Merge, SearchConfig, SearchResult
from .search.preview import preview as _preview
from .search.reference import reference_search as _reference
from .search.run import fit_plan
from .search.run import run as _run

PREVIEW_FALLBACK = "drop"  # a fitted method is previewed as the plain drop it starts from


def get_method(name: str) -> MergeMethod:
    return REGISTRY.method(name)


def _ranges(model: PreTrainedModel, ranges) -> list[Range]:
    if isinstance(ranges, str):
        ranges = parse_ranges(ranges)
    return validate_ranges(ranges, len(get_layers(model)))


def build_collapsed(
    model: PreTrainedModel, ranges, method: str = "official", **params
) -> PreTrainedModel:
    """A collapsed model sharing every untouched tensor with ``model``.

    Args:
        model: The model to collapse (an original, or a model built here).
        ranges: Plan in ``model``'s own layer indices, e.g. ``"16-18"`` or ``[(16, 18)]``.
        method: A registered merge method.
        **params: The method's declared parameters (e.g. ``alpha``).

    Raises:
        LacoError: for an unknown method or parameter, an invalid plan, or a fitted method
            without its fit (use ``fit_collapse``).
    """
    m = get_method(method)
    checked = m.check(params)
    if m.fitted and not m.is_fitted(checked):
        raise LacoError(
            f"{method} is fitted on calibration data: use fit_collapse (or laco collapse), "
            "which fits it."
        )
    return collapse_model(model, _ranges(model, ranges), m, checked)


def search_components(cfg: SearchConfig):
    """The method, objective and strategy a config names (errors name the choices)."""
    return REGISTRY.search_components(cfg)


def run_search(
    model: PreTrainedModel,
    tokenizer,
    prompts: list[str],
    cfg: SearchConfig | None = None,
    callback: Callable[[dict], None] | None = None,
    cache: ActivationCache | None = None,
    stop: threading.Event | None = None,
    refit_texts: list[str] | None = None,
) -> SearchResult:
    """Search for a collapse plan of ``model`` on calibration ``prompts``.

    With ``strategy="paper"`` and no target this is LaCo Algorithm 1 (Yang et al. 2024)
    exactly as the official code runs it. See ``SearchConfig`` for every setting.

    Raises:
        LacoError: for invalid parameters or an unreachable target.
    """
    cfg = (cfg or SearchConfig()).validate(len(get_layers(model)))
    method, objective, strategy, refit = search_components(cfg)
    return _run(
        model,
        tokenizer,
        prompts,
        cfg,
        method,
        objective,
        strategy,
        callback,
        cache,
        stop,
        refit,
        refit_texts,
    )


def reference_search(
    model: PreTrainedModel, tokenizer, prompts: list[str], cfg: SearchConfig | None = None
) -> dict:
    """The literal official loop (cosine objective, fixed threshold), to check the fast one."""
    cfg = cfg or SearchConfig()
    return _reference(model, tokenizer, prompts, cfg, get_method(cfg.method))


def fit_collapse(
    model: PreTrainedModel,
    tokenizer,
    texts: list[str],
    ranges,
    ridge: float | str = "auto",
    cache: ActivationCache | None = None,
    method: str = "drop_lsq",
) -> tuple[PreTrainedModel, list[Merge]]:
    """Collapse a fixed plan with a fitted method, range by range bottom-up on ``texts``.

    Returns:
        The model and its merges (indices of the model at each step, fitted tensors inside).
    """
    m = get_method(method)
    if not m.fitted:
        raise LacoError(f"{method} is not a fitted method; use build_collapsed.")
    params = m.check({"ridge": ridge})
    return fit_plan(model, tokenizer, texts, _ranges(model, ranges), m, params, cache)


def preview(
    model: PreTrainedModel,
    tokenizer,
    prompts: list[str],
    ranges,
    method: str = "official",
    cache: ActivationCache | None = None,
    attention: list[int] | None = None,
    **params,
) -> dict:
    """Cosine and KL of a plan (ranges, and attention sub-blocks removed), estimated from
    cached activations (``search.preview``)."""
    m = get_method(method)
    checked = m.check(params)
    estimated_as = None
    if m.fitted:
        m, checked, estimated_as = get_method(PREVIEW_FALLBACK), {}, PREVIEW_FALLBACK
    if cache is None:
        cache = ActivationCache(model, tokenizer, prompts)
    ranges = _ranges(model, ranges) if ranges or not attention else []
    return _preview(model, cache, ranges, m, checked, estimated_as, attention)


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
    """LLM-Pruner width pruning with a registered importance (``prune.llm_pruner``)."""
    return _prune(
        model,
        tokenizer,
        texts,
        ratio,
        REGISTRY.importance(importance),
        aggregation,
        layers,
        num_samples,
        seq_len,
        seed,
        grad_cache,
    )
