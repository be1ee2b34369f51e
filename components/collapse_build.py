"""The Collapse tab's build: the planned model made with a live bar and Stop, its quick
metrics, and the result line; ``/collapse`` for scripts."""

from __future__ import annotations

import logging

import gradio as gr

from laco_core.analysis.evaluate import quick_metrics
from laco_core.arch.plan import validate_ranges
from laco_core.errors import LacoError
from laco_core.runtime.engine import Engine
from laco_core.search.curve import cliff_line, validation
from laco_core.steps.attention import AttentionStep
from laco_core.steps.collapse import CollapseStep

from . import api, jobs
from .common import base_of, gpu, public_message, remember
from .method_picker import chosen_params
from .plan_map import msg_md, read_full
from .state import Session, calibration_metrics, removed_percent

log = logging.getLogger("laco.app")


@gpu
def build_collapse(
    engine: Engine,
    session: Session,
    plan_text: str,
    method: str,
    prompts_text: str,
    attn_text: str = "",
    *param_values,
    inline_errors: bool = True,
):
    """Build the collapsed model (untouched layers shared) and measure quick metrics, with a
    live bar; Stop sets the engine's stop Event. ``attn_text`` names layers whose attention
    sub-block goes too (their MLPs stay; the export then needs ``load_pruned``). An error of
    the job shows in the bar (``inline_errors``) or is raised (scripts).

    ``param_values`` are the method-parameter controls' values, in ``PARAM_NAMES`` order.
    """
    base = base_of(engine, session)
    ranges, attention, error = read_full(plan_text, attn_text, base.num_layers)
    if error:
        raise LacoError(error)
    if not attention:
        ranges = validate_ranges(ranges, base.num_layers)  # an empty plan says so
    params = chosen_params(method, param_values)
    prompts = [s.strip() for s in (prompts_text or "").splitlines() if s.strip()]
    steps = [AttentionStep(attention)] if attention else []
    if ranges:
        steps.append(CollapseStep([list(r) for r in ranges], method, params))
    owner = session.token()

    def work(job: jobs.Job):
        job.progress(0.05, "Merging layers…")
        did = engine.run(
            base,
            steps,
            owner,
            progress=lambda f, d: job.progress(0.05 + 0.8 * f, d),
            stop=job.stop,
        )
        job.progress(0.9, "Quick metrics on the calibration prompts…")
        model, b = engine.model(did, owner)
        m = quick_metrics(model, b.model, b.tokenizer, prompts) if prompts else None
        job.progress(0.95, "Validation perplexity on the training texts' validation slice…")
        valid = validation(model, b.model, b.tokenizer)
        out = calibration_metrics(m, f"{len(prompts)} calibration prompts") if m else {}
        return did, {**out, "valid_ratio": valid["ppl_ratio"], "valid_text": valid["text"]}

    job = jobs.start(engine, owner, "build", work)
    try:
        yield session, jobs.bar_html(job), "", None
        for _ in job.ticks():
            yield gr.skip(), jobs.bar_html(job), gr.skip(), gr.skip()
    finally:
        job.close()
    try:
        did, metrics = job.outcome()
    except LacoError as e:
        if not inline_errors:
            raise
        log.info("user error in build_collapse: %s", e)
        text = public_message(str(e))
        yield session, jobs.bar_html(job, "failed", text), msg_md(text, True), None
        return
    entry = remember(engine, session, did, metrics)
    yield (
        session,
        jobs.bar_html(job, "done", "Built."),
        result_md(did, entry.info, metrics),
        {"id": did, "recipe": entry.recipe, "metrics": metrics},
    )


@gpu
def api_collapse(
    engine: Engine, session: Session, plan_text: str, method: str, prompts_text: str, *params
):
    """``/collapse`` for scripts: ``(result, build JSON)``, errors raised."""
    updates = build_collapse(
        engine, session, plan_text, method, prompts_text, "", *params, inline_errors=False
    )
    yield from api.relay(updates, lambda u: (u[0], u[2], u[3]))


def result_md(did: str, info: dict, metrics: dict) -> str:
    md = (
        f"### ✓ Built `{did}` — {info['layers_before']} → {info['layers_after']} layers, "
        f"{removed_percent(info):.1f} % parameters removed\n"
    )
    if "cal_kl" in metrics:
        md += (
            f"On the calibration prompts: KL(original‖collapsed) **{metrics['cal_kl']:.4f}** "
            f"nats/token · top-1 agreement **{metrics['cal_top1']:.1f} %**"
            + (
                f" · final-state cosine **{metrics['cal_cos']:.4f}**"
                if "cal_cos" in metrics
                else ""
            )
            + "  \n"
        )
    if "valid_ratio" in metrics:
        md += (
            f"Validation perplexity (`{metrics['valid_text']}`): **{metrics['valid_ratio']:.2f}×** "
            "the original's.  \n"
        )
        if (loud := cliff_line(metrics["valid_ratio"])) is not None:
            md = f"<div class='laco-msg-error'>⚠ {loud}</div>\n\n" + md
    kv = info.get("kv_cache_layers")
    if info.get("attention_removed") and kv:
        md += (
            f"Attention removed in layers {', '.join(map(str, info['attention_removed']))}: the "
            f"KV cache keeps {kv[1]} of {kv[0]} layers ({100 * (1 - kv[1] / kv[0]):.0f} % smaller "
            "per token); the export loads with `laco_core.load_pruned`.  \n"
        )
    return md + "It is now selected in **Compare**, **Evaluate** and **Export**."
