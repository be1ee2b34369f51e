"""Nothing overwritten silently: every command that exports refuses a non-empty --out without
--overwrite and always refuses the source model's folder; a failed export leaves what was
there untouched; the engine's download exports live in its bounded store."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from laco_core.cli import main
from laco_core.exchange import export as export_module
from laco_core.loading.limits import Limits
from laco_core.runtime.engine import Engine
from laco_core.runtime.store import ExportStore
from tests.reliability.common import save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("overwrite") / "model")


COMMANDS = {
    "collapse": lambda m: ["collapse", "--model", m, "--merge", "1-2"],
    "prune": lambda m: ["prune", "--model", m, "--method", "shortgpt", "--ratio", "0.2"],
    "auto": lambda m: [
        "auto",
        "--model",
        m,
        "--strategy",
        "greedy",
        "--objective",
        "kl",
        "--method",
        "drop",
        "--target-layers",
        "1",
        "-C",
        "2",
        "-q",
    ],
    "heal": lambda m: [
        "heal",
        "--model",
        m,
        "--steps",
        "1",
        "--seq-len",
        "16",
        "--batch-size",
        "1",
    ],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_is_never_replaced_silently(command, model, tmp_path, capsys):
    argv = COMMANDS[command](str(model))
    source = digest(model)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("keep me")

    assert main([*argv, "--out", str(full)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"laco: error: '{full}' exists and is not empty; choose another folder or --overwrite."
    )
    assert (full / "keep.txt").read_text() == "keep me"

    assert main([*argv, "--out", str(model), "--overwrite"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"laco: error: '{model}' is the source model's own folder; export somewhere else."
    )
    assert digest(model) == source

    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 0
    first = digest(out)
    assert "laco_recipe.json" in first
    assert main([*argv, "--out", str(out), "--overwrite"]) == 0  # asked for: replaced
    assert set(digest(out)) == set(first)
    assert not list(tmp_path.glob(".*laco-tmp*"))
    capsys.readouterr()


def test_rebuild_refuses_the_recipe_folder(model, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["collapse", "--model", str(model), "--merge", "1-2", "--out", str(out)]) == 0
    before = digest(out)
    assert main(["rebuild", str(out / "laco_recipe.json"), "--out", str(out), "--overwrite"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("is the source model's own folder; export somewhere else.")
    )
    assert digest(out) == before


def test_a_failed_export_leaves_the_old_one(model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "c"
    argv = ["collapse", "--model", str(model), "--merge", "1-2", "--out", str(out)]
    assert main(argv) == 0
    before = digest(out)
    monkeypatch.setattr(export_module, "verify_reload", lambda *a, **k: 1.0)
    assert (
        main(
            ["collapse", "--model", str(model), "--merge", "3-4", "--out", str(out), "--overwrite"]
        )
        == 2
    )
    assert capsys.readouterr().err.strip() == (
        "laco: error: Export check failed: the reloaded model differs from the in-memory model "
        "by 1 in logits (tolerance 0.0001); nothing was written."
    )
    assert digest(out) == before
    assert not list(tmp_path.glob(".*laco-tmp*"))


def test_download_exports_live_in_the_engine_store(model, tmp_path):
    engine = Engine(limits=Limits.current(False), export_dir=tmp_path / "store")
    base = engine.load(str(model), "float32", "cpu")
    did = engine.collapse(base, [(1, 2)], owner="s")
    res, archive = engine.download(did, "s")
    assert res.verified and archive.exists()
    assert engine.exports.entry_of(res.path) == engine.exports.entry_of(archive)
    assert engine.exports.entry_of(res.path).parent == tmp_path / "store"
    other = Engine(limits=Limits.current(False), export_dir=tmp_path / "store")
    with pytest.raises(Exception, match="Unknown model id"):
        other.download(did, "s")


def test_store_removes_old_entries_then_the_oldest_over_the_cap(tmp_path):
    store = ExportStore(ttl_s=3600, max_bytes=2500, root=tmp_path)
    paths = []
    for i in range(4):
        p = store.new(f"m{i}")
        p.mkdir()
        (p / "w.bin").write_bytes(b"x" * 1000)
        paths.append(p)
        time.sleep(0.01)
    store.sweep(keep=paths[-1])  # each new() sweeps too: the oldest went at the fourth
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert store.bytes() <= 2500
    store.ttl_s = 0
    time.sleep(0.01)
    store.sweep()
    assert store.entries() == []
    shutil.rmtree(tmp_path, ignore_errors=True)
