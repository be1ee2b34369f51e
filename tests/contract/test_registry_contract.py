"""Every registered component keeps its table's contract on a tiny model of every architecture.

The cases come from the registry itself: each table of ``REGISTRY`` (merge methods,
objectives, strategies, importances, selectors, step kinds) has one contract, run for each of
its components on each architecture of ``laco_core.arch.tiny``, so adding a component adds its
cases without an edit (and a new table fails until it has a contract). Every component's
declared defaults must pass its own declarations. Then every method × strategy × objective
runs as a search, rebuilds from its recipe (with and without its tensors) to equal logits and
leaves the original model bit-identical; architectures rotate through those cases.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from laco_core.analysis.activations import ActivationCache
from laco_core.analysis.baselines import drop_layers
from laco_core.arch.adapters import get_layers
from laco_core.arch.tiny import ARCHITECTURES, tiny_model, tiny_tokenizer
from laco_core.errors import LacoError
from laco_core.loading.models import load_model
from laco_core.params import defaults, validate
from laco_core.pipeline import rebuild, recipe_from_dict
from laco_core.pipeline import run as run_steps
from laco_core.prune.geometry import layer_geometry
from laco_core.prune.importance import calibration_batch, gradients, group_importance
from laco_core.prune.llm_pruner import prune_llm_pruner
from laco_core.recipe import Recipe, TextSource
from laco_core.registry import REGISTRY, Registry
from laco_core.search import SearchConfig
from laco_core.search.objectives import Partial
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.search import SearchStep

LAYERS = 4
PROMPTS = [
    "The river carried sand down from the hills.",
    "A lighthouse keeper counts the ships each night.",
    "Seven bakers shared one oven in the old town.",
]
IDS = torch.tensor([[1, 40, 41, 42, 80, 81, 99, 120, 7, 9, 33, 34]])
TABLES = [f.name for f in dataclasses.fields(Registry)]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """One saved tiny model per architecture, loaded like any model spec."""
    out = {}
    for arch in ARCHITECTURES:
        d = tmp_path_factory.mktemp(arch)
        tiny_model(arch, layers=LAYERS).save_pretrained(d)
        tiny_tokenizer().save_pretrained(d)
        out[arch] = load_model(str(d), "float32", "cpu")
    return out


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, use_cache=False).logits  # (1, T, V)


def _runs(model, layers: int | None = None) -> torch.Tensor:
    """The model has ``layers`` layers (at most ``LAYERS`` when None) and gives finite logits
    of the vocabulary's width."""
    n = len(get_layers(model))
    assert n == layers if layers is not None else n <= LAYERS
    out = _logits(model)
    assert out.shape == (1, IDS.shape[1], model.config.vocab_size)
    assert torch.isfinite(out).all()
    return out


def _cheap(defs) -> dict:
    """Declared settings at their cheapest: each whole-number setting at most 2 (within its
    range), so evolutions, α searches and refinements run a round or two."""
    out = {}
    for d in defs:
        if d.type == "int" and d.cli and d.default is not None:
            out[d.name] = max(d.low if d.low is not None else 0, min(d.default, 2))
    return out


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _replays(base, model, recipe) -> None:
    """The recipe rebuilds ``model``: as JSON with its tensors, and as JSON alone (fitted
    results recomputed)."""
    want = _logits(model)
    saved, tensors = recipe.to_dict()
    json.dumps(saved)  # JSON-ready: tensors live beside it, never in it
    exact = Recipe.from_dict(saved, REGISTRY.steps, tensors)
    again, _, _ = rebuild(exact, lambda ref: base)
    torch.testing.assert_close(_logits(again), want, atol=1e-5, rtol=0)
    again, _, _ = rebuild(recipe_from_dict(saved), lambda ref: base)
    torch.testing.assert_close(_logits(again), want, atol=1e-5, rtol=0)


# ---- one contract per table -----------------------------------------------------------------


