"""The app under load: a short request's latency while another client runs a search, and
resident memory with 50 builds across 8 sessions on the default model.

Latency: ``python app.py`` in a subprocess (default model, warm cache); the short request is
``/analyze`` on 8 fresh calibration prompts (about a second: nothing memoised). Idle: the
median of 5. Under load: client 0 streams a greedy KL search while clients 1-7 send the same
request one after another; the median of their latencies ÷ the idle median, target ≤ 3
(two cores shared by two jobs is 2× at best). Then the 7 at once, for scale (no target).

Memory: an engine with a budget of the default model + 256 MiB takes 50 builds (four methods,
two of them making new layer tensors) from 8 owners; RSS above the loaded base must stay
within the budget's room plus 64 MiB, and every build, evicted or not, must rebuild equal.

Mixed load, on both real models (``BENCH_LOAD_MODELS``, default ``default,gemma3-270m``):
an engine with a budget of the model + 512 MiB serves 4 owners in turn, each asking for
activations on new calibration texts, a what-if preview, the KL objective's dense log-probs
(the ``logp`` form: 4 bytes × the vocabulary per token, the largest thing a cache keeps) and
its moments, and a build. A thread samples RSS every 10 ms; the worst RSS above the loaded
base is reported against the budget's room. The stated margin, as in
tests/reliability/test_cache_accounting.py: one chunk's logits and log-probs while they are
computed (2 × tokens × vocabulary × 4 bytes, not yet held) + 384 MiB of torch/transformers
workspaces and allocator slack. ``BENCH_LOAD_ROUNDS`` (default 12) sets the rounds.

``BENCH_LOAD_PARTS`` selects parts (default ``latency,builds,mixed``).
"""

from __future__ import annotations

import gc
import hashlib
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .common import at_most, report, section, serve_app, stop

CLIENTS = 8
SAMPLES = 5
MiB = 2**20


def start_app(timeout: float = 300.0):
    """``python app.py`` on the user's GGUF cache (warm after the first run)."""
    log = tempfile.NamedTemporaryFile("w", prefix="laco-bench-load-", suffix=".log", delete=False)
    proc, url, client, _ = serve_app({}, log, timeout)
    client.predict("default", "auto", "auto", api_name="/load_model")
    return proc, url, log.name


class Short:
    """The ~1 s request: both similarity analyses on 8 prompts never seen before."""

    def __init__(self):
        from laco_core.assets import read_prompts

        self.prompts = read_prompts()[:8]
        self.n = 0

    def __call__(self, client) -> float:
        self.n += 1
        prompts = "\n".join([f"{self.prompts[0]} (request {self.n})", *self.prompts[1:]])
        t0 = time.perf_counter()
        client.predict(prompts, "all", "cosine", api_name="/analyze")
        return time.perf_counter() - t0


def latency_under_load() -> None:
    from gradio_client import Client

    from laco_core.assets import read_prompts

    section(f"latency of a short request while a search runs ({CLIENTS} clients)")
    proc, url, log = start_app()
    try:
        clients = [Client(url, verbose=False) for _ in range(CLIENTS)]
        for c in clients[1:]:
            c.predict("default", "auto", "auto", api_name="/load_model")
        short = Short()
        short(clients[1])  # warm-up
        idle = [short(clients[1]) for _ in range(SAMPLES)]
        load_idle = os.getloadavg()[0]
        search = clients[0].submit(
            "\n".join(read_prompts()),
            2,
            1,
            0,
            2,
            0.5,
            "drop",
            "kl",
            "greedy",
            12,
            api_name="/auto_collapse",
        )
        t0 = time.perf_counter()
        while not search.outputs() and time.perf_counter() - t0 < 120:
            time.sleep(0.1)
        time.sleep(2.0)  # well into the search
        loaded = [short(c) for c in clients[1:]]
        running = not search.done()
        with ThreadPoolExecutor(CLIENTS - 1) as pool:
            together = list(pool.map(short, clients[1:]))
        running_after = not search.done()
        load_busy = os.getloadavg()[0]
        med_idle, med_loaded = statistics.median(idle), statistics.median(loaded)
        report("short request idle, median of 5 s", med_idle, note=f"load {load_idle:.1f}")
        report(
            "short request during a search, median of 7 clients s",
            med_loaded,
            note=f"load {load_busy:.1f}; search still running: {running}",
        )
        at_most("short request latency under a search ÷ idle", med_loaded / med_idle, 3.0)
        report(
            "7 short requests at once during a search, mean ÷ idle",
            statistics.mean(together) / med_idle,
            note=f"for scale; search still running: {running_after}",
        )
        try:
            search.cancel()  # answered once the search reaches its next candidate
        except Exception:  # noqa: BLE001 - the app is stopped next anyway
            pass
    finally:
        stop(proc)
        Path(log).unlink(missing_ok=True)


@torch.no_grad()
def _logits(model, ids) -> str:
    """A digest of the logits: exact equality without keeping 50 × (T × V) floats around."""
    logits = model(input_ids=ids, use_cache=False).logits
    return hashlib.sha1(logits.contiguous().numpy().tobytes()).hexdigest()


