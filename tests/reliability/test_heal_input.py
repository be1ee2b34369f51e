"""Bad heal input: one clear line, exit 2, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from laco_core.cli import main
from tests.reliability.common import save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("heal-input") / "tiny", layers=4)


CASES = [
    (["--seconds", "0"], "A heal budget of 0 s cannot train: give seconds above 0."),
    (["--seconds", "-30"], "A heal budget of -30 s cannot train: give seconds above 0."),
    (["--rank", "0"], "heal: rank must be a number in [1, 256], not 0."),
    (["--lr", "0"], "heal: lr must be a number in [1e-08, 1], not 0.0."),
    (["--lr", "3"], "heal: lr must be a number in [1e-08, 1], not 3.0."),
    (["--patience", "0"], "heal: patience must be a number in [1, 1000], not 0."),
    (
        ["--self-text", "8"],
        "--self-text 8 samples text from the dense model, and {m} names none (no recipe): "
        "give --teacher MODEL or --self-text 0.",
    ),
    (
        ["--teacher", "none", "--self-text", "8"],
        "--self-text 8 samples text from the dense model, and {m} names none (no recipe): "
        "give --teacher MODEL or --self-text 0.",
    ),
]


@pytest.mark.parametrize("extra,message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_heal_refuses_bad_input_in_one_line(model, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["heal", "--model", str(model), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "laco: error: " + message.format(m=model)
    assert "Traceback" not in err and not out.exists()


def test_auto_refuses_a_zero_heal_budget(model, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["auto", "--model", str(model), "--target-layers", "1", "--heal-seconds", "0"]
    assert main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "laco: error: A heal budget of 0 s cannot train: give seconds above 0."
    )
    assert not out.exists()
