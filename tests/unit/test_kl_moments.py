"""The KL objective's two exact forms agree: dense moments + streamed normalizer vs full
log-probabilities, per token, per score and per greedy plan, on every tiny architecture; its
LM-head stride scores exactly the chosen positions, and ``auto`` follows the model's sizes."""

from __future__ import annotations

import math

import pytest
import torch

from laco_core.analysis import metrics
from laco_core.analysis.activations import ActivationCache, linear_head, logits_of
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import LacoError
from laco_core.ops import run_search
from laco_core.search.objectives import KL, Partial, chunk_kl, head_stride
from tests.helpers import default_search_config

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


def test_unknown_form_and_bad_strides_are_refused():
    with pytest.raises(LacoError, match="moments"):
        KL("sampled")
    for bad in (0, 1.5, "every"):
        with pytest.raises(LacoError, match="stride"):
            KL(stride=bad)
    assert KL(stride="auto").stride == "auto" and KL(stride=3.0).stride == 3


def _direct_kl(cache: ActivationCache, model, finals: list[torch.Tensor], stride: int):
    """exp(−mean KL) over positions 0, s, 2s, … of each chunk, from full log-probabilities."""
    kls = []
    for c, h in zip(cache.chunks, finals, strict=True):
        ref = metrics.log_probs(logits_of(model, c.final))[0, ::stride]  # (N, V)
        kls.append(metrics.kl_per_token(ref, metrics.log_probs(logits_of(model, h))[0, ::stride]))
    kl = torch.cat(kls).double()
    return float(torch.exp(-kl.mean())), kl.numel()


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_a_stride_scores_exactly_every_stride_th_position(arch, stride, one_thread):
    model = tiny_model(arch, layers=6)
    cache = ActivationCache(model, tiny_tokenizer(), PROMPTS, batch_size=3)
    finals = _candidate_finals(cache, seed=3)
    expected, count = _direct_kl(cache, model, finals, stride)
    for form in KL.FORMS:
        kl = KL(form, stride=stride)
        kl.prepare(cache, model)
        assert kl.expected(cache) == count
        assert kl.score(cache, model, finals) == pytest.approx(expected, rel=1e-5)
    if stride == 1:  # every position: the objective's value before strides existed
        assert count == cache.num_tokens
        assert KL().score(cache, model, finals) == pytest.approx(expected, rel=1e-5)


def test_dense_moments_are_kept_only_at_scored_positions_and_reused(one_thread):
    model = tiny_model("llama", layers=4)
    cache = ActivationCache(model, tiny_tokenizer(), PROMPTS, batch_size=2)
    finals = _candidate_finals(cache, seed=4)
    c, h = cache.chunks[0], finals[0]
    n = c.final.shape[1]
    KL(stride=2).prepare(cache, model)
    assert c.moments.stride == 2 and c.moments.embedding.shape[0] == -(-n // 2)
    four = chunk_kl(cache, model, c, h, stride=4)  # sliced from the stride-2 moments
    assert c.moments.stride == 2
    three = chunk_kl(cache, model, c, h, stride=3)  # gcd(2, 3) = 1: every position, kept
    assert c.moments.stride == 1 and c.moments.embedding.shape[0] == n
    for got, stride in ((four, 4), (three, 3)):
        ref = metrics.log_probs(logits_of(model, c.final))[:, ::stride]
        want = metrics.kl_sum(ref, metrics.log_probs(logits_of(model, h))[:, ::stride])
        assert got[1] == want[1] and got[0] == pytest.approx(want[0], rel=1e-4, abs=1e-5)


def test_early_exit_bounds_count_scored_positions_only(one_thread):
    model = tiny_model("llama", layers=4)
    cache = ActivationCache(model, tiny_tokenizer(), PROMPTS, batch_size=2)
    kl = KL(stride=2)
    kl.prepare(cache, model)
    total, count = kl.stat(cache, model, cache.chunks[0], _candidate_finals(cache)[0])
    assert count == -(-sum(cache.chunks[0].lengths) // 2)
    p = Partial(total, count, 2)
    assert kl.bounds(cache, p) == (0.0, pytest.approx(math.exp(-total / kl.expected(cache))))
    assert kl.expected(cache) < cache.num_tokens


def test_auto_stride_follows_the_head_to_layers_cost_ratio():
    # hidden 32, vocabulary 256: the head (8k weights) is a small share of 6 layers (~56k)
    small_head = tiny_model("llama", layers=6)
    assert head_stride(small_head) == 1
    # a 16k-token vocabulary on 2 layers: the head holds ~28× the layers' weights
    big_head = tiny_model("llama", layers=2, vocab_size=16384)
    assert head_stride(big_head) > 1
    assert KL().stride_for(ActivationCache(big_head, tiny_tokenizer(), PROMPTS[:1])) == (
        head_stride(big_head)
    )


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "qwen2"])
@pytest.mark.parametrize("stride", [1, 2])
def test_greedy_plans_are_identical_under_both_forms(arch, stride, one_thread):
    model = tiny_model(arch, layers=8)
    runs = {}
    for form in KL.FORMS:
        kl = {"form": form, "stride": stride}
        cfg = default_search_config(8, {"target_layers": 3}, objective_params=kl)
        runs[form] = run_search(model, tiny_tokenizer(), PROMPTS, cfg)
    fast, ref = runs["moments"], runs["logp"]
    assert fast.plan == ref.plan
    assert [a[:2] for a in fast.accepted] == [a[:2] for a in ref.accepted]
    for a, b in zip(fast.accepted, ref.accepted, strict=True):
        assert a[2] == pytest.approx(b[2], rel=1e-5)
