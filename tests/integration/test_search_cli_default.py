"""``laco auto`` end to end on a saved tiny model, and fast == literal on the default model."""

from __future__ import annotations

import json

import pytest
import torch

from laco_core.assets import read_prompts
from laco_core.cli import main
from tests.helpers import save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(save_tiny(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2", layers=8))


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> str:
    f = tmp_path_factory.mktemp("p") / "prompts.txt"
    f.write_text(
        "Short line about rivers.\n\nAnother prompt, with commas; ünïcode too.\nThird.\n",
        encoding="utf-8",
    )
    return str(f)


def test_auto_target_writes_log_and_exports(model_dir, prompt_file, tmp_path, capsys):
    log, out = tmp_path / "log.json", tmp_path / "out"
    argv = [
        "auto",
        "--model",
        model_dir,
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--prompts",
        prompt_file,
    ]
    argv += [
        "--merge-count",
        "3",
        "--target-layers",
        "3",
        "--strategy",
        "greedy",
        "--objective",
        "kl",
    ]
    argv += [
        "--method",
        "rdsc_calibrated",
        "--correct",
        "--lazy",
        "--json",
        str(log),
        "--out",
        str(out),
        "-q",
    ]
    assert main(argv) == 0
    data = json.loads(log.read_text())
    assert {"accepted", "candidates", "plan", "seconds"} <= set(data)
    assert sum(hi - lo for lo, hi in data["plan"]) == 3
    recipe = json.loads((out / "laco_recipe.json").read_text())
    (step,) = recipe["steps"]
    assert step["kind"] == "search" and step["config"]["method"] == "rdsc_calibrated"
    assert all("down_scale" in m["params"] and "alpha" in m["params"] for m in step["merges"])
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 5
    assert "Plan (original indices)" in capsys.readouterr().out


def test_auto_paper_threshold_prints_decisions(model_dir, prompt_file, capsys):
    argv = [
        "auto",
        "--model",
        model_dir,
        "--device",
        "cpu",
        "--prompts",
        prompt_file,
        "-C",
        "3",
        "-T",
        "0.5",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "accept" in out or "reject" in out


def test_auto_early_exit_and_workers_flags_keep_decisions(model_dir, prompt_file, tmp_path):
    logs = {}
    for name, extra in {
        "full": ["--no-early-exit", "--workers", "1"],
        "early": ["--workers", "2"],
    }.items():
        log = tmp_path / f"{name}.json"
        argv = ["auto", "--model", model_dir, "--device", "cpu", "--prompts", prompt_file]
        argv += ["-C", "3", "-T", "0.5", "--batch-size", "1", "--json", str(log), "-q", *extra]
        assert main(argv) == 0
        logs[name] = json.loads(log.read_text())
    full, early = logs["full"]["candidates"], logs["early"]["candidates"]
    assert [(c["lo"], c["hi"], c["accepted"]) for c in full] == [
        (c["lo"], c["hi"], c["accepted"]) for c in early
    ]
    assert not any("prompts_scored" in c for c in full)
    assert logs["full"]["plan"] == logs["early"]["plan"]


def test_auto_max_prompts_calibrates_on_the_first_n(model_dir, prompt_file, tmp_path):
    first = tmp_path / "first.txt"
    first.write_text("\n".join(read_prompts(prompt_file)[:2]) + "\n", encoding="utf-8")
    scores = []
    for prompts, extra in ((prompt_file, ["--max-prompts", "2"]), (str(first), [])):
        log = tmp_path / "log.json"
        argv = ["auto", "--model", model_dir, "--device", "cpu", "--prompts", prompts, "-C", "3"]
        assert main([*argv, "-T", "0.5", "--no-early-exit", "--json", str(log), "-q", *extra]) == 0
        scores.append([c["score"] for c in json.loads(log.read_text())["candidates"]])
    assert scores[0] == scores[1]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompts", "/nonexistent/p.txt"], "not found"),
        (["--method", "nope"], "invalid choice"),
        (["--merge-count", "1"], "merge-count"),
        (["--target-ratio", "1.5"], "target-ratio"),
        (["--workers", "0"], "workers"),
        (["--max-prompts", "0"], "max-prompts"),
    ],
)
def test_auto_user_errors_exit_2(model_dir, extra, message, capsys):
    assert main(["auto", "--model", model_dir, "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.slow
def test_default_model_fast_equals_literal_loop(default_model):
    from laco_core.assets import read_prompts
    from laco_core.ops import reference_search, run_search
    from laco_core.search import SearchConfig

    torch.set_num_threads(2)
    m, tok = default_model.model, default_model.tokenizer
    prompts = read_prompts()[:3]
    # top of the stack only (L=22) keeps the literal loop affordable; on these 3 prompts the
    # scores are 0.70, 0.67, 0.52, 0.71 (accepted at T=0.7), then the loop ends
    cfg = SearchConfig(merge_count=4, low=22, high=30, threshold=0.7)
    fast = run_search(m, tok, prompts, cfg)
    ref = reference_search(m, tok, prompts, cfg)
    assert [(c["lo"], c["hi"], c["accepted"]) for c in fast.candidates] == [
        (c["lo"], c["hi"], c["accepted"]) for c in ref["candidates"]
    ]
    for a, b in zip(fast.candidates, ref["candidates"], strict=True):
        assert abs(a["score"] - b["score"]) < 1e-4
    assert {c["accepted"] for c in fast.candidates} == {True, False}
    print([(c["lo"], c["hi"], round(c["score"], 4), c["accepted"]) for c in fast.candidates])
