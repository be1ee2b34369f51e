"""The KL objective on a small and a 262k-token vocabulary: cost, memory, and equal plans.

For the default model (SmolLM2, 49k tokens) and Gemma 3 270M (262k tokens):

1. One candidate's objective (drop of the middle layer) on the default pipeline's search text:
   seconds of its layers, of the KL in the ``moments`` form (dense Σp log p and Wᵀp, the
   candidate's streamed log-normalizer) and in the ``logp`` form (full dense log-probs), and
   the bytes each form keeps per token.
2. The default pipeline's search (greedy, KL, drop, ranges ≤ 2, lazy; the refit excluded)
   with each form: wall time, plans (identical expected: both forms are exact) and, when
   they differ, the held-out perplexity of both plans.
3. One greedy step (drop, ranges ≤ 2, lazy, one layer removed) with the KL's LM head at
   every position (stride 1) and at the ``auto`` stride (``objectives.head_stride``): wall
   time and whether the chosen range is the same.
4. ``best_collapse`` end to end (``laco auto``) with the default objective.

Knobs: BENCH_KL_MODELS (default ``default,gemma3-270m``), BENCH_KL_REFERENCE (0 skips the
``logp`` search of part 2), BENCH_KL_PARTS (default ``cost,search,stride,pipeline``). On a shared 2-core machine
times vary with the other processes' load: the load average is printed with each figure.
"""

from __future__ import annotations

import os
import time

import torch

from laco_core.analysis.activations import ActivationCache
from laco_core.analysis.evaluate import perplexity
from laco_core.assets import read_asset, read_text
from laco_core.loading.models import load_model
from laco_core.ops import run_search
from laco_core.presets import SEARCH_TEXT, SEARCH_TEXTS, best_collapse
from laco_core.registry import REGISTRY
from laco_core.search.config import SearchConfig
from laco_core.search.objectives import KL, head_stride
from laco_core.search.state import Search

from .common import at_most, report, section

# laco auto's targets per model: a layer count on Gemma (its embedding is 63 % of it)
TARGETS = {"default": {"target_ratio": 0.2}, "gemma3-270m": {"target_layers": 4}}
LIMITS = {"default": 180.0, "gemma3-270m": 300.0}  # seconds, the task's targets


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def _cfg(lm, target: dict, **kl) -> SearchConfig:
    """The default pipeline's search settings (``best_collapse``) without its refit, with the
    KL objective's settings ``kl`` (form, stride)."""
    step = best_collapse(**target)[0]
    fields = {**step.config.__dict__, "refit": None, "max_ppl_ratio": None, "max_kl": None}
    return SearchConfig(**{**fields, "objective_params": kl}).validate(lm.num_layers)


def candidate_cost(name: str, lm, texts: list[str]) -> None:
    cache = ActivationCache(lm.model, lm.tokenizer, texts, batch_size=2)
    cfg = _cfg(lm, TARGETS[name])
    s = Search(lm.model, cache, cfg, REGISTRY.method("drop"), KL())
    mid = s.n() // 2
    suffix = s.suffix(mid, mid + 1, {})
    s.inputs_at(mid + 1)
    t0 = time.perf_counter()
    finals = [s.final(suffix, mid, k) for k in range(len(cache.chunks))]
    report(
        f"{name}: one candidate's layers ({cache.num_tokens} tokens)",
        time.perf_counter() - t0,
        unit=" s",
        note=_load(),
    )
    for form in KL.FORMS:
        before = cache.nbytes
        t0 = time.perf_counter()
        KL(form).prepare(cache, lm.model)
        prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        KL(form).score(cache, lm.model, finals)
        report(
            f"{name}: one candidate's KL, {form} form",
            time.perf_counter() - t0,
            unit=" s",
            note=f"dense prepare {prep:.1f} s, {(cache.nbytes - before) / cache.num_tokens / 1024:.1f} KiB kept per token; {_load()}",
        )


def searches(name: str, lm, texts: list[str]) -> None:
    forms = KL.FORMS if os.environ.get("BENCH_KL_REFERENCE", "1") != "0" else ("moments",)
    runs = {}
    for form in forms:
        t0 = time.perf_counter()
        runs[form] = run_search(lm.model, lm.tokenizer, texts, _cfg(lm, TARGETS[name], form=form))
        report(
            f"{name}: default search, {form} form, seconds",
            time.perf_counter() - t0,
            unit=" s",
            note=f"plan {runs[form].plan}; {_load()}",
        )
    if len(runs) == 2:
        same = runs["moments"].plan == runs["logp"].plan
        gap = max(
            abs(a[2] - b[2])
            for a, b in zip(runs["moments"].accepted, runs["logp"].accepted, strict=False)
        )
        report(
            f"{name}: plans identical (moments vs logp)",
            float(same),
            note=f"max |score gap| on accepted {gap:.2e}",
        )
        if not same:
            for form, r in runs.items():
                ppl = perplexity(r.model, lm.tokenizer, read_text(), seq_len=256)
                report(f"{name}: held-out ppl of the {form} plan (no refit)", ppl)


def stride_step(name: str, lm, texts: list[str]) -> None:
    runs = {}
    for stride in ("auto", 1):
        t0 = time.perf_counter()
        cfg = _cfg(lm, {"target_layers": 1}, stride=stride)
        runs[stride] = run_search(lm.model, lm.tokenizer, texts, cfg)
        r = runs[stride]
        report(
            f"{name}: one greedy step, KL stride {stride}, seconds",
            time.perf_counter() - t0,
            unit=" s",
            note=f"stride {head_stride(lm.model) if stride == 'auto' else 1}; plan {r.plan}; "
            f"score {r.accepted[0][2]:.6f}; {_load()}",
        )
    report(f"{name}: same first range (stride auto vs 1)", float(runs["auto"].plan == runs[1].plan))


def pipeline(name: str, lm) -> None:
    from laco_core.pipeline import run as run_steps

    t0 = time.perf_counter()
    model, recipe = run_steps(lm, best_collapse(**TARGETS[name]))
    seconds = time.perf_counter() - t0
    ppl = perplexity(model, lm.tokenizer, read_text(), seq_len=256)
    flag = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in TARGETS[name].items())
    at_most(
        f"laco auto --model {name} {flag}, seconds",
        seconds,
        LIMITS[name],
        note=f"{recipe.describe()}; held-out ppl {ppl:.2f}; {_load()}",
    )


def main() -> None:
    names = os.environ.get("BENCH_KL_MODELS", "default,gemma3-270m").split(",")
    texts = read_asset(SEARCH_TEXT)[:SEARCH_TEXTS]
    for name in names:
        lm = load_model(name, dtype="float32", device="cpu")
        section(
            f"KL objective on {name} (vocabulary {lm.model.get_output_embeddings().weight.shape[0]:,}, {torch.get_num_threads()} torch threads)"
        )
        parts = os.environ.get("BENCH_KL_PARTS", "cost,search,stride,pipeline").split(",")
        for part, fn in (
            ("cost", candidate_cost),
            ("search", searches),
            ("stride", stride_step),
            ("pipeline", lambda n, m, _: pipeline(n, m)),
        ):
            if part in parts:
                fn(name, lm, texts)


if __name__ == "__main__":
    main()
