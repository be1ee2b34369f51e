"""The fast search against the literal official loop, on tiny models of every architecture."""

from __future__ import annotations

import json

import pytest
import torch

from laco_core.analysis.activations import ActivationCache, suffix_final
from laco_core.arch.adapters import get_layers
from laco_core.arch.sharing import count_params, shared_fraction
from laco_core.arch.tiny import ByteTokenizer
from laco_core.assets import read_prompts
from laco_core.ops import build_collapsed, preview, reference_search, run_search
from laco_core.registry import REGISTRY
from laco_core.search import SearchConfig
from laco_core.search.reference import literal_merge
from laco_core.search.run import replay
from tests.helpers import assert_same_parameters

TOK = ByteTokenizer()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prompts():
    # lengths 31 and shorter: longer than the tiny sliding window (16), so masks matter
    return read_prompts()[:5] + ["Hi."]


def test_suffix_forward_equals_full_forward(tiny, prompts):
    cache = ActivationCache(tiny, TOK, prompts, batch_size=4)
    cand = build_collapsed(tiny, [(2, 4)], "rdsc")
    for c in cache.chunks:
        with torch.inference_mode():
            full = tiny.model(
                input_ids=c.input_ids, position_ids=c.position_ids, use_cache=False
            ).last_hidden_state
            full_c = cand.model(
                input_ids=c.input_ids, position_ids=c.position_ids, use_cache=False
            ).last_hidden_state
        for start in range(len(get_layers(tiny))):
            torch.testing.assert_close(
                suffix_final(tiny, start, c.inputs[start], c.kwargs), full, rtol=0, atol=1e-6
            )
        torch.testing.assert_close(
            suffix_final(cand, 2, c.inputs[2], c.kwargs), full_c, rtol=0, atol=1e-6
        )


def test_packed_chunks_match_prompts_alone(tiny, prompts):
    cache = ActivationCache(tiny, TOK, prompts, batch_size=8)
    (chunk,) = cache.chunks
    assert chunk.input_ids.shape == (1, sum(chunk.lengths))  # one row, no padding
    assert chunk.index == list(range(len(prompts)))
    for seg, p in zip(chunk.segments(), prompts, strict=True):
        ids = TOK(p, return_tensors="pt")["input_ids"]
        assert torch.equal(chunk.input_ids[0, seg], ids[0])
        with torch.inference_mode():
            alone = tiny.model(input_ids=ids, use_cache=False).last_hidden_state
        # prompts longer than the sliding window (16) check the packed sliding masks too
        torch.testing.assert_close(chunk.final[0, seg], alone[0], rtol=0, atol=1e-5)
    # no next-token pair crosses from one prompt into the next
    valid = chunk.next_valid[0]
    assert int((~valid).sum()) == len(prompts) - 1
    for s in chunk.starts[1:]:
        assert not valid[s - 1]


def _decisions(log):
    return [(c["lo"], c["hi"], c["accepted"]) for c in log]


@pytest.mark.parametrize("method", ["official", "rdsc"])
def test_fast_search_makes_the_reference_decisions(arch, prompts, method):
    model = __import__("laco_core.arch.tiny", fromlist=["tiny_model"]).tiny_model(arch, 8)
    ref0 = reference_search(
        model, TOK, prompts, SearchConfig(merge_count=3, threshold=0.0, method=method)
    )
    scores = sorted(c["score"] for c in ref0["candidates"])
    # thresholds between observed scores, so some candidates pass and some fail
    for t in {scores[0] - 0.01, (scores[0] + scores[-1]) / 2, scores[-1] - 1e-3}:
        cfg = SearchConfig(merge_count=3, threshold=t, method=method, early_exit=False)
        fast = run_search(model, TOK, prompts, cfg)
        ref = reference_search(model, TOK, prompts, cfg)
        # the defaults (early exit, two workers speculating on rejections) decide the same
        quick = run_search(
            model, TOK, prompts, SearchConfig(merge_count=3, threshold=t, method=method, workers=2)
        )
        assert _decisions(quick.candidates) == _decisions(ref["candidates"])
        assert _decisions(fast.candidates) == _decisions(ref["candidates"])
        assert [a[:2] for a in fast.accepted] == [a[:2] for a in ref["accepted"]]
        for a, b in zip(fast.candidates, ref["candidates"], strict=True):
            assert abs(a["score"] - b["score"]) < 1e-5
        assert len(get_layers(fast.model)) == len(get_layers(ref["model"]))
        # same weights, layer by layer (official: in-place W += W_d − W is W_d up to rounding)
        for lf, lr in zip(get_layers(fast.model), get_layers(ref["model"]), strict=True):
            for (n, p), (_, q) in zip(lf.named_parameters(), lr.named_parameters(), strict=True):
                torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=n)


