"""Text into token ids the way the model's tokenizer starts a text: the one place that does it.

Gemma, Llama 2/3 and Mistral tokenizers put a BOS token in front of every text and their
models were trained with it; SmolLM2's puts nothing. A model scored on a window that does not
start the way its training sequences started is scored on inputs it never saw (Gemma 3 270M:
dense perplexity 91 instead of 25 on our held-out text). So every sequence the engine feeds a
model (evaluation windows, calibration prompts, activation caches, fits, heal batches,
per-token KL, similarity) is built here: the tokenizer's own start ids, then the text's ids.
"""

from __future__ import annotations

import torch

_PROBE = "The"  # any plain word: only what the tokenizer adds around it matters


def start_ids(tokenizer) -> list[int]:
    """The ids the tokenizer puts in front of every text (``[bos]`` or ``[]``).

    Found by encoding a word with and without special tokens, so it follows the tokenizer's
    own ``add_bos_token`` setting rather than guessing from the architecture.
    """
    cached = getattr(tokenizer, "_laco_start_ids", None)
    if cached is not None:
        return list(cached)
    plain = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(_PROBE)["input_ids"])
    start: list[int] = []
    if plain and len(full) > len(plain):
        i = next(
            (k for k in range(len(full) - len(plain) + 1) if full[k : k + len(plain)] == plain),
            None,
        )
        start = full[:i] if i else []
    try:
        tokenizer._laco_start_ids = tuple(start)
    except AttributeError:  # a tokenizer that refuses new attributes only costs a re-probe
        pass
    return start


def body_ids(tokenizer, text: str) -> list[int]:
    """The text's own ids, without any special token."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """One sequence: the tokenizer's start ids, then the text (cut to ``max_tokens`` in all)."""
    ids = start_ids(tokenizer) + body_ids(tokenizer, text)
    return ids[:max_tokens] if max_tokens else ids


def encode_many(tokenizer, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
    """:func:`encode` of each text; a text with no token of its own gives ``[]``."""
    start = start_ids(tokenizer)
    out = []
    for t in texts:
        body = body_ids(tokenizer, t) if t else []
        ids = start + body if body else []
        out.append(ids[:max_tokens] if max_tokens else ids)
    return out


def windows(
    tokenizer, text: str, seq_len: int, max_windows: int | None = None
) -> list[torch.Tensor]:
    """Non-overlapping windows of at most ``seq_len`` tokens, each opening with the start ids.

    The text is tokenized once without special tokens and cut into pieces of
    ``seq_len − len(start)`` tokens; every window is the start ids followed by one piece, so
    each is a sequence the model could have been trained on. A last window is kept when it has
    at least one token to predict.
    """
    start = start_ids(tokenizer)
    step = seq_len - len(start)
    if step < 1:
        raise ValueError(f"seq_len {seq_len} leaves no room after the start tokens")
    body = body_ids(tokenizer, text)
    head = torch.tensor(start, dtype=torch.long)
    out = []
    for i in range(0, len(body), step):
        w = torch.cat([head, torch.tensor(body[i : i + step], dtype=torch.long)])  # (≤ seq_len,)
        if w.numel() >= 2:
            out.append(w)
        if max_windows and len(out) >= max_windows:
            break
    return out


def with_start(tokenizer, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` (B, T) of body ids with the start ids put in front: (B, len(start) + T)."""
    start = start_ids(tokenizer)
    if not start:
        return rows
    head = torch.tensor(start, dtype=rows.dtype, device=rows.device).expand(rows.shape[0], -1)
    return torch.cat([head, rows], dim=1)
