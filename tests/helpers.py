"""Helpers shared by test modules (fixtures stay in the conftest files)."""

from __future__ import annotations

from pathlib import Path

from laco_core.arch.tiny import tiny_model, tiny_tokenizer


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
