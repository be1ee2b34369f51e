"""Pure planning math of the pruning and layer-drop code."""

from __future__ import annotations

import pytest
import torch

from laco_core.analysis.baselines import drop_plan
from laco_core.errors import LacoError
from laco_core.prune.geometry import Geometry as _Geometry
from laco_core.prune.importance import aggregate as _aggregate
from laco_core.prune.llm_pruner import default_layer_range
from laco_core.prune.llm_pruner import plan_amounts as _plan_amounts


def test_default_layer_range_matches_llm_pruner_on_32_layers():
    assert default_layer_range(32) == (4, 30)


@pytest.mark.parametrize("n", [4, 6, 12, 30])
def test_default_layer_range_scales_and_keeps_ends(n):
    lo, hi = default_layer_range(n)
    assert 1 <= lo < hi <= n - 1


def test_plan_amounts_hits_target_within_one_channel():
    g = _Geometry(hidden=576, heads=9, kv_heads=3, head_dim=64, inter=1536)
    target = 26_900_000
    heads, channels = _plan_amounts(g, 24, target, has_bias=False)
    removed = 24 * (heads * g.head_group_params + channels * g.channel_params)
    assert abs(removed - target) <= 24 * g.channel_params
    assert 0 <= heads < g.kv_heads and 0 < channels < g.inter


def test_plan_amounts_refuses_unreachable_target():
    g = _Geometry(hidden=32, heads=4, kv_heads=2, head_dim=8, inter=64)
    with pytest.raises(LacoError, match="widen the layer range"):
        _plan_amounts(g, 1, 10**9, has_bias=False)


def test_aggregations():
    s = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5])]
    assert _aggregate(s, "sum").tolist() == [4.0, 2.5]
    assert _aggregate(s, "prod").tolist() == [3.0, 1.0]
    assert _aggregate(s, "max").tolist() == [3.0, 2.0]
    assert _aggregate(s, "mean").tolist() == [2.0, 1.25]
    assert _aggregate(s, "last").tolist() == [3.0, 0.5]
    with pytest.raises(LacoError):
        _aggregate(s, "median")


def test_drop_plan_groups_runs_behind_a_kept_layer():
    assert drop_plan([3, 4, 7]) == [(2, 4), (6, 7)]
    assert drop_plan([5]) == [(4, 5)]
    assert drop_plan([0, 1]) is None
