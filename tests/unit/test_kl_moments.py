"""The KL objective's two exact forms agree: dense moments + streamed normalizer vs full
log-probabilities, per token, per score and per greedy plan, on every tiny architecture."""

from __future__ import annotations

import pytest
import torch

from laco_core import metrics
from laco_core.activations import ActivationCache, linear_head, logits_of
from laco_core.objectives import KL, chunk_kl
from laco_core.registry import REGISTRY
from laco_core.search.config import SearchConfig
from laco_core.search.run import run as run_search
from laco_core.tiny import tiny_model, tiny_tokenizer

PROMPTS = [
    "The river rose after the storm and the bridge was closed for a week.",
    "A small model can still learn the shape of a sentence.",
    "Layers near the top change the next-token distribution the most.",
    "Cats sleep for most of the day, then hunt at dusk.",
]


def _candidate_finals(cache: ActivationCache, seed: int = 0) -> list[torch.Tensor]:
    """Final states perturbed away from the dense ones (a stand-in for a candidate)."""
    g = torch.Generator().manual_seed(seed)
    return [c.final + 0.5 * torch.randn(c.final.shape, generator=g) for c in cache.chunks]


def test_moments_kl_equals_full_log_prob_kl_per_token(tiny, one_thread, monkeypatch):
    # slices of 3 positions' worth of logits: the streamed normalizer really streams
    monkeypatch.setattr(metrics, "SLICE_BYTES", 4 * 3 * 64)
    cache = ActivationCache(tiny, tiny_tokenizer(), PROMPTS, batch_size=2)
    for c, h in zip(cache.chunks, _candidate_finals(cache), strict=True):
        ref = metrics.log_probs(logits_of(tiny, c.final))[0]  # (T, V)
        full = metrics.kl_per_token(ref, metrics.log_probs(logits_of(tiny, h))[0])  # (T,)
        if linear_head(tiny) is None:  # soft-capped logits: only the full form applies
            assert getattr(tiny.config, "final_logit_softcapping", None)
            continue
        fast = metrics.kl_from_moments(cache.dense_moments(c), h[0], *linear_head(tiny))
        torch.testing.assert_close(fast.float(), full, atol=2e-5, rtol=1e-4)
        assert cache.dense_moments(c).embedding.shape == (h.shape[1], h.shape[2])


def test_moments_handle_a_head_bias(one_thread):
    g = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(50, 8, generator=g), torch.randn(50, generator=g)
    ref_h, h = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    ref = metrics.log_probs(ref_h @ weight.t() + bias)
    full = metrics.kl_per_token(ref, metrics.log_probs(h @ weight.t() + bias))
    fast = metrics.kl_from_moments(metrics.moments(ref_h, weight, bias), h, weight, bias)
    torch.testing.assert_close(fast.float(), full, atol=1e-5, rtol=1e-4)


def test_scores_of_both_forms_agree_and_a_foreign_head_uses_log_probs(arch, tiny, one_thread):
    cache = ActivationCache(tiny, tiny_tokenizer(), PROMPTS, batch_size=2)
    finals = _candidate_finals(cache, seed=2)
    fast, ref = KL("moments"), KL("logp")
    fast.prepare(cache, tiny)
    ref.prepare(cache, tiny)
    assert fast.score(cache, tiny, finals) == pytest.approx(ref.score(cache, tiny, finals), 1e-5)
    # a model whose head is another tensor is compared through log-probabilities
    other = tiny_model(arch, layers=6, seed=7)
    c, h = cache.chunks[0], finals[0]
    expected = metrics.kl_sum(cache.dense_logp(c), metrics.log_probs(logits_of(other, h)))
    assert chunk_kl(cache, other, c, h, "moments") == pytest.approx(expected, rel=1e-6)


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="moments"):
        KL("sampled")


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "qwen2"])
def test_greedy_plans_are_identical_under_both_forms(arch, one_thread):
    model = tiny_model(arch, layers=8)
    cfg = SearchConfig(
        strategy="greedy",
        objective="kl",
        method="drop",
        merge_count=2,
        lazy=True,
        batch_size=2,
        target_layers=3,
    ).validate(8)
    runs = {}
    for form in KL.FORMS:
        runs[form] = run_search(
            model,
            tiny_tokenizer(),
            PROMPTS,
            cfg,
            REGISTRY.method("drop"),
            KL(form),
            REGISTRY.strategy("greedy"),
        )
    fast, ref = runs["moments"], runs["logp"]
    assert fast.plan == ref.plan
    assert [a[:2] for a in fast.accepted] == [a[:2] for a in ref.accepted]
    for a, b in zip(fast.accepted, ref.accepted, strict=True):
        assert a[2] == pytest.approx(b[2], rel=1e-5)
