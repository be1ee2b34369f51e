"""What T accepts: beside the expert search's threshold, the plan a strategy that T alone
decides (``Strategy.scans``: LaCo's Algorithm 1) accepts on the loaded model, and its damage
as the what-if preview measures it. The measurement is a long job like any other: in the
session's slot, on the engine's (limited, counted) activation cache, stopped by its job's
stop Event; a session that runs another long job is told so beside T."""

from __future__ import annotations

import json

from laco_core.arch.plan import format_plan
from laco_core.errors import LimitExceeded
from laco_core.ops import run_search
from laco_core.registry import REGISTRY
from laco_core.runtime.engine import Engine
from laco_core.search.config import SearchConfig

from . import jobs
from .common import base_of, gpu
from .search_job import prompts_of
from .settings import settings_of
from .state import Session

# damage levels: KL(dense ‖ collapsed) in nats per token on the calibration prompts; e^KL is
# roughly the perplexity factor it costs
KL_NOTICEABLE, KL_DESTRUCTIVE = 0.25, 1.0


@gpu
def check_threshold(
    engine: Engine,
    session: Session,
    prompts_text: str,
    method: str,
    objective: str,
    strategy: str,
    seen: dict,
    keys: list[tuple[str, str]] = (),
    *raw,
):
    """Measure what a strategy that T alone decides (``Strategy.scans``) accepts at T on the
    loaded model, and its damage.

    Runs it at T on the calibration prompts (a plain method stands in for a fitted one), then
    the what-if preview of the plan it accepts: a warning beside T says how many layers go
    and the KL it costs. Remembered per setting for the session.
    """
    strat = REGISTRY.strategy(strategy)
    chosen = {"strategy": strategy, "objective": objective, "method": method}
    got = settings_of(list(keys), raw, chosen)
    common = got.common
    threshold = float(common.get("threshold", SearchConfig.threshold))
    if not strat.scans:
        yield (
            f"<small>T stops a {strategy} search without a target once the best score falls "
            "to T.</small>",
            seen,
        )
        return
    base = base_of(engine, session)
    prompts = prompts_of(prompts_text)[:8]
    plain = method if not REGISTRY.method(method).fitted else "drop"
    cfg = SearchConfig(
        **common,
        method=plain,
        objective=objective,
        strategy=strategy,
        strategy_params=got.strategy,
        objective_params=got.objective,
    )
    key = f"{base.spec}|{json.dumps(cfg.to_dict(), sort_keys=True)}|{len(prompts)}"
    if key not in seen:
        yield (
            f"<small>Measuring what {strategy} accepts at T = {threshold:.2f} on this "
            "model…</small>",
            seen,
        )

        def work(job: jobs.Job) -> dict:
            cache = engine.activations(base, prompts)  # the preview's: limits checked, counted
            res = run_search(base.model, base.tokenizer, prompts, cfg, cache=cache, stop=job.stop)
            plan = [tuple(r) for r in res.plan]
            est = engine.preview(base, prompts, plan, plain) if plan else None
            return {"plan": plan, "kl": est["kl"] if est else 0.0, "removed": res.layers_removed}

        try:
            job = jobs.start(engine, session.token(), "threshold", work)
        except LimitExceeded as e:
            yield f"<small class='laco-msg-error'>⚠ {e}</small>", seen
            return
        try:
            for _ in job.ticks():
                pass
        finally:
            job.close()
        seen = {**seen, key: job.outcome()}
    r = seen[key]
    yield threshold_md(threshold, r["plan"], r["removed"], r["kl"]), seen


def threshold_md(threshold: float, plan: list, removed: int, kl: float) -> str:
    """The warning beside T, from a measured plan and its KL."""
    if not plan:
        return (
            f"<small>At T = {threshold:.2f} Algorithm 1 accepts nothing on these prompts.</small>"
        )
    what = f"At T = {threshold:.2f} Algorithm 1 removes **{removed} layers** ({format_plan(plan)})"
    cost = f"estimated KL(original‖collapsed) **{kl:.2f}** nats/token on the calibration prompts"
    if kl >= KL_DESTRUCTIVE:
        return f"<span class='laco-msg-error'>⚠ Destructive on this model.</span> {what}: {cost}. Raise T."
    if kl >= KL_NOTICEABLE:
        return f"⚠ Noticeable damage. {what}: {cost}."
    return f"<span class='laco-msg-ok'>✓</span> {what}: {cost}."
