"""A 7B-shaped model end to end on one CUDA GPU (prints "skipped" without one).

A random-weight model with Llama-2-7B's shapes (6.7 B parameters) is written to disk in
bfloat16 and then goes through every step a visitor runs, through the engine as the app calls
it: load, parameter and representation similarity, the live preview, a paper-strategy
search, a greedy KL search to a target, a collapse, evaluation against the dense model,
side-by-side generation and a verified export. Each step prints its time and the GPU's peak
memory; the figures that have a target are checked against it.

Targets on an 80 GB-class GPU: all-pairs parameter similarity ≤ 0.1 s (``bench core``), the
preview ≤ 1 s, peak memory of any step ≤ 1.5 × the model's weights.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .common import at_most, report, section, skipped

WINDOWS = 8


def _step(name: str, fn, weights: int) -> object:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated()
    report(f"7B {name} s", seconds, note=f"peak {peak / 2**30:.1f} GiB")
    at_most(f"7B {name}: peak GPU memory ÷ weights", peak / weights, 1.5)
    return out


def main() -> None:
    section("gpu: Llama-2-7B-shaped bf16 model end to end (CUDA)")
    if not torch.cuda.is_available():
        skipped("7B-shaped end-to-end run", "no CUDA")
        return
    from laco_core.analysis.evaluate import evaluate
    from laco_core.analysis.generate import DecodeSettings, stream_pair
    from laco_core.analysis.similarity import param_similarity, representation_similarity
    from laco_core.arch.tiny import tiny_tokenizer
    from laco_core.assets import read_prompts, read_text
    from laco_core.loading.limits import Limits
    from laco_core.recipe import TextSource
    from laco_core.runtime.engine import Engine
    from laco_core.search.config import SearchConfig
    from laco_core.steps.search import SearchStep

    from .bench_core import llama2_7b_shaped

    print(f"{torch.cuda.get_device_name()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="laco-bench-7b-"))
    try:
        model = llama2_7b_shaped("cuda", torch.bfloat16)
        model.save_pretrained(folder)
        tiny_tokenizer().save_pretrained(folder)  # byte ids fit the 32k vocabulary
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        del model
        gc.collect()
        torch.cuda.empty_cache()

        engine = Engine(limits=Limits.current(False), export_dir=folder / "exports")
        base = _step("load", lambda: engine.load(str(folder), "bfloat16", "cuda"), weights)
        prompts = read_prompts()[:8]
        p = _step("all-pairs parameter similarity", lambda: param_similarity(base.model), weights)
        at_most(
            "7B all-pairs parameter similarity s (again)",
            _time(lambda: param_similarity(base.model)),
            0.1,
        )
        del p
        _step(
            "representation similarity",
            lambda: representation_similarity(base.model, base.tokenizer, prompts),
            weights,
        )
        _step(
            "preview (activation cache)", lambda: engine.preview(base, prompts, [(18, 21)]), weights
        )
        at_most(
            "7B preview of a plan s (cached)",
            _time(lambda: engine.preview(base, prompts, [(18, 21), (24, 27)])),
            1.0,
        )
        paper = SearchStep(SearchConfig(merge_count=4, threshold=0.9), TextSource.of(prompts))
        _step("paper search (C=4, T=0.9)", lambda: engine.run(base, [paper]), weights)
        greedy = SearchStep(
            SearchConfig(
                strategy="greedy",
                objective="kl",
                method="drop",
                merge_count=2,
                target_layers=6,
                strategy_params={"lazy": True},
            ),
            TextSource.of(prompts),
        )
        _step("greedy KL search to 26 layers", lambda: engine.run(base, [greedy]), weights)
        did = _step(
            "collapse 18-21, 24-27 (official)",
            lambda: engine.collapse(base, [(18, 21), (24, 27)], owner="bench"),
            weights,
        )
        model, _ = engine.model(did, "bench")
        text = " ".join(read_text().split()[: 256 * WINDOWS])
        _step(
            "evaluate against the dense model",
            lambda: evaluate(model, base.tokenizer, text, base.model, 256),
            weights,
        )

        def generate():
            *_, (a, b) = stream_pair(
                base.model, model, base.tokenizer, prompts[0], DecodeSettings(64)
            )
            report("7B generation tokens/s, original", a.tokens_per_s)
            report("7B generation tokens/s, collapsed", b.tokens_per_s)

        _step("side-by-side generation (64 tokens)", generate, weights)
        res, _ = _step(
            "export (save, zip, reload check)", lambda: engine.download(did, "bench"), weights
        )
        report("7B export max |logit diff|", res.max_abs_logit_diff)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _time(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0
