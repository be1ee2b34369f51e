"""Perplexity and agreement with a reference model: KL, top-1 agreement, final-state cosine.

Perplexity follows the LLM-Pruner / LaCo convention: the text is tokenized once and cut into
non-overlapping windows of ``seq_len`` tokens, each scored independently (no context carried
over), and the token-weighted mean negative log-likelihood is exponentiated.

Memory is bounded whatever the text: windows run in batches of at most ``BATCH_TOKENS``
tokens through the decoder alone, and the LM head runs on chunks of at most
``LOGIT_ELEMENTS`` / vocabulary positions, so logits (positions × vocabulary floats, the
largest tensors by far) never exist for a whole batch. A 1024-token window of a 49k-token
vocabulary would otherwise hold several (B, 1024, 49152) float tensors at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from ..arch.adapters import decoder
from ..arch.sharing import count_params
from ..arch.tokens import encode, encode_many, start_ids, windows
from ..errors import Cancelled, LacoError
from .activations import logits_of
from .metrics import (
    cosine_sum,
    kl_per_token,
    kl_sum,
    log_probs,
    token_nll,
    top1_agreement,
)

BATCH_TOKENS = 4096  # tokens per decoder forward (batch × window)
LOGIT_ELEMENTS = 2**23  # positions × vocabulary per LM-head chunk: 32 MiB of float32 logits


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_stop(stop: threading.Event | None) -> None:
    """Raise ``Cancelled`` once ``stop`` is set (checked between evaluation windows)."""
    if stop is not None and stop.is_set():
        raise Cancelled("Stopped.")


def _check_text(text: str) -> None:
    if not text or not text.strip():
        raise LacoError("The evaluation text is empty; give a file with some text in it.")


def _windows(tokenizer, text: str, seq_len: int, max_windows: int | None = None):
    """Non-overlapping windows of ``seq_len`` tokens, each starting as the tokenizer starts a
    text (``tokens.windows``: BOS in front of every window when the tokenizer adds one)."""
    _check_text(text)
    if seq_len < 2 + len(start_ids(tokenizer)):
        raise LacoError(f"seq_len must be at least 2 (got {seq_len}).")
    out = windows(tokenizer, text, seq_len, max_windows)
    if not out or sum(w.numel() - 1 for w in out) < 1:
        raise LacoError("The evaluation text is too short: it needs at least two tokens.")
    return out


def _batches(
    windows: list[torch.Tensor], batch_size: int, pad_id: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded batches ``(input_ids, attention_mask)``, both (B, T)."""
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        t = max(w.numel() for w in chunk)
        ids = torch.full((len(chunk), t), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), t), dtype=torch.long)
        for b, w in enumerate(chunk):
            ids[b, : w.numel()] = w
            mask[b, : w.numel()] = 1
        yield ids, mask


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    return int(pad or 0)


