"""Export: weights + tokenizer + recipe written beside, a plain-transformers reload with equal
logits, and nothing overwritten unless asked."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from laco_core.arch.sharing import count_params
from laco_core.arch.tiny import tiny_model
from laco_core.errors import LacoError
from laco_core.exchange.export import export_model, push_to_hub, verify_reload
from laco_core.loading.models import load_model
from laco_core.ops import build_collapsed, prune_llm_pruner
from laco_core.pipeline import base_ref, read_recipe
from laco_core.pipeline import run as run_steps
from laco_core.recipe import RECIPE_FILE, Recipe
from laco_core.steps.collapse import CollapseStep
from tests.helpers import save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def saved(arch: str, folder, layers: int = 6):
    """A tiny model saved to ``folder`` and loaded like any model spec."""
    return load_model(str(save_tiny(folder, arch, layers)), "float32", "cpu")


@pytest.mark.parametrize("method", ["official", "rdsc"])
def test_export_reloads_with_plain_transformers(arch, method, tok, tmp_path):
    lm = saved(arch, tmp_path / "base")
    c, recipe = run_steps(lm, [CollapseStep([[2, 4]], method)])
    result = export_model(c, tok, tmp_path / "out", recipe)
    assert result.verified and result.max_abs_logit_diff <= 1e-4
    out = result.path
    for name in ("config.json", "model.safetensors", "tokenizer.json", RECIPE_FILE, "README.md"):
        assert (out / name).exists(), name
    assert not list(tmp_path.glob(".*laco-tmp*"))  # the temporary folder is gone

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert reloaded.config.num_hidden_layers == 4
    ids = torch.randint(3, 256, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, c(ids).logits, atol=1e-5, rtol=0)
    assert AutoTokenizer.from_pretrained(out)("abc").input_ids == tok("abc").input_ids

    recipe = json.loads((out / RECIPE_FILE).read_text())
    assert recipe["format"] == "laco-recipe" and recipe["version"] == 2
    assert recipe["base"]["spec"] == str(tmp_path / "base")
    assert recipe["steps"][0]["method"] == method and recipe["info"]["plan"] == [[2, 4]]
    info = recipe["info"]
    assert info["layers_before"] == 6 and info["layers_after"] == 4
    assert info["params_before"] == count_params(lm.model) and info["params_after"] == count_params(
        c
    )
    assert "laco_layer_map" not in (out / "config.json").read_text()


def test_collapse_of_collapse_records_original_indices(tok, tmp_path):
    lm = saved("llama", tmp_path / "base", layers=8)
    c2, recipe = run_steps(lm, [CollapseStep([[5, 6]], "drop"), CollapseStep([[1, 2]], "average")])
    recipe = json.loads(
        (export_model(c2, tok, tmp_path / "o", recipe).path / RECIPE_FILE).read_text()
    )
    assert recipe["info"]["plan"] == [[1, 2], [5, 6]] and len(recipe["steps"]) == 2
    assert recipe["info"]["layers_before"] == 8 and recipe["info"]["layers_after"] == 6


def test_bf16_export_keeps_dtype(tok, tmp_path):
    model = tiny_model("qwen2", layers=4).to(torch.bfloat16)
    result = export_model(build_collapsed(model, "0-1", "average"), tok, tmp_path / "o")
    assert result.verified
    assert all(
        t.dtype == torch.bfloat16 for t in load_file(tmp_path / "o" / "model.safetensors").values()
    )


def test_tampered_export_is_detected(tok, tmp_path):
    model = tiny_model("llama", layers=4)
    c = build_collapsed(model, "1-2", "rdsc")
    export_model(c, tok, tmp_path / "o")
    weights = load_file(tmp_path / "o" / "model.safetensors")
    key = next(k for k in weights if "layers.1.mlp.down_proj" in k)
    weights[key] = weights[key] + 0.5
    save_file(weights, tmp_path / "o" / "model.safetensors", metadata={"format": "pt"})
    assert verify_reload(c, tok, tmp_path / "o") > 1e-3


def test_export_loads_back_through_our_loader(tok, tmp_path):
    model = tiny_model("gemma3_text", layers=6)
    c = build_collapsed(model, "0-2", "official")
    export_model(c, tok, tmp_path / "o")
    lm = load_model(str(tmp_path / "o"), dtype="float32", device="cpu")
    assert lm.num_layers == 4 and lm.model.config.layer_types == c.config.layer_types


def test_nothing_is_overwritten_unless_asked(tok, tmp_path):
    lm = saved("llama", tmp_path / "base", layers=4)
    c, recipe = run_steps(lm, [CollapseStep([[1, 2]], "drop")])
    with pytest.raises(LacoError, match="source model's own folder"):
        export_model(c, tok, tmp_path / "base", recipe, overwrite=True, protect=[tmp_path / "base"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(LacoError, match="not empty"):
        export_model(c, tok, tmp_path / "full", recipe)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    export_model(c, tok, tmp_path / "full", recipe, overwrite=True)
    assert (
        not (tmp_path / "full" / "keep.txt").exists() and (tmp_path / "full" / RECIPE_FILE).exists()
    )
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LacoError, match="is a file"):
        export_model(c, tok, tmp_path / "afile", recipe)
    with pytest.raises(LacoError, match="is a file"):
        export_model(c, tok, tmp_path / "afile" / "sub", recipe)
    # the source model was never touched
    assert load_model(str(tmp_path / "base"), "float32", "cpu").num_layers == 4


def test_push_inputs(tok, tmp_path):
    out = tmp_path / "exp"
    lm = saved("llama", tmp_path / "base", layers=3)
    export_model(lm.model, tok, out, Recipe(base_ref(lm)))
    with pytest.raises(LacoError, match="token"):
        push_to_hub(out, "me/model", token="")
    with pytest.raises(LacoError, match="user/name"):
        push_to_hub(out, "model", token="hf_x")
    with pytest.raises(LacoError, match="export first"):
        push_to_hub(tmp_path / "missing", "me/model", token="hf_x")


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_width_pruned_export_writes_sidecar_and_verifies(arch, tok, tmp_path):
    from laco_core.prune.io import SHAPES_SIDECAR

    model = tiny_model(arch, layers=6)
    text = "The quick brown fox jumps over the lazy dog near the river bank. " * 4
    pruned = prune_llm_pruner(model, tok, [text], 0.2, num_samples=2, seq_len=32).model
    res = export_model(pruned, tok, tmp_path / "o")
    assert res.verified and res.max_abs_logit_diff <= 1e-4
    assert (tmp_path / "o" / SHAPES_SIDECAR).exists()
    lm = load_model(str(tmp_path / "o"), dtype="float32", device="cpu")
    assert count_params(lm.model) == count_params(pruned) < count_params(model)
    # a later plain export into the same folder must not leave a stale sidecar behind
    export_model(model, tok, tmp_path / "o", overwrite=True)
    assert not (tmp_path / "o" / SHAPES_SIDECAR).exists()


def test_recipe_round_trips_through_its_folder(tok, tmp_path):
    lm = saved("qwen3", tmp_path / "base")
    c, recipe = run_steps(lm, [CollapseStep([[1, 3]], "average")])
    export_model(c, tok, tmp_path / "o", recipe)
    again = read_recipe(tmp_path / "o")
    assert again.describe() == recipe.describe() and again.base.spec == str(tmp_path / "base")
