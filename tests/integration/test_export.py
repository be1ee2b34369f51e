"""Export: save_pretrained + tokenizer + recipe, then a plain-transformers reload with equal logits."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import laco_core
from laco_core.errors import LacoError
from laco_core.export import RECIPE_FILE, export_model, push_to_hub, verify_reload, zip_export
from laco_core.merge import build_collapsed
from laco_core.models import count_params, load_model
from laco_core.tiny import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("method", ["official", "rdsc"])
def test_export_reloads_with_plain_transformers(arch, method, tok, tmp_path):
    model = tiny_model(arch, layers=6)
    c = build_collapsed(model, "2-4", method)
    result = export_model(
        c, tok, tmp_path / "out", {"model": f"tiny-{arch}", "method": method}, original=model
    )
    assert result.verified and result.max_abs_logit_diff <= 1e-4
    out = result.path
    for name in ("config.json", "model.safetensors", "tokenizer.json", RECIPE_FILE, "README.md"):
        assert (out / name).exists(), name

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert reloaded.config.num_hidden_layers == 4
    ids = torch.randint(3, 256, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, c(ids).logits, atol=1e-5, rtol=0)
    assert AutoTokenizer.from_pretrained(out)("abc").input_ids == tok("abc").input_ids

    recipe = json.loads((out / RECIPE_FILE).read_text())
    assert recipe["version"] == laco_core.__version__
    assert recipe["model"] == f"tiny-{arch}" and recipe["method"] == method
    assert recipe["ranges"] == [[2, 4]]
    assert recipe["layers_before"] == 6 and recipe["layers_after"] == 4
    assert recipe["params_before"] == count_params(model) and recipe[
        "params_after"
    ] == count_params(c)
    assert "laco_layer_map" not in (out / "config.json").read_text()


def test_collapse_of_collapse_records_original_indices(tok, tmp_path):
    model = tiny_model("llama", layers=8)
    c2 = build_collapsed(build_collapsed(model, "5-6", "drop"), "1-2", "average")
    extras = {
        "note": "two steps",
        "ranges": [[0, 1]],
    }  # a caller's stale ranges lose to the model's
    recipe = json.loads((export_model(c2, tok, tmp_path, extras).path / RECIPE_FILE).read_text())
    assert recipe["ranges"] == [[1, 2], [5, 6]]
    assert (
        recipe["layers_before"] == 8
        and recipe["layers_after"] == 6
        and recipe["note"] == "two steps"
    )


def test_bf16_export_keeps_dtype(tok, tmp_path):
    model = tiny_model("qwen2", layers=4).to(torch.bfloat16)
    result = export_model(build_collapsed(model, "0-1", "average"), tok, tmp_path)
    assert result.verified
    assert json.loads((tmp_path / RECIPE_FILE).read_text())["dtype"] == "bfloat16"
    assert all(
        t.dtype == torch.bfloat16 for t in load_file(tmp_path / "model.safetensors").values()
    )


def test_tampered_export_is_detected(tok, tmp_path):
    model = tiny_model("llama", layers=4)
    c = build_collapsed(model, "1-2", "rdsc")
    export_model(c, tok, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    key = next(k for k in weights if "layers.1.mlp.down_proj" in k)
    weights[key] = weights[key] + 0.5
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert verify_reload(c, tok, tmp_path) > 1e-3


def test_export_loads_back_through_our_loader(tok, tmp_path):
    model = tiny_model("gemma3_text", layers=6)
    c = build_collapsed(model, "0-2", "official")
    export_model(c, tok, tmp_path)
    lm = load_model(str(tmp_path), dtype="float32", device="cpu")
    assert lm.num_layers == 4 and lm.model.config.layer_types == c.config.layer_types


def test_zip_and_push_inputs(tok, tmp_path):
    out = tmp_path / "exp"
    export_model(tiny_model("llama", layers=3), tok, out)
    archive = zip_export(out)
    names = zipfile.ZipFile(archive).namelist()
    assert "exp/model.safetensors" in names and f"exp/{RECIPE_FILE}" in names
    with pytest.raises(LacoError, match="token"):
        push_to_hub(out, "me/model", token="")
    with pytest.raises(LacoError, match="user/name"):
        push_to_hub(out, "model", token="hf_x")
    with pytest.raises(LacoError, match="export first"):
        push_to_hub(tmp_path / "missing", "me/model", token="hf_x")
    with pytest.raises(LacoError):
        zip_export(tmp_path / "missing")


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_width_pruned_export_writes_sidecar_and_verifies(arch, tok, tmp_path):
    from laco_core.models import SHAPES_SIDECAR
    from laco_core.prune import prune_llm_pruner

    model = tiny_model(arch, layers=6)
    text = "The quick brown fox jumps over the lazy dog near the river bank. " * 4
    pruned = prune_llm_pruner(model, tok, [text], 0.2, num_samples=2, seq_len=32).model
    res = export_model(pruned, tok, tmp_path, {"kind": "llm_pruner"})
    assert res.verified and res.max_abs_logit_diff <= 1e-4
    assert (tmp_path / SHAPES_SIDECAR).exists()
    lm = load_model(str(tmp_path), dtype="float32", device="cpu")
    assert count_params(lm.model) == count_params(pruned) < count_params(model)
    # a later plain export into the same folder must not leave a stale sidecar behind
    export_model(model, tok, tmp_path)
    assert not (tmp_path / SHAPES_SIDECAR).exists()
