"""The one metrics kernel: log-probabilities, next-token NLL, KL and top-1 agreement.

Evaluation, the comparison table, the search objectives and the distillation heal all measure
the same few things on logits; they all call these functions, so a convention (float32
log-softmax, which positions count, KL direction) is decided once. Every function takes a
``valid`` mask of the positions that count and returns sums with their counts, so callers
can accumulate over batches and chunks exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _sum_valid(values: torch.Tensor, valid: torch.Tensor | None) -> tuple[float, int]:
    """Sum of ``values`` in float64 where ``valid`` (same shape; None: everywhere), and the
    number of positions summed."""
    if valid is None:
        return float(values.double().sum()), values.numel()
    valid = valid.to(values.device)
    return float(values[valid].double().sum()), int(valid.sum())


def kl_sum(
    ref_logp: torch.Tensor, logp: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[float, int]:
    """Sum over valid positions of KL(p_ref ‖ p), and how many positions counted."""
    return _sum_valid(kl_per_token(ref_logp, logp), valid)  # over (B, T)


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
    return _sum_valid(nll, next_valid)


def token_nll(
    logp: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[float, int]:
    """Sum of −log p(target) over positions given flat: log-probs (N, V), targets (N,), and
    the count; ``valid`` (N,) marks positions that have a target."""
    nll = -logp.gather(-1, target.to(logp.device).unsqueeze(-1)).squeeze(-1)  # (N,)
    return _sum_valid(nll, valid)


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


# Bytes of logits one vocabulary slice may hold: the normalizer and the dense moments stream
# over the vocabulary in slices this size, so no (tokens × vocabulary) tensor is ever held
# (1 MB per token on a 262k-token vocabulary). A memory bound, not a tuned speed constant.
SLICE_BYTES = 64 * 2**20


def _slice_pairs(n: int, vocab: int) -> list[tuple[int, int]]:
    """(offset, size) of the vocabulary slices for ``n`` positions, each ≤ ``SLICE_BYTES``."""
    step = max(1, SLICE_BYTES // (4 * max(n, 1)))
    return [(s, min(step, vocab - s)) for s in range(0, vocab, step)]


def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Float32 logits of positions ``h`` (N, H) against head rows ``weight`` (v, H).  # (N, v)"""
    z = h @ weight.t()
    return (z if bias is None else z + bias).float()


def log_normalizer(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """log Σ_v exp(w_v·h + b_v) of each position, streamed over vocabulary slices.  # (N,)

    Args:
        h: Final states (N, H).
        weight: The LM head's rows (V, H).
        bias: Its bias (V,), if any.
    """
    parts = [
        torch.logsumexp(
            _logits(h, weight[s : s + n], None if bias is None else bias[s : s + n]), -1
        )
        for s, n in _slice_pairs(h.shape[0], weight.shape[0])
    ]
    return torch.logsumexp(torch.stack(parts, -1), -1)


@dataclass
class Moments:
    """What KL(p ‖ q) needs from the reference distributions p, for any q sharing the head.

    With q = softmax(W h + b), KL(p‖q) = Σ p log p − h·(Wᵀp) − p·b + log Σ exp(W h + b):
    per position one scalar and one hidden-size vector (Wᵀp, the reference's expected output
    embedding) replace a vocabulary-size row of log-probabilities.
    """

    neg_entropy: torch.Tensor  # (N,) Σ_v p log p
    embedding: torch.Tensor  # (N, H) Σ_v p_v w_v
    bias: torch.Tensor  # (N,) Σ_v p_v b_v (zeros without a bias)
    stride: int = 1  # taken at positions 0, stride, 2·stride, … of the states given

    def every(self, k: int) -> Moments:
        """These moments at every ``k``-th of their positions (stride × k of the states)."""
        if k == 1:
            return self
        return Moments(self.neg_entropy[::k], self.embedding[::k], self.bias[::k], self.stride * k)

    @property
    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size() for t in (self.neg_entropy, self.embedding, self.bias)
        )


@torch.inference_mode()
def moments(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> Moments:
    """The reference's ``Moments`` at every ``stride``-th of the positions ``h`` (N, H),
    streamed over vocabulary slices."""
    h = h[::stride]  # (⌈N / stride⌉, H)
    lse = log_normalizer(h, weight, bias)  # (N,)
    neg = torch.zeros_like(lse, dtype=torch.float64)
    emb = torch.zeros(h.shape[0], weight.shape[1], dtype=torch.float64)
    pb = torch.zeros_like(neg)
    for s, n in _slice_pairs(h.shape[0], weight.shape[0]):
        b = None if bias is None else bias[s : s + n]
        logp = _logits(h, weight[s : s + n], b) - lse[:, None]  # (N, n)
        p = logp.exp()
        neg += (p * logp).sum(-1).double()
        emb += (p @ weight[s : s + n].float()).double()
        if b is not None:
            pb += (p @ b.float()).double()
    return Moments(neg.float(), emb.float(), pb.float(), stride)


@torch.inference_mode()
def kl_from_moments(
    ref: Moments, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(p_ref ‖ softmax(W h + b)) of each position, from the reference's moments.  # (N,)"""
    dot = (h.double() * ref.embedding.double()).sum(-1)  # (N,)
    lse = log_normalizer(h, weight, bias).double()
    return (ref.neg_entropy.double() - dot - ref.bias.double() + lse).clamp_min(0.0)
