"""The Collapse tab's live preview: what-if estimates of the plan from cached activations,
kept in the session's store, and the preview box drawn from them.

An estimate is stored under everything it depends on (model, method and its parameters,
prompts, ranges, attention removals), so a slow estimate made for an older plan or other
settings is never shown for the current one.
"""

from __future__ import annotations

import json

import gradio as gr

from laco_core.arch.plan import format_plan, layer_groups
from laco_core.errors import LacoError
from laco_core.loading.models import LoadedModel
from laco_core.runtime.engine import Engine
from laco_core.runtime.warmup import Warmup, warm_preview

from . import plan_map, plots
from .common import base_of, fmt_params, gpu
from .method_picker import chosen_params
from .state import Session, removed_percent

NO_PREVIEW = "<div class='laco-preview-empty'>Add a range to see the plan.</div>"
BLANK = "<div class='laco-preview-empty'>No preview until the error above is fixed.</div>"
PROMPTS_USED = 8  # the estimate runs on the first calibration prompts only: it must be quick
ONE_RANGE = ("kl", "cosine", "layers_before", "layers_after", "params_before", "params_after")


def prompt_list(prompts_text: str, limit: int | None = None) -> list[str]:
    prompts = [s.strip() for s in (prompts_text or "").splitlines() if s.strip()][:limit]
    if not prompts:
        raise LacoError("Add at least one calibration prompt (Similarity tab).")
    return prompts


def _prompts_used(prompts_text: str) -> list[str]:
    return [s.strip() for s in (prompts_text or "").splitlines() if s.strip()][:PROMPTS_USED]


def warm(engine: Engine, base: LoadedModel, prompts_text: str) -> Warmup | None:
    """Start building what the first preview of ``base`` on these prompts reads (its
    activations and the KL's dense statistics) in the background; None without prompts."""
    prompts = _prompts_used(prompts_text)
    return warm_preview(engine, base, prompts) if prompts else None


def method_tag(method: str, params: dict) -> str:
    """The method and its parameters as one part of a store key."""
    return method + (json.dumps(params, sort_keys=True, default=str) if params else "")


def estimates(session: Session, store: dict, tag: str, prompts_text: str, ranges) -> dict:
    """Each range's own estimate, from the session's store (missing ones are left out)."""
    prompts = _prompts_used(prompts_text)
    return {
        r: store[k]
        for r in ranges
        if (k := plan_map.range_key(session.spec, tag, prompts, r)) in store
    }


def plan_key(session: Session, tag: str, prompts_text: str, ranges, attention=()) -> str:
    plan = format_plan(ranges) + "|A" + ",".join(map(str, sorted(attention)))
    return plan_map.range_key(session.spec, tag, _prompts_used(prompts_text), ("plan", plan))


def preview_md(p: dict) -> str:
    """The numbers of ``search.preview`` as a small before/after table."""
    return sizes_md(p) + (
        f"  \nEstimate on the calibration prompts: final-state cosine **{p['cosine']:.4f}**, "
        f"KL **{p['kl']:.4f}** nats/token <small>({p['seconds']:.2f} s)</small>"
        + (
            f"  \n<small>Estimated as a plain {p['estimated_as']}: the fit is made when you "
            "build, and usually does better.</small>"
            if p.get("estimated_as")
            else ""
        )
    )


def sizes_md(p: dict) -> str:
    return (
        f"| | before | after |\n|---|---:|---:|\n"
        f"| layers | {p['layers_before']} | **{p['layers_after']}** |\n"
        f"| parameters | {fmt_params(p['params_before'])} | **{fmt_params(p['params_after'])}** |\n\n"
        f"**{removed_percent(p):.1f} %** of the parameters removed."
    )


def preview_box(
    session: Session,
    store: dict,
    tag: str,
    prompts_text: str,
    ranges,
    error: str,
    attention=(),
):
    """The preview box and strip diagram of the CURRENT plan: numbers from the store once
    estimated; the strip and layer counts at once. Attention removals count in the
    parameters and in the damage estimate."""
    n = session.num_layers
    if error:
        return BLANK, plots.empty_strip("no valid plan")
    if not n:
        return NO_PREVIEW, gr.skip()
    strip = plots.strip_diagram(layer_groups(ranges, n), n, list(attention))
    if not ranges and not attention:
        return NO_PREVIEW, strip
    est = store.get(plan_key(session, tag, prompts_text, ranges, attention))
    if est is None or est["params_before"] is None:
        after = n - sum(hi - lo for lo, hi in ranges)
        return (
            f"| | before | after |\n|---|---:|---:|\n| layers | {n} | **{after}** |\n\n"
            "<small>Estimating parameters and damage…</small>"
        ), strip
    md = preview_md(est) if "kl" in est else sizes_md(est)
    if attention:
        k = len(attention)
        kept = n - sum(hi - lo for lo, hi in ranges) - k
        md += (
            f"  \n<small>{k} attention sub-block{'s' if k > 1 else ''} removed: the KV cache "
            f"keeps {kept} of {n} layers.</small>"
        )
    return md, strip


@gpu
def estimate(
    engine: Engine,
    session: Session,
    plan_text: str,
    method: str,
    prompts_text: str,
    store: dict,
    attn_text: str = "",
    *param_values,
) -> dict:
    """The slow part of a plan change: the what-if estimate of the whole plan and of each
    range alone (for hover labels and chips), from cached activations, into the store.

    ``param_values`` are the method-parameter controls' values (``PARAM_NAMES`` order): the
    estimate merges with the parameters the build would use. An invalid plan or parameter
    leaves the store as it is (the redraw shows the error).
    """
    base = base_of(engine, session)
    ranges, attention, error = plan_map.read_full(plan_text, attn_text, base.num_layers)
    if error or (not ranges and not attention):
        return store
    try:
        params = chosen_params(method, param_values)
    except LacoError:
        return store
    store = dict(store or {})
    prompts = prompt_list(prompts_text, PROMPTS_USED)
    tag = method_tag(method, params)
    whole = plan_key(session, tag, prompts_text, ranges, attention)
    if whole not in store:
        store[whole] = engine.preview(base, prompts, ranges, method, attention, **params)
    for r in ranges:
        key = plan_map.range_key(session.spec, tag, prompts, r)
        if key not in store:
            single = len(ranges) == 1 and not attention
            one = store[whole] if single else engine.preview(base, prompts, [r], method, **params)
            store[key] = {k: one[k] for k in ONE_RANGE}
    if len(store) > plan_map.PREVIEWS_KEPT:
        store = dict(list(store.items())[-plan_map.PREVIEWS_KEPT :])
    return store
