"""Fixtures of the reliability tier: tiny models and bad files on disk, the real app served on
127.0.0.1 over tiny models (the default model is not preloaded), gradio_client sessions."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from laco_core.loading.limits import Limits  # noqa: E402
from laco_core.runtime.engine import Engine  # noqa: E402
from tests.reliability.common import APP_LIMITS, PROMPTS, TEXT, save_tiny  # noqa: E402


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> SimpleNamespace:
    """Good and bad inputs on disk, made once per test session."""
    w = tmp_path_factory.mktemp("reliability")
    tiny = save_tiny(w / "tiny")
    other = save_tiny(w / "other", "qwen2", layers=4, marker="<base_b>")
    corrupt = w / "corrupt"
    shutil.copytree(tiny, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"garbage" * 10)
    trunc = w / "trunc"
    shutil.copytree(tiny, trunc)
    data = (tiny / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    remote = w / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(
        json.dumps(
            {
                "model_type": "laco_custom",
                "auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"},
            }
        )
    )
    badcfg = w / "badcfg"
    shutil.copytree(tiny, badcfg)
    (badcfg / "config.json").write_text("{not json")
    (w / "garbage.gguf").write_bytes(b"not a gguf file at all" * 10)
    (w / "v99.gguf").write_bytes(b"GGUF" + struct.pack("<I", 99) + b"\0" * 64)
    (w / "afile").write_text("x")
    (w / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (w / "latin1.txt").write_bytes("café crème brûlée, naïve façade. ".encode("latin-1") * 20)
    (w / "prompts.txt").write_text(PROMPTS + "\n")
    (w / "text.txt").write_text(TEXT + "\n")
    (w / "huge_line.txt").write_text("word " * 210_000 + "\n")  # one 1 MB prompt line
    (w / "empty.txt").write_text("\n\n")
    (w / "noconfig").mkdir()
    (w / "noconfig" / "weights.bin").write_bytes(b"x")
    (w / "outs").mkdir()  # outputs of CLI cases that fail before writing
    (w / "full").mkdir()
    (w / "full" / "keep.txt").write_text("keep me")
    return SimpleNamespace(
        root=w,
        tiny=tiny,
        other=other,
        corrupt=corrupt,
        trunc=trunc,
        remote=remote,
        badcfg=badcfg,
        garbage_gguf=w / "garbage.gguf",
        v99_gguf=w / "v99.gguf",
        afile=w / "afile",
        binary=w / "binary.txt",
        latin1=w / "latin1.txt",
        prompts=w / "prompts.txt",
        text=w / "text.txt",
        huge_line=w / "huge_line.txt",
        empty=w / "empty.txt",
        noconfig=w / "noconfig",
        full=w / "full",
    )


@pytest.fixture(scope="session")
def app(files):
    """The real app (app.build_app + configure, as app.py serves it) over an engine with the
    test limits; yields ``url``, ``engine`` and a ``client()`` factory of fresh sessions."""
    from gradio_client import Client

    from tests.ui.app_server import launch_app

    engine = Engine(memory_budget_gb=4, limits=Limits.current(False).replace(**APP_LIMITS))
    demo, url, engine = launch_app(engine, preload=False)

    def client() -> Client:
        return Client(url, verbose=False)

    yield SimpleNamespace(url=url, engine=engine, client=client, demo=demo)
    demo.close()
