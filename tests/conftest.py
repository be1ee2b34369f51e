"""Shared fixtures: tiny random models of every architecture and the embedded default model."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from laco_core.arch.tiny import ARCHITECTURES, tiny_model, tiny_tokenizer  # noqa: E402


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    """Every supported architecture, one test instance each."""
    return request.param


@pytest.fixture
def tiny(arch):
    """A 6-layer random model of ``arch``."""
    return tiny_model(arch, layers=6)


@pytest.fixture(scope="module")
def tok():
    """The byte-level tokenizer of the tiny models."""
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def llama():
    """A 6-layer random Llama, one per test module."""
    return tiny_model("llama", layers=6)


@pytest.fixture(scope="session")
def default_model():
    """The embedded SmolLM2-135M-Instruct, loaded once per test session (LoadedModel)."""
    from laco_core.loading.models import load_model

    return load_model("default", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def gemma_model():
    """Gemma 3 270M (alias ``gemma3-270m``), loaded once per test session (LoadedModel).

    Its package is installed by ``make test``: when it is missing this errors, it never skips.
    """
    from laco_core.loading.models import load_model

    return load_model("gemma3-270m", dtype="float32", device="cpu")


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run far faster without spin-waiting for a busy second core."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    """``gpu``-marked tests run where CUDA is present and are skipped elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