def merge_method(base, name: str) -> None:
    """Collapsing layers 1-2 keeps every layer's shapes and shares the untouched layers'
    tensors with the original; the model runs, the recipe replays, the original is intact."""
    method = REGISTRY.methods[name]
    before = _state(base.model)
    step = CollapseStep([[1, 2]], name, _cheap(method.params), TextSource.of(PROMPTS))
    model, recipe = run_steps(base, [step])
    _runs(model, LAYERS - 1)
    old, new = get_layers(base.model), get_layers(model)
    shapes = {k: v.shape for k, v in old[1].state_dict().items()}
    assert {k: v.shape for k, v in new[1].state_dict().items()} == shapes
    for i, j in ((0, 0), (3, 2)):  # untouched layers: the same tensors, not copies
        a, b = old[i].state_dict(), new[j].state_dict()
        assert all(a[k].data_ptr() == b[k].data_ptr() for k in a)
    _replays(base, model, recipe)
    _unchanged(base.model, before)


def objective(base, name: str) -> None:
    """The dense model scores 1 against itself; a model without layer 2 scores in (0, 1]
    (or up to the objective's own upper bound) and inside the bounds its early exit trusts."""
    obj = REGISTRY.objectives[name]
    dense = base.model
    cache = ActivationCache(dense, base.tokenizer, PROMPTS, batch_size=1, workers=1)
    obj.prepare(cache, dense)
    assert obj.score(cache, dense, cache.finals(dense, 0)) == pytest.approx(1.0, abs=1e-4)
    cand = drop_layers(dense, [2])
    finals = cache.finals(cand, 2)
    full = obj.score(cache, cand, finals)
    lowest, highest = obj.bounds(cache, Partial())
    assert 0 < full <= max(1.0, highest) + 1e-6 and full >= lowest - 1e-6
    first = Partial()
    first.add(*obj.stat(cache, cand, cache.chunks[0], finals[0]), len(cache.chunks[0].lengths))
    low, high = obj.bounds(cache, first)
    assert low - 1e-6 <= full <= high + 1e-6
    for threshold in (0.2, 0.5, 0.8, 0.95):
        if obj.early(cache, first, threshold):  # a decision taken early is the full one's
            assert (full > threshold) == (low > threshold)


def strategy(base, name: str) -> None:
    """Searching for one layer with a method it supports gives disjoint ranges inside the
    model that remove exactly one layer."""
    strat = REGISTRY.strategies[name]
    method = next(m for m, x in REGISTRY.methods.items() if strat.supports(x))
    cfg = SearchConfig(
        method=method,
        strategy=name,
        objective=next(iter(REGISTRY.objectives)),
        merge_count=2,
        target_layers=1,
        workers=1,
        method_params=_cheap(REGISTRY.methods[method].params),
        strategy_params=_cheap(strat.params),
    )
    model, recipe = run_steps(base, [SearchStep(cfg, TextSource.of(PROMPTS))])
    plan = recipe.steps[0].plan
    assert all(0 <= lo < hi < LAYERS for lo, hi in plan)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(sorted(plan)))
    assert sum(hi - lo for lo, hi in plan) == 1
    _runs(model, LAYERS - 1)


def importance(base, name: str) -> None:
    """Scores of layer 1's KV groups and MLP channels are finite and one per group; a 5 %
    prune of layers 1-2 ranked by them runs and leaves the original intact."""
    imp = REGISTRY.importances[name]
    model, tok = base.model, base.tokenizer
    grads = fisher = None
    if imp.needs is not None:
        batch = calibration_batch(tok, PROMPTS, 2, 16)
        g, f = gradients(model, [1], batch, imp.needs == "fisher")
        grads, fisher = g[1], f[1]
    layer = get_layers(model)[1]
    gen = torch.Generator().manual_seed(0)
    heads, channels = group_importance(model, layer, imp, "sum", grads, fisher, gen)
    geo = layer_geometry(model, layer)
    assert heads.shape == (geo.kv_heads,) and channels.shape == (geo.inter,)
    assert torch.isfinite(heads).all() and torch.isfinite(channels).all()
    before = _state(model)
    res = prune_llm_pruner(model, tok, PROMPTS, 0.05, imp, "sum", (1, 3), 2, 16)
    assert res.params_after < res.params_before
    _runs(res.model, LAYERS)
    _unchanged(model, before)


