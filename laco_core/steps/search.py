"""Step kind ``search``: find a collapse plan automatically, then (optionally) refit it."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field, replace

from ..analysis.activations import ActivationCache, reporting
from ..arch.adapters import get_layers
from ..arch.plan import format_plan
from ..errors import Cancelled
from ..recipe import Step, TextSource
from ..search.config import Merge, SearchConfig
from ..search.curve import Monitor, validation_source
from ..search.run import complete, fit_plan, replay, run
from ..search.state import workers_for


def _recording(ctx, what: str):
    """Each chunk of an activation cache recorded in the block is a pending event (and a
    stopped run stops between two chunks)."""
    ctx.event({"pending": True, "phase": what, "done": 0, "of": None, "unit": "chunks"})

    def heard(done: int, of: int) -> None:
        if ctx.stop.is_set():
            raise Cancelled("Stopped.")
        ctx.event({"pending": True, "phase": what, "done": done, "of": of, "unit": "chunks"})

    return reporting(heard)


@dataclass
class SearchStep(Step):
    """Run a search strategy on ``calibration``; record the merges it accepted.

    With ``config.refit`` the found plan is rebuilt with that fitted method on
    ``refit_calibration`` and ``merges`` are the refitted merges. With ``validation`` texts,
    a strategy that walks a path of plans records its size–quality curve on them (``curve``)
    and a quality budget stops it. A completed step replays its merges; one whose fitted
    tensors are missing searches again (deterministic).
    """

    kind = "search"
    summary = "Search a collapse plan (LaCo Algorithm 1, greedy, evolutionary…)."
    nested = {
        "config": SearchConfig,
        "calibration": TextSource,
        "refit_calibration": TextSource,
        "validation": TextSource,
        "merges": Merge,
    }

    config: SearchConfig = field(default_factory=SearchConfig)
    calibration: TextSource = field(default_factory=TextSource)
    refit_calibration: TextSource | None = None
    validation: TextSource | None = None
    merges: list[Merge] | None = None
    plan: list[list[int]] | None = None
    seconds: float | None = None
    curve: dict | None = None  # ``curve.QualityCurve.to_dict()`` of the walk, when recorded

    @classmethod
    def from_dict(cls, d: dict) -> SearchStep:
        d = dict(d)
        if isinstance(d.get("config"), dict):
            d["config"] = SearchConfig.from_dict(d["config"])
        return super().from_dict(d)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["config"] = self.config.to_dict()
        return d

    def describe(self) -> str:
        c = self.config
        how = f"{c.strategy}/{c.objective}/{c.method}" + (f"→{c.refit}" if c.refit else "")
        plan = format_plan(self.plan) if self.plan else "…"
        return f"search {how}: {plan}"

    def apply(self, model, ctx):
        reg = ctx.registry
        if self.merges is not None and complete(self.merges, reg.method):
            return replay(model, self.merges, reg.method), self
        cfg = self.config.validate(len(get_layers(model)))
        method, objective, strategy, refit = reg.search_components(cfg)
        prompts = self.calibration.resolve()
        with _recording(ctx, f"Recording activations on {len(prompts)} calibration texts"):
            cache = ctx.activations(model, prompts, cfg.batch_size, workers_for(model, cfg))
        refit_texts = self.refit_calibration.resolve() if self.refit_calibration else None
        refit_cache = None
        if refit is not None and refit_texts:  # recorded when the refit begins, not before

            @functools.cache
            def refit_cache() -> ActivationCache:
                with _recording(ctx, f"Recording activations on {len(refit_texts)} refit texts"):
                    return ctx.activations(model, refit_texts)

        monitor = self._monitor(model, ctx, cfg, refit, refit_texts, refit_cache)
        plain = {**cfg.to_dict(), "workers": None}
        if not cfg.budget:  # a budget's walk depends on its refit; a size target's does not
            plain.update(refit=None, refit_params={})
        valid = self.validation.sha1 if self.validation else None
        key = ("search", id(model), json.dumps(plain, sort_keys=True), self.calibration.sha1, valid)
        components = (cfg, method, objective, strategy)
        searched = ctx.memo.get(key)
        if searched is None:  # the plain search, kept for another refit of the same search
            searched = run(
                model,
                ctx.tokenizer,
                prompts,
                *components,
                ctx.event,
                cache,
                ctx.stop,
                monitor=monitor,
            )
            ctx.memo[key] = searched
        elif searched.curve is not None and monitor is not None:
            monitor.curve = copy.deepcopy(searched.curve)
        res = run(
            model,
            ctx.tokenizer,
            prompts,
            *components,
            ctx.event,
            refit_method=refit,
            refit_texts=refit_texts,
            refit_cache=refit_cache,
            searched=searched,
            monitor=monitor if searched.curve is not None else None,
        )
        done = replace(
            self,
            config=cfg,
            merges=res.merges,
            plan=[list(r) for r in res.plan],
            seconds=round(res.seconds, 3),
            curve=res.curve.to_dict() if res.curve is not None else None,
        )
        done.result = res  # the decision log, for the caller (not serialised)
        return res.model, done

    def _monitor(self, model, ctx, cfg, refit, refit_texts, refit_cache) -> Monitor | None:
        """The curve's and budget's scorer on the validation texts (a budget without them
        validates on the bundled validation slice)."""
        source = self.validation
        if source is None and cfg.budget:
            source = validation_source()
        if source is None:
            return None
        fit = None
        if refit is not None:
            texts = refit_texts or self.calibration.resolve()
            params = refit.check(cfg.refit_params)

            def fit(plan, texts=texts, params=params):
                return fit_plan(
                    model, ctx.tokenizer, texts, plan, refit, params, refit_cache and refit_cache()
                )

        return Monitor(model, ctx.tokenizer, source.resolve(), cfg, fit, source.asset or "texts")