def batch_for(seq_len: int, batch_size: int) -> int:
    """Windows per forward: at most ``batch_size`` and ``BATCH_TOKENS`` tokens in all."""
    return max(1, min(int(batch_size), BATCH_TOKENS // max(int(seq_len), 1)))


def _final_states(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden states after the final norm (B, T, H), without the LM head."""
    dev = _device(model)
    out = decoder(model)(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False)
    return out.last_hidden_state  # (B, T, H)


def _targets(ids: torch.Tensor, mask: torch.Tensor):
    """Flat indices of real positions (N,), each one's next token (N,) and whether it has one."""
    nxt = torch.zeros_like(ids)  # (B, T) token t+1 at position t
    nxt[:, :-1] = ids[:, 1:]
    has_next = torch.zeros_like(mask, dtype=torch.bool)  # (B, T)
    has_next[:, :-1] = mask[:, 1:].bool()
    real = mask.reshape(-1).bool().nonzero().squeeze(1)  # (N,)
    return real, nxt.reshape(-1)[real], has_next.reshape(-1)[real]


def _chunk_len(model: PreTrainedModel) -> int:
    vocab = model.get_output_embeddings().weight.shape[0]
    return max(1, LOGIT_ELEMENTS // vocab)


def _head_logp(model: PreTrainedModel, states: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (n, V) of final states (n, H) through the model's own LM head."""
    head = model.get_output_embeddings().weight
    return log_probs(logits_of(model, states.to(head.device)))


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer,
    text: str,
    seq_len: int = 256,
    batch_size: int = 4,
    max_windows: int | None = None,
    stop: threading.Event | None = None,
) -> float:
    """Perplexity of ``model`` on ``text`` over non-overlapping windows.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer.
        text: The evaluation text.
        seq_len: Window length in tokens (each window is scored without earlier context).
        batch_size: Windows per forward pass (capped so a batch holds ``BATCH_TOKENS``).
        max_windows: Score only the first this many windows (quick checks).
        stop: Set from another thread to cancel between batches (raises ``Cancelled``).

    Returns:
        exp(mean NLL per predicted token); log-probabilities are taken in float32.
    """
    wins = _windows(tokenizer, text, seq_len, max_windows)
    chunk = _chunk_len(model)
    nll, count = 0.0, 0
    for ids, mask in _batches(wins, batch_for(seq_len, batch_size), _pad_id(tokenizer)):
        check_stop(stop)
        h = _final_states(model, ids, mask)  # (B, T, H)
        real, nxt, has_next = _targets(ids, mask)
        flat = h.reshape(-1, h.shape[-1])[real.to(h.device)]  # (N, H)
        for a in range(0, real.numel(), chunk):
            logp = _head_logp(model, flat[a : a + chunk])  # (n, V)
            total, n = token_nll(logp, nxt[a : a + chunk], has_next[a : a + chunk])
            nll, count = nll + total, count + n
    return math.exp(nll / count)


def _inputs(tokenizer, text_or_prompts: str | Sequence[str], seq_len: int, max_windows: int | None):
    """Windows of a text, or one (truncated) sequence per prompt."""
    if isinstance(text_or_prompts, str):
        return _windows(tokenizer, text_or_prompts, seq_len, max_windows)
    prompts = [p for p in text_or_prompts if p and p.strip()]
    if not prompts:
        raise LacoError("No prompts given: provide at least one non-empty prompt.")
    out = [torch.tensor(ids) for ids in encode_many(tokenizer, prompts, seq_len) if ids]
    return out[:max_windows] if max_windows else out


@torch.no_grad()
def reference_metrics(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer,
    text_or_prompts: str | Sequence[str],
    seq_len: int = 256,
    max_windows: int | None = None,
    batch_size: int = 4,
    stop: threading.Event | None = None,
) -> dict:
    """How closely ``model`` follows ``reference`` token by token.

    Args:
        model: The model under test (e.g. a collapsed model).
        reference: The reference (e.g. the dense original); same tokenizer.
        tokenizer: The shared tokenizer.
        text_or_prompts: A text (cut into windows of ``seq_len``) or a list of prompts.
        seq_len: Window length / prompt truncation.
        max_windows: Use at most this many windows or prompts.
        batch_size: Sequences per forward pass (capped so a batch holds ``BATCH_TOKENS``).
        stop: Set from another thread to cancel between batches (raises ``Cancelled``).

    Returns:
        ``kl``: mean KL(reference ‖ model) of next-token distributions in nats per token;
        ``top1_agreement``: fraction of positions where both argmax tokens agree;
        ``final_cosine``: mean per-token cosine of the final hidden states (after the final
        norm), or None when the hidden sizes differ (e.g. a width-pruned model);
        ``tokens``: how many positions were compared;
        ``ppl`` / ``ref_ppl``: perplexity of each model on the same sequences (for a text,
        equal to :func:`perplexity` with the same ``seq_len`` and ``max_windows``).
    """
    seqs = _inputs(tokenizer, text_or_prompts, seq_len, max_windows)
    dev = _device(model)
    chunk = min(_chunk_len(model), _chunk_len(reference))
    kl_total = agree = cos_sum = nll_m = nll_r = 0.0
    count = predicted = 0
    cos_ok = True
    for ids, mask in _batches(seqs, batch_for(seq_len, batch_size), _pad_id(tokenizer)):
        check_stop(stop)
        h_r = _final_states(reference, ids, mask)  # (B, T, H)
        h_m = _final_states(model, ids, mask)  # (B, T, H')
        real, nxt, has_next = _targets(ids, mask)
        f_r = h_r.reshape(-1, h_r.shape[-1])[real.to(h_r.device)]  # (N, H)
        f_m = h_m.reshape(-1, h_m.shape[-1])[real.to(h_m.device)]  # (N, H')
        nxt, has_next = nxt.to(dev), has_next.to(dev)
        for a in range(0, real.numel(), chunk):
            part = slice(a, a + chunk)
            logp_r = _head_logp(reference, f_r[part]).to(dev)  # (n, V)
            logp_m = _head_logp(model, f_m[part])  # (n, V)
            kl_total += kl_sum(logp_r, logp_m)[0]
            agree += top1_agreement(logp_r, logp_m)[0]
            # next-token NLL of both models from the same forwards (perplexity without a rerun)
            m_nll, n_pred = token_nll(logp_m, nxt[part], has_next[part])
            r_nll, _ = token_nll(logp_r, nxt[part], has_next[part])
            nll_m, nll_r, predicted = nll_m + m_nll, nll_r + r_nll, predicted + n_pred
        if f_r.shape[-1] == f_m.shape[-1] and cos_ok:
            cos_sum += cosine_sum(f_r.to(dev), f_m)[0]
        else:
            cos_ok = False
        count += int(real.numel())
    return {
        "kl": kl_total / count,
        "top1_agreement": agree / count,
        "final_cosine": cos_sum / count if cos_ok else None,
        "tokens": count,
        "ppl": math.exp(nll_m / predicted) if predicted else None,
        "ref_ppl": math.exp(nll_r / predicted) if predicted else None,
    }


def quick_metrics(
    model: PreTrainedModel, reference: PreTrainedModel, tokenizer, prompts: Sequence[str]
) -> dict:
    """Fast agreement check on a few calibration prompts (for the app's build button).

    Returns:
        ``kl``, ``top1_agreement``, ``final_cosine`` as in :func:`reference_metrics`, on at
        most 16 prompts truncated to 64 tokens.
    """
    m = reference_metrics(
        model, reference, tokenizer, list(prompts), seq_len=64, max_windows=16, batch_size=16
    )
    return {k: m[k] for k in ("kl", "top1_agreement", "final_cosine")}


def evaluate(
    model: PreTrainedModel,
    tokenizer,
    text: str,
    reference: PreTrainedModel | None = None,
    seq_len: int = 256,
    stop: threading.Event | None = None,
) -> dict:
    """Perplexity and parameter count, plus agreement with ``reference`` when given
    (``stop``: cancels between evaluation windows).

    Returns:
        ``ppl`` and ``params``; with a reference also ``ref_ppl``, ``ref_params``,
        ``params_ratio`` (model ÷ reference), ``kl``, ``top1_agreement``, ``final_cosine``.
    """
    if reference is None:
        ppl = perplexity(model, tokenizer, text, seq_len, stop=stop)
        return {"ppl": ppl, "params": count_params(model)}
    # one pass over the text gives both perplexities and the agreement metrics
    m = reference_metrics(model, reference, tokenizer, text, seq_len, stop=stop)
    params, ref_params = count_params(model), count_params(reference)
    return {
        "ppl": m["ppl"],
        "params": params,
        "ref_ppl": m["ref_ppl"],
        "ref_params": ref_params,
        "params_ratio": params / ref_params,
        "kl": m["kl"],
        "top1_agreement": m["top1_agreement"],
        "final_cosine": m["final_cosine"],
    }


@dataclass
class TokenDivergence:
    """How two models predicted one token of a text.

    Attributes:
        token: The token's text (decoded alone).
        kl: KL(reference ‖ model) in nats of the next-token distributions that predicted this
            token (from the text before it); None for the first token, which nothing predicts.
        ref_prob, model_prob: The probability each model gave this token (None for the first).
        ref_top, model_top: Each model's ``top_k`` guesses for this position, ``(text, prob)``.
    """

    token: str
    kl: float | None
    ref_prob: float | None = None
    model_prob: float | None = None
    ref_top: list[tuple[str, float]] = field(default_factory=list)
    model_top: list[tuple[str, float]] = field(default_factory=list)


@torch.no_grad()
def token_divergence(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer,
    text: str,
    top_k: int = 3,
    max_tokens: int = 256,
) -> list[TokenDivergence]:
    """Per token of ``text``: where ``model`` departs from ``reference`` (one forward each).

    Token t is scored by KL(p_ref(· | <t) ‖ p_model(· | <t)), the divergence of the two
    distributions that predicted it, so a colour on token t shows where the model was misled.

    Args:
        model: The model under test (e.g. a collapsed model).
        reference: The reference (e.g. the dense original); same tokenizer.
        tokenizer: The shared tokenizer.
        text: The text to read (cut to ``max_tokens`` tokens, BOS included when added).
        top_k: Guesses listed per position for each model.
        max_tokens: Upper bound on the tokens read.

    Returns:
        One entry per token of the (cut) text, special tokens included.
    """
    if top_k < 1 or max_tokens < 2:
        raise LacoError("top_k must be ≥ 1 and max_tokens ≥ 2.")
    _check_text(text)
    ids = torch.tensor(encode(tokenizer, text, max_tokens))  # (T,) start ids included
    if ids.numel() < 2:
        raise LacoError("The text is too short: it needs at least two tokens.")
    out_r = reference(input_ids=ids[None].to(_device(reference)), use_cache=False)
    out_m = model(input_ids=ids[None].to(_device(model)), use_cache=False)
    logp_m = log_probs(out_m.logits[0])  # (T, V)
    logp_r = log_probs(out_r.logits[0]).to(logp_m.device)  # (T, V)
    kl = kl_per_token(logp_r[:-1], logp_m[:-1])  # (T-1,): position t-1 predicts token t
    top_r = logp_r[:-1].topk(top_k, dim=-1)
    top_m = logp_m[:-1].topk(top_k, dim=-1)

    def guesses(top, t: int) -> list[tuple[str, float]]:
        return [
            (tokenizer.decode([int(i)]), float(v.exp()))
            for v, i in zip(top.values[t], top.indices[t], strict=True)
        ]

    out = [TokenDivergence(tokenizer.decode([int(ids[0])]), None)]
    for t in range(1, ids.numel()):
        tok = int(ids[t])
        out.append(
            TokenDivergence(
                tokenizer.decode([tok]),
                float(kl[t - 1]),
                float(logp_r[t - 1, tok].exp()),
                float(logp_m[t - 1, tok].exp()),
                guesses(top_r, t - 1),
                guesses(top_m, t - 1),
            )
        )
    return out
