"""Scale, simulated: a Llama-3.2-1B-shaped model (random bf16 weights, no download) against the
embedded 135M default, through every step a visitor runs, on this CPU.

Each step's time (best of 3 for the steps cheap enough to repeat) and peak resident memory
(above the process's memory when the step starts) is measured for both models; the ratios are compared with the parameter ratio (9.2×): cost
should grow with parameters, not faster. A merge touches only the layers it merges, so its
reference is the ratio of one layer's parameters (17×: the 1B model has fewer, wider layers). The search step is also shown per candidate scored,
since a 16-layer model has fewer candidates than a 30-layer one.

Llama-3.2-1B's published configuration: hidden 2048, 16 layers, 32 heads, 8 KV heads,
intermediate 8192, vocabulary 128256, tied embeddings, rope theta 500000.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from laco_core.analysis.similarity import param_similarity, representation_similarity
from laco_core.assets import read_prompts
from laco_core.loading.limits import Limits
from laco_core.recipe import TextSource
from laco_core.runtime.budget import rss_bytes
from laco_core.runtime.engine import Engine
from laco_core.search.config import SearchConfig
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.search import SearchStep

from .common import at_most, report, section

LLAMA_32_1B = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)
PROMPTS = 8
GiB = 2**30


class Peak:
    """Peak RSS above the start of a block, sampled every 10 ms on a thread."""

    def __enter__(self):
        gc.collect()
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.extra = self.peak - self.start


def write_1b_shaped(folder: Path, tokenizer) -> int:
    """Save a random bf16 Llama-3.2-1B-shaped model (and ``tokenizer``) to ``folder``."""
    import transformers as tf
    from transformers.initialization import no_init_weights

    cfg = tf.LlamaConfig(**LLAMA_32_1B)
    with no_init_weights():  # random init of 1.2 B weights is slow; filled below
        model = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(0.02))
    model.tie_weights()  # the head IS the embedding matrix, as in the released model
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    return n


def steps(spec: str, prompts: list[str]) -> dict[str, tuple[float, int, dict]]:
    """Every step on one model: name -> (seconds, peak bytes above the start, extra facts)."""
    engine = Engine(limits=Limits.current(False))
    out: dict[str, tuple[float, int, dict]] = {}

    def step(name: str, fn: Callable[[], dict | None], repeat: int = 1) -> None:
        """Best time of ``repeat`` runs (others only add time on a shared machine), and the
        largest peak."""
        seconds, extra = float("inf"), 0
        for _ in range(repeat):
            with Peak() as p:
                facts = fn() or {}
            seconds, extra = min(seconds, p.seconds), max(extra, p.extra)
        out[name] = (seconds, extra, facts)
        p.seconds, p.extra = seconds, extra
        print(
            f"  {spec if spec == 'default' else '1B-shaped'} {name}: {p.seconds:.2f} s, "
            f"+{p.extra / GiB:.2f} GiB",
            flush=True,
        )

    box = {}

    def load() -> None:
        # weights read from safetensors may stay file-backed until first touched: one read of
        # every tensor makes the step's resident memory the model's
        box["base"] = engine.load(spec, "auto", "cpu")
        for p in box["base"].model.parameters():
            p.sum()

    step("load", load)
    base = box["base"]
    n = base.num_layers
    step("parameter similarity", lambda: param_similarity(base.model) and None, repeat=3)
    step(
        "representation similarity",
        lambda: representation_similarity(base.model, base.tokenizer, prompts) and None,
        repeat=3,
    )
    ranges = [(n // 2, n // 2 + 2)]
    step("preview (activation cache + estimate)", lambda: engine.preview(base, prompts, ranges))
    step("preview again (cached)", lambda: engine.preview(base, prompts, ranges), repeat=3)
    cfg = SearchConfig(merge_count=4, low=1, threshold=0.9, early_exit=False)
    search = SearchStep(cfg, TextSource.of(prompts))

    def run_search() -> dict:
        events: list[dict] = []
        engine.run(base, [search], events=events.append)
        return {"candidates": sum("lo" in e for e in events)}

    step("paper search (C=4, T=0.9, every prompt scored)", run_search)
    step(
        "collapse (official)", lambda: engine.run(base, [CollapseStep([list(ranges[0])])]) and None
    )
    step(
        "collapse (rdsc: a new merged layer)",
        lambda: engine.run(base, [CollapseStep([list(ranges[0])], "rdsc")]) and None,
    )
    layer = sum(p.numel() for p in base.model.model.layers[0].parameters())
    out["_params"] = (0.0, 0, {"params": base.num_params, "layers": n, "layer": layer})
    return out


def main() -> None:
    from laco_core.loading.models import load_model

    section("scale: Llama-3.2-1B-shaped random bf16 model vs the 135M default (CPU)")
    print(
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    prompts = read_prompts()[:PROMPTS]
    small = steps("default", prompts)
    folder = Path(tempfile.mkdtemp(prefix="laco-bench-1b-"))
    try:
        tok = load_model("default", "float32", "cpu").tokenizer  # ids fit a 128k vocabulary
        t0 = time.perf_counter()
        write_1b_shaped(folder, tok)
        print(f"  wrote the 1B-shaped model in {time.perf_counter() - t0:.1f} s", flush=True)
        big = steps(str(folder), prompts)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    p_small, p_big = small["_params"][2]["params"], big["_params"][2]["params"]
    ratio = p_big / p_small
    l_small, l_big = small["_params"][2]["layer"], big["_params"][2]["layer"]
    layer_ratio = l_big / l_small
    report("parameters, 1B-shaped ÷ default", ratio, note=f"{p_big:,} vs {p_small:,}")
    report(
        "parameters of one layer, 1B-shaped ÷ default",
        layer_ratio,
        note="the reference of a merge, which touches only the layers it merges",
    )
    print("\n| step | 135M s | 1B s | time × | 135M peak GiB | 1B peak GiB | memory × |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in small:
        if name.startswith("_"):
            continue
        (ts, ms, fs), (tb, mb, fb) = small[name], big[name]
        print(
            f"| {name} | {ts:.2f} | {tb:.2f} | {tb / ts:.1f} | {ms / GiB:.2f} | {mb / GiB:.2f} | "
            f"{mb / max(ms, 2**20):.1f} |"
        )
    print(flush=True)
    for name in small:
        if name.startswith("_") or "cached" in name:
            continue
        (ts, ms, fs), (tb, mb, fb) = small[name], big[name]
        if "candidates" in fs:
            per = (tb / max(fb["candidates"], 1)) / (ts / max(fs["candidates"], 1))
            at_most(
                f"{name}: time per candidate ratio ÷ parameter ratio",
                per / ratio,
                1.5,
                note=f"{fs['candidates']} vs {fb['candidates']} candidates",
            )
        if name.startswith("collapse (rdsc"):
            at_most(f"{name}: time ratio ÷ layer parameter ratio", (tb / ts) / layer_ratio, 1.5)
            continue
        at_most(f"{name}: time ratio ÷ parameter ratio", (tb / ts) / ratio, 1.5)
        if ms > 64 * 2**20:  # memory ratios of steps that allocate next to nothing are noise
            at_most(f"{name}: peak memory ratio ÷ parameter ratio", (mb / ms) / ratio, 1.5)
    report("load average (1 min) at the end", os.getloadavg()[0], note="2 cores shared")
