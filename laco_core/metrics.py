"""The one metrics kernel: log-probabilities, next-token NLL, KL and top-1 agreement.

Evaluation, the comparison table, the search objectives and the distillation heal all measure
the same few things on logits; they all call these functions, so a convention (float32
log-softmax, which positions count, KL direction) is decided once. Every function takes a
``valid`` mask of the positions that count and returns sums with their counts, so callers
can accumulate over batches and chunks exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the vocabulary in float32, whatever the logits' dtype.  # (..., V)"""
    return F.log_softmax(logits.float(), dim=-1)


def kl_per_token(ref_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p) of each position's next-token distribution, in nats.  # (...,)

    Differentiable in ``logp`` (the distillation loss uses it).
    """
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


def kl_sum(
    ref_logp: torch.Tensor, logp: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[float, int]:
    """Sum over valid positions of KL(p_ref ‖ p), and how many positions counted."""
    kl = kl_per_token(ref_logp, logp)  # (B, T)
    if valid is None:
        return float(kl.double().sum()), kl.numel()
    return float(kl[valid].double().sum()), int(valid.sum())


def next_token_nll(
    logp: torch.Tensor, input_ids: torch.Tensor, next_valid: torch.Tensor | None = None
) -> tuple[float, int]:
    """Sum of −log p(token t+1 | ≤ t) over predicted positions, and their count.

    Args:
        logp: Log-probabilities (B, T, V) of every position.
        input_ids: The tokens (B, T).
        next_valid: (B, T−1) True where position t+1 is a real token continuing t's sequence
            (None: all).
    """
    target = input_ids[:, 1:].to(logp.device)  # (B, T-1)
    nll = -logp[:, :-1].gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    if next_valid is None:
        return float(nll.double().sum()), nll.numel()
    next_valid = next_valid.to(logp.device)
    return float(nll[next_valid].double().sum()), int(next_valid.sum())


def token_nll(
    logp: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[float, int]:
    """Sum of −log p(target) over positions given flat: log-probs (N, V), targets (N,), and
    the count; ``valid`` (N,) marks positions that have a target."""
    nll = -logp.gather(-1, target.to(logp.device).unsqueeze(-1)).squeeze(-1)  # (N,)
    if valid is None:
        return float(nll.double().sum()), nll.numel()
    valid = valid.to(logp.device)
    return float(nll[valid].double().sum()), int(valid.sum())


def top1_agreement(
    ref_logp: torch.Tensor, logp: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[int, int]:
    """Positions where both models' most likely next tokens agree, and positions counted."""
    same = ref_logp.argmax(-1) == logp.argmax(-1)  # (B, T)
    if valid is None:
        return int(same.sum()), same.numel()
    return int(same[valid].sum()), int(valid.sum())


def cosine_sum(
    a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[float, int]:
    """Sum over valid positions of cos(a_t, b_t) of hidden states (B, T, H), and the count."""
    cos = F.cosine_similarity(a.float(), b.float(), dim=-1).clamp(-1.0, 1.0)  # (B, T)
    if valid is None:
        return float(cos.double().sum()), cos.numel()
    return float(cos[valid].double().sum()), int(valid.sum())


def flat_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(flatten(a), flatten(b)): LaCo's similarity of two (tokens × hidden) states."""
    return F.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0).item()
