"""Attention sub-blocks removed by hand and by the greedy search, the evolutionary strategy,
and the default pipeline of ``laco auto --target-ratio``, on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from laco_core import load_pruned
from laco_core.arch.subblocks import attention_free, attention_layers, protected
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.assets import read_prompts
from laco_core.cli import main
from laco_core.errors import LacoError
from laco_core.loading.models import load_model
from laco_core.pipeline import context, export, rebuild, recipe_from_dict
from laco_core.pipeline import run as run_steps
from laco_core.recipe import TextSource
from laco_core.registry import REGISTRY
from laco_core.search import SearchConfig
from laco_core.search.objectives import KL
from laco_core.steps.attention import AttentionStep
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.search import SearchStep

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = read_prompts()[:6]


def saved(tmp_path, arch: str, layers: int = 6, quiet: tuple[int, ...] = ()):
    """A tiny model saved and loaded like any spec; ``quiet`` layers get a near-zero o_proj
    (their attention barely matters, so removing it is nearly free)."""
    m = tiny_model(arch, layers)
    with torch.no_grad():
        for i in quiet:
            m.model.layers[i].self_attn.o_proj.weight.mul_(1e-3)
    d = tmp_path / arch
    m.save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return load_model(str(d), "float32", "cpu")


def logits(model) -> torch.Tensor:
    ids = torch.tensor([[1, 50, 51, 52, 90, 91, 120, 7, 9, 33]])
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "phi3"])
def test_removed_attention_generates_saves_and_reloads(tmp_path, arch):
    base = saved(tmp_path, arch)
    keep = protected(base.model)
    drop = [i for i in (2, 3, 4) if i not in keep][:2]
    model, recipe = run_steps(base, [AttentionStep(drop)])
    assert attention_free(model) == drop and len(attention_layers(model)) == 6 - len(drop)
    assert recipe.info["kv_cache_layers"] == [6, 6 - len(drop)]
    assert recipe.info["params_after"] < recipe.info["params_before"]
    ids = base.tokenizer("the river ran", return_tensors="pt").input_ids
    with torch.no_grad():  # the KV cache stays right: cached and recomputed decoding agree
        a = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
        b = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(a, b)
    res = export(model, base, tmp_path / "out", recipe)
    assert res.verified and (tmp_path / "out" / "laco_shapes.json").exists()
    back, _ = load_pruned(tmp_path / "out")
    torch.testing.assert_close(logits(back), logits(model), atol=1e-6, rtol=0)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "load_pruned" in card and not (tmp_path / "out" / "mergekit_config.yml").exists()


def test_protected_layers_and_merges_across_removed_attention(tmp_path):
    base = saved(tmp_path, "gemma3_text")
    with pytest.raises(LacoError, match="must stay"):
        run_steps(base, [AttentionStep([1])])  # the first full-attention layer
    steps = [AttentionStep([3]), CollapseStep([[2, 4]], "average")]
    with pytest.raises(LacoError, match="keeps layer lo"):
        run_steps(base, steps)
    model, recipe = run_steps(base, [AttentionStep([3]), CollapseStep([[3, 4]], "drop")])
    again, _, _ = rebuild(recipe_from_dict(recipe.to_dict()[0]), lambda ref: base)
    torch.testing.assert_close(logits(again), logits(model), atol=0, rtol=0)


def test_block_search_removes_redundant_attention_first(tmp_path):
    base = saved(tmp_path, "llama", layers=8, quiet=(3, 5))
    cfg = SearchConfig(
        strategy="greedy",
        objective="kl",
        method="drop",
        merge_count=2,
        target_ratio=0.12,
        units="blocks",
        refit="drop_lsq",
    )
    events = []
    step = SearchStep(cfg, TextSource.of(PROMPTS))
    model, recipe = run_steps(base, [step], context(base, events=events.append))
    chosen = [(e["lo"], e.get("unit")) for e in events if e.get("accepted")]
    # the near-free blocks go first (between the two, a near tie decides: either order)
    assert sorted(chosen[:2]) == [(3, "attention"), (5, "attention")]
    assert 1 - recipe.info["params_after"] / recipe.info["params_before"] >= 0.12
    again, _, _ = rebuild(recipe_from_dict(recipe.to_dict()[0]), lambda ref: base)
    torch.testing.assert_close(logits(again), logits(model), atol=1e-5, rtol=0)
    with pytest.raises(LacoError, match="target-ratio"):
        SearchConfig(strategy="greedy", units="blocks", target_layers=2).validate(8)
    with pytest.raises(LacoError, match="the paper strategy removes layers; use --strategy greedy"):
        REGISTRY.search_components(SearchConfig(strategy="paper", units="blocks", target_ratio=0.2))


def test_evolution_never_ends_worse_than_its_greedy_seed(tmp_path):
    from laco_core.analysis.activations import ActivationCache
    from laco_core.ops import run_search

    base = saved(tmp_path, "qwen2", layers=10)
    cfg = dict(method="drop", objective="kl", target_layers=3, merge_count=2, workers=1)
    greedy = run_search(base.model, base.tokenizer, PROMPTS, SearchConfig(strategy="greedy", **cfg))
    events = []
    evo = run_search(
        base.model,
        base.tokenizer,
        PROMPTS,
        SearchConfig(strategy="evo", strategy_params={"generations": 4, "population": 6}, **cfg),
        callback=events.append,
    )
    assert sum(1 for e in events if "generation" in e) == 4
    assert evo.layers_removed == greedy.layers_removed == 3
    cache = ActivationCache(base.model, base.tokenizer, PROMPTS)
    kl = KL()
    kl.prepare(cache, base.model)
    score = {
        name: kl.score(cache, r.model, cache.finals(r.model, 0))
        for name, r in (("greedy", greedy), ("evo", evo))
    }
    assert score["evo"] >= score["greedy"] - 1e-9


def test_auto_with_only_a_target_runs_the_best_pipeline(tmp_path, capsys):
    base = saved(tmp_path, "llama")
    out = tmp_path / "best"
    assert (
        main(["auto", "--model", base.spec, "--target-layers", "2", "-q", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "the best pipeline" in printed and "KV cache" in printed
    (step,) = json.loads((out / "laco_recipe.json").read_text())["steps"]
    cfg = step["config"]
    assert (cfg["strategy"], cfg["objective"], cfg["method"], cfg["refit"]) == (
        "greedy",
        "kl",
        "drop",
        "drop_lsq",
    )
    assert step["calibration"]["asset"] == "train_paragraphs"
    # any search flag runs that search instead
    assert (
        main(["auto", "--model", base.spec, "--target-layers", "2", "--strategy", "paper", "-q"])
        == 0
    )
    assert "paper, cosine, official" in capsys.readouterr().out


def test_cli_collapse_drop_attention_reports_the_kv_cache(tmp_path, capsys):
    base = saved(tmp_path, "llama")
    out = tmp_path / "c"
    argv = ["collapse", "--model", base.spec, "--merge", "3-4", "--drop-attn", "2,5"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "KV cache: 3 of 6 layers keep attention" in printed and "load_pruned" in printed
    assert (
        main(["collapse", "--model", base.spec, "--drop-attn", "0", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "must stay" in capsys.readouterr().err
