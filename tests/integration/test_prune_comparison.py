"""The comparison's cached scorer agrees with evaluate.py; compare_all rows and table."""

from __future__ import annotations

import math

import pytest

from laco_core.analysis.baselines import drop_layers
from laco_core.analysis.evaluate import perplexity, reference_metrics
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import LacoError
from laco_core.runtime.comparison import _Scorer, compare_all, markdown_table

TEXT = "Rain fell on the quiet harbour while the boats waited for the morning tide. " * 30


def test_scorer_matches_evaluate():
    tok = tiny_tokenizer()
    m = tiny_model("qwen2", layers=6)
    d = drop_layers(m, [2, 3])
    s = _Scorer(m, tok, TEXT, 64, 5)
    ppl0, kl0 = s.score()
    assert ppl0 == pytest.approx(perplexity(m, tok, TEXT, 64, max_windows=5), rel=1e-9)
    assert kl0 == pytest.approx(0.0, abs=1e-12)
    ppl, kl = s.score(d)
    assert ppl == pytest.approx(perplexity(d, tok, TEXT, 64, max_windows=5), rel=1e-6)
    ref_kl = reference_metrics(d, m, tok, TEXT, 64, max_windows=5)["kl"]
    assert kl == pytest.approx(ref_kl, rel=1e-4) and kl > 0


def test_compare_all_rows_and_markdown():
    tok = tiny_tokenizer()
    m = tiny_model("llama", layers=8)
    prompts = [s for s in TEXT.split(".")[:8] if s.strip()]
    seen = []
    df = compare_all(
        m,
        tok,
        TEXT,
        prompts,
        ratios=(0.2,),
        heal_steps=1,
        methods=("shortgpt", "llm_pruner"),
        eval_seq_len=64,
        eval_windows=2,
        heal_kwargs={"seq_len": 32, "batch_size": 1, "self_text": 0},
        callback=lambda d, n, msg: seen.append((d, n)),
    )
    assert seen[-1] == (5, 5)
    assert list(df["method"]) == ["dense", "shortgpt", "shortgpt", "llm_pruner", "llm_pruner"]
    assert df["healed"].tolist() == [False, False, True, False, True]
    assert all(math.isfinite(x) for x in df["ppl"]) and (df["kl"][1:] > 0).all()
    assert abs(df["params_removed"].iloc[3] - 0.2) < 0.01
    table = markdown_table(df)
    assert table.count("\n") == 4 and "| shortgpt | 20% |" in table
    with pytest.raises(LacoError):
        compare_all(m, tok, TEXT, prompts, ratios=(1.5,))


def test_compare_all_method_ratios_and_heal_per_point():
    """A costly method at its own ratios; heal settings chosen per (method, ratio)."""
    tok = tiny_tokenizer()
    m = tiny_model("llama", layers=8)
    prompts = [s for s in TEXT.split(".")[:8] if s.strip()]
    asked, built = [], []

    def heal_of(method, ratio):
        asked.append((method, ratio))
        rank = 2 if method == "shortgpt" else 4
        return {"seq_len": 32, "batch_size": 1, "rank": rank, "self_text": 0}

    df = compare_all(
        m,
        tok,
        TEXT,
        prompts,
        ratios=(0.2, 0.3),
        heal_steps=1,
        methods=("shortgpt", "angular"),
        eval_seq_len=64,
        eval_windows=2,
        heal_kwargs=heal_of,
        heal_ratios=(0.2,),
        method_ratios={"angular": (0.3,)},
        on_point=lambda meth, r, healed, model, recipe: built.append((meth, r, healed, recipe)),
    )
    rows = list(zip(df["method"], df["target_ratio"], df["healed"], strict=True))
    assert rows == [
        ("dense", 0.0, False),
        ("shortgpt", 0.2, False),
        ("shortgpt", 0.2, True),
        ("shortgpt", 0.3, False),
        ("angular", 0.3, False),
    ]
    assert asked == [("shortgpt", 0.2)]
    healed_recipe = next(r for meth, _, healed, r in built if healed)
    assert healed_recipe.steps[-1].rank == 2 and healed_recipe.steps[-1].kind == "heal"
    with pytest.raises(LacoError):
        compare_all(m, tok, TEXT, prompts, ratios=(0.2,), method_ratios={"angular": (2.0,)})
