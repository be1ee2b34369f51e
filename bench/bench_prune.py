"""Pruning baselines vs LaCo on the embedded default model (issue 5).

Prints one table: held-out perplexity and KL to the dense model of every method (LaCo paper
mode, ShortGPT, Gromov angular, LLM-Pruner) at ~10/20/30 % of the
parameters removed, before and after a short LoRA heal (at 20 %); plus each method's build time and the
pruned model's forward speed relative to the dense one, measured in the same run.
Aimed at ~10 minutes on 2 idle CPU cores (about 28 minutes when measured, piecewise, on a
2-core box shared with five other jobs): a short heal (HEAL_STEPS × HEAL_BATCH × 128 tokens) and
EVAL_WINDOWS × 256 tokens of held-out text per point (one forward per point: the dense
model's log-probabilities are computed once).
"""

from __future__ import annotations

import time

import torch

from laco_core.assets import TRAIN_TEXT, read_prompts, read_text
from laco_core.loading.models import load_model
from laco_core.ops import prune_llm_pruner
from laco_core.runtime.comparison import compare_all, markdown_table

from .common import report, section, timeit

RATIOS = (0.1, 0.2, 0.3)
# laco_best runs a greedy search per ratio (several minutes each on 2 cores): `laco compare`
METHODS = ("laco_paper", "shortgpt", "angular", "llm_pruner")
HEAL_RATIOS = (0.2,)  # healing every point would double the run time
HEAL_STEPS = 8
HEAL_BATCH = 2
HEAL_LR = 1e-3  # a short heal needs a larger step than the 60-step default (3e-4)
EVAL_WINDOWS = 4


def main() -> None:
    section("pruning baselines vs LaCo (default model, CPU fp32)")
    lm = load_model("default", dtype="float32", device="cpu")
    model, tok = lm.model, lm.tokenizer
    prompts = read_prompts()

    # width pruning keeps every layer: its speed-up is smaller than a layer drop's at equal size
    res = prune_llm_pruner(model, tok, prompts, 0.2)
    pruned = res.model
    x = torch.randint(0, model.config.vocab_size, (4, 128))
    with torch.no_grad():
        dense_s = timeit(lambda: model(x, use_cache=False), repeat=3)
        pruned_s = timeit(lambda: pruned(x, use_cache=False), repeat=3)
    report(
        "llm-pruner 20%: forward speed-up vs dense",
        dense_s / pruned_s,
        unit="x",
        note=f"params removed {res.removed_fraction:.1%}",
    )

    t0 = time.perf_counter()
    df = compare_all(
        model,
        tok,
        read_text(),
        prompts,
        RATIOS,
        heal_steps=HEAL_STEPS,
        heal_text=read_text(TRAIN_TEXT),
        heal_kwargs={"batch_size": HEAL_BATCH, "lr": HEAL_LR},
        eval_windows=EVAL_WINDOWS,
        heal_ratios=HEAL_RATIOS,
        methods=METHODS,
        callback=lambda d, n, msg: print(
            f"  [{d}/{n}] {msg} ({time.perf_counter() - t0:.0f} s)", flush=True
        ),
    )
    total = time.perf_counter() - t0
    print(markdown_table(df))
    for _, r in df[~df["healed"] & (df["method"] != "dense")].iterrows():
        report(f"{r['method']} {r['target_ratio']:.0%}: build seconds", r["seconds"], unit=" s")
    report(
        "comparison: total seconds",
        total,
        unit=" s",
        note=f"heal {HEAL_STEPS} steps x {HEAL_BATCH}x128 tokens, eval {EVAL_WINDOWS}x256 tokens",
    )


if __name__ == "__main__":
    main()
