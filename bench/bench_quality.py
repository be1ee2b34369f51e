"""The product's quality target on the default model, before and after recovery.

At ~20 % of the parameters removed (8 of 30 layers), held-out perplexity (assets/eval_text.txt,
never used for calibration or training) must be within 2× of dense without recovery and within
1.5× after LoRA recovery. Rows:

1. greedy search, KL objective, ``drop``, C=2, on the bundled calibration prompts;
2. the same plan with ReplaceMe's fitted maps (``fit_collapse``, ``drop_linear``), fitted on
   the paragraphs of assets/train_text.txt (~3.9 k tokens, ridge cross-validated per range);
3. greedy search with ``drop_linear`` in the loop (each candidate fitted and scored on the
   prompts), for comparison;
4. the best of those healed with LoRA on train_text: LM loss vs distillation from the dense
   model (``heal(..., teacher=dense)``), with the seconds per step a user pays.

Knobs (environment): BENCH_QUALITY_STEPS (heal steps, default 40), BENCH_QUALITY_WINDOWS
(256-token eval windows, default 4). About 25 minutes with one torch thread.
"""

from __future__ import annotations

import os
import time

from laco_core.assets import read_paragraphs, read_prompts, read_text
from laco_core.evaluate import perplexity
from laco_core.heal import heal
from laco_core.merge import plan_of
from laco_core.models import load_model
from laco_core.search import ActivationCache, SearchConfig, run_search
from laco_core.search.correction import fit_collapse

from .common import at_most, report, section

LAYERS = 8  # ceil(0.2 × 134.5 M / 3.54 M per layer)
HEAL_LR = 1e-3  # short heals need a larger step than the 60-step default (3e-4)


def main() -> None:
    steps = int(os.environ.get("BENCH_QUALITY_STEPS", "40"))
    windows = int(os.environ.get("BENCH_QUALITY_WINDOWS", "4"))
    section(f"Quality target at {LAYERS} of 30 layers removed ({windows}×256 eval tokens)")
    lm = load_model("default", dtype="float32", device="cpu")
    text = read_text()

    def ppl_of(model) -> float:
        return perplexity(model, lm.tokenizer, text, seq_len=256, max_windows=windows)

    dense = ppl_of(lm.model)
    report("dense held-out perplexity", dense)
    prompts, paragraphs = read_prompts(), read_paragraphs()
    cache = ActivationCache(lm.model, lm.tokenizer, prompts)
    found: dict[str, tuple[float, object]] = {}

    def row(name: str, model, note: str) -> None:
        ppl = ppl_of(model)
        found[name] = (ppl, model)
        at_most(
            f"{name}: perplexity / dense, no recovery",
            ppl / dense,
            2.0,
            note=f"ppl {ppl:.2f}, {note}",
        )

    for method in ("drop", "drop_linear"):
        cfg = SearchConfig(
            merge_count=2,
            strategy="greedy",
            objective="kl",
            method=method,
            target_layers=LAYERS,
            lazy=True,
        )
        t0 = time.perf_counter()
        res = run_search(lm.model, lm.tokenizer, prompts, cfg, cache=cache)
        seconds = time.perf_counter() - t0
        row(f"greedy/kl/{method}", res.model, f"plan {plan_of(res.model)}, search {seconds:.0f} s")
        if method == "drop":
            t0 = time.perf_counter()
            fitted, _ = fit_collapse(lm.model, lm.tokenizer, paragraphs, res.plan)
            row(
                "greedy/kl/drop + maps fitted on train_text",
                fitted,
                f"fit {time.perf_counter() - t0:.0f} s",
            )
    best = min(found, key=lambda m: found[m][0])
    model = found[best][1]
    for name, teacher in (("lm loss", None), ("distill", lm.model)):
        healed = heal(model, lm.tokenizer, steps=steps, lr=HEAL_LR, teacher=teacher)
        ppl = ppl_of(healed.model)
        at_most(
            f"{best} healed {steps} steps ({name}): perplexity / dense",
            ppl / dense,
            1.5,
            note=f"ppl {ppl:.2f}, {healed.seconds / steps:.1f} s/step × {steps} (4×128 tokens)",
        )
