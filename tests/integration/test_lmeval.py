"""lm-evaluation-harness end to end, offline: our laco_mc task on a tiny model and on the
embedded default model, checked against an independent log-likelihood scorer of our own."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval", reason="the eval extra (lm-eval) is not installed")

from laco_core.arch.tiny import tiny_model, tiny_tokenizer  # noqa: E402
from laco_core.cli import main  # noqa: E402
from laco_core.errors import LacoError  # noqa: E402
from laco_core.exchange.lmeval import BUNDLED_TASKS, run_tasks  # noqa: E402

TASK_FILE = BUNDLED_TASKS / "laco_mc.jsonl"


def read_items(limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in TASK_FILE.read_text(encoding="utf-8").splitlines()]
    return rows[:limit] if limit else rows


@torch.no_grad()
def direct_accuracy(model, tokenizer, items: list[dict]) -> tuple[float, float]:
    """Accuracy and length-normalised accuracy by scoring every choice ourselves.

    For each choice, the log-likelihood is the sum of log p(token | everything before it)
    over the continuation's tokens, where the continuation is " " + choice after the prompt
    "Question: ...\\nAnswer:" (the task YAML's template). acc takes the argmax of those sums;
    acc_norm divides each by the choice's length in characters first (lm-eval 0.4.13's
    acc_norm; acc_bytes would divide by UTF-8 bytes, the same for our ASCII choices).
    One unpadded forward per choice, independent of the harness's batching and caching.
    """
    hits = hits_norm = 0
    for item in items:
        context = f"Question: {item['question']}\nAnswer:"
        lls = []
        for choice in item["choices"]:
            ctx_ids = tokenizer(context).input_ids
            ids = tokenizer(context + " " + choice).input_ids
            assert ids[: len(ctx_ids)] == ctx_ids, "the prompt must tokenize the same alone"
            logits = model(torch.tensor([ids]), use_cache=False).logits[0]  # (T, V)
            logp = torch.log_softmax(logits.float(), -1)  # (T, V)
            lls.append(sum(float(logp[t - 1, ids[t]]) for t in range(len(ctx_ids), len(ids))))
        lls = np.array(lls)
        lengths = np.array([float(len(c)) for c in item["choices"]])
        hits += int(np.argmax(lls) == item["answer"])
        hits_norm += int(np.argmax(lls / lengths) == item["answer"])
    return hits / len(items), hits_norm / len(items)


def test_bundled_task_is_ours_and_well_formed():
    items = read_items()
    assert len(items) >= 40
    assert len({i["question"] for i in items}) == len(items)
    for item in items:
        assert 2 <= len(item["choices"]) <= 4
        assert 0 <= item["answer"] < len(item["choices"])
        assert all(c.isascii() for c in item["choices"])
    assert len({i["answer"] for i in items}) > 2  # the right answer is not always first


def test_laco_mc_tiny_matches_direct_loglikelihood(one_thread):
    model, tok = tiny_model("llama", layers=4), tiny_tokenizer()
    calls = []
    out = run_tasks(model, tok, ["laco_mc"], progress=lambda d, t, w: calls.append((d, t, w)))
    json.dumps(out)  # JSON-safe
    m = out["laco_mc"]
    assert m["samples"] == len(read_items())
    acc, acc_norm = direct_accuracy(model, tok, read_items())
    assert m["acc"] == pytest.approx(acc, abs=1e-12)
    assert m["acc_norm"] == pytest.approx(acc_norm, abs=1e-12)
    assert m["acc_stderr"] > 0
    # progress: loading, then every request of the multiple-choice task (one per choice)
    n_requests = sum(len(i["choices"]) for i in read_items())
    assert calls[0] == (0, 1, "loading laco_mc")
    assert calls[-1][:2] == (n_requests, n_requests)
    done = [d for d, t, w in calls if w.startswith("loglikelihood")]
    assert done == sorted(done)


@pytest.mark.slow
def test_laco_mc_default_model_matches_direct_loglikelihood(default_model, one_thread):
    limit = 24
    out = run_tasks(default_model.model, default_model.tokenizer, ["laco_mc"], limit=limit)
    acc, acc_norm = direct_accuracy(default_model.model, default_model.tokenizer, read_items(limit))
    assert out["laco_mc"]["samples"] == limit
    assert out["laco_mc"]["acc"] == pytest.approx(acc, abs=1e-12)
    assert out["laco_mc"]["acc_norm"] == pytest.approx(acc_norm, abs=1e-12)
    assert acc > 0.5  # far above chance (~0.31 for 2-4 choices): the questions are easy


@pytest.mark.parametrize(
    "task, dataset",
    [("piqa", "baber/piqa"), ("wikitext", "EleutherAI/wikitext_document_level")],
)
def test_unreachable_standard_task_is_one_clear_line(task, dataset, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LacoError) as e:
        run_tasks(tiny_model("llama", layers=2), tiny_tokenizer(), [task], limit=2)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"'{dataset}'" in msg and f"'{task}'" in msg and "laco_mc" in msg


def test_unknown_task_and_bad_arguments():
    model, tok = tiny_model("llama", layers=2), tiny_tokenizer()
    with pytest.raises(LacoError, match="Unknown lm-eval task 'no_such_task'"):
        run_tasks(model, tok, ["no_such_task"])
    with pytest.raises(LacoError, match="not a folder"):
        run_tasks(model, tok, ["laco_mc"], include_path="/nonexistent/tasks")
    with pytest.raises(LacoError, match="--limit"):
        run_tasks(model, tok, ["laco_mc"], limit=0)


def test_private_task_folder_with_relative_data_path(tmp_path, monkeypatch, one_thread):
    """A user's include path: relative data_files are read from the YAML's folder, any cwd."""
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    shutil.copy(TASK_FILE, folder / "questions.jsonl")
    yaml = (BUNDLED_TASKS / "laco_mc.yaml").read_text(encoding="utf-8")
    yaml = yaml.replace("task: laco_mc", "task: my_mc").replace("laco_mc.jsonl", "questions.jsonl")
    (folder / "my_mc.yaml").write_text(yaml, encoding="utf-8")
    monkeypatch.chdir(tmp_path.parent)  # not the task folder
    model, tok = tiny_model("llama", layers=2), tiny_tokenizer()
    out = run_tasks(model, tok, ["my_mc"], include_path=str(folder), limit=5)
    assert out["my_mc"]["samples"] == 5
    acc, _ = direct_accuracy(model, tok, read_items(5))
    assert out["my_mc"]["acc"] == pytest.approx(acc)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A saved tiny llama and a collapsed copy of it (two layers fewer)."""
    from laco_core.exchange.export import export_model
    from laco_core.ops import build_collapsed

    root = tmp_path_factory.mktemp("lmeval_cli")
    model, tok = tiny_model("llama", layers=6), tiny_tokenizer()
    export_model(model, tok, root / "dense")
    export_model(build_collapsed(model, [(2, 4)], "drop"), tok, root / "c24")
    return root / "dense", root / "c24"


