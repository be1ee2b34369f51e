"""The engine's memory budget counts the dense caches an objective fills after insertion, when
they grow (evicting others then, not at the next insertion), and what a long job holds
outside them (a comparison's reference log-probs, the threshold check's search cache): its
accounting equals the bytes of the tensors actually held, and resident memory on the default
model stays within the budget plus a stated margin."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from laco_core.assets import read_asset
from laco_core.loading.limits import Limits
from laco_core.recipe import TextSource
from laco_core.runtime import comparison
from laco_core.runtime.budget import rss_bytes
from laco_core.runtime.engine import Engine
from laco_core.search.config import SearchConfig
from laco_core.search.objectives import KL, Perplexity
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.search import SearchStep
from tests.helpers import save_tiny

MiB = 2**20
PROMPTS = ["One short calibration text.", "Another one, a little longer than the first."]


def _held(cache) -> int:
    """Bytes of the distinct storages a cache's chunks reference (what it really holds)."""
    seen: dict[int, int] = {}
    for c in cache.chunks:
        tensors = [*c.inputs, c.final, c.logp]
        if c.moments is not None:
            tensors += [c.moments.neg_entropy, c.moments.embedding, c.moments.bias]
        for t in tensors:
            if t is not None:
                s = t.untyped_storage()
                seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def _tiny_engine(tmp_path, layers: int = 4):
    """An engine with a 1 GB budget and the app's limits off, and a tiny llama loaded in it."""
    path = save_tiny(tmp_path / "tiny", layers=layers)
    engine = Engine(memory_budget_gb=1.0, limits=Limits.current(False))
    return engine, engine.load(str(path), "float32", "cpu")


def test_budget_counts_caches_as_they_grow(tmp_path, one_thread):
    engine, base = _tiny_engine(tmp_path)
    caches = [engine.activations(base, [p, *PROMPTS[:k]]) for k, p in enumerate(PROMPTS * 2)]
    assert engine.usage()["caches"] == sum(_held(c) for c in caches)
    before = engine.usage()["caches"]
    KL("moments").prepare(caches[0], base.model)  # grows after insertion
    KL("logp").prepare(caches[1], base.model)
    Perplexity().prepare(caches[2], base.model)  # keeps a scalar only
    assert caches[1].chunks[0].logp is not None and caches[0].chunks[0].moments is not None
    assert engine.usage()["caches"] == sum(_held(c) for c in caches) > before
    assert _held(caches[2]) == caches[2].nbytes  # nothing added by the ppl objective


def test_a_growing_cache_evicts_others_when_it_grows(tmp_path, one_thread):
    engine, base = _tiny_engine(tmp_path)
    old = engine.activations(base, PROMPTS)
    cache = engine.activations(base, PROMPTS[:1])
    engine.budget = sum(engine.usage().values()) + 1  # full: the next byte held evicts
    KL("logp").prepare(cache, base.model)  # grows by its log-probs
    keys = [k for k in engine._caches if k[0] == "activations"]
    assert keys == [("activations", engine._key_of(base), tuple(PROMPTS[:1]), 4)]
    assert engine.usage()["caches"] == _held(cache) and old.chunks  # the other one went
    # evicted while still in use: growing puts it back, counted
    KL("moments").prepare(old, base.model)
    assert engine.usage()["caches"] >= _held(old)


def test_comparison_reference_log_probs_are_counted_while_held(tmp_path, one_thread):
    engine, base = _tiny_engine(tmp_path)
    text = " ".join(["A river runs past the hills and the old mill by the road."] * 20)
    seen: list[int] = []

    def point(*_args) -> None:
        seen.append(engine.usage()["caches"])

    comparison.compare_all(
        base.model,
        base.tokenizer,
        text,
        PROMPTS,
        [0.3],
        methods=["shortgpt"],
        eval_seq_len=32,
        on_point=point,
        activations_of=engine.activations_of(base),
        count=engine.count,
    )
    vocab = base.model.get_output_embeddings().weight.shape[0]
    tokens = len(base.tokenizer(text)["input_ids"])
    assert seen and seen[0] >= 4 * vocab * min(tokens, 8 * 32) * 0.9  # the reference held
    assert engine.usage()["caches"] < seen[0]  # and given back at the end


def usage_of(engine: Engine, cache) -> int:
    """What the engine counts with ``cache`` alone beside its base models (a cache over the
    budget by itself is kept while in use)."""
    u = engine.usage()
    return u["bases"] + u["builds"] + u["recipes"] + _held(cache)


