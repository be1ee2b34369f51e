"""Pure pieces of the search: α search, calibrated RDSC, config checks, targets."""

from __future__ import annotations

import math

import pytest
import torch

from laco_core.arch.adapters import ADAPTERS
from laco_core.arch.tiny import tiny_model
from laco_core.errors import LacoError
from laco_core.methods.calibrated import golden_section_max
from laco_core.registry import REGISTRY
from laco_core.search import SearchConfig, target_layers_of


def test_golden_section_finds_the_peak():
    x = golden_section_max(lambda a: -((a - 0.3) ** 2), 0.0, 1.0, 12)
    assert abs(x - 0.3) < 0.01


def _layers():
    torch.manual_seed(0)
    names = ["self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"]
    return [{n: torch.randn(4, 4) for n in names} for _ in range(3)]


def test_calibrated_alpha_zero_is_drop_and_one_is_rdsc():
    layers, adapter = _layers(), ADAPTERS["llama"]
    cal = REGISTRY.methods["rdsc_calibrated"]
    drop = REGISTRY.methods["drop"].merge(layers, adapter)
    rdsc = REGISTRY.methods["rdsc"].merge(layers, adapter)
    a0 = cal.merge(layers, adapter, alpha=0.0)
    a1 = cal.merge(layers, adapter, alpha=1.0)
    for n in layers[0]:
        assert a0[n] is drop[n]  # α = 0 shares the kept layer's tensor
        assert torch.equal(a1[n], rdsc[n])


def test_calibrated_alpha_is_linear_and_per_group():
    layers, adapter = _layers(), ADAPTERS["llama"]
    cal = REGISTRY.methods["rdsc_calibrated"]
    half = cal.merge(layers, adapter, alpha=0.5)
    diff = (
        layers[1]["mlp.down_proj.weight"]
        + layers[2]["mlp.down_proj.weight"]
        - 2 * layers[0]["mlp.down_proj.weight"]
    )
    assert torch.allclose(
        half["mlp.down_proj.weight"], layers[0]["mlp.down_proj.weight"] + 0.5 * diff, atol=1e-6
    )
    mixed = cal.merge(layers, adapter, alpha=0.5, alpha_norm=0.0, alpha_attn=1.0)
    assert mixed["input_layernorm.weight"] is layers[0]["input_layernorm.weight"]
    assert torch.equal(
        mixed["self_attn.q_proj.weight"],
        REGISTRY.methods["rdsc"].merge(layers, adapter)["self_attn.q_proj.weight"],
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"merge_count": 1},
        {"low": 5, "high": 3},
        {"high": 99},
        {"strategy_params": {"interval": 0}},
        {"strategy_params": {"generations": 3}},  # paper has no generations
        {"objective": "bleu"},
        {"strategy": "random"},
        {"target_layers": 2, "target_ratio": 0.1},
        {"target_ratio": 1.5},
        {"target_layers": 6},
        {"method": "nope"},
    ],
)
def test_config_rejects_bad_parameters(kwargs):
    from laco_core.ops import search_components

    with pytest.raises(LacoError):
        search_components(SearchConfig(**kwargs).validate(6))


def test_target_ratio_counts_layers_needed():
    m = tiny_model("llama", 6)
    per_layer = sum(p.numel() for p in m.model.layers[0].parameters())
    total = sum(p.numel() for p in m.parameters())
    ratio = 1.5 * per_layer / total
    assert target_layers_of(m, SearchConfig(target_ratio=ratio)) == 2
    assert target_layers_of(m, SearchConfig(target_layers=3)) == 3
    assert target_layers_of(m, SearchConfig()) is None
    assert math.isclose(ratio * total / per_layer, 1.5)
