"""Hosted mode (Spaces, or LACO_HOSTED=1): Hub ids and ``default`` only, the same answer
whatever exists on the server, remote code refused, server paths out of messages; and the
Hub token of a push never reaches a log line or a file."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from laco_core.errors import LacoError
from laco_core.loading.limits import Limits
from laco_core.runtime.engine import Engine
from tests.reliability.common import build, load_tiny, save_tiny

ROOT = Path(__file__).resolve().parents[2]
NOT_HUB = (
    "'{spec}' is not a Hub model id: this hosted app loads 'default' or a Hub id like "
    "HuggingFaceTB/SmolLM2-135M-Instruct, never files on the server."
)


@pytest.fixture
def hosted_engine():
    return Engine(memory_budget_gb=1, limits=Limits.current(True))


def test_hosted_limits_are_the_stricter_column(hosted_engine, monkeypatch):
    local = Limits.current(False)
    assert hosted_engine.hosted and hosted_engine.limits.is_hosted
    for what, value, _, env in hosted_engine.limits.table():
        local_value = next(v for w, v, _, e in local.table() if e == env)
        assert value <= local_value, what
    monkeypatch.setenv("SPACE_ID", "someone/laco")
    assert Limits.current().is_hosted
    monkeypatch.setenv("LACO_MAX_PROMPTS", "7")
    assert Limits.current().prompts == 7
    monkeypatch.setenv("LACO_MAX_PROMPTS", "many")
    with pytest.raises(LacoError, match=r"^LACO_MAX_PROMPTS='many' is not a whole number"):
        Limits.current()


def test_server_paths_never_load_and_all_get_one_answer(hosted_engine, files, tmp_path):
    gguf = tmp_path / "real.gguf"
    gguf.write_bytes(b"GGUF")
    specs = [
        str(files.tiny),  # a real model folder
        str(files.afile),  # a file
        str(gguf),  # a .gguf file
        str(tmp_path / "missing"),  # nothing
        "/etc/passwd",
        "~/.cache",
        "../models/x",
        "org/../../etc",
    ]
    for spec in specs:
        with pytest.raises(LacoError) as info:
            hosted_engine.load(spec, "float32", "cpu")
        assert str(info.value) == NOT_HUB.format(spec=spec)
    assert hosted_engine.loaded() == []


def test_a_hub_like_local_folder_reads_as_a_hub_miss(hosted_engine, files, tmp_path, monkeypatch):
    save_tiny(tmp_path / "acme" / "tiny")
    monkeypatch.chdir(tmp_path)  # "acme/tiny" is now also a server folder
    answers = []
    for spec in ("acme/tiny", "acme/nothing-here"):
        with pytest.raises(LacoError) as info:
            hosted_engine.load(spec, "float32", "cpu")
        answers.append(str(info.value).replace(spec, "<spec>"))
    assert answers == ["Cannot load model '<spec>': not found on the Hub."] * 2


def test_hub_models_that_need_remote_code_or_are_too_big(tmp_path):
    """Configs in a Hub cache (offline) stand in for Hub repos: refused before any weights."""
    cache = tmp_path / "hub"
    configs = {
        "acme/custom": {"model_type": "acme_lm", "auto_map": {"AutoConfig": "c.AcmeConfig"}},
        "acme/huge": {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 8192,
            "intermediate_size": 28672,
            "num_hidden_layers": 80,
            "num_attention_heads": 64,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
        },
    }
    for repo, cfg in configs.items():
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0" * 40)
        snap = folder / "snapshots" / ("0" * 40)
        snap.mkdir(parents=True)
        (snap / "config.json").write_text(json.dumps(cfg))
    code = (
        "from laco_core.runtime.engine import Engine\n"
        "from laco_core.errors import LacoError\n"
        "from laco_core.loading.limits import Limits\n"
        "e = Engine(memory_budget_gb=1, limits=Limits.current(True))\n"
        "for spec in ('acme/custom', 'acme/huge'):\n"
        "    try:\n"
        "        e.load(spec, 'float32', 'cpu')\n"
        "    except LacoError as x:\n"
        "        print(x)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(
        "'acme/custom' needs its own Python code (auto_map in its config): remote code is not "
        "run here."
    ), out.stderr[-2000:]
    assert lines[1] == (
        "'acme/huge' has about 70.6 B parameters, over the limit of 2.0 B "
        "(LACO_MAX_MODEL_PARAMS raises it on a self-hosted instance)."
    )


def test_messages_hide_server_paths_when_hosted(monkeypatch):
    from components.common import public_message

    msg = "Cannot write the export to '/tmp/laco-exports-x/1-ab/collapse-3': no space."
    assert public_message(msg) == msg  # self-hosted: the operator's own paths
    monkeypatch.setenv("LACO_HOSTED", "1")
    assert public_message(msg) == "Cannot write the export to '<server path>': no space."
    hub = "Cannot load model 'HuggingFaceTB/SmolLM2-135M': see https://huggingface.co/x/y"
    assert public_message(hub) == hub


@pytest.mark.slow
def test_hosted_default_model_names_no_server_path():
    from laco_core.loading.models import load_model

    lm = load_model("default", "float32", "cpu", hosted=True)
    assert not lm.describe()["source"].startswith("/")


# ---- the Hub token -------------------------------------------------------------------------

FAKE_TOKEN = "hf_LacoFakeToken0123456789abcdefGHIJ"


def _files_since(roots, start: float):
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        for p in root.rglob("*"):
            try:
                if p.is_file() and p.stat().st_mtime >= start and p.stat().st_size < 2**28:
                    yield p
            except OSError:
                continue


def test_the_push_token_never_reaches_a_log_or_a_file(app, files, capfd):
    from gradio_client.exceptions import AppError

    from laco_core.loading.models import cache_root

    client = app.client()
    load_tiny(client, files.tiny)
    did = build(client, "2-4")["id"]
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    start = time.time() - 1
    try:
        with pytest.raises(AppError) as info:  # offline: the upload fails after the export
            client.predict(did, "someone/laco-test", FAKE_TOKEN, True, api_name="/push_to_hub")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert str(info.value).startswith("Push to someone/laco-test failed:")
    assert FAKE_TOKEN not in str(info.value)
    out, err = capfd.readouterr()
    assert records and FAKE_TOKEN not in "\n".join(records)
    assert FAKE_TOKEN not in out + err
    roots = [
        app.engine.exports.root,
        cache_root(),
        files.root,
        Path(tempfile.gettempdir()) / "gradio",
        Path.home() / ".cache" / "huggingface",
        ROOT,
        *Path(tempfile.gettempdir()).glob("laco-*"),  # export folders, wherever a tab made them
    ]
    written = list(_files_since(roots, start))
    assert any(p.name == "laco_recipe.json" for p in written)  # the export was written
    leaks = [p for p in written if FAKE_TOKEN.encode() in p.read_bytes()]
    assert leaks == []
