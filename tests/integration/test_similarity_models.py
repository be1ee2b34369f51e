"""Similarity on tiny models of every architecture, on collapsed models, and on the embedded model."""

from __future__ import annotations

import pytest
import torch

from laco_core.analysis import similarity as S
from laco_core.arch.adapters import get_adapter, get_layers, kind_group, module_kind
from laco_core.arch.tiny import tiny_tokenizer
from laco_core.assets import read_prompts
from laco_core.ops import build_collapsed

PROMPTS = ["The river carried sand to the sea.", "def f(x): return x * 2", "Bonjour, ça va ?"]


def _expected_keys(model) -> set[str]:
    adapter = get_adapter(model)
    names = [n for n, _ in get_layers(model)[0].named_parameters()]
    return {"all"} | {module_kind(n) for n in names} | {kind_group(adapter, n) for n in names}


def test_param_similarity_every_architecture(tiny):
    sims = S.param_similarity(tiny)
    assert set(sims) == _expected_keys(tiny)
    assert {"attention", "mlp", "norms"} <= set(sims)
    adapter = get_adapter(tiny)
    if adapter.qkv:  # fused projections form their own kinds
        assert {"qkv_proj", "gate_up_proj"} <= set(sims)
    else:
        assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(
            sims
        )
    for key, m in sims.items():
        assert m.shape == (6, 6) and m.dtype == torch.float32, key
        assert torch.isfinite(m).all(), key
        torch.testing.assert_close(m, m.T, atol=1e-6, rtol=0)
        torch.testing.assert_close(m.diagonal(), torch.ones(6), atol=1e-6, rtol=0)
        assert (m.abs() <= 1.0).all(), key
    adj = S.adjacent_param_similarity(tiny)
    assert set(adj) == set(sims)
    for key in sims:
        torch.testing.assert_close(adj[key], sims[key].diagonal(offset=1), atol=1e-5, rtol=0)


def test_representation_similarity_every_architecture(tiny):
    rep = S.representation_similarity(tiny, tiny_tokenizer(), PROMPTS)
    n = 7  # embeddings + 6 layer outputs
    assert rep.cosine.shape == rep.angular.shape == (n, n)
    assert rep.block_influence.shape == (6,)
    assert rep.labels == ["emb"] + [f"L{i}" for i in range(6)]
    assert rep.num_tokens == sum(len(tiny_tokenizer()(p)["input_ids"]) for p in PROMPTS)
    torch.testing.assert_close(rep.cosine, rep.cosine.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(rep.angular, rep.angular.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(rep.cosine.diagonal(), torch.ones(n), atol=1e-5, rtol=0)
    assert rep.angular.diagonal().abs().max() < 1e-6
    assert (rep.angular >= 0).all() and (rep.angular <= 1).all()
    torch.testing.assert_close(rep.block_influence, 1 - rep.cosine.diagonal(offset=1))
    frames = rep.frames()
    assert (
        frames["cosine"].shape == (n, n)
        and list(frames["block_influence"]["layer"]) == rep.labels[1:]
    )


def test_collapsed_model_labels_and_shapes(arch, tiny):
    collapsed = build_collapsed(tiny, "1-3", "average")
    assert S.layer_labels(collapsed) == ["L0", "L1-3", "L4", "L5"]
    sims = S.param_similarity(collapsed)
    assert sims["all"].shape == (4, 4)
    # untouched layers share tensors with the original, so their similarity is unchanged
    orig = S.param_similarity(tiny)["all"]
    assert sims["all"][2, 3].item() == pytest.approx(orig[4, 5].item(), abs=1e-6)
    rep = S.representation_similarity(collapsed, tiny_tokenizer(), PROMPTS)
    assert rep.cosine.shape == (5, 5) and rep.labels[2] == "L1-3"


@pytest.mark.slow
def test_embedded_model_similarity(default_model):
    model, tok = default_model.model, default_model.tokenizer
    sims = S.param_similarity(model)
    assert sims["all"].shape == (30, 30)
    for key in (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "input_layernorm",
    ):
        assert key in sims
    off = ~torch.eye(30, dtype=torch.bool)
    # trained projection weights of different layers are nearly orthogonal...
    assert sims["all"][off].abs().max() < 0.1
    # ...while the norm gains are all positive-ish vectors, hence strongly aligned
    assert sims["norms"][off].mean() > 0.5
    adj = S.adjacent_param_similarity(model)
    torch.testing.assert_close(adj["all"], sims["all"].diagonal(offset=1), atol=1e-5, rtol=0)

    rep = S.representation_similarity(model, tok, read_prompts())
    assert rep.cosine.shape == (31, 31) and rep.block_influence.shape == (30,)
    assert rep.num_tokens > 24 * 15
    bi = rep.block_influence
    # the first layer rewrites the embeddings; middle layers change the residual stream little
    assert bi[0] > 0.5
    assert bi[5:25].median() < 0.1
    # neighbours are more alike than distant layers (cosine falls off the diagonal)
    c = rep.cosine
    assert c[10, 11] > c[10, 20] and c[25, 26] > c[5, 26]
    torch.testing.assert_close(rep.cosine.diagonal(), torch.ones(31), atol=1e-5, rtol=0)