def memory_with_50_builds() -> None:
    from laco_core.arch.sharing import model_bytes
    from laco_core.loading.limits import Limits
    from laco_core.loading.models import load_model
    from laco_core.runtime.budget import rss_bytes
    from laco_core.runtime.engine import Engine
    from laco_core.steps.collapse import CollapseStep

    section("memory: 50 builds across 8 sessions on the default model")
    base_bytes = model_bytes(load_model("default", "float32", "cpu").model)
    gc.collect()
    budget = base_bytes + 256 * MiB
    engine = Engine(memory_budget_gb=budget / 2**30, limits=Limits.current(False))
    base = engine.load("default", "float32", "cpu")
    for p in base.model.parameters():  # resident, not file-backed
        p.sum()
    ids = torch.tensor(
        [base.tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"]]
    )
    gc.collect()
    rss0 = peak = rss_bytes()
    methods = ("rdsc", "average", "official", "drop")
    made, unbounded = [], 0
    t0 = time.perf_counter()
    for i in range(50):
        owner = f"session-{i % 8}"
        lo = 2 + (i * 7) % 24
        step = CollapseStep([[lo, lo + 1 + i % 3]], methods[i % len(methods)])
        did = engine.run(base, [step], owner)
        model, _ = engine.model(did, owner)
        unbounded += model_bytes(model, exclude={p.data_ptr() for p in base.model.parameters()})
        made.append((owner, did, _logits(model, ids)))
        del model
        peak = max(peak, rss_bytes())
    build_s = time.perf_counter() - t0
    evicted = sum(engine.build(d, o).model is None for o, d, _ in made)
    equal = 0
    for owner, did, want in made:
        model, _ = engine.model(did, owner)
        equal += _logits(model, ids) == want
        del model
        peak = max(peak, rss_bytes())
    growth = peak - rss0
    bound = budget - base_bytes + 64 * MiB
    report("RSS with the default model loaded GiB", rss0 / 2**30)
    report(
        "peak RSS over the 50 builds and their rebuilds GiB",
        peak / 2**30,
        note=f"budget {budget / 2**30:.2f} GiB, {evicted} of 50 evicted, {build_s:.1f} s",
    )
    report("new tensors the 50 builds would hold without a budget MiB", unbounded / MiB)
    at_most(
        "RSS growth ÷ (budget room + 64 MiB)",
        growth / bound,
        1.0,
        note=f"growth {growth / MiB:.0f} MiB",
    )
    at_most("builds that did not rebuild equal", 50 - equal, 0)


class PeakRSS:
    """The highest RSS seen by a thread sampling every ``every`` seconds (transients too)."""

    def __init__(self, every: float = 0.01):
        import threading

        from laco_core.runtime.budget import rss_bytes

        self.peak, self._rss, self._stop = rss_bytes(), rss_bytes, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, self._rss())

    def close(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._rss())


def memory_mixed_load(spec: str) -> None:
    from laco_core.arch.sharing import model_bytes
    from laco_core.assets import read_asset
    from laco_core.loading.limits import Limits
    from laco_core.runtime.budget import rss_bytes
    from laco_core.runtime.engine import Engine
    from laco_core.search.objectives import KL
    from laco_core.steps.collapse import CollapseStep

    section(f"memory: mixed load of 4 sessions on {spec} (caches, previews, log-probs, builds)")
    engine = Engine(memory_budget_gb=1024, limits=Limits.current(False))
    base = engine.load(spec, "float32", "cpu")
    for p in base.model.parameters():  # resident, not file-backed
        p.sum()
    base_bytes = model_bytes(base.model)
    engine.budget = budget = base_bytes + 512 * MiB
    vocab = base.model.get_output_embeddings().weight.shape[0]
    texts = read_asset("train_paragraphs")
    n = base.num_layers
    gc.collect()
    rss0 = rss_bytes()
    sampler, t0, worst_chunk, over = PeakRSS(), time.perf_counter(), 0, 0
    for i in range(int(os.environ.get("BENCH_LOAD_ROUNDS", "12"))):
        owner = f"session-{i % 4}"
        prompts = texts[3 * i : 3 * i + 6]
        cache = engine.activations(base, prompts, batch_size=2)
        worst_chunk = max(worst_chunk, *(c.input_ids.shape[1] for c in cache.chunks))
        lo = 2 + (3 * i) % (n - 5)
        engine.preview(base, prompts, [(lo, lo + 2)], "drop")
        KL("logp").prepare(cache, base.model)
        KL("moments").prepare(cache, base.model)
        engine.run(base, [CollapseStep([[lo, lo + 1]], ("drop", "average")[i % 2])], owner)
        over += sum(engine.usage().values()) > budget
        del cache
    seconds = time.perf_counter() - t0
    peak = sampler.close()
    gc.collect()
    room = budget - base_bytes
    margin = 2 * worst_chunk * vocab * 4 + 384 * MiB
    growth = peak - rss0
    report(f"{spec}: RSS with the model loaded GiB", rss0 / 2**30)
    report(
        f"{spec}: worst RSS under the mixed load GiB",
        peak / 2**30,
        note=f"budget {budget / 2**30:.2f} GiB (model {base_bytes / 2**30:.2f} + room "
        f"{room / MiB:.0f} MiB), growth {growth / MiB:.0f} MiB, margin {margin / MiB:.0f} MiB "
        f"(chunks up to {worst_chunk} tokens × {vocab} vocabulary), {seconds:.0f} s",
    )
    report(f"{spec}: counted bytes at the end MiB", sum(engine.usage().values()) / MiB)
    at_most(f"{spec}: times counted usage was over the budget", over, 0)
    at_most(f"{spec}: RSS growth ÷ (budget room + margin)", growth / (room + margin), 1.0)


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    parts = os.environ.get("BENCH_LOAD_PARTS", "latency,builds,mixed").split(",")
    if "latency" in parts:
        latency_under_load()
    if "builds" in parts:
        memory_with_50_builds()
    if "mixed" in parts:
        for spec in os.environ.get("BENCH_LOAD_MODELS", "default,gemma3-270m").split(","):
            memory_mixed_load(spec)
            gc.collect()
    report("load average (1 min) at the end", os.getloadavg()[0], note="2 cores shared")
