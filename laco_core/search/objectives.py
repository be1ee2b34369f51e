"""Scores of a candidate against the dense model; every objective is "higher is better", ≈ (0, 1].

- ``cosine``: LaCo's criterion (Yang et al. 2024, Alg. 1): mean over prompts of the cosine
  between the flattened (tokens × hidden) final states of the dense and candidate models.
- ``kl``: exp(−mean KL(p_dense ‖ p_candidate)) over all calibration tokens.
- ``ppl``: ppl_dense / ppl_candidate of next-token prediction on the calibration prompts
  (can exceed 1 when a candidate happens to predict the calibration text better).

Keeping every score in (0, 1] lets one threshold T and one "damage" 1 − score serve all three.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from .activations import ActivationCache, Chunk, logits_of

OBJECTIVES = ("cosine", "kl", "ppl")


def prompt_cosines(chunk: Chunk, final: torch.Tensor) -> list[float]:
    """cos(flatten(h_dense), flatten(h_cand)) of each prompt of a chunk, over its own tokens."""
    dense, cand = chunk.final[0], final[0]  # (T, H)
    return [
        F.cosine_similarity(dense[s].flatten(), cand[s].flatten(), dim=0).item()
        for s in chunk.segments()
    ]


def cosine_score(cache: ActivationCache, finals: list[torch.Tensor]) -> float:
    """Mean over prompts of cos(flatten(h_dense), flatten(h_cand)), each prompt on its own."""
    sims = []
    for c, h in zip(cache.chunks, finals, strict=True):
        sims.extend(prompt_cosines(c, h))
    return sum(sims) / len(sims)


@torch.inference_mode()
def chunk_kl(
    cache: ActivationCache, model: PreTrainedModel, chunk: Chunk, final: torch.Tensor
) -> tuple[float, int]:
    """Sum over a chunk's tokens of KL(p_dense ‖ p_candidate), and the number of tokens."""
    ref = cache.dense_logp(chunk)  # (1, T, V)
    logp = F.log_softmax(logits_of(model, final), dim=-1)  # (1, T, V)
    kl = (ref.exp() * (ref - logp)).sum(-1)  # (1, T)
    return kl.sum().item(), kl.numel()


def kl_value(cache: ActivationCache, model: PreTrainedModel, finals: list[torch.Tensor]) -> float:
    """Mean over all calibration tokens of KL(p_dense ‖ p_candidate) of the next-token distributions."""
    total, count = 0.0, 0
    for c, h in zip(cache.chunks, finals, strict=True):
        s, n = chunk_kl(cache, model, c, h)
        total, count = total + s, count + n
    return total / count


@torch.inference_mode()
def nll_value(
    cache: ActivationCache, model: PreTrainedModel, finals: list[torch.Tensor] | None
) -> float:
    """Mean next-token negative log-likelihood on the prompts (dense when ``finals`` is None)."""
    total, count = 0.0, 0
    for k, c in enumerate(cache.chunks):
        logp = (
            cache.dense_logp(c)
            if finals is None
            else F.log_softmax(logits_of(model, finals[k]), dim=-1)
        )
        target = c.input_ids[:, 1:].to(logp.device)  # (B, T-1)
        valid = c.next_valid.to(logp.device)  # the target must belong to the same prompt
        nll = -logp[:, :-1].gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        total += nll[valid].sum().item()
        count += int(valid.sum())
    if count == 0:
        return 0.0
    return total / count


def score(
    objective: str, cache: ActivationCache, model: PreTrainedModel, finals: list[torch.Tensor]
) -> float:
    """Score of a candidate whose final states are ``finals`` (one tensor per chunk)."""
    if objective == "cosine":
        return cosine_score(cache, finals)
    if objective == "kl":
        return math.exp(-kl_value(cache, model, finals))
    if objective == "ppl":
        if cache.dense_nll is None:
            cache.dense_nll = nll_value(cache, model, None)
        return math.exp(cache.dense_nll - nll_value(cache, model, finals))
    raise ValueError(objective)
