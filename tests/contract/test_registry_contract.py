"""Every registered merge method × strategy × objective runs, rebuilds from its recipe (with
and without its tensors) to equal logits, and leaves the original model bit-identical.

The cases come from the registry itself: adding a method, an objective or a strategy adds its
cases here without an edit. Architectures rotate through the cases so that several are covered
without multiplying the run time.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from laco_core.errors import LacoError
from laco_core.models import load_model
from laco_core.pipeline import rebuild, recipe_from_dict
from laco_core.pipeline import run as run_steps
from laco_core.recipe import Recipe, TextSource
from laco_core.registry import REGISTRY
from laco_core.search import SearchConfig
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.search import SearchStep
from laco_core.tiny import tiny_model, tiny_tokenizer

ARCHS = ("llama", "qwen2", "gemma3_text", "phi3", "mistral")
PROMPTS = [
    "The river carried sand down from the hills.",
    "A lighthouse keeper counts the ships each night.",
    "Seven bakers shared one oven in the old town.",
]
CASES = [
    (method, strategy, objective, ARCHS[i % len(ARCHS)])
    for i, (method, strategy, objective) in enumerate(
        itertools.product(REGISTRY.methods, REGISTRY.strategies, REGISTRY.objectives)
    )
]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """One saved 6-layer tiny model per architecture, loaded like any model spec."""
    out = {}
    for arch in ARCHS:
        d = tmp_path_factory.mktemp(arch)
        tiny_model(arch, layers=6).save_pretrained(d)
        tiny_tokenizer().save_pretrained(d)
        out[arch] = load_model(str(d), "float32", "cpu")
    return out


def _logits(model) -> torch.Tensor:
    ids = torch.tensor([[1, 40, 41, 42, 80, 81, 99, 120, 7, 9, 33, 34]])
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _params(method: str) -> dict:
    # a small α search keeps the calibrated method's cases quick
    return {"alpha_evals": 2} if method == "rdsc_calibrated" else {}


@pytest.mark.parametrize(("method", "strategy", "objective", "arch"), CASES)
def test_every_method_strategy_objective(bases, method, strategy, objective, arch):
    base = bases[arch]
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    cfg = SearchConfig(
        method=method,
        strategy=strategy,
        objective=objective,
        merge_count=2,
        target_layers=2,
        method_params=_params(method),
        workers=1,
        generations=2,
        population=4,
    )
    step = SearchStep(cfg, TextSource.of(PROMPTS))
    if not REGISTRY.strategy(strategy).supports(REGISTRY.method(method)):
        with pytest.raises(LacoError, match=strategy if strategy != "evo" else "drop"):
            run_steps(base, [step])
        return
    model, recipe = run_steps(base, [step])
    assert recipe.info["layers_after"] == 4
    want = _logits(model)

    saved, tensors = recipe.to_dict()
    exact = Recipe.from_dict(saved, REGISTRY.steps, tensors)  # with its tensors: replayed
    again, _, _ = rebuild(exact, lambda ref: base)
    torch.testing.assert_close(_logits(again), want, atol=1e-5, rtol=0)
    json_only = recipe_from_dict(saved)  # the JSON alone: fitted steps recompute
    again, _, _ = rebuild(json_only, lambda ref: base)
    torch.testing.assert_close(_logits(again), want, atol=1e-5, rtol=0)

    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("method", list(REGISTRY.methods))
def test_every_method_collapses_by_hand_and_rebuilds(bases, method):
    base = bases["llama"]
    step = CollapseStep(
        [[1, 2], [3, 4]], method, _params(method) if method != "rdsc_calibrated" else {}
    )
    model, recipe = run_steps(base, [step])
    want = _logits(model)
    again, _, _ = rebuild(recipe_from_dict(recipe.to_dict()[0]), lambda ref: base)
    torch.testing.assert_close(_logits(again), want, atol=1e-5, rtol=0)


def test_unknown_parameters_are_refused(bases):
    base = bases["llama"]
    for name, method in REGISTRY.methods.items():
        with pytest.raises(LacoError, match="has no parameter 'bogus'"):
            run_steps(base, [CollapseStep([[1, 2]], name, {"bogus": 1})])
        for d in method.params:
            if d.cli and d.type in ("float", "int") and d.high is not None:
                with pytest.raises(LacoError, match=d.name):
                    method.check({d.name: d.high + 1})


@pytest.mark.parametrize("method", list(REGISTRY.methods))
def test_every_method_declares_its_note(method):
    """The app shows each method's own ``note`` under its summary: none may be missing."""
    assert REGISTRY.method(method).note.strip()
