"""Helpers shared by test modules (fixtures stay in the conftest files)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.presets import best_collapse
from laco_core.search.config import SearchConfig


def save_tiny(
    folder: str | Path,
    arch: str = "llama",
    layers: int = 6,
    marker: str | None = None,
    **overrides,
) -> Path:
    """A tiny random model of ``arch`` with the byte tokenizer, saved like any Hub model.

    Args:
        folder: Where to save it (created if missing).
        arch: One of ``laco_core.arch.tiny.ARCHITECTURES``.
        layers: Decoder layers.
        marker: A special token added to the tokenizer, so a test can tell which base's
            tokenizer an export carries.
        **overrides: Config fields over the tiny defaults (``hidden_size=256``, ...).

    Returns:
        The folder.
    """
    tiny_model(arch, layers=layers, **overrides).save_pretrained(folder)
    tok = tiny_tokenizer()
    if marker:
        tok.add_special_tokens({"additional_special_tokens": [marker]})
    tok.save_pretrained(folder)
    return Path(folder)


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    """Every parameter of ``a`` equals ``b``'s bit for bit, in order (its name on failure)."""
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def compare_args(
    did: str | None,
    prompt: str = "hi",
    new: int = 8,
    sample: bool = False,
    temp: float = 0.7,
    top_p: float = 0.9,
    top_k: int = 50,
    rep: float = 1.0,
) -> tuple:
    """The ``/compare`` endpoint's inputs in order (seed 0, chat template on)."""
    return (did, prompt, new, sample, temp, top_p, top_k, 0, True, rep)


def default_search_config(num_layers: int, target: dict, **overrides) -> SearchConfig:
    """The default pipeline's search (``best_collapse(**target)``) without its refit or quality
    budget: the plain greedy walk of layer drops scored by KL, with ``overrides`` on top."""
    step = best_collapse(**target)[0]
    fields = {**step.config.__dict__, "refit": None, "max_ppl_ratio": None, "max_kl": None}
    return SearchConfig(**{**fields, **overrides}).validate(num_layers)
