"""Targets that mean the same on every model, the size–quality curve and the quality budget."""

from __future__ import annotations

import json
import math

import pytest

from laco_core.analysis.evaluate import reference_metrics
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.cli import main
from laco_core.errors import LacoError
from laco_core.search.config import SearchConfig, block_params, size_report, target_layers_of
from laco_core.search.curve import CLIFF, CurvePoint, QualityCurve, cliff_line

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def saved(tmp_path):
    """A 6-layer tiny llama with a wide vocabulary (an embedding-heavy model) on disk."""
    d = tmp_path / "tiny"
    tiny_model("llama", layers=6).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


def _auto(d, *flags) -> list[str]:
    argv = ["auto", "--model", str(d), "--dtype", "float32", "--device", "cpu", "-q"]
    return [*argv, *flags]


def test_block_ratio_counts_layers_only_and_all_three_sizes_are_reported():
    model = tiny_model("llama", layers=10, vocab_size=4096)  # embedding ≫ one layer
    rep = size_report(model)
    assert rep["block_params"] == block_params(model) < rep["params"]
    assert 0 < rep["embedding_share"] < 1
    # 20 % of the layers' parameters is 2 of 10 layers on any model...
    assert target_layers_of(model, SearchConfig(target_block_ratio=0.2)) == 2
    # ...while 20 % of ALL parameters needs far more layers here (the embedding counts)
    with pytest.raises(LacoError, match="lower --target-ratio"):
        target_layers_of(model, SearchConfig(target_ratio=0.6))
    assert target_layers_of(model, SearchConfig(target_ratio=0.2)) > 2
    with pytest.raises(LacoError, match="lower --target-block-ratio"):
        target_layers_of(model, SearchConfig(target_block_ratio=0.95))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target-block-ratio", "0"], "--target-block-ratio is a fraction"),
        (["--target-block-ratio", "nan"], "--target-block-ratio is a fraction"),
        (["--max-ppl-ratio", "-1"], "--max-ppl-ratio is a perplexity budget"),
        (["--max-ppl-ratio", "nan"], "--max-ppl-ratio is a perplexity budget"),
        (["--max-ppl-ratio", "1"], "--max-ppl-ratio is a perplexity budget"),
        (["--max-kl", "0"], "--max-kl is a budget in nats"),
        (["--max-kl", "inf"], "--max-kl is a budget in nats"),
        (["--target-layers", "6"], "--target-layers must be between 1 and 5"),
        (["--target-block-ratio", "0.99"], "lower --target-block-ratio"),
    ],
)
def test_bad_targets_and_budgets_get_one_line_and_nothing_is_written(
    saved, tmp_path, capsys, flags, message
):
    out = tmp_path / "out"
    assert main(_auto(saved, *flags, "--out", str(out))) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_two_targets_are_refused(saved, capsys):
    argv = _auto(saved, "--target-layers", "1", "--max-ppl-ratio", "2")
    assert main(argv) == 2  # mutually exclusive flags, one line
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_budget_no_plan_meets_builds_nothing(saved, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_auto(saved, "--max-kl", "1e-9", "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert "Even the least damaging removal of one layer breaks the quality budget" in err
    assert "nothing was built" in err and not out.exists()


def _points(recipe: dict) -> list[dict]:
    return recipe["steps"][0]["curve"]["points"]


def test_budget_keeps_the_last_plan_within_it(saved, tmp_path, capsys):
    # an expert greedy walk without a refit (fast): the budget reads the searched plans
    text = tmp_path / "cal.txt"
    text.write_text(
        "\n\n".join(f"Paragraph {i}: " + "the cat sat on a mat. " * 6 for i in range(4))
    )
    expert = ["--strategy", "greedy", "--objective", "kl", "--method", "drop", "-C", "2"]
    expert += ["--prompts", str(text), "--paragraphs"]
    wide = tmp_path / "wide"
    assert main(_auto(saved, *expert, "--max-ppl-ratio", "1e9", "--out", str(wide))) == 0
    points = _points(json.loads((wide / "laco_recipe.json").read_text()))
    ratios = [p["ppl_ratio"] for p in points]
    assert [p["layers_removed"] for p in points] == list(range(1, len(points) + 1))
    assert len(points) >= 3 and all(p["ppl_ratio_refit"] is None for p in points)
    # a budget between the first point and a worse later one
    first = max(ratios[0], 1.0)  # a random model may even gain from losing a layer
    later = [r for r in ratios[1:] if r > first]
    assert later, "a walk that removes most layers of a random model loses quality"
    budget = (first + min(later)) / 2
    out = tmp_path / "out"
    flags = [*expert, "--max-ppl-ratio", f"{budget:.9f}", "--out", str(out)]
    assert main(_auto(saved, *flags)) == 0
    recipe = json.loads((out / "laco_recipe.json").read_text())
    walked = _points(recipe)
    removed = 6 - json.loads((out / "config.json").read_text())["num_hidden_layers"]
    assert all(p["ppl_ratio"] <= budget for p in walked[:-1])
    assert walked[-1]["ppl_ratio"] > budget  # the step that broke it is shown, not built
    assert removed == walked[-1]["layers_removed"] - 1 >= 1
    text = capsys.readouterr().out
    assert "Within the budget" in text and "reload-verified" in text
    assert (out / "quality_curve.json").exists() and (out / "quality_curve.png").exists()


def test_budget_decides_after_the_refit(saved, tmp_path):
    out = tmp_path / "out"
    assert main(_auto(saved, "--max-ppl-ratio", "1.0001", "--out", str(out))) in (0, 2)
    if out.exists():  # the refit kept the walk within 1.0001x for at least one layer
        walked = _points(json.loads((out / "laco_recipe.json").read_text()))
        assert all(p["ppl_ratio_refit"] is not None for p in walked)
        assert walked[-2]["ppl_ratio_refit"] <= 1.0001 < walked[-1]["ppl_ratio_refit"]


def test_the_curve_matches_a_direct_computation(saved, tmp_path):
    from transformers import AutoModelForCausalLM

    from laco_core.assets import read_asset

    out = tmp_path / "out"
    assert main(_auto(saved, "--target-layers", "2", "--out", str(out))) == 0
    curve = json.loads((out / "quality_curve.json").read_text())
    last = curve["points"][-1]
    assert last["layers_removed"] == 2 and last["ppl_ratio_refit"] is not None
    dense = AutoModelForCausalLM.from_pretrained(saved)
    model = AutoModelForCausalLM.from_pretrained(out)
    m = reference_metrics(model, dense, tiny_tokenizer(), read_asset("valid_paragraphs"), 512)
    assert m["ppl"] / m["ref_ppl"] == pytest.approx(last["ppl_ratio_refit"], rel=1e-4)
    assert m["ref_ppl"] == pytest.approx(curve["dense_ppl"], rel=1e-4)
    card = (out / "README.md").read_text()
    assert "Validation perplexity (valid_paragraphs" in card
    assert f"{last['ppl_ratio_refit']:.2f}x the base model's" in card
    assert ("WARNING" in card) == (last["ppl_ratio_refit"] > CLIFF)


def test_knee_and_cliff():
    def curve(ratios):
        pts = [CurvePoint(i + 1, [], 0, 0, r, 0.0) for i, r in enumerate(ratios)]
        return QualityCurve("v", 10.0, pts)

    assert curve([1.05, 1.1, 1.16, 1.25, 2.5, 6.0]).knee() == 4
    assert curve([1.1, 1.21, 1.331]).knee() is None  # a straight line on a log scale
    assert curve([1.1]).knee() is None
    assert cliff_line(CLIFF) is None and cliff_line(2.0) is None
    line = cliff_line(3.4)
    assert line.startswith("WARNING") and "3.40x" in line and "\n" not in line
    assert math.isnan(QualityCurve("v", math.nan).dense_ppl)
