"""Exports that every runtime loads: no stale per-layer config lists, generation config and chat
template kept, the tokenizer round-trips, and the reload generates like the in-memory model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from laco_core.arch.adapters import get_layers
from laco_core.arch.plan import layer_groups
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.exchange.export import export_model
from laco_core.ops import build_collapsed

TEXT = "Layer collapse keeps the tokenizer: ids, spaces  and punctuation!"
PLANS = {"drop": [(1, 2), (4, 5)], "official": [(0, 2)]}


def check_export(path, original, collapsed, tok, plan, sampling) -> None:
    n_before, n_after = len(get_layers(original)), len(get_layers(collapsed))
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["num_hidden_layers"] == n_after
    # no per-layer list may keep the original's length (e.g. layer_types of sliding/full)
    for key, value in cfg.items():
        if isinstance(value, list) and len(value) == n_before:
            pytest.fail(f"config.json '{key}' still has {n_before} entries")
    if "layer_types" in cfg:
        before = original.config.layer_types
        assert cfg["layer_types"] == [before[lo] for lo, _ in layer_groups(plan, n_before)]

    gen = GenerationConfig.from_pretrained(path)
    for key, value in sampling.items():
        assert getattr(gen, key) == value, key

    reloaded_tok = AutoTokenizer.from_pretrained(path)
    assert reloaded_tok(TEXT).input_ids == tok(TEXT).input_ids
    assert reloaded_tok.decode(reloaded_tok(TEXT).input_ids, skip_special_tokens=True) == TEXT
    assert reloaded_tok.chat_template == tok.chat_template
    messages = [{"role": "user", "content": "hi"}]
    assert reloaded_tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    ) == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # the reload generates what the in-memory model generates, KV cache on (layer_idx renumbered)
    reloaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert [layer.self_attn.layer_idx for layer in get_layers(reloaded)] == list(range(n_after))
    ids = tok(TEXT, return_tensors="pt").input_ids
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        a = collapsed.generate(ids, **kw)
        b = reloaded.generate(ids, **kw)
    assert torch.equal(a, b)


@pytest.mark.parametrize("method", sorted(PLANS))
def test_collapsed_export_loads_everywhere(tmp_path, arch, method, one_thread):
    model, tok = tiny_model(arch, layers=6), tiny_tokenizer()
    sampling = {"do_sample": True, "temperature": 0.6, "top_p": 0.85, "max_new_tokens": 77}
    for key, value in sampling.items():
        setattr(model.generation_config, key, value)
    plan = PLANS[method]
    collapsed = build_collapsed(model, plan, method)
    result = export_model(collapsed, tok, tmp_path / "out")
    assert result.verified
    check_export(tmp_path / "out", model, collapsed, tok, plan, sampling)


@pytest.mark.slow
def test_default_model_export_keeps_chat_template_and_generation_config(
    tmp_path, default_model, one_thread
):
    model, tok = default_model.model, default_model.tokenizer
    collapsed = build_collapsed(model, [(16, 18), (24, 26)], "drop")
    export_model(collapsed, tok, tmp_path / "out")
    assert tok.chat_template
    sampling = {
        k: getattr(model.generation_config, k)
        for k in ("bos_token_id", "eos_token_id", "do_sample", "temperature")
    }
    check_export(tmp_path / "out", model, collapsed, tok, [(16, 18), (24, 26)], sampling)
