"""drop_linear (ReplaceMe's fitted map) and drop_lsq (refitted W_down) in searches, on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from laco_core.analysis.activations import ActivationCache, layer_types, run_layers
from laco_core.arch.adapters import get_layers
from laco_core.arch.tiny import ByteTokenizer, tiny_model
from laco_core.assets import read_prompts
from laco_core.ops import build_collapsed, run_search
from laco_core.recipe import Recipe
from laco_core.registry import REGISTRY
from laco_core.search import SearchConfig
from laco_core.search.run import replay
from tests.helpers import assert_same_parameters, save_tiny

TOK = ByteTokenizer()
pytestmark = pytest.mark.usefixtures("one_thread")
CFG = dict(
    merge_count=3,
    strategy="greedy",
    objective="kl",
    target_layers=2,
    strategy_params={"lazy": True},
)


@pytest.fixture(scope="module")
def prompts():
    return read_prompts()[:6]


def _block_error(model, cand, cache, lo, hi) -> float:
    """Squared error, on the prompts, of layer lo of ``cand`` against layers lo..hi of ``model``."""
    types = layer_types(model)
    err = 0.0
    for c in cache.chunks:
        block = list(get_layers(model))[lo : hi + 1]
        want = run_layers(block, types[lo : hi + 1], c.inputs[lo], c.kwargs)
        got = run_layers([get_layers(cand)[lo]], [types[lo]], c.inputs[lo], c.kwargs)
        err += float((got - want)[c.mask].square().sum())
    return err


@pytest.mark.parametrize("method", ["drop_linear", "drop_lsq"])
# gemma2: an RMS norm after the MLP (fitted through it, ``fitting.through_norm``)
@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3", "gemma2", "gemma3_text"])
def test_fit_is_recorded_replayed_and_beats_drop_on_the_block(arch, method, prompts):
    model = tiny_model(arch, 8)
    res = run_search(
        model,
        TOK,
        prompts,
        SearchConfig(**CFG, method=method, method_params={"ridge": 1e-3}),
    )
    assert res.layers_removed == 2
    key = "transform" if method == "drop_linear" else "down_weight"
    down = get_layers(model)[0].mlp.down_proj.weight  # (H, I)
    shape = (32, 32) if method == "drop_linear" else tuple(down.shape)
    assert all(m.params[key].shape == shape for m in res.merges)
    # the matrices stay out of the JSON: beside it, as tensors the JSON references
    from laco_core.recipe import BaseRef
    from laco_core.steps.search import SearchStep

    step = SearchStep(res.config, merges=res.merges)
    text, tensors = Recipe(BaseRef("x"), [step]).to_dict()
    assert len(json.dumps(text)) < 20_000 and len(tensors) == 2
    assert all(m.params["fit"]["sha1"] in json.dumps(text) for m in res.merges)
    rebuilt = replay(model, res.merges, REGISTRY.method)
    assert_same_parameters(res.model, rebuilt)
    # the first step's map fits the dense block at least as well as the plain drop
    lo, hi = res.merges[0].lo, res.merges[0].hi
    cache = ActivationCache(model, TOK, prompts)
    first = replay(model, res.merges[:1], REGISTRY.method)
    dropped = build_collapsed(model, [(lo, hi)], "drop")
    assert _block_error(model, first, cache, lo, hi) < _block_error(model, dropped, cache, lo, hi)


def test_cli_auto_drop_linear_exports_a_plain_checkpoint(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from laco_core.cli import main

    d = save_tiny(tmp_path / "tiny")
    text = tmp_path / "text.txt"
    text.write_text(
        "\n\n".join(f"Paragraph {i}: " + "the cat sat on a mat. " * 8 for i in range(6))
    )
    log, out = tmp_path / "log.json", tmp_path / "out"
    argv = ["auto", "--model", str(d), "--dtype", "float32", "--device", "cpu"]
    argv += ["--prompts", str(text), "--paragraphs", "--method", "drop_linear", "--ridge", "0.1"]
    argv += ["-C", "2", "--strategy", "greedy", "--objective", "kl", "--target-layers", "2"]
    argv += ["--json", str(log), "--out", str(out), "-q"]
    assert main(argv) == 0
    assert len(json.loads(log.read_text())["accepted"]) == 2
    merges = json.loads((out / "laco_recipe.json").read_text())["steps"][0]["merges"]
    assert [m["params"]["fit"]["ridge"] for m in merges] == [0.1, 0.1]
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4


@pytest.mark.parametrize("method", ["drop_linear", "drop_lsq"])
def test_engine_collapse_fits_and_rebuilds_after_eviction(tmp_path, method):
    from laco_core.runtime.engine import Engine

    d = save_tiny(tmp_path / "tiny")
    engine = Engine()
    base = engine.load(str(d), "float32", "cpu")
    did = engine.collapse(base, [(1, 2), (3, 4)], method, ridge=0.1)
    first = engine.get(did).model
    (step,) = engine.recipe(did).steps
    assert step.kind == "collapse" and len(step.merges) == 2
    assert json.dumps(engine.recipe(did).to_dict()[0])  # the maps stay out of the JSON form
    engine.build(did).model = None  # as if evicted: replayed from the recipe's tensors
    again = engine.get(did).model
    x = torch.randint(3, 250, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, first(x).logits, atol=0, rtol=0)
    from laco_core.runtime.engine import _without_tensors

    engine.build(did).recipe = _without_tensors(engine.build(did).recipe)
    engine.build(did).model = None  # evicted and its tensors squeezed out: fitted again
    again = engine.get(did).model
    x = torch.randint(3, 250, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, first(x).logits, atol=0, rtol=0)
        assert not torch.equal(
            first(x).logits, build_collapsed(base.model, "1-2,3-4", "drop")(x).logits
        )


def test_cli_auto_drop_with_fit_maps_exports_fitted_weights(tmp_path):
    from laco_core.cli import main

    d = save_tiny(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["auto", "--model", str(d), "--dtype", "float32", "--device", "cpu", "-C", "2"]
    argv += ["--strategy", "greedy", "--objective", "kl", "--target-layers", "2", "--method"]
    argv += ["drop", "--fit-maps", "--ridge", "0.1", "--out", str(out), "-q"]
    assert main(argv) == 0
    recipe = json.loads((out / "laco_recipe.json").read_text())
    (step,) = recipe["steps"]
    assert step["config"]["refit"] == "drop_lsq"  # the default correction
    assert step["refit_calibration"]["asset"] == "fit_paragraphs"  # both training texts
    assert [m["method"] for m in step["merges"]] == ["drop_lsq"] * len(step["merges"])
    assert (out / "laco_recipe.safetensors").exists()
    argv[argv.index("--fit-maps") + 1 : argv.index("--fit-maps") + 1] = ["drop_linear"]
    argv[argv.index("--out") + 1] = str(tmp_path / "out2")
    assert main(argv) == 0
    recipe = json.loads((tmp_path / "out2" / "laco_recipe.json").read_text())
    assert recipe["steps"][0]["merges"][0]["method"] == "drop_linear"
    assert main(["auto", "--model", str(d), "--method", "drop", "--fit-maps", "official"]) == 2


def test_lsq_on_the_inner_activations_fits_the_block_at_least_as_well_as_the_map(prompts):
    from laco_core.ops import fit_collapse

    model = tiny_model("llama", 6)
    cache = ActivationCache(model, TOK, prompts * 4)
    errs = {}
    for method in ("drop_linear", "drop_lsq"):
        cand, merges = fit_collapse(model, TOK, prompts * 4, [(2, 4)], 1e-6, cache, method=method)
        assert merges[0].method == method
        errs[method] = _block_error(model, cand, cache, 2, 4)
    # every map T is a W_down (Tᵀ W_down): the richer basis can only fit better
    assert errs["drop_lsq"] <= errs["drop_linear"] * 1.001


def test_cli_collapse_fits_drop_lsq_on_the_training_text(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from laco_core.cli import main

    d = save_tiny(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["collapse", "--model", str(d), "--merge", "1-3", "--method", "drop_lsq"]
    assert main([*argv, "--dtype", "float32", "--device", "cpu", "--out", str(out)]) == 0
    recipe = json.loads((out / "laco_recipe.json").read_text())
    step = recipe["steps"][0]
    fit = step["merges"][0]["params"]["fit"]
    assert step["calibration"]["asset"] == "train_paragraphs"
    assert fit.get("sha1") or fit.get("skipped")
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 4
    if "sha1" in fit:  # the refitted projection is what was exported
        plain = build_collapsed(tiny_model("llama", layers=6), [(1, 3)], "drop")
        assert not torch.equal(
            get_layers(reloaded)[1].mlp.down_proj.weight, get_layers(plain)[1].mlp.down_proj.weight
        )
    assert "verified" in capsys.readouterr().out
