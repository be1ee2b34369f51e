"""Following a collapse search on the page: one job with a live bar, a log of every scored
candidate and, for a walk that records it, the size–quality curve; then the build's result.

Shared by "★ Best collapse" (``best_panel``) and the expert search (``auto_panel``): both run
``engine.run`` on a worker thread (``jobs``) and stop through the engine's stop Event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import gradio as gr

from laco_core.analysis.evaluate import quick_metrics
from laco_core.arch.plan import format_plan, layer_groups
from laco_core.arch.subblocks import ATTENTION
from laco_core.errors import LacoError
from laco_core.registry import REGISTRY
from laco_core.runtime.engine import Engine

from . import jobs, plots
from .common import public_message, remember
from .heal_progress import HealProgress
from .state import Session, calibration_metrics, removed_percent

log = logging.getLogger("laco.app")


def _what(e: dict) -> str:
    """One log row's subject, in original layer numbering."""
    if "generation" in e:
        removed = ", ".join(map(str, e.get("removed", [])))
        return f"generation {e['generation']}: remove {removed}"
    lo, hi = (e.get("orig") or [e.get("lo"), e.get("hi")])[:2]
    if e.get("unit") == ATTENTION:
        return f"attention of layer {lo}"
    return f"layers {lo}–{hi}"


def search_columns(objective: str) -> list[jobs.Column]:
    """Log columns of a search; the score is named by its objective (``Objective.label``)."""
    label = REGISTRY.objective(objective).label
    return [
        ("n", "#", None),
        ("what", "candidate (original numbering)", None),
        ("layers", "model layers", None),
        ("score", label, lambda v: f"{v:.4f}"),
        ("threshold", "T", lambda v: f"{v:.2f}"),
        ("accepted", "accepted", lambda v: "✓" if v else ""),
    ]


def numbered(events: list[dict]) -> list[dict]:
    """The log's rows: each event with its number and subject."""
    return [{**e, "n": i + 1, "what": _what(e)} for i, e in enumerate(events)]


def search_fraction(
    events: list[dict], need: int | None, start: int, low: int, generations: int = 0
) -> float | None:
    """Share of a search done, from its log: layers removed of the target (then, for an
    evolutionary search, generations done), else how far the top-down scan has come (None
    when neither is known)."""
    share = 0.9 if not generations else 0.45
    gens = [e["generation"] for e in events if "generation" in e]
    if generations and gens:
        return 0.5 + 0.45 * min(1.0, max(gens) / generations)
    if need:
        removed = sum(
            e["hi"] - e["lo"] for e in events if e.get("accepted") and "lo" in e and "hi" in e
        )
        return 0.05 + share * min(1.0, removed / need)
    if events and start > low:
        lo = (events[-1].get("orig") or [start])[0]
        return 0.05 + share * min(1.0, max(0.0, (start - lo) / (start - low)))
    return None


class Tally:
    """The candidates of a greedy search, counted as its steps go: done so far and the
    total as known (this step's, plus at most one step per layer still to remove, each with
    one candidate fewer than the step before; a lazy step may score fewer)."""

    def __init__(self, need: int | None):
        self.need = need
        self.current: int | None = None  # the step under way
        self.before = 0  # candidates scored in the steps before it
        self.scored = 0
        self.removed = 0

    def key(self, e: dict) -> tuple:
        lo, hi = (e.get("orig") or [e.get("lo"), e.get("hi")])[:2]
        return self.current, lo, hi, e.get("unit")

    def step(self, e: dict) -> tuple[int, int, bool]:
        """``(done, total, bound)`` after a greedy progress event."""
        if e["step"] != self.current:
            if self.current is not None:
                self.before += self.scored
            self.current, self.scored = e["step"], 0
        self.scored, self.removed = e["scored"], e.get("removed", self.removed)
        left = 0 if self.need is None else max(0, self.need - self.removed - 1)
        later = sum(max(e["of"] - j, 1) for j in range(1, left + 1))
        return self.before + self.scored, self.before + e["of"] + later, left > 0

    def decided(self, e: dict) -> None:
        if e.get("accepted") and "lo" in e and "hi" in e:
            self.removed += e["hi"] - e["lo"]


def finish_search(engine: Engine, session: Session, did: str, prompts: list[str]):
    """Record a search's build in the session, with its figures on the calibration prompts.

    Returns:
        ``(entry, plan, base, model)``.
    """
    model, base = engine.model(did, session.token())
    metrics = calibration_metrics(quick_metrics(model, base.model, base.tokenizer, prompts))
    entry = remember(engine, session, did, metrics)
    plan = [tuple(r) for r in entry.info.get("plan", [])]
    return entry, plan, base, model


def done_md(did: str, entry, plan, seconds: float, what: str, *_) -> str:
    """The result of a search, in words (extra arguments: the model and its base, unused)."""
    info, m = entry.info, entry.metrics
    return (
        f"### ✓ {what} in {jobs.duration(seconds)} — `{did}`\n"
        f"{info['layers_before']} → {info['layers_after']} layers, "
        f"**{removed_percent(info):.1f} %** of the parameters removed; "
        f"plan {format_plan(plan) or 'nothing accepted'}.  \n"
        f"On the calibration prompts: KL **{m.get('cal_kl', float('nan')):.3f}** nats/token, "
        f"top-1 agreement **{m.get('cal_top1', float('nan')):.1f} %**. It is now selected in "
        "Compare, Evaluate and Export."
    )


def prompts_of(text: str) -> list[str]:
    """The calibration prompts, one per line."""
    prompts = [s.strip() for s in (text or "").splitlines() if s.strip()]
    if not prompts:
        raise LacoError("Add at least one calibration prompt (Similarity tab).")
    return prompts


