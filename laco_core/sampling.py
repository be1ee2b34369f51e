"""Training text a model writes itself: continuations sampled from it, prompted by the first
words of each paragraph of a text. Used by the heal to distil a model on its own samples
(self-data distillation, arXiv 2410.09982).
"""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedModel

from .arch.tokens import encode
from .errors import LacoError


@torch.no_grad()
def sampled_texts(
    teacher: PreTrainedModel,
    tokenizer,
    seeds: list[str],
    count: int,
    max_new_tokens: int = 160,
    batch_size: int = 16,
    seed: int = 0,
    start: int = 0,
    deadline: float | None = None,
) -> list[str]:
    """Continuations ``start`` to ``count`` sampled from ``teacher`` (temperature 1, top-p 0.95).

    Text the dense model writes itself is in-distribution data for distilling it: it adds
    as many tokens as wanted to a small training text, without any download. Each batch is
    seeded by ``seed`` and its place, so a list cut short by ``deadline`` continues later
    (``start`` = what it holds) with exactly the samples one long run would have drawn.

    Args:
        seeds: Opening words to continue, cycled until ``count`` samples in all.
        max_new_tokens: Length of each continuation; ``batch_size``: samples at once.
        start: Samples already drawn (a multiple of ``batch_size``): not drawn again.
        deadline: A ``time.perf_counter()`` time no batch after the first should end past:
            a batch starts only if it would end by then at the last batch's pace (the first
            always runs, so every call makes progress).
    """
    if not seeds:
        raise LacoError("Sampling training text needs at least one opening to continue.")
    if start % batch_size:
        raise ValueError(f"start={start} is not a multiple of batch_size={batch_size}")
    starts = [seeds[i % len(seeds)] for i in range(count)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(teacher.parameters()).device
    sampling = dict(do_sample=True, temperature=1.0, top_p=0.95, pad_token_id=pad)
    sampling["max_new_tokens"] = max_new_tokens
    out: list[str] = []
    took = 0.0  # the last batch's seconds: the next one is expected to take as long
    for i in range(start, count, batch_size):
        if out and deadline is not None and time.perf_counter() + took > deadline:
            break
        began = time.perf_counter()
        torch.manual_seed(seed * 1_000_003 + i // batch_size)
        rows = [encode(tokenizer, t) for t in starts[i : i + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)  # (B, T)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        gen = teacher.generate(ids, attention_mask=mask, **sampling)  # (B, T + new)
        out += tokenizer.batch_decode(gen, skip_special_tokens=True)
        took = time.perf_counter() - began
    return out


def openings(text: str, words: int = 5) -> list[str]:
    """The first ``words`` words of every paragraph (or line) of ``text``."""
    parts = [p for p in text.split("\n\n") if p.strip()] or text.splitlines()
    return [" ".join(p.split()[:words]) for p in parts if p.split()]


__all__ = ["openings", "sampled_texts"]
