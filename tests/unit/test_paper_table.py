"""The papers' table (accuracy per task, average, % of dense) and task-folder path handling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from laco_core.errors import LacoError
from laco_core.exchange.lmeval import paper_table, resolve_local_files, table_markdown, task_metrics

DENSE = {
    "piqa": {"acc": 0.70, "acc_norm": 0.72, "samples": 10},
    "boolq": {"acc": 0.60, "samples": 10},
    "wikitext": {"word_perplexity": 20.5, "bits_per_byte": 0.8},
}
PRUNED = {
    "piqa": {"acc": 0.56, "acc_norm": 0.60},
    "boolq": {"acc": 0.48},
    "wikitext": {"word_perplexity": 41.0, "bits_per_byte": 1.1},
}


def test_average_and_percent_of_dense():
    df = paper_table({"dense": DENSE, "pruned": PRUNED}, reference="dense")
    assert list(df.index) == ["dense", "pruned"]
    assert df.loc["dense", "piqa acc"] == pytest.approx(70.0)
    assert df.loc["dense", "piqa acc_norm"] == pytest.approx(72.0)
    # the average is over acc of the accuracy tasks; perplexity stays out of it
    assert df.loc["dense", "average"] == pytest.approx(65.0)
    assert df.loc["pruned", "average"] == pytest.approx(52.0)
    assert df.loc["pruned", "% of dense"] == pytest.approx(80.0)  # LaCo's headline form
    assert df.loc["dense", "% of dense"] == pytest.approx(100.0)
    assert df.loc["pruned", "wikitext word_perplexity"] == pytest.approx(41.0)
    assert "boolq acc_norm" not in df.columns


def test_without_reference_and_acc_norm_only_task():
    df = paper_table({"m": {"hellaswag": {"acc_norm": 0.4}}}, reference=None)
    assert df.loc["m", "average"] == pytest.approx(40.0)
    assert "% of dense" not in df.columns
    with pytest.raises(LacoError, match="not among the models"):
        paper_table({"m": DENSE}, reference="dense")


def test_markdown_rendering():
    md = table_markdown(paper_table({"dense": DENSE, "pruned": PRUNED}, "dense"))
    lines = md.strip().splitlines()
    assert lines[0].startswith("| model | piqa acc | piqa acc_norm | boolq acc |")
    assert lines[1].startswith("|---|---:|")
    assert "| pruned | 56.0 | 60.0 | 48.0 | 41.00 | 1.10 | 52.0 | 80.0 |" == lines[3]
    md = table_markdown(paper_table({"a": {"t": {"acc": 0.5}}, "b": {"u": {"acc": 1.0}}}, "a"))
    assert "| b | – | 100.0 |" in md  # a task a model did not run is a dash


def test_task_metrics_json_safe():
    raw = {
        "results": {
            "laco_mc": {
                "alias": "laco_mc",
                "name": "laco_mc",
                "acc,none": 0.5,
                "acc_stderr,none": "N/A",
                "exact_match,strict-match": math.nan,
            }
        },
        "n-samples": {"laco_mc": {"original": 52, "effective": 10}},
    }
    out = task_metrics(raw)
    assert out == {
        "laco_mc": {
            "alias": "laco_mc",
            "acc": 0.5,
            "acc_stderr": None,
            "exact_match,strict-match": None,
            "samples": 10,
        }
    }


def test_relative_data_files_resolve_against_the_yaml(tmp_path):
    (tmp_path / "q.jsonl").write_text("{}\n")
    cfg = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "q.jsonl"}}}
    assert resolve_local_files(cfg, tmp_path)
    assert cfg["dataset_kwargs"]["data_files"]["test"] == str(tmp_path / "q.jsonl")
    assert not resolve_local_files(cfg, tmp_path)  # already absolute
    lst = {"dataset_path": "csv", "dataset_kwargs": {"data_files": ["q.jsonl", "missing.csv"]}}
    assert resolve_local_files(lst, tmp_path)
    assert lst["dataset_kwargs"]["data_files"] == [str(tmp_path / "q.jsonl"), "missing.csv"]
    hub = {"dataset_path": "baber/piqa", "dataset_kwargs": {"data_files": "q.jsonl"}}
    assert not resolve_local_files(hub, tmp_path)
    assert Path(hub["dataset_kwargs"]["data_files"]) == Path("q.jsonl")


# ---- scores with their standard errors ---------------------------------------------------------

MC_DENSE = {"laco_mc": {"acc": 0.5, "acc_stderr": 0.07, "acc_norm": 0.52, "samples": 52}}
MC_SAME = {"laco_mc": {"acc": 0.54, "acc_stderr": 0.069, "acc_norm": 0.5, "samples": 52}}
MC_WORSE = {"laco_mc": {"acc": 0.2, "acc_stderr": 0.055, "samples": 52}}


def test_noise_table_shows_stderr_and_labels_noise():
    from laco_core.exchange.lmeval_table import noise_table, text_table_markdown

    df = noise_table({"dense": MC_DENSE, "a": MC_SAME, "b": MC_WORSE}, "dense")
    assert df.loc["dense", "laco_mc acc"] == "50.0 ± 7.0"
    assert df.loc["a", "laco_mc acc"] == "54.0 ± 6.9"
    # |54 − 50| = 4 < 2·√(6.9² + 7²) ≈ 19.7: within noise, whatever the share says
    assert df.loc["a", "% of dense"] == "108 % (within noise)"
    # |20 − 50| = 30 > 2·√(5.5² + 7²) ≈ 17.8
    assert df.loc["b", "% of dense"] == "40 % (Δ -30.0 ± 8.9, beyond noise)"
    assert df.loc["dense", "% of dense"] == "100 % (dense)" and df.loc["b", "questions"] == "52"
    assert df.loc["b", "laco_mc acc_norm"] == "–"  # a metric a model lacks is a dash
    md = text_table_markdown(df)
    assert "| a | 54.0 ± 6.9 | 50.0 | 54.0 ± 6.9 | 108 % (within noise) | 52 |" in md
    # without a standard error nothing is called noise
    bare = noise_table({"d": {"t": {"acc": 0.5}}, "m": {"t": {"acc": 0.49}}}, "d")
    assert bare.loc["m", "% of dense"] == "98 % (no stderr)" and bare.loc["m", "t acc"] == "49.0"


def test_average_stderr_over_tasks():
    from laco_core.exchange.lmeval_table import average, noise_verdict

    two = {"x": {"acc": 0.5, "acc_stderr": 0.03}, "y": {"acc_norm": 0.7, "acc_norm_stderr": 0.04}}
    mean, se = average(two)
    assert mean == pytest.approx(60.0) and se == pytest.approx(2.5)  # √(3² + 4²) / 2
    assert average({"x": {"acc": 0.5}})[1] is None and average({}) is None
    assert noise_verdict(60, 2.5, 66.9, 2.5) == "within noise"  # 6.9 < 2·3.54
    assert noise_verdict(60, 2.5, 67.1, 2.5) == "beyond noise"
    assert noise_verdict(60, None, 60, 1) is None
