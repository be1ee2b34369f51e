"""Running a search with resolved components (``laco_core.ops.run_search`` resolves names)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from transformers import PreTrainedModel

from ..analysis.activations import ActivationCache, reporting
from ..analysis.parallel import worker_pool
from ..arch.plan import plan_of
from ..arch.sharing import count_params, shared_copy
from ..arch.subblocks import ATTENTION, attention_free, drop_attention
from ..errors import LacoError
from ..methods.collapse import collapse_model
from ..methods.fitting import PlanFitter
from .config import Merge, SearchConfig, SearchResult
from .state import Callback, Search, workers_for


def run(
    model: PreTrainedModel,
    tokenizer,
    prompts: list[str],
    cfg: SearchConfig,
    method,
    objective,
    strategy,
    callback: Callback | None = None,
    cache: ActivationCache | None = None,
    stop: threading.Event | None = None,
    refit_method=None,
    refit_texts: list[str] | None = None,
    refit_cache: ActivationCache | Callable[[], ActivationCache] | None = None,
    searched: SearchResult | None = None,
    monitor=None,
) -> SearchResult:
    """Search for a collapse plan of ``model`` on calibration ``prompts``.

    Args:
        model: The dense model (left unchanged; the result shares its untouched tensors).
        tokenizer: Its tokenizer.
        prompts: Calibration prompts, each tokenized alone with ``tokenizer(prompt)``.
        cfg: Search parameters (already validated against the model).
        method, objective, strategy: The resolved components.
        callback: Called with a dict after every evaluated candidate.
        cache: Activations of ``model`` on ``prompts`` to reuse.
        stop: Set from another thread to cancel (the search raises ``Cancelled``).
        refit_method: A fitted method to refit the plan with afterwards (``cfg.refit``).
        refit_texts: The calibration texts of that refit.
        refit_cache: Their dense activations, to reuse (or a function that makes them when
            the refit begins).
        searched: The plain result of this very search, already run (only the refit is
            left to do).
        monitor: A ``curve.Monitor`` that scores every accepted plan on validation text
            (the size–quality curve) and stops the walk at its quality budget.

    Returns:
        A SearchResult with the collapsed model, the decision log and the merges that
        rebuild it.
    """
    if cfg.units == "blocks" and not method.keeps_lo:
        raise LacoError("--units blocks merges with a method that keeps layer lo (drop…).")
    if searched is None:
        searched = _search(
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
            monitor,
        )
    result, merges = searched.model, searched.merges
    t0 = time.perf_counter()  # the search's own time is in searched.seconds
    tell = _phases(callback)
    if refit_method is not None and plan_of(result):
        if searched.refitted is not None:  # the budget's walk refitted this plan already
            result, merges = searched.refitted
        else:
            texts = refit_texts or prompts
            params = refit_method.check(cfg.refit_params)
            attention = attention_free(result)
            what = f"Refitting the kept layers ({refit_method.name})"
            result, merges = fit_plan(
                model,
                tokenizer,
                texts,
                plan_of(result),
                refit_method,
                params,
                refit_cache() if callable(refit_cache) else refit_cache,
                attention,
                lambda done, of: tell(what, done, of, "ranges fitted"),
            )
    if monitor is not None and monitor.curve.points and refit_method is not None:
        tell("Scoring the built plan on the validation texts", 0, None, "plans")
        monitor.finish_refit(result)
    return SearchResult(
        model=result,
        accepted=searched.accepted,
        candidates=searched.candidates,
        plan=plan_of(result),
        seconds=searched.seconds + time.perf_counter() - t0,
        objective=cfg.objective,
        params_before=count_params(model),
        params_after=count_params(result),
        merges=merges,
        config=cfg,
        curve=monitor.curve if monitor is not None else searched.curve,
    )


def _search(
    model, tokenizer, prompts, cfg, method, objective, strategy, callback, cache, stop, monitor
):
    """The search alone (no refit): the strategy driving a ``Search`` on the workers."""
    t0 = time.perf_counter()
    if cache is None:
        cache = ActivationCache(
            model, tokenizer, prompts, batch_size=cfg.batch_size, workers=workers_for(model, cfg)
        )
    search = Search(model, cache, cfg, method, objective, callback, stop)
    search.settings = strategy.settings(cfg.strategy_params)
    what, tell = "Preparing the dense model's next-token statistics", _phases(callback)
    tell(what, 0, None, "chunks")
    with reporting(lambda done, of: tell(what, done, of, "chunks")):
        search.prepare()
    if monitor is not None and not strategy.walks_path:
        if cfg.budget:
            raise LacoError(
                f"A quality budget needs a strategy that removes one unit per step; "
                f"'{strategy.name}' does not (use --strategy greedy)."
            )
        monitor = None
    search.monitor = monitor
    with worker_pool(search.workers) as pool:
        search.pool = pool
        try:
            strategy.run(search)
        finally:
            search.pool = None
    refitted = None
    if monitor is not None and cfg.budget:
        if monitor.kept is None:
            raise monitor.over_budget_error()
        if monitor.over:
            search.restore(monitor.kept)
        refitted = monitor.kept["refitted"]
    result = search.cur if search.cur is not model else shared_copy(model)
    return SearchResult(
        model=result,
        accepted=search.accepted,
        candidates=search.candidates,
        plan=plan_of(result),
        seconds=time.perf_counter() - t0,
        objective=cfg.objective,
        params_before=count_params(model),
        params_after=count_params(result),
        merges=search.merges,
        config=cfg,
        curve=monitor.curve if monitor is not None else None,
        refitted=refitted,
    )


def fit_plan(
    model: PreTrainedModel,
    tokenizer,
    texts: list[str],
    ranges: list[tuple[int, int]],
    method,
    params: dict,
    cache: ActivationCache | None = None,
    attention: list[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[PreTrainedModel, list[Merge]]:
    """Collapse a fixed plan (``model``'s indices) range by range with a fitted method.

    Ranges are fitted bottom-up, so each fit also corrects the drift the lower removals
    left in its input. ``attention``: layers (``model``'s indices) whose attention is removed
    first; ``progress(ranges fitted, ranges)`` is told before the first range and after each.
    Returns the model and its merges (indices of the model at each step).
    """
    if cache is None:
        cache = ActivationCache(model, tokenizer, texts)
    merges = [Merge(i, i, ATTENTION, {}) for i in sorted(attention or [])]
    ctx = PlanFitter(drop_attention(model, attention) if attention else model, cache)
    shift = 0
    for k, (lo, hi) in enumerate(sorted(ranges)):
        if progress is not None:
            progress(k, len(ranges))
        lo, hi = lo - shift, hi - shift
        fitted = method.fit(ctx, lo, hi, dict(params))
        ctx.cur = collapse_model(ctx.cur, [(lo, hi)], method, fitted)
        merges.append(Merge(lo, hi, method.name, fitted))
        shift += hi - lo
    if progress is not None:
        progress(len(ranges), len(ranges))
    return ctx.cur, merges


def _phases(callback: Callback | None) -> Callable[[str, int, int | None, str], None]:
    """``tell(what, done, of, unit)``: a pending event for a stretch of work that is no
    candidate (preparing, refitting, validating), counted in its own units."""

    def tell(what: str, done: int, of: int | None, unit: str) -> None:
        if callback is not None:
            callback({"pending": True, "phase": what, "done": done, "of": of, "unit": unit})

    return tell


def complete(merges: list[Merge], method_of) -> bool:
    """True when every merge holds what its method fits (an attention removal needs nothing)."""
    return all(m.method == ATTENTION or method_of(m.method).is_fitted(m.params) for m in merges)


def replay(model: PreTrainedModel, merges: list[Merge], method_of) -> PreTrainedModel:
    """Apply merges in order (each ``lo``/``hi`` in the then-current indices).

    ``method_of(name)`` resolves method names. A fitted merge without its fit is fitted again
    (deterministic) only by the caller; here its params must be complete.
    """
    cur = model
    for m in merges:
        if m.method == ATTENTION:
            cur = drop_attention(cur, [m.lo])
        elif m.hi > m.lo:
            cur = collapse_model(cur, [(m.lo, m.hi)], method_of(m.method), m.params)
    return cur if cur is not model else shared_copy(model)
