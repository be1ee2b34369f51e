"""Engine functions behind the workbench views: N-model streaming and the per-token KL view."""

from __future__ import annotations

import pytest
import torch

from laco_core.analysis.evaluate import token_divergence
from laco_core.analysis.generate import DecodeSettings, stream_many, stream_pair
from laco_core.errors import LacoError
from laco_core.ops import build_collapsed

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "Rivers carve valleys over thousands of years, carrying sand and silt toward the sea."


def test_stream_many_matches_pairs_and_single_streams(llama, tok):
    a = build_collapsed(llama, [(1, 2)], "drop")
    b = build_collapsed(llama, [(3, 5)], "official")
    settings = DecodeSettings(max_new_tokens=8, chat=False)
    steps = list(stream_many([llama, a, b], tok, "hello there", settings))
    assert all(len(s) == 3 for s in steps)
    final = steps[-1]
    assert all(st.done for st in final)
    # the same models in a pair give the same tokens: decoding does not depend on company
    pair = list(stream_pair(llama, b, tok, "hello there", settings))[-1]
    assert pair[0].token_ids == final[0].token_ids and pair[1].token_ids == final[2].token_ids
    # identical models give identical streams, also when sampling with one seed
    sampled = DecodeSettings(max_new_tokens=6, do_sample=True, seed=3, chat=False)
    x, y, z = list(stream_many([llama, llama, llama], tok, "hi", sampled))[-1]
    assert x.token_ids == y.token_ids == z.token_ids
    assert all(st.tokens_per_s > 0 for st in final)


def test_stream_many_refuses_nothing_to_run(llama, tok):
    with pytest.raises(LacoError, match="at least one model"):
        list(stream_many([], tok, "hi"))
    with pytest.raises(LacoError, match="empty"):
        list(stream_many([llama], tok, "  "))


def test_token_divergence_is_zero_for_the_same_model(llama, tok):
    rows = token_divergence(llama, llama, tok, TEXT, top_k=3, max_tokens=40)
    assert len(rows) == 40 and rows[0].kl is None
    assert all(abs(r.kl) < 1e-5 for r in rows[1:])
    assert all(len(r.ref_top) == 3 and r.ref_top == r.model_top for r in rows[1:])
    probs = [p for _, p in rows[5].ref_top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_token_divergence_matches_the_models_own_distributions(llama, tok):
    cut = build_collapsed(llama, [(1, 4)], "drop")
    rows = token_divergence(cut, llama, tok, TEXT, max_tokens=64)
    ids = tok(TEXT, return_tensors="pt").input_ids[0][:64]
    assert len(rows) == ids.numel()
    with torch.no_grad():
        lp = torch.log_softmax(cut(input_ids=ids[None], use_cache=False).logits[0].float(), -1)
        lr = torch.log_softmax(llama(input_ids=ids[None], use_cache=False).logits[0].float(), -1)
    kl5 = float((lr[4].exp() * (lr[4] - lp[4])).sum())  # position 4 predicts token 5
    assert rows[5].kl == pytest.approx(kl5, rel=1e-4, abs=1e-6)
    assert rows[5].model_prob == pytest.approx(float(lp[4, int(ids[5])].exp()), rel=1e-4)
    assert rows[5].ref_top[0][0] == tok.decode([int(lr[4].argmax())])
    assert all(r.kl >= -1e-6 for r in rows[1:]) and max(r.kl for r in rows[1:]) > 1e-3


def test_token_divergence_checks_its_arguments(llama, tok):
    for bad in ({"top_k": 0}, {"max_tokens": 1}):
        with pytest.raises(LacoError) as info:
            token_divergence(llama, llama, tok, TEXT, **bad)
        assert str(info.value) == "top_k must be ≥ 1 and max_tokens ≥ 2.", bad
    with pytest.raises(LacoError) as info:
        token_divergence(llama, llama, tok, "   ")
    assert "empty" in str(info.value)


def test_a_stopped_fitted_collapse_is_cancelled(llama, tok):
    import threading
    from types import SimpleNamespace

    from laco_core.errors import Cancelled
    from laco_core.registry import REGISTRY
    from laco_core.steps.base import StepContext
    from laco_core.steps.collapse import CollapseStep

    stop = threading.Event()
    stop.set()
    ctx = StepContext(SimpleNamespace(tokenizer=tok), REGISTRY, stop=stop)
    with pytest.raises(Cancelled):
        CollapseStep([[1, 3]], "drop_lsq").apply(llama, ctx)
    # a plain method has nothing long to stop: it is built as before
    model, _ = CollapseStep([[1, 3]], "drop").apply(llama, ctx)
    assert model.config.num_hidden_layers == 4
