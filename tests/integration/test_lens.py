"""The logit lens, dense beside collapsed: the last layer's lens is the model's own output, a
collapsed layer is read at the original depth where its range ends, and each row equals a
direct computation from the model's hidden states; on every architecture and both real
models (BOS included), and through ``laco lens``."""

from __future__ import annotations

import json

import pytest
import torch

from laco_core.analysis.activations import logits_of
from laco_core.analysis.lens import layer_logprobs, logit_lens, prompt_ids
from laco_core.arch.adapters import final_norm
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.cli import main
from laco_core.errors import LacoError
from laco_core.ops import build_collapsed

PROMPT = "the quick brown fox jumps over the lazy dog"


def direct(model, ids) -> torch.Tensor:
    """Each layer's lens from ``output_hidden_states`` (entry k + 1 follows layer k; the last
    entry is already normalised), independent of the lens's hooks: (L, T, V)."""
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    norm = final_norm(model)
    rows = [norm(h) for h in hs[1:-1]] + [hs[-1]]
    return torch.stack([torch.log_softmax(logits_of(model, h)[0], -1) for h in rows])


def test_every_layer_equals_a_direct_computation(arch):
    model, tok = tiny_model(arch, layers=4), tiny_tokenizer()
    ids = prompt_ids(tok, PROMPT)
    lens = layer_logprobs(model, ids)
    torch.testing.assert_close(lens, direct(model, ids), atol=1e-5, rtol=0)
    with torch.no_grad():  # the last layer's lens is the model's next-token distribution
        own = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    torch.testing.assert_close(lens[-1], own, atol=1e-5, rtol=0)


def test_a_collapsed_model_is_read_at_equal_original_depth():
    model, tok = tiny_model("llama", layers=6), tiny_tokenizer()
    same = logit_lens(model, tok, PROMPT, model)
    assert all(k == pytest.approx(0, abs=1e-6) for k in same.kl) and set(same.agree) == {1.0}
    collapsed = build_collapsed(model, [(2, 4)], "drop")
    view = logit_lens(model, tok, PROMPT, collapsed, top_k=3)
    assert [r.layers for r in view.collapsed] == [(0, 0), (1, 1), (2, 4), (5, 5)]
    assert view.merged == [(2, 4)] and view.kl[2] is None and view.kl[3] is None
    assert view.kl[0] == pytest.approx(0, abs=1e-6) and view.kl[1] == pytest.approx(0, abs=1e-6)
    ids = prompt_ids(tok, PROMPT)
    d, c = direct(model, ids), direct(collapsed, ids)
    for i, k in ((4, 2), (5, 3)):  # original depth i, collapsed layer k
        want = (d[i].exp() * (d[i] - c[k])).sum(-1).mean()
        assert view.kl[i] == pytest.approx(float(want), abs=1e-4)
        agree = (d[i].argmax(-1) == c[k].argmax(-1)).float().mean()
        assert view.agree[i] == pytest.approx(float(agree), abs=1e-4)
    assert len(view.dense[0].last) == 3 and len(view.dense[0].top1) == len(view.tokens)
    other = tiny_model("llama", layers=5)
    with pytest.raises(LacoError, match="collapsed from this one"):
        logit_lens(model, tok, PROMPT, other)
    with pytest.raises(LacoError, match="at least one word"):
        logit_lens(model, tok, "   ")


def test_laco_lens_writes_json_and_png(tmp_path, capsys):
    path = tmp_path / "tiny"
    tiny_model("qwen2", layers=6).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    out = tmp_path / "lens.json"
    argv = ["lens", "--model", str(path), "--prompt", PROMPT, "--merge", "1-3"]
    assert main([*argv, "--json", str(out), "--png", str(tmp_path / "lens.png")]) == 0
    printed = capsys.readouterr().out
    assert "collapsed: (merged away)" in printed and "collapsed 1-3:" in printed
    saved = json.loads(out.read_text())
    assert saved["merged"] == [[1, 3]] and len(saved["dense"]) == 6 and len(saved["kl"]) == 6
    assert (tmp_path / "lens.png").stat().st_size > 10_000
    assert main([*argv, "--top-k", "0"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "laco: error: The lens lists 1 to 50 tokens per layer, not 0."
    )


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["default_model", "gemma_model"])
def test_both_real_models(request, fixture):
    base = request.getfixturevalue(fixture)
    ids = prompt_ids(base.tokenizer, "The capital of France is")
    lens = layer_logprobs(base.model, ids)
    with torch.no_grad():
        own = torch.log_softmax(base.model(input_ids=ids).logits[0].float(), -1)
    torch.testing.assert_close(lens[-1], own, atol=2e-3, rtol=0)
    n = base.num_layers
    view = logit_lens(base.model, base.tokenizer, "The capital of France is",
                      build_collapsed(base.model, [(n - 4, n - 2)], "drop"))  # fmt: skip
    assert view.kl[n - 5] == pytest.approx(0, abs=1e-4) and view.kl[n - 3] is None
    assert view.kl[n - 1] > 0
    if fixture == "gemma_model":  # Gemma reads BOS first, as its tokenizer starts a text
        assert int(ids[0, 0]) == base.tokenizer.bos_token_id and view.tokens[0] == "<bos>"
