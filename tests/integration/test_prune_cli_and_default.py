"""`laco prune / heal / compare` on a tiny model directory, and LLM-Pruner on the default model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from laco_core.analysis.evaluate import perplexity
from laco_core.arch.sharing import count_params
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.cli import main
from laco_core.loading.models import SHAPES_SIDECAR, load_model
from laco_core.ops import prune_llm_pruner
from laco_core.prune import load_pruned, save_pruned

TEXT = "The quick brown fox jumps over the lazy dog near the river bank. " * 40


@pytest.fixture
def tiny_dir(tmp_path):
    path = tmp_path / "tiny"
    tiny_model("llama", layers=8).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    (tmp_path / "prompts.txt").write_text("\n".join(TEXT.split(". ")[:12]))
    (tmp_path / "train.txt").write_text(TEXT)
    return path


def test_cli_prune_heal_eval_chain(tiny_dir, tmp_path, capsys):
    prompts = str(tmp_path / "prompts.txt")
    out = tmp_path / "pruned"
    rc = main(
        [
            "prune",
            "--model",
            str(tiny_dir),
            "--method",
            "llm-pruner",
            "--ratio",
            "0.2",
            "--prompts",
            prompts,
            "--samples",
            "4",
            "--seq-len",
            "32",
            "--layers",
            "1-7",
            "--out",
            str(out),
            "--dtype",
            "float32",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and (out / SHAPES_SIDECAR).exists()
    assert "removed" in capsys.readouterr().out
    recipe = json.loads((out / "laco_recipe.json").read_text())
    (step,) = recipe["steps"]
    assert step["kind"] == "prune" and step["layers"] == [1, 7]
    assert set(step["dropped"]) == {str(i) for i in range(1, 7)}
    assert step["calibration"]["texts"]  # the user's prompts are recorded, not the bundled ones
    healed = tmp_path / "healed"
    rc = main(
        [
            "heal",
            "--model",
            str(out),
            "--text",
            str(tmp_path / "train.txt"),
            "--eval-text",
            str(tmp_path / "train.txt"),
            "--steps",
            "2",
            "--rank",
            "2",
            "--seq-len",
            "32",
            "--batch-size",
            "1",
            "--out",
            str(healed),
            "--dtype",
            "float32",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and "perplexity" in capsys.readouterr().out
    lm = load_model(str(healed), "float32", "cpu")  # what `laco eval` does with the directory
    assert count_params(lm.model) == recipe["info"]["params_after"]
    healed_recipe = json.loads((healed / "laco_recipe.json").read_text())
    assert [s["kind"] for s in healed_recipe["steps"]] == ["prune", "heal"]
    assert (healed / "laco_recipe.safetensors").exists()  # the LoRA factors
    # the whole chain rebuilds from the recipe alone, logits equal
    rebuilt = tmp_path / "rebuilt"
    assert main(["rebuild", str(healed), "--out", str(rebuilt)]) == 0
    back = load_model(str(rebuilt), "float32", "cpu")
    x = torch.randint(3, 250, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(back.model(x).logits, lm.model(x).logits, atol=1e-5, rtol=0)
    # sampled text needs a teacher: one line, exit 2, before any model is loaded
    assert (
        main(
            [
                "heal",
                "--model",
                str(out),
                "--teacher",
                "none",
                "--self-text",
                "4",
                "--out",
                str(healed),
            ]
        )
        == 2
    )
    assert "--teacher" in capsys.readouterr().err


def test_cli_prune_shortgpt_and_errors(tiny_dir, tmp_path, capsys):
    out = tmp_path / "sg"
    rc = main(
        [
            "prune",
            "--model",
            str(tiny_dir),
            "--method",
            "shortgpt",
            "--ratio",
            "0.2",
            "--prompts",
            str(tmp_path / "prompts.txt"),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and "dropped layers" in capsys.readouterr().out
    assert load_model(str(out), "float32", "cpu").num_layers < 8
    rc = main(
        [
            "prune",
            "--model",
            str(tiny_dir),
            "--ratio",
            "0.2",
            "--layers",
            "x",
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    assert rc == 2 and "LO-HI" in capsys.readouterr().err


def test_cli_compare_writes_table(tiny_dir, tmp_path, capsys):
    js = tmp_path / "cmp.json"
    rc = main(
        [
            "compare",
            "--model",
            str(tiny_dir),
            "--ratios",
            "0.2",
            "--methods",
            "shortgpt,angular,llm_pruner",
            "--eval-windows",
            "2",
            "--json",
            str(js),
            "--csv",
            str(tmp_path / "cmp.csv"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert "| llm_pruner | 20% |" in capsys.readouterr().out
    rows = json.loads(js.read_text())
    assert {r["method"] for r in rows} == {"dense", "shortgpt", "angular", "llm_pruner"}
    assert all(math.isfinite(r["ppl"]) for r in rows)


@pytest.mark.slow
def test_llm_pruner_20_percent_on_default_model(default_model, tmp_path):
    from laco_core.assets import read_prompts, read_text

    model, tok = default_model.model, default_model.tokenizer
    res = prune_llm_pruner(model, tok, read_prompts(), 0.2)
    assert abs(res.removed_fraction - 0.2) < 0.005
    save_pruned(res.model, tok, tmp_path / "p20")
    back, _ = load_pruned(tmp_path / "p20")
    x = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, res.model(x).logits, atol=1e-5, rtol=1e-5)
    text = read_text()
    dense = perplexity(model, tok, text, max_windows=4)
    pruned = perplexity(back, tok, text, max_windows=4)
    assert math.isfinite(pruned) and pruned > dense


def test_engine_rebuilds_an_evicted_pruned_model(tiny_dir):
    from laco_core.recipe import TextSource
    from laco_core.runtime.engine import Engine
    from laco_core.steps.prune import PruneStep

    engine = Engine()
    base = engine.load(str(tiny_dir), "float32", "cpu")
    texts = ["Calibration text of my own about gardens and rain. " * 6]
    step = PruneStep(0.2, num_samples=2, seq_len=32, calibration=TextSource.of(texts))
    did = engine.run(base, [step])
    first = engine.get(did).model
    res = prune_llm_pruner(base.model, base.tokenizer, texts, 0.2, num_samples=2, seq_len=32)
    engine.build(did).model = None  # as if evicted
    again = engine.get(did).model
    x0 = torch.randint(3, 250, (1, 12))
    with torch.no_grad():  # the recorded calibration text, not the bundled prompts
        torch.testing.assert_close(first(x0).logits, res.model(x0).logits, atol=0, rtol=0)
    x = torch.randint(3, 250, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, res.model(x).logits, atol=0, rtol=0)
