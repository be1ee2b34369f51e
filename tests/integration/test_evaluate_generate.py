"""Perplexity, reference metrics and streaming generation on tiny models with a byte tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from laco_core.analysis.evaluate import evaluate, perplexity, quick_metrics, reference_metrics
from laco_core.analysis.generate import (
    DecodeSettings,
    StreamState,
    build_inputs,
    first_divergence,
    stream,
    stream_pair,
)
from laco_core.arch.tiny import tiny_model
from laco_core.errors import LacoError
from laco_core.ops import build_collapsed

pytestmark = pytest.mark.usefixtures("one_thread")


TEXT = (
    "Rivers carve valleys over thousands of years, carrying sand and silt toward the sea. "
    "In spring the melt swells them; in late summer some dwindle to a trickle between stones. "
) * 3
PROMPTS = ["Tell me about rivers.", "Why is the sky blue on a clear day?", "Hi"]


# ---- perplexity ----------------------------------------------------------------------------
def test_perplexity_of_one_window_is_exp_of_the_model_loss(llama, tok):
    ids = tok(TEXT[:100], return_tensors="pt").input_ids
    with torch.no_grad():
        loss = llama(ids, labels=ids).loss
    assert perplexity(llama, tok, TEXT[:100], seq_len=512) == pytest.approx(
        math.exp(loss.item()), rel=1e-5
    )


def test_perplexity_windows_are_independent_and_padding_is_masked(llama, tok):
    n = tok(TEXT, return_tensors="pt").input_ids.shape[1]
    seq = 64
    assert n % seq != 0  # a shorter last window forces padding in the batch
    batched = perplexity(llama, tok, TEXT, seq_len=seq, batch_size=4)
    single = perplexity(llama, tok, TEXT, seq_len=seq, batch_size=1)
    assert batched == pytest.approx(single, rel=1e-5)
    # by hand: token-weighted mean NLL over non-overlapping windows
    ids = tok(TEXT, return_tensors="pt").input_ids[0]
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, seq):
            w = ids[i : i + seq].unsqueeze(0)
            if w.shape[1] < 2:
                continue
            nll += llama(w, labels=w).loss.item() * (w.shape[1] - 1)
            count += w.shape[1] - 1
    assert batched == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert perplexity(llama, tok, TEXT, seq_len=seq, max_windows=1) != pytest.approx(batched)


def test_perplexity_user_errors(llama, tok):
    with pytest.raises(LacoError, match="empty"):
        perplexity(llama, tok, "   ")
    with pytest.raises(LacoError, match="seq_len"):
        perplexity(llama, tok, TEXT, seq_len=1)


# ---- reference metrics -----------------------------------------------------------------------
def test_reference_metrics_of_a_model_against_itself(llama, tok):
    m = reference_metrics(llama, llama, tok, TEXT, seq_len=64)
    assert m["kl"] == pytest.approx(0.0, abs=1e-6)
    assert m["top1_agreement"] == 1.0
    assert m["final_cosine"] == pytest.approx(1.0, abs=1e-6)


def test_reference_metrics_detect_a_collapse_and_mask_padding(llama, tok):
    c = build_collapsed(llama, "1-4", "average")
    batched = reference_metrics(c, llama, tok, PROMPTS, batch_size=4)
    assert (
        batched["kl"] > 1e-4 and batched["top1_agreement"] < 1.0 and batched["final_cosine"] < 0.999
    )
    # prompts of different lengths padded together give the same numbers as one at a time
    single = reference_metrics(c, llama, tok, PROMPTS, batch_size=1)
    for k in ("kl", "top1_agreement", "final_cosine"):
        assert batched[k] == pytest.approx(single[k], rel=1e-5, abs=1e-7), k
    assert batched["tokens"] == sum(len(tok(p).input_ids) for p in PROMPTS)
    # KL is the reference-weighted log-ratio, computed here independently for one prompt
    ids = tok(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        lp_r = torch.log_softmax(llama(ids).logits.float(), -1)
        lp_m = torch.log_softmax(c(ids).logits.float(), -1)
    kl = torch.nn.functional.kl_div(lp_m, lp_r, log_target=True, reduction="none").sum(-1).mean()
    assert reference_metrics(c, llama, tok, PROMPTS[:1])["kl"] == pytest.approx(kl.item(), rel=1e-5)


def test_evaluate_and_quick_metrics_keys(llama, tok):
    c = build_collapsed(llama, "2-3", "drop")
    out = evaluate(c, tok, TEXT, reference=llama, seq_len=64)
    assert {
        "ppl",
        "params",
        "kl",
        "top1_agreement",
        "final_cosine",
        "params_ratio",
        "ref_ppl",
    } <= out.keys()
    assert out["params_ratio"] < 1.0 and out["ref_ppl"] == pytest.approx(
        perplexity(llama, tok, TEXT, 64)
    )
    assert out["ppl"] == pytest.approx(perplexity(c, tok, TEXT, 64), rel=1e-5)
    assert evaluate(llama, tok, TEXT, seq_len=64).keys() == {"ppl", "params"}
    q = quick_metrics(c, llama, tok, PROMPTS)
    assert q.keys() == {"kl", "top1_agreement", "final_cosine"} and q["kl"] > 0


# ---- generation ----------------------------------------------------------------------------
def test_build_inputs_uses_the_chat_template(tok):
    chat = tok.decode(build_inputs(tok, "hello", chat=True)[0])
    plain = tok.decode(build_inputs(tok, "hello", chat=False)[0])
    assert chat.endswith("assistant:") and "user: hello" in chat
    assert plain == "hello"
    with pytest.raises(LacoError):
        build_inputs(tok, "  ")


def test_stream_matches_transformers_generate_with_cache(arch, tok):
    model = tiny_model(arch, layers=4)
    ids = build_inputs(tok, "Tell me a story about a fox", chat=True)
    with torch.no_grad():
        ref = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=20,
            do_sample=False,
            pad_token_id=0,
        )
    ref_ids = [t for t in ref[0, ids.shape[1] :].tolist() if t != 2]  # EOS is not part of our ids
    states = list(
        stream(model, tok, "Tell me a story about a fox", DecodeSettings(max_new_tokens=20))
    )
    assert states[-1].token_ids == ref_ids
    assert states[-1].done and all(not s.done for s in states[:-1])


def test_stream_is_incremental(llama, tok):
    gen = stream(llama, tok, "Once upon a time", DecodeSettings(max_new_tokens=6, chat=False))
    first = next(gen)  # one token is produced before anything else is computed
    assert isinstance(first, StreamState) and len(first.token_ids) == 1 and not first.done
    assert first.first_token_latency_s is not None and first.first_token_latency_s > 0
    rest = list(gen)
    lengths = [len(s.token_ids) for s in [first, *rest]]
    assert lengths == list(range(1, len(lengths) + 1)) and lengths[-1] <= 6
    assert rest[-1].tokens_per_s > 0 and rest[-1].elapsed_s >= first.elapsed_s
    assert rest[-1].text == tok.decode(rest[-1].token_ids, skip_special_tokens=True)


def test_stream_pair_identical_models_give_identical_streams(llama, tok):
    twin = tiny_model("llama", layers=6)
    for settings in (
        DecodeSettings(max_new_tokens=12),
        DecodeSettings(max_new_tokens=12, do_sample=True, temperature=1.0, seed=5),
    ):
        steps = list(stream_pair(llama, twin, tok, "Hello there", settings))
        assert len(steps) >= 1
        for a, b in steps:  # step by step, not only at the end
            assert a.token_ids == b.token_ids and a.text == b.text
        a, b = steps[-1]
        assert a.done and b.done and first_divergence(a.token_ids, b.token_ids) is None


def test_stream_pair_advances_both_one_token_per_step(llama, tok):
    c = build_collapsed(llama, "1-4", "rdsc")
    settings = DecodeSettings(max_new_tokens=8, chat=False)
    steps = stream_pair(llama, c, tok, "abc", settings)
    a, b = next(steps)
    assert len(a.token_ids) <= 1 and len(b.token_ids) <= 1
    for a, b in steps:  # noqa: B007 - run to the end, keep the last pair
        assert len(a.token_ids) <= settings.max_new_tokens
    assert a.done and b.done
    # each side equals its own single-model stream
    assert a.token_ids == list(stream(llama, tok, "abc", settings))[-1].token_ids
    assert b.token_ids == list(stream(c, tok, "abc", settings))[-1].token_ids


def test_sampling_is_reproducible_per_seed(llama, tok):
    def run(seed: int) -> list[int]:
        s = DecodeSettings(
            max_new_tokens=24, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, seed=seed
        )
        return list(stream(llama, tok, "Sample", s))[-1].token_ids

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_max_new_tokens_and_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert first_divergence([], []) is None
