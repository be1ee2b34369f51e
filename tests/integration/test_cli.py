"""The ``laco`` CLI through ``laco_core.cli.main`` on tiny saved models, plus one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from laco_core.cli import main
from laco_core.exchange.export import RECIPE_FILE
from tests.helpers import save_tiny

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A 6-layer tiny Llama with a byte tokenizer saved like any Hub model."""
    return str(save_tiny(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> str:
    f = tmp_path_factory.mktemp("text") / "eval.txt"
    f.write_text("A short held-out text about lighthouses and the ships they guide at night. " * 8)
    return str(f)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("laco: error: ")
    return err


def test_collapse_then_eval_and_generate(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "collapsed"
    rc = main(
        [
            "collapse",
            "--model",
            model_dir,
            "--merge",
            "1-2",
            "--merge",
            "3-4",
            "--method",
            "average",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "layers 6 -> 4" in printed and "verified" in printed
    recipe = json.loads((out / RECIPE_FILE).read_text())
    (step,) = recipe["steps"]
    assert step["kind"] == "collapse" and step["method"] == "average"
    assert step["ranges"] == [[1, 2], [3, 4]] == recipe["info"]["plan"]
    assert recipe["base"]["spec"] == model_dir and recipe["info"]["layers_after"] == 4

    metrics = tmp_path / "m.json"
    rc = main(
        [
            "eval",
            "--model",
            str(out),
            "--reference",
            model_dir,
            "--text",
            text_file,
            "--seq-len",
            "32",
            "--json",
            str(metrics),
        ]
    )
    assert rc == 0
    m = json.loads(metrics.read_text())
    assert {
        "ppl",
        "kl",
        "top1_agreement",
        "params",
        "params_ratio",
        "final_cosine",
        "ref_ppl",
    } <= m.keys()
    assert m["ppl"] > 1 and m["kl"] > 0 and 0 < m["params_ratio"] < 1
    assert "top-1 agreement" in capsys.readouterr().out

    rc = main(
        [
            "generate",
            "--model",
            model_dir,
            "--compare",
            model_dir,
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "5",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("tokens/s") == 2 and "identical answers" in printed

    rc = main(
        [
            "generate",
            "--model",
            str(out),
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "4",
            "--sample",
            "--seed",
            "1",
        ]
    )
    assert rc == 0 and "tokens/s" in capsys.readouterr().out


def test_analyze_writes_all_keys(model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text(
        "first prompt about birds\n\nsecond, longer prompt about the weather today\n"
    )
    out = tmp_path / "a.json"
    assert (
        main(["analyze", "--model", model_dir, "--prompts", str(prompts), "--json", str(out)]) == 0
    )
    data = json.loads(out.read_text())
    assert data["num_layers"] == 6 and data["num_prompts"] == 2
    assert len(data["param_similarity"]) == 6 and len(data["param_similarity"][0]) == 6
    assert data["param_similarity"][2][2] == pytest.approx(1.0, abs=1e-5)
    assert {"q_proj", "down_proj", "attention", "mlp", "norms"} <= data[
        "param_similarity_by_module"
    ].keys()
    assert len(data["representation_similarity"]) == 7 and len(data["angular_distance"]) == 7
    assert len(data["block_influence"]) == 6
    assert "least influential" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["collapse", "--merge", "5-3", "--out", "x"], "LO > HI"),
        (["collapse", "--merge", "1-9", "--out", "x"], "outside the model's layers 0-5"),
        (["collapse", "--merge", "1-3", "--merge", "3-4", "--out", "x"], "overlap"),
        (["collapse", "--merge", "abc", "--out", "x"], "LO-HI"),
        (["eval", "--text", "/nonexistent/eval.txt"], "not found"),
        (["eval", "--seq-len", "1"], "--seq-len"),
        (["generate", "--prompt", "hi", "--max-new-tokens", "0"], "max-new-tokens"),
        (["analyze", "--prompts", "/nonexistent/p.txt", "--json", "x.json"], "not found"),
    ],
)
def test_user_errors_exit_2_with_one_line(model_dir, argv, message, capsys):
    argv = [argv[0], "--model", model_dir, *argv[1:]]
    assert main(argv) == 2
    assert message in one_error_line(capsys)


def test_missing_model_is_a_user_error(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nope"), "--text", __file__]) == 2
    one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["generate", "--model", str(tmp_path / "empty"), "--prompt", "x"]) == 2
    assert "config.json" in one_error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["collapse", "--merge", "1-2"],
        ["frobnicate"],
        ["eval", "--seq-len", "ten"],
        ["collapse", "--merge", "1-2", "--method", "eq1", "--out", "x"],
    ],
)
def test_argparse_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    one_error_line(capsys)


def test_console_script_prints_one_line_and_exits_2(model_dir, tmp_path):
    laco = Path(sys.executable).parent / "laco"
    if not laco.exists():
        laco = REPO / ".venv" / "bin" / "laco"
    proc = subprocess.run(
        [
            str(laco),
            "collapse",
            "--model",
            model_dir,
            "--merge",
            "4-2",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err == "laco: error: Range 4-2 has LO > HI.", err
    assert not (tmp_path / "o").exists()
