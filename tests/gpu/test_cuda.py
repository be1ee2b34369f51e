"""The engine on CUDA gives what it gives on the CPU: collapses, searches, evaluation,
generation and exports of tiny models (float32 on both, so results agree to rounding)."""

from __future__ import annotations

import pytest
import torch

from laco_core.analysis.evaluate import perplexity, reference_metrics
from laco_core.analysis.generate import DecodeSettings, stream_pair
from laco_core.analysis.similarity import param_similarity, representation_similarity
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.loading.limits import Limits
from laco_core.loading.models import load_model
from laco_core.ops import build_collapsed
from laco_core.runtime.engine import Engine
from laco_core.search.config import SearchConfig

pytestmark = pytest.mark.gpu

PROMPTS = ["The cat sat on the mat.", "Rivers run to the sea.", "One two three four five."]
TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 20)


@pytest.fixture(params=["llama", "qwen2", "gemma2"])
def pair(request, tmp_path):
    """The same tiny model loaded on the CPU and on CUDA (float32)."""
    path = tmp_path / request.param
    tiny_model(request.param, layers=6).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return load_model(str(path), "float32", "cpu"), load_model(str(path), "float32", "cuda")


def test_auto_picks_cuda_and_a_half_dtype(tmp_path):
    tiny_model("llama", layers=4).save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    lm = Engine(limits=Limits.current(False)).load(str(tmp_path / "m"))
    assert lm.device.type == "cuda" and lm.dtype in (torch.bfloat16, torch.float16)


@pytest.mark.parametrize("method", ["official", "rdsc", "average"])
def test_collapse_matches_the_cpu(pair, method):
    cpu, gpu = pair
    ids = torch.randint(3, 250, (2, 24), generator=torch.Generator().manual_seed(0))
    a = build_collapsed(cpu.model, [(1, 3)], method)
    b = build_collapsed(gpu.model, [(1, 3)], method)
    with torch.no_grad():
        la, lb = a(ids).logits, b(ids.cuda()).logits.cpu()
    assert torch.allclose(la, lb, atol=1e-4, rtol=1e-4)


def test_similarities_match_the_cpu(pair):
    cpu, gpu = pair
    pa, pb = param_similarity(cpu.model), param_similarity(gpu.model)
    assert torch.allclose(pa["all"].cpu(), pb["all"].cpu(), atol=1e-5)
    ra = representation_similarity(cpu.model, cpu.tokenizer, PROMPTS)
    rb = representation_similarity(gpu.model, gpu.tokenizer, PROMPTS)
    assert torch.allclose(ra.cosine.cpu(), rb.cosine.cpu(), atol=1e-4)


def test_search_decisions_match_the_cpu(pair):
    from laco_core.ops import run_search as search

    cpu, gpu = pair
    cfg = SearchConfig(merge_count=2, low=1, threshold=0.5, early_exit=False)
    ra = search(cpu.model, cpu.tokenizer, PROMPTS, cfg)
    rb = search(gpu.model, gpu.tokenizer, PROMPTS, cfg)
    assert ra.plan == rb.plan
    for x, y in zip(ra.candidates, rb.candidates, strict=True):
        assert (x["lo"], x["hi"], x["accepted"]) == (y["lo"], y["hi"], y["accepted"])
        assert x["score"] == pytest.approx(y["score"], abs=1e-4)


def test_evaluation_and_generation_match_the_cpu(pair):
    cpu, gpu = pair
    ca = build_collapsed(cpu.model, [(2, 4)], "official")
    cb = build_collapsed(gpu.model, [(2, 4)], "official")
    assert perplexity(ca, cpu.tokenizer, TEXT, 64) == pytest.approx(
        perplexity(cb, gpu.tokenizer, TEXT, 64), rel=1e-4
    )
    ma = reference_metrics(ca, cpu.model, cpu.tokenizer, TEXT, 64)
    mb = reference_metrics(cb, gpu.model, gpu.tokenizer, TEXT, 64)
    assert ma["kl"] == pytest.approx(mb["kl"], rel=1e-3, abs=1e-6)
    settings = DecodeSettings(12)
    *_, (a1, a2) = stream_pair(cpu.model, ca, cpu.tokenizer, "hello", settings)
    *_, (b1, b2) = stream_pair(gpu.model, cb, gpu.tokenizer, "hello", settings)
    assert (a1.token_ids, a2.token_ids) == (b1.token_ids, b2.token_ids)


def test_engine_export_from_cuda_verifies(pair, tmp_path):
    _, gpu = pair
    engine = Engine(limits=Limits.current(False), export_dir=tmp_path / "store")
    base = engine.load(gpu.spec, "float32", "cuda")
    did = engine.collapse(base, [(1, 2)], "rdsc", owner="s")
    res, archive = engine.download(did, "s")
    assert res.verified and res.max_abs_logit_diff <= 1e-4 and archive.exists()
    est = engine.preview(base, PROMPTS, [(1, 2)])
    assert est["layers_after"] == 5
