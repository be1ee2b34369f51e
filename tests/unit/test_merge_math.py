"""Merge methods on hand-made tensors: each REGISTRY entry computes exactly its formula."""

from __future__ import annotations

import pytest
import torch

from laco_core.arch.adapters import ADAPTERS
from laco_core.methods.base import fp32_sum
from laco_core.methods.rdsc import rdsc_tensor
from laco_core.registry import REGISTRY

ADAPTER = ADAPTERS["llama"]
NAMES = (
    "self_attn.q_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
)
NORMS = {"input_layernorm.weight", "post_attention_layernorm.weight"}


def make_layers(n: int = 3, dtype: torch.dtype = torch.float32) -> list[dict[str, torch.Tensor]]:
    """Layer k holds small integers (exact in float32) that differ per layer and tensor."""
    layers = []
    for k in range(n):
        layers.append(
            {
                name: (torch.arange(6, dtype=torch.float32).reshape(2, 3) * (k + 1) + 10 * j).to(
                    dtype
                )
                for j, name in enumerate(NAMES)
            }
        )
    return layers


def test_registry_has_the_four_methods_with_formulas():
    assert set(REGISTRY.methods) >= {"official", "rdsc", "average", "drop"}
    for m in REGISTRY.methods.values():
        assert m.name and m.summary and m.formula


def test_rdsc_is_equation_1_on_every_tensor_norms_included():
    layers = make_layers(3)
    out = REGISTRY.methods["rdsc"].merge(layers, ADAPTER)
    for name in NAMES:
        t0, t1, t2 = (layer[name] for layer in layers)
        expected = t0 + (t1 - t0) + (t2 - t0)  # θ_l + Σ_k (θ_{l+k} − θ_l), LaCo Eq. 1
        assert torch.equal(out[name], expected), name
    # the norms really change: Eq. 1 as printed merges them too (≈ t1 + t2 − t0)
    for name in NORMS:
        assert not torch.equal(out[name], layers[0][name])


def test_rdsc_alpha_scales_the_differences():
    base, other = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    assert torch.equal(rdsc_tensor(base, [other], alpha=0.5), torch.tensor([2.0, 4.0]))
    assert rdsc_tensor(base, []) is base


def test_official_takes_lo_norms_and_hi_blocks_without_copies():
    layers = make_layers(4)
    out = REGISTRY.methods["official"].merge(layers, ADAPTER)
    for name in NAMES:
        src = layers[0] if name in NORMS else layers[-1]
        assert out[name] is src[name], name  # shared, not copied


def test_average_is_the_mean():
    layers = make_layers(3)
    out = REGISTRY.methods["average"].merge(layers, ADAPTER)
    for name in NAMES:
        expected = (layers[0][name] + layers[1][name] + layers[2][name]) / 3
        assert torch.allclose(out[name], expected, rtol=0, atol=1e-6), name


def test_drop_keeps_layer_lo_objects():
    layers = make_layers(3)
    out = REGISTRY.methods["drop"].merge(layers, ADAPTER)
    assert set(out) == set(NAMES)
    for name in NAMES:
        assert out[name] is layers[0][name]


@pytest.mark.parametrize("method", ["rdsc", "average"])
def test_bf16_inputs_accumulate_in_float32(method):
    torch.manual_seed(0)  # seed 0 gives values where bf16 accumulation rounds differently
    layers = [{"mlp.down_proj.weight": torch.randn(8).to(torch.bfloat16)} for _ in range(4)]
    ts = [layer["mlp.down_proj.weight"] for layer in layers]
    out = REGISTRY.methods[method].merge(layers, ADAPTER)["mlp.down_proj.weight"]
    assert out.dtype == torch.bfloat16
    f = [t.float() for t in ts]
    if method == "rdsc":
        exact = f[0] + sum(x - f[0] for x in f[1:])
        naive = ts[0] + sum((t - ts[0] for t in ts[1:]), torch.zeros(8, dtype=torch.bfloat16))
    else:
        exact = sum(f) / 4
        naive = (ts[0] + ts[1] + ts[2] + ts[3]) / 4
    assert torch.equal(out, exact.to(torch.bfloat16))
    assert not torch.equal(naive, exact.to(torch.bfloat16))  # the test would catch bf16 sums


def test_fp32_sum_does_not_modify_inputs():
    a, b = torch.ones(3, dtype=torch.bfloat16), torch.full((3,), 2.0, dtype=torch.bfloat16)
    s = fp32_sum([a, b])
    assert s.dtype == torch.float32 and torch.equal(s, torch.full((3,), 3.0))
    assert torch.equal(a, torch.ones(3, dtype=torch.bfloat16))
