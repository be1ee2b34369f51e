"""The contracts once on each real model (the embedded SmolLM2 and Gemma 3 270M): every
objective scores the dense model 1 against itself and a one-layer drop in (0, 1] (or up to
the objective's own bound), and the first merge method collapses two layers into a model that
runs. One short prompt keeps each model's pass to seconds once it is loaded (the KL and
perplexity objectives run Gemma's 262k-token LM head)."""

from __future__ import annotations

import pytest
import torch

from laco_core.analysis.activations import ActivationCache
from laco_core.analysis.baselines import drop_layers
from laco_core.arch.adapters import get_layers
from laco_core.pipeline import run as run_steps
from laco_core.registry import REGISTRY
from laco_core.search.objectives import Partial
from laco_core.steps.collapse import CollapseStep

pytestmark = pytest.mark.slow
MODELS = ["default_model", "gemma_model"]  # the session fixtures of tests/conftest.py
PROMPTS = ["The river carried sand down from the hills."]


@pytest.mark.parametrize("fixture", MODELS)
def test_every_objective_on_a_real_model(request, fixture):
    base = request.getfixturevalue(fixture)
    n = base.num_layers
    cache = ActivationCache(base.model, base.tokenizer, PROMPTS)
    cand = drop_layers(base.model, [n - 2])
    dense_finals, finals = cache.finals(base.model, 0), cache.finals(cand, n - 2)
    for name, obj in REGISTRY.objectives.items():
        obj.prepare(cache, base.model)
        assert obj.score(cache, base.model, dense_finals) == pytest.approx(1.0, abs=1e-3), name
        score = obj.score(cache, cand, finals)
        highest = obj.bounds(cache, Partial())[1]
        assert 0 < score <= max(1.0, highest) + 1e-6, name


@pytest.mark.parametrize("fixture", MODELS)
def test_a_collapse_on_a_real_model(request, fixture):
    base = request.getfixturevalue(fixture)
    n = base.num_layers
    method = next(iter(REGISTRY.methods))
    model, recipe = run_steps(base, [CollapseStep([[n - 3, n - 2]], method)])
    assert len(get_layers(model)) == n - 1 and recipe.info["layers_after"] == n - 1
    ids = base.tokenizer("The lighthouse keeper", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits  # (1, T, V)
    assert torch.isfinite(logits).all()