@pytest.mark.slow
def test_resident_memory_within_budget_on_the_default_model(one_thread):
    texts = read_asset("train_paragraphs")
    gc.collect()
    rss0 = rss_bytes()
    budget = 1.0 * 2**30
    engine = Engine(memory_budget_gb=budget / 2**30, limits=Limits.current(False))
    base = engine.load("default", "float32", "cpu")
    peak = 0
    # four prompt sets, each filled with the full log-prob form (the largest: 4 bytes × the
    # vocabulary per token): the budget evicts the oldest when the next one arrives
    for k in range(4):
        cache = engine.activations(base, texts[4 * k : 4 * k + 6], batch_size=2)
        KL("logp").prepare(cache, base.model)
        KL("moments").prepare(cache, base.model)
        held = _held(cache)
        assert engine.usage()["caches"] >= held
        # counted when held: the fill evicted the others at once, nothing waits for an insert
        assert sum(engine.usage().values()) <= max(engine.budget, usage_of(engine, cache))
        peak = max(peak, rss_bytes() - rss0)
        del cache
    gc.collect()
    usage = sum(engine.usage().values())
    print(
        f"rss {(rss_bytes() - rss0) / MiB:.0f} MiB, peak {peak / MiB:.0f}, usage {usage / MiB:.0f}"
    )
    # margin: torch/transformers workspaces, allocator slack and the chunk being filled (its
    # logits and log-probs while computed: 2 × tokens × vocabulary × 4 bytes, counted once held)
    vocab = base.model.get_output_embeddings().weight.shape[0]
    chunk = max(c.input_ids.shape[1] for c in engine.activations(base, texts[12:18], 2).chunks)
    margin = 384 * MiB + 2 * chunk * vocab * 4
    assert rss_bytes() - rss0 <= budget + margin, (rss_bytes() - rss0, usage)
    assert peak <= budget + margin, (peak, margin)


def test_a_search_on_a_build_counts_its_own_cache_while_it_runs(tmp_path, one_thread):
    engine, base = _tiny_engine(tmp_path, layers=6)
    parent = engine.run(base, [CollapseStep([[1, 2]], "drop")], "alice")
    held: list[int] = []

    def event(row: dict) -> None:  # the build's model is not the base: its cache is the job's
        if row.get("pending"):  # progress before the statistics exist
            return
        held.append(sum(size(v) for k, (v, size) in engine._caches.items() if k[0] == "held"))

    cfg = SearchConfig(strategy="greedy", objective="kl", method="drop", target_layers=1)
    search = SearchStep(cfg, TextSource.of(PROMPTS))
    engine.run(base, [search], "alice", parent=parent, events=event)
    assert held and min(held) > 0
    gc.collect()
    assert not [k for k in engine._caches if k[0] == "held"]  # given back with the cache


def test_the_preview_warm_up_builds_once_is_counted_and_cancels(tmp_path, one_thread, monkeypatch):
    """The app's warm-up after a load builds the preview's activations and KL statistics in
    the background, counted in the budget; a preview asked meanwhile waits for them instead
    of recording or filling them again; a cancelled warm-up keeps nothing."""
    from laco_core.analysis import activations
    from laco_core.errors import Cancelled
    from laco_core.runtime.warmup import warm_preview
    from laco_core.search import objectives

    engine, base = _tiny_engine(tmp_path)
    calls = {"record": 0, "moments": 0}
    go = threading.Event()
    real_record, real_moments = activations.record, objectives.moments

    def record(*args, **kwargs):
        calls["record"] += 1
        assert go.wait(30)  # the warm-up is under way until the test lets it go on
        return real_record(*args, **kwargs)

    def moments(*args, **kwargs):
        calls["moments"] += 1
        return real_moments(*args, **kwargs)

    monkeypatch.setattr(activations, "record", record)
    monkeypatch.setattr(objectives, "moments", moments)
    warm = warm_preview(engine, base, PROMPTS)
    asked = threading.Thread(target=lambda: engine.preview(base, PROMPTS, [(1, 2)], "drop"))
    asked.start()  # a preview asked while the warm-up records: it waits for it
    go.set()
    asked.join(60)
    assert warm.wait(60) and warm.error is None and not asked.is_alive()
    assert calls == {"record": 1, "moments": 1}  # one chunk: recorded once, filled once
    cache = engine.activations(base, PROMPTS)
    assert cache.chunks[0].moments is not None
    assert engine.usage()["caches"] == _held(cache)

    go.clear()  # a second warm-up, cancelled while it records: it keeps nothing
    cancelled = warm_preview(engine, base, [*PROMPTS, "A third text."], batch_size=1)
    deadline = time.monotonic() + 30
    while calls["record"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    cancelled.cancel()
    go.set()
    assert cancelled.wait(60) and isinstance(cancelled.error, Cancelled)
    assert engine.usage()["caches"] == _held(cache)