def test_cli_eval_tasks_table_and_json(tiny_dirs, tmp_path, capsys, one_thread):
    dense, collapsed = tiny_dirs
    out_json = tmp_path / "scores.json"
    argv = ["eval", "--model", str(collapsed), "--reference", str(dense), "--tasks", "laco_mc"]
    argv += ["--limit", "8", "--json", str(out_json), "--dtype", "float32", "--device", "cpu"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("| model | laco_mc acc | laco_mc acc_norm | average | % of dense")
    assert lines[2].startswith(f"| {dense} |") and lines[2].endswith("| 100.0 |")
    assert lines[3].startswith(f"| {collapsed} |")
    n = sum(len(i["choices"]) for i in read_items(8))
    assert f"[{dense}] loglikelihood (laco_mc): {n}/{n}" in captured.err
    data = json.loads(out_json.read_text())
    assert data["tasks"] == ["laco_mc"] and data["limit"] == 8
    assert set(data["results"]) == {str(dense), str(collapsed)}
    assert data["results"][str(dense)]["laco_mc"]["samples"] == 8
    assert data["table"][str(dense)]["% of dense"] == pytest.approx(100.0)


def test_cli_eval_tasks_errors_are_one_line(tiny_dirs, capsys, monkeypatch):
    dense, _ = tiny_dirs
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--model", str(dense), "--tasks", "piqa", "--limit", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("laco: error: Could not download dataset 'baber/piqa'")
    assert main(["eval", "--model", "a", "--model", "b"]) == 2
    assert "only with --tasks" in capsys.readouterr().err
    assert main(["eval", "--tasks", "laco_mc", "--include-path", "/nonexistent"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_existing_perplexity_mode_unchanged(tiny_dirs, capsys):
    dense, _ = tiny_dirs
    assert main(["eval", "--model", str(dense), "--text", __file__, "--seq-len", "64"]) == 0
    assert capsys.readouterr().out.startswith(f"model {dense}: ppl ")