def step_curve(entry) -> dict | None:
    """The size–quality curve a build's search step recorded (None without one)."""
    steps = entry.recipe.get("steps", []) if isinstance(entry.recipe, dict) else []
    return next((s["curve"] for s in reversed(steps) if s.get("curve")), None)


def follow(
    engine,
    session,
    base,
    step,
    panel,
    prompts,
    columns,
    need,
    start,
    low,
    what,
    inline=True,
    out=None,
    curve: Callable | None = None,
    done: Callable = done_md,
    then: Sequence = (),
):
    """Run ``step`` as a job, stream bar + log, finish the build.

    Yields ``(session, bar, log, result, strip)``, plus the curve plot when ``curve`` is given.

    Args:
        inline: False: an error of the job is raised instead of shown.
        out: A dict that receives the raw events and the plan diagram, for scripts.
        curve: ``(curve dict or None, built plan or None) -> figure``: the size–quality plot,
            redrawn from each "curve" event of the walk and from the build's recorded curve.
        done: ``(did, entry, plan, seconds, what, model, base) -> markdown``: the result.
        then: Steps that follow the search in the same build (a heal), shown on the bar.
    """
    owner = session.token()
    generations = int(step.config.strategy_params.get("generations", 0) or 0)
    drawn = {"curve": None, "n": 0}  # the latest curve event and how many came

    def work(job: jobs.Job):
        tally = Tally(need)
        healing = HealProgress(
            job, next((t.seconds for t in then if getattr(t, "seconds", None)), None)
        )

        def on_event(e: dict) -> None:
            if then and healing(e):
                return
            if "curve" in e:  # the size–quality curve so far (a walking search)
                drawn["curve"], drawn["n"] = e["curve"], drawn["n"] + 1
                last = (e["curve"].get("points") or [{}])[-1]
                if "ppl_ratio" in last:  # wakes the page: the plot is redrawn at once
                    job.progress(
                        None,
                        f"{last['layers_removed']} layers removed: validation perplexity "
                        f"×{last['ppl_ratio']:.2f}",
                    )
                return
            if e.get("pending") and "phase" in e:  # preparing, refitting, validating
                job.count(e["done"], e.get("of"), e["unit"], e["phase"], e["phase"])
                return
            if e.get("pending"):  # a greedy step under way: each candidate as it is scored
                if "lo" in e:
                    job.event({**e, "pending": False}, tally.key(e))
                done, total, bound = tally.step(e)
                stage = f"Step {e['step']}"
                desc = f"{stage}: {e['scored']} of {e['of']} candidates scored"
                job.count(done, total, "candidates", desc, stage, bound)
                return
            if tally.current is not None:  # a greedy step's end: its candidates decided
                tally.decided(e)
                job.event(e, tally.key(e))
                return
            job.event(e)
            f = search_fraction(job.events, need, start, low, generations)
            finished = need and f is not None and f >= 0.95
            refit = getattr(step.config, "refit", None)
            job.progress(
                f,
                f"Refitting the kept layers ({refit})…"
                if finished and refit
                else f"{len(job.events)} candidates scored",
            )

        did = engine.run(
            base, [step, *then], owner, events=on_event, progress=healing.report, stop=job.stop
        )
        job.count(0, None, "", "Measuring the result on the calibration prompts…")
        return did

    def plot(figure=None):
        return () if curve is None else (gr.skip() if figure is None else figure,)

    job = jobs.start(engine, owner, panel, work)
    empty = jobs.log_html([], columns, "Candidates appear here as they are scored.")
    shown = 0
    try:  # the previous result stays until this one replaces it (a stopped run keeps it)
        yield (
            session,
            jobs.bar_html(job),
            empty,
            gr.skip(),
            gr.skip(),
            *plot(_curve_plot(curve, None)),
        )
        for _ in job.ticks():
            rows = jobs.log_html(numbered(job.events), columns)
            fresh = None
            if drawn["n"] != shown:
                shown, fresh = drawn["n"], _curve_plot(curve, drawn["curve"])
            yield gr.skip(), jobs.bar_html(job), rows, gr.skip(), gr.skip(), *plot(fresh)
    finally:
        job.close()
    rows = jobs.log_html(numbered(job.events), columns, "No candidate was scored.")
    try:
        did = job.outcome()
        entry, plan, base, model = finish_search(engine, session, did, prompts)
    except LacoError as e:
        if job.stop.is_set() and inline:  # stopped: the previous result stays on screen
            yield session, jobs.stopped_html([job]), rows, gr.skip(), gr.skip(), *plot()
            return
        if not inline:
            raise
        log.info("user error in %s: %s", panel, e)
        text = public_message(str(e))
        last = _curve_plot(curve, drawn["curve"]) if drawn["n"] != shown else None
        yield session, jobs.bar_html(job, "failed", text), rows, f"⚠ {text}", None, *plot(last)
        return
    figure = plots.strip_diagram(layer_groups(plan, base.num_layers), base.num_layers)
    if out is not None:
        out.update(events=list(job.events), figure=figure)
    final = step_curve(entry) or drawn["curve"]
    yield (
        session,
        jobs.bar_html(job, "done", "Done."),
        rows,
        done(did, entry, plan, job.elapsed, what, model, base),
        gr.Plot(figure, visible=True),
        *plot(_curve_plot(curve, final, [list(r) for r in plan])),
    )


def _curve_plot(curve: Callable | None, d: dict | None, built: list | None = None):
    return None if curve is None else gr.Plot(curve(d, built), visible=True)


__all__ = [
    "done_md",
    "finish_search",
    "follow",
    "numbered",
    "prompts_of",
    "search_columns",
    "search_fraction",
    "step_curve",
]
