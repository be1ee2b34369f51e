"""ShortGPT and Gromov-angular layer drop on constructed cases, and the sharing drop builder."""

from __future__ import annotations

import pytest
import torch

from laco_core.analysis.baselines import (
    angular_block,
    drop_layers,
    layers_for_ratio,
    shortgpt_layers,
)
from laco_core.arch.adapters import get_adapter, get_layers
from laco_core.arch.plan import plan_of
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import LacoError
from laco_core.registry import REGISTRY

PROMPTS = ["The river ran past the old mill.", "Seven stones lay in a row near the gate."]


def _make_identity(model, indices):
    """Zero the output projections of ``indices``: those layers pass their input through."""
    a = get_adapter(model)
    with torch.no_grad():
        for i in indices:
            layer = get_layers(model)[i]
            layer.get_parameter(a.o).zero_()
            layer.get_parameter(a.down).zero_()


def test_shortgpt_picks_the_layers_that_do_nothing(arch):
    m = tiny_model(arch, layers=6)
    _make_identity(m, [1, 4])
    assert shortgpt_layers(m, tiny_tokenizer(), PROMPTS, 2) == [1, 4]


def test_angular_picks_the_block_whose_ends_agree(arch):
    m = tiny_model(arch, layers=6)
    _make_identity(m, [2, 3])
    assert angular_block(m, tiny_tokenizer(), PROMPTS, 2) == [2, 3]


@torch.no_grad()
def test_dropping_identity_layers_keeps_the_output(arch):
    m = tiny_model(arch, layers=6)
    _make_identity(m, [0, 3])
    before = {k: v.clone() for k, v in m.state_dict().items()}
    d = drop_layers(m, [0, 3])  # layer 0: not expressible as a drop range
    x = torch.randint(3, 250, (1, 12))
    torch.testing.assert_close(d(x).logits, m(x).logits, atol=1e-5, rtol=1e-5)
    assert d.config.num_hidden_layers == 4 and len(get_layers(d)) == 4
    assert [layer.self_attn.layer_idx for layer in get_layers(d)] == [0, 1, 2, 3]
    assert [layer.self_attn.layer_idx for layer in get_layers(m)] == list(range(6))
    assert d.generate(x, max_new_tokens=3, do_sample=False).shape[1] == 15
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    down = get_adapter(m).down
    shared = get_layers(d)[0].get_parameter(down).data_ptr()
    assert shared == get_layers(m)[1].get_parameter(down).data_ptr()


def test_drop_as_ranges_has_a_collapse_plan():
    m = tiny_model("llama", layers=8)
    d = drop_layers(m, [3, 4, 6])
    assert plan_of(d) == [(2, 4), (5, 6)]


def test_layers_for_ratio_and_a_selectors_drop():
    m = tiny_model("llama", layers=8)
    n = layers_for_ratio(m, 0.2)
    dropped = REGISTRY.selector("shortgpt")(m, tiny_tokenizer(), PROMPTS, n)
    assert len(dropped) == n and len(get_layers(drop_layers(m, dropped))) == 8 - n
    with pytest.raises(LacoError):
        REGISTRY.selector("magic")
    with pytest.raises(LacoError):
        drop_layers(m, list(range(8)))
