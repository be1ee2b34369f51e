"""Similarity math against slow explicit references on hand-made tensors and tiny modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from laco_core.analysis import similarity as S
from laco_core.arch.adapters import get_layers, module_kind
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import LacoError


def _flat(layer, names) -> torch.Tensor:
    params = dict(layer.named_parameters())
    return torch.cat([params[n].detach().reshape(-1).double() for n in names])


def _reference_param_cos(model, names) -> torch.Tensor:
    """The slow definition: a loop over pairs of flattened float64 copies."""
    layers = get_layers(model)
    flats = [_flat(layer, names) for layer in layers]
    n = len(flats)
    out = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            out[i, j] = torch.dot(flats[i], flats[j]) / (flats[i].norm() * flats[j].norm())
    return out


@pytest.fixture
def model():
    m = tiny_model("llama", layers=5, seed=3)
    # norms start at all-ones, which would make every pair look alike; randomise them
    for name, p in m.named_parameters():
        if "norm" in name:
            p.data.uniform_(0.5, 1.5)
    return m


def test_gram_to_cosine_hand_made():
    x = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [-1.0, 1.0, 0.0]])
    cos = S._gram_to_cosine(x @ x.T)
    expected = torch.tensor(
        [
            [1.0, 1.0, 0.0, -1 / math.sqrt(2)],
            [1.0, 1.0, 0.0, -1 / math.sqrt(2)],
            [0.0, 0.0, 1.0, 1 / math.sqrt(2)],
            [-1 / math.sqrt(2), -1 / math.sqrt(2), 1 / math.sqrt(2), 1.0],
        ]
    )
    torch.testing.assert_close(cos, expected)


def test_gram_to_cosine_zero_vectors():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    cos = S._gram_to_cosine(x @ x.T)
    assert cos[0, 1] == 1.0 and cos[0, 0] == 1.0  # two all-zero tensors are identical
    assert cos[0, 2] == 0.0 and cos[2, 2] == 1.0
    assert not torch.isnan(cos).any()


def test_param_similarity_matches_slow_reference(model):
    sims = S.param_similarity(model)
    layer0 = dict(get_layers(model)[0].named_parameters())
    all_names = list(layer0)
    torch.testing.assert_close(
        sims["all"].double(), _reference_param_cos(model, all_names), atol=1e-5, rtol=0
    )
    for kind in ("q_proj", "down_proj", "input_layernorm"):
        names = [n for n in all_names if module_kind(n) == kind]
        torch.testing.assert_close(
            sims[kind].double(), _reference_param_cos(model, names), atol=1e-5, rtol=0
        )
    attn = [n for n in all_names if n.startswith("self_attn.")]
    mlp = [n for n in all_names if n.startswith("mlp.")]
    norms = [n for n in all_names if "norm" in n]
    torch.testing.assert_close(
        sims["attention"].double(), _reference_param_cos(model, attn), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        sims["mlp"].double(), _reference_param_cos(model, mlp), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        sims["norms"].double(), _reference_param_cos(model, norms), atol=1e-5, rtol=0
    )


def test_param_similarity_small_chunks_equal_one_chunk(model, monkeypatch):
    whole = S.param_similarity(model)
    # force many chunks per tensor, including a ragged last one
    monkeypatch.setattr(S, "_chunk_cols", lambda num, dev: 777)
    chunked = S.param_similarity(model)
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], atol=1e-6, rtol=0)


def test_identical_layers_give_one_and_orthogonal_give_zero(model):
    layers = get_layers(model)
    with torch.no_grad():
        for (_, dst), (_, src) in zip(
            layers[1].named_parameters(), layers[0].named_parameters(), strict=True
        ):
            dst.copy_(src)
        # layer 2's q_proj: the part of a random matrix orthogonal to layer 0's q_proj
        q0 = layers[0].self_attn.q_proj.weight
        q2 = torch.randn_like(q0)
        q2 -= (q2 * q0).sum() / (q0 * q0).sum() * q0
        layers[2].self_attn.q_proj.weight.copy_(q2)
        # layer 4's o_proj is the negation of layer 3's
        layers[4].self_attn.o_proj.weight.copy_(-layers[3].self_attn.o_proj.weight)
    sims = S.param_similarity(model)
    for key, m in sims.items():
        assert m[0, 1].item() == pytest.approx(1.0, abs=1e-6), key
    assert sims["q_proj"][0, 2].item() == pytest.approx(0.0, abs=1e-5)
    assert sims["o_proj"][3, 4].item() == pytest.approx(-1.0, abs=1e-6)


def test_adjacent_small_slices_equal_one_slice(model, monkeypatch):
    whole = S.adjacent_param_similarity(model)
    monkeypatch.setitem(S._ADJ_SLICE, "cpu", 333)
    sliced = S.adjacent_param_similarity(model)
    for key in whole:
        torch.testing.assert_close(sliced[key], whole[key], atol=1e-6, rtol=0)


def test_adjacent_matches_off_diagonal(model):
    full = S.param_similarity(model)
    adj = S.adjacent_param_similarity(model)
    assert set(adj) == set(full)
    for key in full:
        assert adj[key].shape == (4,)
        torch.testing.assert_close(adj[key], full[key].diagonal(offset=1), atol=1e-5, rtol=0)


def test_bf16_model_accumulates_in_fp32(model):
    ref = S.param_similarity(model)
    bf = S.param_similarity(model.to(torch.bfloat16))
    assert bf["all"].dtype == torch.float32
    torch.testing.assert_close(bf["all"], ref["all"], atol=2e-2, rtol=0)
    adj = S.adjacent_param_similarity(model)
    assert adj["all"].dtype == torch.float32


def test_results_carry_no_autograd_graph(model):
    model.requires_grad_(True)
    sims = S.param_similarity(model)
    adj = S.adjacent_param_similarity(model)
    assert not sims["all"].requires_grad and not adj["all"].requires_grad


def test_unequal_layer_shapes_raise_laco_error(model):
    layers = get_layers(model)
    layers[2].mlp.up_proj = torch.nn.Linear(32, 48, bias=False)
    with pytest.raises(LacoError, match="equal shape"):
        S.param_similarity(model)


# ---- representation similarity ---------------------------------------------------------


def _reference_representation(model, tokenizer, prompts):
    """Per prompt (batch 1), per token, per pair: the definitions written out in float64."""
    cos_sum = ang_sum = None
    count = 0
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        states = S.hidden_states(model, ids, torch.ones_like(ids))
        h = torch.stack([s[0].double() for s in states])  # (S, T, D)
        n_states, n_tok, _ = h.shape
        c = torch.zeros(n_states, n_states, dtype=torch.float64)
        a = torch.zeros_like(c)
        for t in range(n_tok):
            for i in range(n_states):
                for j in range(n_states):
                    v = F.cosine_similarity(h[i, t], h[j, t], dim=0).clamp(-1, 1)
                    c[i, j] += v
                    a[i, j] += 0.0 if i == j else torch.arccos(v) / math.pi
        cos_sum = c if cos_sum is None else cos_sum + c
        ang_sum = a if ang_sum is None else ang_sum + a
        count += n_tok
    return cos_sum / count, ang_sum / count, count


def test_representation_matches_slow_reference():
    model = tiny_model("qwen3", layers=3, seed=1)
    tok = tiny_tokenizer()
    prompts = ["short one", "a somewhat longer prompt, padded less", "mid length text"]
    rep = S.representation_similarity(model, tok, prompts)
    cos, ang, count = _reference_representation(model, tok, prompts)
    assert rep.num_tokens == count
    assert rep.cosine.shape == (4, 4) and rep.angular.shape == (4, 4)
    torch.testing.assert_close(rep.cosine.double(), cos, atol=1e-5, rtol=0)
    torch.testing.assert_close(rep.angular.double(), ang, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        rep.block_influence.double(), 1 - cos.diagonal(offset=1), atol=1e-5, rtol=0
    )
    assert rep.labels == ["emb", "L0", "L1", "L2"]


def test_padding_does_not_change_results():
    model = tiny_model("llama", layers=4, seed=2)
    tok = tiny_tokenizer()
    short, long = "hi there", "a much longer prompt that forces padding of the other one"
    # the real tokens of a prompt get the same hidden states alone and padded in a batch
    ids, mask = S._pad_batch(tok, [short, long], 128)
    assert mask[0].sum() < mask[1].sum()
    batch = S.hidden_states(model, ids, mask)
    alone_ids, alone_mask = S._pad_batch(tok, [short], 128)
    alone = S.hidden_states(model, alone_ids, alone_mask)
    n = int(alone_mask.sum())
    for b, a in zip(batch, alone, strict=True):
        torch.testing.assert_close(b[0, :n], a[0], atol=1e-5, rtol=1e-5)
    # means pool over tokens: the batch result is the token-weighted mix of the single ones
    both = S.representation_similarity(model, tok, [short, long])
    one = S.representation_similarity(model, tok, [short])
    two = S.representation_similarity(model, tok, [long])
    assert both.num_tokens == one.num_tokens + two.num_tokens
    for key in ("cosine", "angular", "block_influence"):
        mix = (
            getattr(one, key) * one.num_tokens + getattr(two, key) * two.num_tokens
        ) / both.num_tokens
        torch.testing.assert_close(getattr(both, key), mix, atol=1e-5, rtol=0)


def test_raw_last_layer_output_not_the_final_norm():
    model = tiny_model("llama", layers=3, seed=4)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    captured = {}
    handle = get_layers(model)[-1].register_forward_hook(
        lambda m, a, o: captured.setdefault("out", o)
    )
    try:
        states = S.hidden_states(model, ids, torch.ones_like(ids))
    finally:
        handle.remove()
    out = captured["out"][0] if isinstance(captured["out"], tuple) else captured["out"]
    torch.testing.assert_close(states[-1], out)
    normed = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    assert not torch.allclose(states[-1], normed)
    # the temporary hook is gone
    assert not model.model.norm._forward_pre_hooks


def test_empty_prompts_raise():
    with pytest.raises(LacoError):
        S.representation_similarity(tiny_model("llama", layers=2), tiny_tokenizer(), ["", "  "])


def test_frames_are_labelled():
    m = torch.eye(3)
    df = S.matrix_frame(m, ["emb", "L0", "L1"])
    assert list(df.index) == list(df.columns) == ["emb", "L0", "L1"]
    assert df.loc["L0", "L0"] == 1.0 and df.loc["emb", "L1"] == 0.0
    with pytest.raises(ValueError):
        S.matrix_frame(m, ["a", "b"])
    v = S.vector_frame(torch.tensor([0.1, 0.2]), ["L0", "L1"], "bi")
    assert list(v.columns) == ["layer", "bi"] and v["bi"].tolist() == pytest.approx([0.1, 0.2])


def test_the_parameter_maps_read_by_their_spread():
    from laco_core.analysis.reading import most_structured, off_diagonal, param_reading

    n = 6
    flat = torch.eye(n) + 0.002 * (1 - torch.eye(n))  # near-orthogonal weights
    norms = torch.eye(n) + torch.linspace(0.1, 0.9, n)[None, :] * (1 - torch.eye(n))
    maps = {"all": flat, "mlp": flat, "input_layernorm": norms}
    assert off_diagonal(norms) == pytest.approx((0.1, 0.9))
    assert most_structured(maps) == "input_layernorm"
    line = param_reading(maps)
    assert "nearly orthogonal (cosine +0.002…+0.002" in line and "input_layernorm" in line
    alike = {"all": norms, "mlp": flat}
    assert param_reading(alike).startswith("The weights of different layers are alike to a")
