"""LLM-Pruner on tiny models of every architecture: group coupling, ratio, sharing, save/load."""

from __future__ import annotations

import copy

import pytest
import torch

from laco_core.arch.adapters import get_adapter, get_layers
from laco_core.arch.sharing import count_params, shared_copy
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import LacoError
from laco_core.loading.models import load_model
from laco_core.ops import prune_llm_pruner
from laco_core.prune import (
    AGGREGATIONS,
    default_layer_range,
    is_pruned,
    layer_geometry,
    load_pruned,
    prune_layer,
    save_pruned,
)
from laco_core.registry import REGISTRY

TEXT = " ".join(
    f"Sentence number {i} talks about rivers, stones and the weather." for i in range(60)
)


def exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal bit for bit: slicing copies values, it never rounds them."""
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _ids():
    return torch.randint(3, 250, (2, 24), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_pruning_a_group_equals_zeroing_its_output_columns(tiny):
    """Removing KV group h (k/v rows, its query heads' q rows, o columns) and MLP channels is
    exactly the original with those o_proj / down_proj columns zeroed."""
    tiny.requires_grad_(False)
    a = get_adapter(tiny)
    new = shared_copy(tiny)
    prune_layer(new, get_layers(new)[2], [1], [3, 7, 10])
    ref = copy.deepcopy(tiny)
    g = layer_geometry(tiny, get_layers(tiny)[2])
    layer = get_layers(ref)[2]
    layer.get_parameter(a.o)[:, g.n_rep * g.head_dim : 2 * g.n_rep * g.head_dim] = 0
    layer.get_parameter(a.down)[:, [3, 7, 10]] = 0
    x = _ids()
    torch.testing.assert_close(new(x).logits, ref(x).logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(new(x).logits, tiny(x).logits)


def _pruned_layer_1(arch: str, heads: list[int], channels: list[int]):
    """Layer 1 of a 4-layer ``arch`` before and after pruning KV groups ``heads`` and MLP
    ``channels`` from it."""
    m = tiny_model(arch, layers=4)
    new = shared_copy(m)
    src, dst = get_layers(m)[1], get_layers(new)[1]
    prune_layer(new, dst, heads, channels)
    return src, dst


@torch.no_grad()
def test_pruned_rows_are_exactly_the_groups_rows():
    src, dst = _pruned_layer_1("llama", [0], [5])
    hd, n_rep = 8, 2
    q = src.self_attn.q_proj.weight
    exact(dst.self_attn.q_proj.weight, q[n_rep * hd :])
    exact(dst.self_attn.k_proj.weight, src.self_attn.k_proj.weight[hd:])
    exact(dst.self_attn.v_proj.weight, src.self_attn.v_proj.weight[hd:])
    exact(dst.self_attn.o_proj.weight, src.self_attn.o_proj.weight[:, n_rep * hd :])
    keep = [j for j in range(64) if j != 5]
    exact(dst.mlp.gate_proj.weight, src.mlp.gate_proj.weight[keep])
    exact(dst.mlp.down_proj.weight, src.mlp.down_proj.weight[:, keep])


@torch.no_grad()
def test_fused_phi3_rows():
    src, dst = _pruned_layer_1("phi3", [1], [0])
    w = src.self_attn.qkv_proj.weight  # rows: q (32), k (16), v (16)
    rows = list(range(0, 16)) + list(range(32, 40)) + list(range(48, 56))
    exact(dst.self_attn.qkv_proj.weight, w[rows])
    gu = src.mlp.gate_up_proj.weight
    exact(dst.mlp.gate_up_proj.weight, gu[list(range(1, 64)) + list(range(65, 128))])


def test_ratio_hits_target_and_original_is_unchanged(tiny):
    tiny.requires_grad_(False)
    before = _state(tiny)
    res = prune_llm_pruner(tiny, tiny_tokenizer(), [TEXT], 0.2, num_samples=4, seq_len=32)
    assert res.params_before == count_params(tiny)
    assert res.params_after == count_params(res.model)
    assert abs(res.removed_fraction - 0.2) < 0.01
    assert is_pruned(res.model)
    after = tiny.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad and p.grad is None for p in tiny.parameters())
    # unpruned layers (outside the range) are the original's tensors
    lo, hi = default_layer_range(len(get_layers(tiny)))
    assert set(res.dropped) == set(range(lo, hi))
    kept = get_layers(res.model)[0].mlp.down_proj.weight
    assert lo > 0 and kept.data_ptr() == get_layers(tiny)[0].mlp.down_proj.weight.data_ptr()
    with torch.no_grad():
        out = res.model.generate(_ids()[:1], max_new_tokens=4, do_sample=False)
    assert out.shape[1] == 28


@torch.no_grad()
def test_recorded_groups_replay_the_pruning_exactly():
    from laco_core.prune import apply_pruning

    m = tiny_model("qwen2", layers=6)
    res = prune_llm_pruner(m, tiny_tokenizer(), [TEXT], 0.2, num_samples=2, seq_len=32)
    again = apply_pruning(m, res.dropped)
    x = _ids()
    exact(again(x).logits, res.model(x).logits)
    with pytest.raises(LacoError, match="Ratio"):
        prune_llm_pruner(m, tiny_tokenizer(), [TEXT], 0.0, num_samples=2, seq_len=32)


def test_save_load_round_trip(tiny, tmp_path):
    tok = tiny_tokenizer()
    res = prune_llm_pruner(tiny, tok, [TEXT], 0.25, num_samples=4, seq_len=32)
    save_pruned(res.model, tok, tmp_path / "p")
    for model in (
        load_pruned(tmp_path / "p")[0],
        load_model(str(tmp_path / "p"), "float32", "cpu").model,
    ):
        x = _ids()
        with torch.no_grad():
            torch.testing.assert_close(model(x).logits, res.model(x).logits, atol=1e-6, rtol=1e-6)
        assert count_params(model) == res.params_after


@pytest.mark.parametrize("importance", list(REGISTRY.importances))
def test_every_importance_runs(importance):
    m = tiny_model("llama", layers=6)
    res = prune_llm_pruner(m, tiny_tokenizer(), [TEXT], 0.15, importance, num_samples=2, seq_len=32)
    assert abs(res.removed_fraction - 0.15) < 0.01


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_every_aggregation_runs(aggregation):
    m = tiny_model("gemma2", layers=6)
    res = prune_llm_pruner(
        m, tiny_tokenizer(), [TEXT], 0.15, aggregation=aggregation, num_samples=2, seq_len=32
    )
    assert res.importance_summary["layers"]


def test_taylor_importance_prefers_to_keep_the_group_that_matters():
    """A KV group whose o_proj columns are ~0 contributes nothing: it must be the one removed."""
    m = tiny_model("llama", layers=6)
    with torch.no_grad():
        for layer in get_layers(m):
            layer.self_attn.o_proj.weight[:, 16:32] *= 1e-4  # KV group 1 (query heads 2, 3)
    res = prune_llm_pruner(
        m, tiny_tokenizer(), [TEXT], 0.2, layers=(1, 5), num_samples=4, seq_len=32
    )
    for info in res.importance_summary["layers"].values():
        assert info["kv_heads_removed"] == [1]


def test_bad_arguments_raise_laco_error():
    m = tiny_model("llama", layers=6)
    tok = tiny_tokenizer()
    with pytest.raises(LacoError, match="importance"):
        prune_llm_pruner(m, tok, [TEXT], 0.2, importance="taylor9")
    with pytest.raises(LacoError, match="Layer range"):
        prune_llm_pruner(m, tok, [TEXT], 0.2, layers=(4, 9))
    with pytest.raises(LacoError, match="Ratio"):
        prune_llm_pruner(m, tok, [TEXT], 1.5)
    with pytest.raises(LacoError, match="tokens"):
        prune_llm_pruner(m, tok, ["short"], 0.2, seq_len=64)
    pruned = prune_llm_pruner(m, tok, [TEXT], 0.2, num_samples=2, seq_len=32).model
    with pytest.raises(LacoError, match="already width-pruned"):
        prune_llm_pruner(pruned, tok, [TEXT], 0.1, num_samples=2, seq_len=32)
