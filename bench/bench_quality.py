"""The product's quality target on the default model, before and after recovery.

At ~20 % of the parameters removed (8 of 30 layers, 21 %), held-out perplexity
(assets/eval_text.txt, never used for calibration or training) must be within 2× of dense
without recovery and within 1.5× after LoRA recovery. Rows:

1. greedy search, KL objective, ``drop``, C=2 (lazy), calibrated on the first 16 paragraphs
   of assets/train_text.txt (more tokens than the 30 bundled prompts, which pick a worse plan);
2. that plan with ReplaceMe's fitted maps (``drop_linear``) and with the refitted MLP down
   projections (``drop_lsq``), both fitted on all paragraphs of the training text (~3.9 k
   tokens, ridge cross-validated per range);
3. the best of those healed with LoRA, distilled from the dense model on the training text
   (``heal(..., teacher=dense)``), with the seconds per step a user pays.

Knobs (environment): BENCH_QUALITY_STEPS (heal steps, default 60), BENCH_QUALITY_WINDOWS
(256-token eval windows, default 0: the whole text, 22 windows). About 12 minutes on 2 cores.
"""

from __future__ import annotations

import os
import time

from laco_core.assets import read_paragraphs, read_text
from laco_core.evaluate import perplexity
from laco_core.heal import heal
from laco_core.models import load_model
from laco_core.ops import fit_collapse, run_search
from laco_core.plan import plan_of
from laco_core.search import SearchConfig

from .common import at_most, report, section

LAYERS = 8  # ceil(0.2 × 134.5 M / 3.54 M per layer)
SEARCH_PARAGRAPHS = 16
HEAL_LR = 2e-3  # short heals need a larger step than the 60-step default (3e-4)


def main() -> None:
    steps = int(os.environ.get("BENCH_QUALITY_STEPS", "60"))
    windows = int(os.environ.get("BENCH_QUALITY_WINDOWS", "0")) or None
    section(f"Quality target at {LAYERS} of 30 layers removed ({windows or 'all'}×256 eval tokens)")
    lm = load_model("default", dtype="float32", device="cpu")
    text = read_text()

    def ppl_of(model) -> float:
        return perplexity(model, lm.tokenizer, text, seq_len=256, max_windows=windows)

    dense = ppl_of(lm.model)
    report("dense held-out perplexity", dense)
    paragraphs = read_paragraphs()
    found: dict[str, tuple[float, object]] = {}

    def row(name: str, model, note: str) -> None:
        ppl = ppl_of(model)
        found[name] = (ppl, model)
        at_most(
            f"{name}: perplexity / dense, no recovery", ppl / dense, 2.0, f"ppl {ppl:.2f}, {note}"
        )

    cfg = SearchConfig(
        merge_count=2,
        strategy="greedy",
        objective="kl",
        method="drop",
        target_layers=LAYERS,
        lazy=True,
        batch_size=2,
    )
    t0 = time.perf_counter()
    res = run_search(lm.model, lm.tokenizer, paragraphs[:SEARCH_PARAGRAPHS], cfg)
    row(
        "greedy/kl/drop",
        res.model,
        f"plan {plan_of(res.model)}, search {time.perf_counter() - t0:.0f} s",
    )
    for method in ("drop_linear", "drop_lsq"):
        t0 = time.perf_counter()
        fitted, _ = fit_collapse(lm.model, lm.tokenizer, paragraphs, res.plan, method=method)
        row(
            f"greedy/kl/drop + {method} fitted on train_text",
            fitted,
            f"fit {time.perf_counter() - t0:.0f} s",
        )
    best = min(found, key=lambda m: found[m][0])
    healed = heal(found[best][1], lm.tokenizer, steps=steps, lr=HEAL_LR, teacher=lm.model)
    ppl = ppl_of(healed.model)
    at_most(
        f"{best}, LoRA distilled {steps} steps: perplexity / dense",
        ppl / dense,
        1.5,
        note=f"ppl {ppl:.2f}, {healed.seconds / steps:.1f} s/step × {steps} (4×128 tokens)",
    )