def test_some_thresholds_accept_and_reject(prompts):
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("llama", 8)
    res = run_search(model, TOK, prompts, SearchConfig(merge_count=3, threshold=0.9))
    assert any(c["accepted"] for c in res.candidates) and not all(
        c["accepted"] for c in res.candidates
    )


@pytest.mark.parametrize("objective", ["cosine", "kl"])
def test_early_exit_keeps_decisions(prompts, objective):
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("qwen2", 8)
    early_seen = False
    full_cfg = SearchConfig(merge_count=3, batch_size=1, objective=objective, early_exit=False)
    full0 = run_search(model, TOK, prompts, SearchConfig(**{**full_cfg.__dict__, "threshold": 0}))
    scores = sorted(c["score"] for c in full0.candidates)
    for t in (scores[len(scores) // 3], scores[2 * len(scores) // 3]):
        full = run_search(
            model, TOK, prompts, SearchConfig(**{**full_cfg.__dict__, "threshold": t})
        )
        for workers in (1, 2):
            early = run_search(
                model,
                TOK,
                prompts,
                SearchConfig(
                    **{**full_cfg.__dict__, "threshold": t, "early_exit": True, "workers": workers}
                ),
            )
            assert _decisions(full.candidates) == _decisions(early.candidates)
            # a candidate scored on every prompt reports the full score
            for a, b in zip(full.candidates, early.candidates, strict=True):
                if "prompts_scored" not in b:
                    assert abs(a["score"] - b["score"]) < 1e-6
                else:
                    early_seen = True
                    assert 0 < b["prompts_scored"] < len(prompts)
    assert early_seen


def test_literal_merge_official_is_layer_hi_blocks():
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("llama", 6)
    merged = literal_merge(model, 1, 2)
    assert len(get_layers(merged)) == 4
    src, dst = get_layers(model), get_layers(merged)
    torch.testing.assert_close(
        dst[1].mlp.up_proj.weight, src[3].mlp.up_proj.weight, rtol=0, atol=1e-6
    )
    assert torch.equal(dst[1].input_layernorm.weight, src[1].input_layernorm.weight)


@pytest.mark.parametrize("strategy", ["paper", "greedy"])
@pytest.mark.parametrize("objective", ["cosine", "kl", "ppl"])
def test_target_layers_is_hit_exactly(prompts, strategy, objective):
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("llama", 8)
    cfg = SearchConfig(
        merge_count=3, threshold=0.99, strategy=strategy, objective=objective, target_layers=3
    )
    res = run_search(model, TOK, prompts, cfg)
    assert res.layers_removed == 3
    assert len(get_layers(res.model)) == 5
    top = float("inf") if objective == "ppl" else 1 + 1e-6  # a ppl ratio may exceed 1
    assert all(0 < c["score"] <= top for c in res.candidates)
    assert res.params_after == count_params(res.model) < res.params_before


def test_target_ratio_removes_at_least_the_ratio(prompts):
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("mistral", 8)
    res = run_search(
        model, TOK, prompts, SearchConfig(strategy="greedy", objective="kl", target_ratio=0.3)
    )
    assert 1 - res.params_after / res.params_before >= 0.3
    one_less = res.params_after + sum(p.numel() for p in get_layers(model)[0].parameters())
    assert 1 - one_less / res.params_before < 0.3  # and not a layer more than needed


def _greedy_kl(model, prompts, method: str, merge_count: int, target_layers: int, **params):
    """A greedy search scored by KL to the dense model, merging with ``method`` (``params``)."""
    cfg = SearchConfig(
        merge_count=merge_count,
        strategy="greedy",
        objective="kl",
        target_layers=target_layers,
        method=method,
        method_params=params,
    )
    return run_search(model, TOK, prompts, cfg)


def test_greedy_picks_the_best_scored_range(prompts):
    from laco_core.arch.tiny import tiny_model

    res = _greedy_kl(tiny_model("phi3", 6), prompts, "drop", 2, 1)
    first = res.candidates
    best = max(first, key=lambda c: c["score"])
    assert res.accepted[0][:2] == (best["lo"], best["hi"])
    assert sum(c["accepted"] for c in first) == 1


def test_calibrated_search_records_alpha_and_rebuilds(prompts):
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("qwen3", 8)
    res = _greedy_kl(model, prompts, "rdsc_calibrated", 3, 3, alpha_evals=4)
    drop = _greedy_kl(model, prompts, "drop", 3, 3)
    assert all("alpha" in m.params for m in res.merges)
    assert json.loads(json.dumps([m.params for m in res.merges]))
    # α = 0 (drop) is always among the choices, so the first step is never worse than drop's
    assert res.accepted[0][2] >= drop.accepted[0][2] - 1e-9
    rebuilt = replay(model, res.merges, REGISTRY.method)
    assert_same_parameters(res.model, rebuilt)


def test_result_shares_untouched_tensors_and_recipe_rebuilds_official(prompts):
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("gemma3_text", 8)
    res = run_search(
        model, TOK, prompts, SearchConfig(merge_count=3, strategy="paper", target_layers=3)
    )
    assert res.plan and hasattr(res.model, "laco_layer_map")
    assert shared_fraction(model, res.model) == 1.0  # official merges allocate nothing

    # official nested merges are one merge of the original ranges: the plain rebuilder agrees
    plain = build_collapsed(model, res.plan, "official")
    assert_same_parameters(res.model, plain)
    assert plain.config.layer_types == res.model.config.layer_types


def test_callback_sees_every_candidate_and_can_cancel(prompts):
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("llama", 8)
    events = []
    res = run_search(
        model, TOK, prompts, SearchConfig(merge_count=3, threshold=0.9), callback=events.append
    )
    scored = [e for e in events if not e.get("pending")]  # pending rows tell progress only
    assert len(scored) == len(res.candidates) and {"lo", "hi", "score", "accepted"} <= set(
        scored[0]
    )
    assert all({"phase", "done", "of"} <= set(e) for e in events if e.get("pending"))

    def stop(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(model, TOK, prompts, SearchConfig(merge_count=3, threshold=0.9), callback=stop)


def test_preview_matches_a_full_forward(prompts):
    from laco_core.arch.tiny import tiny_model
    from laco_core.search.objectives import Cosine

    model = tiny_model("gemma2", 8)
    cache = ActivationCache(model, TOK, prompts)
    out = preview(model, TOK, prompts, "2-4", cache=cache)
    cand = build_collapsed(model, [(2, 4)], "official")
    finals = []
    for c in cache.chunks:
        with torch.inference_mode():
            finals.append(
                cand.model(
                    input_ids=c.input_ids, position_ids=c.position_ids, use_cache=False
                ).last_hidden_state
            )
    assert abs(out["cosine"] - Cosine().score(cache, cand, finals)) < 1e-6
    assert out["kl"] > 0 and out["layers_after"] == 6 and out["params_after"] < out["params_before"]


def test_lazy_greedy_hits_target_with_fewer_forwards(prompts):
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("llama", 8)
    cfg = dict(merge_count=2, strategy="greedy", objective="kl", target_layers=3, method="drop")
    full = run_search(model, TOK, prompts, SearchConfig(**cfg))
    lazy = run_search(model, TOK, prompts, SearchConfig(**cfg, strategy_params={"lazy": True}))
    assert lazy.layers_removed == full.layers_removed == 3
    assert len(lazy.candidates) < len(full.candidates)
    assert lazy.accepted[0] == full.accepted[0]  # the first step scores every range either way


def test_mlp_correction_is_recorded_and_replayed(prompts):
    from laco_core.arch.tiny import tiny_model

    model = tiny_model("mistral", 8)
    res = _greedy_kl(model, prompts, "rdsc_calibrated", 3, 2, correct=True, alpha_evals=3)
    hidden = model.config.hidden_size
    assert all(len(m.params["down_scale"]) == hidden for m in res.merges)
    rebuilt = replay(model, res.merges, REGISTRY.method)
    assert_same_parameters(res.model, rebuilt)


def test_parallel_workers_record_and_score_like_one(tiny, prompts):
    one = ActivationCache(tiny, TOK, prompts, batch_size=2, workers=1)
    two = ActivationCache(tiny, TOK, prompts, batch_size=2, workers=2)
    assert len(two.chunks) == 3
    for a, b in zip(one.chunks, two.chunks, strict=True):
        assert torch.equal(a.input_ids, b.input_ids)
        torch.testing.assert_close(a.final, b.final, rtol=0, atol=1e-6)
        for x, y in zip(a.inputs, b.inputs, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    cand = build_collapsed(tiny, [(2, 4)], "official")
    for x, y in zip(one.finals(cand, 2), two.finals(cand, 2), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    assert torch.get_num_threads() == 1  # the pool restored the thread count it found