def selector(base, name: str) -> None:
    """n layers to drop, as sorted distinct indices of the model; dropping them runs."""
    select = REGISTRY.selectors[name]
    for n in (1, 2):
        layers = select(base.model, base.tokenizer, PROMPTS, n)
        assert len(layers) == n and list(layers) == sorted(set(layers))
        assert all(0 <= i < LAYERS for i in layers)
        _runs(drop_layers(base.model, layers), LAYERS - n)


# cheap values for step fields, by field name: a step kind takes those of its fields
STEP_FIELDS = {
    "ranges": [[1, 2]],
    "layers": [2, 3],  # not layer 1: the first layer of an attention type keeps its attention
    "ratio": 0.05,
    "steps": 2,
    "seq_len": 16,
    "batch_size": 2,
    "num_samples": 2,
    "calibration": TextSource.of(PROMPTS),
    "text": TextSource.of(PROMPTS),
    "config": SearchConfig(merge_count=2, target_layers=1, workers=1),
}


def step_kind(base, name: str) -> None:
    """A step made of cheap values applies, runs, and its recipe (to_dict, from_dict,
    rebuild) gives the same model; the original is intact."""
    kind = REGISTRY.steps[name]
    given = {f.name for f in dataclasses.fields(kind)} & set(STEP_FIELDS)
    step = kind(**{k: STEP_FIELDS[k] for k in given})
    before = _state(base.model)
    model, recipe = run_steps(base, [step])
    assert recipe.steps[0].kind == name
    _runs(model)
    _replays(base, model, recipe)
    _unchanged(base.model, before)


CONTRACTS = {
    "methods": merge_method,
    "objectives": objective,
    "strategies": strategy,
    "importances": importance,
    "selectors": selector,
    "steps": step_kind,
}
COMPONENTS = [(table, name) for table in TABLES for name in getattr(REGISTRY, table)]


def test_every_table_has_a_contract():
    assert sorted(CONTRACTS) == sorted(TABLES)


@pytest.mark.parametrize(
    ("table", "name", "arch"), [(*c, arch) for c in COMPONENTS for arch in ARCHITECTURES]
)
def test_every_component_keeps_its_tables_contract(bases, table, name, arch):
    CONTRACTS[table](bases[arch], name)


@pytest.mark.parametrize(("table", "name"), COMPONENTS)
def test_declared_defaults_pass_their_own_declarations(table, name):
    defs = getattr(getattr(REGISTRY, table)[name], "params", ())
    assert validate(defs, defaults(defs), name) == defaults(defs)


# ---- methods × strategies × objectives ------------------------------------------------------

CASES = [
    (method, strategy, objective, ARCHITECTURES[i % len(ARCHITECTURES)])
    for i, (method, strategy, objective) in enumerate(
        itertools.product(REGISTRY.methods, REGISTRY.strategies, REGISTRY.objectives)
    )
]


@pytest.mark.parametrize(("method", "strategy", "objective", "arch"), CASES)
def test_every_method_strategy_objective(bases, method, strategy, objective, arch):
    base = bases[arch]
    before = _state(base.model)
    cfg = SearchConfig(
        method=method,
        strategy=strategy,
        objective=objective,
        merge_count=2,
        target_layers=2,
        method_params=_cheap(REGISTRY.method(method).params),
        strategy_params=_cheap(REGISTRY.strategy(strategy).params),
        workers=1,
    )
    step = SearchStep(cfg, TextSource.of(PROMPTS))
    if not REGISTRY.strategy(strategy).supports(REGISTRY.method(method)):
        with pytest.raises(LacoError):
            run_steps(base, [step])
        return
    model, recipe = run_steps(base, [step])
    assert recipe.info["layers_after"] == LAYERS - 2
    _replays(base, model, recipe)
    _unchanged(base.model, before)


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
