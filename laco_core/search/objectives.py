"""Scores of a candidate against the dense model; every objective is "higher is better", ≈ (0, 1].

Keeping every score in (0, 1] lets one threshold T and one "damage" 1 − score serve all of
them. An objective is scored chunk by chunk (``stat``), so the search can stop scoring a
candidate as soon as its decision is certain (``early``: bounds that hold whatever the
unscored chunks contain) and the preview can show it as a damage estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from transformers import PreTrainedModel

from ..analysis.activations import ActivationCache, Chunk, linear_head, logits_of, tell
from ..analysis.metrics import (
    Moments,
    flat_cosine,
    kl_from_moments,
    kl_sum,
    log_probs,
    moments,
    next_token_nll,
)
from ..arch.adapters import get_layers
from ..errors import LacoError
from ..params import ParamDef, validate


@dataclass
class Partial:
    """Sums of an objective over the chunks scored so far."""

    total: float = 0.0
    count: int = 0  # prompts (cosine) or tokens (kl, ppl)
    prompts: int = 0

    def add(self, total: float, count: int, prompts: int) -> None:
        self.total += total
        self.count += count
        self.prompts += prompts


class Objective:
    """How a candidate's final states (one tensor per chunk) compare with the dense model's."""

    name: ClassVar[str]
    summary: ClassVar[str]
    label: ClassVar[str]  # what the score column holds, for tables ("exp(−KL)")
    params: ClassVar[tuple[ParamDef, ...]] = ()  # settings its constructor accepts

    def configured(self, settings: dict | None) -> Objective:
        """This objective with ``settings`` (checked against ``params``; none: itself)."""
        if not settings:
            return self
        return type(self)(**validate(self.params, settings, f"{self.name} objective"))

    def prepare(self, cache: ActivationCache, dense: PreTrainedModel) -> None:
        """Fill the dense caches this objective reads, before workers share them."""

    def stat(
        self, cache: ActivationCache, dense: PreTrainedModel, chunk: Chunk, final: torch.Tensor
    ) -> tuple[float, int]:
        """Sum and count of this objective's quantity over one chunk."""
        raise NotImplementedError

    def expected(self, cache: ActivationCache) -> int:
        """The count a full score sums over (prompts or tokens)."""
        raise NotImplementedError

    def damage(self, total: float, count: int) -> float:
        """A chunk's damage (higher is worse) from its ``stat``: a sum of damages already
        (KL, NLL) unless the objective sums similarities."""
        return total

    def value(self, cache: ActivationCache, partial: Partial, count: int | None = None) -> float:
        """The score from sums, ``count`` being the denominator (default: what was summed)."""
        raise NotImplementedError

    def bounds(self, cache: ActivationCache, partial: Partial) -> tuple[float, float]:
        """The lowest and highest full score still possible after ``partial``, whatever the
        unscored chunks hold (the search stops scoring a candidate once they decide it)."""
        return -math.inf, math.inf

    def early(self, cache: ActivationCache, partial: Partial, threshold: float) -> bool:
        """True when ``score > threshold`` is decided whatever the unscored chunks hold."""
        if partial.count >= self.expected(cache):
            return False
        lower, upper = self.bounds(cache, partial)
        return lower > threshold or upper <= threshold

    def score(
        self, cache: ActivationCache, dense: PreTrainedModel, finals: list[torch.Tensor]
    ) -> float:
        """Score of a candidate whose final states are ``finals`` (one tensor per chunk)."""
        p = Partial()
        for c, h in zip(cache.chunks, finals, strict=True):
            p.add(*self.stat(cache, dense, c, h), len(c.lengths))
        return self.value(cache, p)


class Cosine(Objective):
    """LaCo's criterion (Yang et al. 2024, Alg. 1): mean over prompts of the cosine between the
    flattened (tokens × hidden) final states of the dense and candidate models."""

    name = "cosine"
    summary = "Mean over prompts of the cosine of the final hidden states (LaCo's criterion)."
    label = "cosine"

    def stat(self, cache, dense, chunk, final):
        sims = prompt_cosines(chunk, final)
        return sum(sims), len(sims)

    def expected(self, cache):
        return cache.num_prompts

    def damage(self, total, count):
        return count - total  # one minus each prompt's cosine

    def value(self, cache, partial, count=None):
        return partial.total / (count or partial.count)

    def bounds(self, cache, partial):
        rest, n = cache.num_prompts - partial.count, cache.num_prompts
        # every unscored prompt's cosine lies in [−1, 1]
        return (partial.total - rest) / n, (partial.total + rest) / n


class KL(Objective):
    """exp(−mean KL(p_dense ‖ p_candidate)) over the scored calibration positions.

    Positions: the layers run on every token (attention needs them all), but the LM head only
    scores every ``stride``-th position of each chunk (0, s, 2s, …), the same ones for the
    dense model and every candidate. ``auto`` takes ``head_stride`` of the dense model: one
    position per head-cost's worth of layer cost, so the head (262k × 640 per position on
    Gemma 3) costs about what the layers cost; 1 where the head is the smaller share
    (SmolLM2), which is every position and the exact mean.

    Two exact forms of the same number on those positions (equal up to float rounding;
    ``form``):

    - ``moments`` (the default): per position the dense model keeps Σ p log p and its
      expected output embedding Wᵀp (``metrics.Moments``, hidden-size floats instead of a
      vocabulary row), and a candidate costs its LM head's log-normalizer, streamed over
      vocabulary slices. Used whenever the candidate's logits are the dense model's head
      applied to its final state (``activations.linear_head``, same tensor); otherwise the
      ``logp`` form.
    - ``logp``: the dense model's full log-probabilities are cached per chunk (4 bytes × the
      vocabulary per token) and a candidate's log-softmax is compared with them: the
      reference the tests and the bench check the ``moments`` form against.

    Args:
        form: ``moments`` or ``logp``.
        stride: Score every ``stride``-th position (1: all of them), or ``auto``.
    """

    name = "kl"
    summary = "exp(−mean KL) of next-token distributions against the dense model."
    label = "exp(−KL)"
    FORMS = ("moments", "logp")
    params = (
        ParamDef("form", "choice", "moments", choices=FORMS, help="How the KL is computed."),
        ParamDef(
            "stride",
            "auto_float",
            "auto",
            low=1,
            help="LM-head positions: every s-th one (1: all; auto: the head-to-layers cost ratio).",
        ),
    )

    def __init__(self, form: str = "moments", stride: int | str = "auto"):
        got = validate(self.params, {"form": form, "stride": stride}, "kl objective")
        if got["stride"] != "auto" and not float(got["stride"]).is_integer():
            raise LacoError(f"kl objective: stride must be a whole number or auto, not {stride!r}.")
        self.form = got["form"]
        self.stride = got["stride"] if got["stride"] == "auto" else int(got["stride"])

    def stride_for(self, cache: ActivationCache) -> int:
        """The stride this objective scores ``cache``'s chunks at."""
        return head_stride(cache.model) if self.stride == "auto" else self.stride

    def prepare(self, cache, dense):
        stride = self.stride_for(cache)
        for k, c in enumerate(cache.chunks):
            if _by_moments(self.form, cache, dense):
                dense_moments(cache, c, stride)
            else:
                cache.dense_logp(c)
            tell(k + 1, len(cache.chunks))

    def stat(self, cache, dense, chunk, final):
        return chunk_kl(cache, dense, chunk, final, self.form, self.stride_for(cache))

    def expected(self, cache):
        stride = self.stride_for(cache)
        return sum(-(-sum(c.lengths) // stride) for c in cache.chunks)  # ⌈T / s⌉ per chunk

    def value(self, cache, partial, count=None):
        return math.exp(-partial.total / (count or partial.count))

    def bounds(self, cache, partial):
        # KL ≥ 0 on every unscored position: the score can only fall
        return 0.0, math.exp(-partial.total / self.expected(cache))


class Perplexity(Objective):
    """ppl_dense / ppl_candidate on the calibration prompts (can exceed 1)."""

    name = "ppl"
    summary = "Dense perplexity ÷ candidate perplexity on the calibration prompts."
    label = "ppl ratio"

    def prepare(self, cache, dense):
        if cache.dense_nll is None:
            p = Partial()
            for k, c in enumerate(cache.chunks):  # one scalar is kept, not the (T, V) log-probs
                logp = log_probs(logits_of(cache.model, c.final))
                p.add(*next_token_nll(logp, c.input_ids, c.next_valid), 0)
                tell(k + 1, len(cache.chunks))
            cache.dense_nll = p.total / p.count if p.count else 0.0

    def stat(self, cache, dense, chunk, final):
        return next_token_nll(log_probs(logits_of(dense, final)), chunk.input_ids, chunk.next_valid)

    def expected(self, cache):
        return sum(int(c.next_valid.sum()) for c in cache.chunks)

    def value(self, cache, partial, count=None):
        n = count or partial.count
        return math.exp(cache.dense_nll - (partial.total / n if n else 0.0))

    def bounds(self, cache, partial):
        # a token's NLL is ≥ 0: the candidate's mean NLL is at least what is summed so far
        return 0.0, math.exp(cache.dense_nll - partial.total / max(self.expected(cache), 1))


def prompt_cosines(chunk: Chunk, final: torch.Tensor) -> list[float]:
    """cos(flatten(h_dense), flatten(h_cand)) of each prompt of a chunk, over its own tokens."""
    dense, cand = chunk.final[0], final[0]  # (T, H)
    return [flat_cosine(dense[s], cand[s]) for s in chunk.segments()]


def head_stride(model: PreTrainedModel) -> int:
    """Positions per LM-head evaluation that make the head cost about what the layers do.

    Per position the head multiplies V × H weights and the decoder layers about as many as
    they hold parameters, so s = max(1, round(V·H / Σ layer parameters)): 1 on SmolLM2-135M
    (28M head vs 106M in layers), 2 on Gemma 3 270M (168M vs 100M). A ratio of the model's
    own sizes: nothing is tuned on a checkpoint.
    """
    vocab, hidden = model.get_output_embeddings().weight.shape
    layers = sum(p.numel() for p in get_layers(model).parameters())
    return max(1, round(vocab * hidden / max(layers, 1)))


def dense_moments(cache: ActivationCache, chunk: Chunk, stride: int) -> Moments:
    """The dense model's ``Moments`` at every ``stride``-th position of ``chunk``.

    Kept on the chunk (computed on first use); moments kept at a stride that divides
    ``stride`` are sliced, others are recomputed at the two strides' gcd, which serves both.
    """
    with cache.fill_lock:  # a second filler (a preview during the warm-up) waits for it
        have = chunk.moments
        if have is None or stride % have.stride:
            step = stride if have is None else math.gcd(stride, have.stride)
            chunk.moments = moments(chunk.final[0], *linear_head(cache.model), stride=step)
            cache.grew()
        have = chunk.moments
    return have.every(stride // have.stride)


def _by_moments(form: str, cache: ActivationCache, model: PreTrainedModel) -> bool:
    """True when ``model``'s KL can use the dense moments: the form asks for them and its
    logits are the dense model's linear head (the same tensors) on its final state."""
    if form != "moments":
        return False
    mine, dense = linear_head(model), linear_head(cache.model)
    if mine is None or dense is None:
        return False
    return all(
        (a is None and b is None)
        or (a is not None and b is not None and a.shape == b.shape and a.data_ptr() == b.data_ptr())
        for a, b in zip(mine, dense, strict=True)
    )


@torch.inference_mode()
def chunk_kl(
    cache: ActivationCache,
    model: PreTrainedModel,
    chunk: Chunk,
    final: torch.Tensor,
    form: str = "moments",
    stride: int = 1,
) -> tuple[float, int]:
    """Sum over a chunk's scored positions of KL(p_dense ‖ p_candidate), and their number.

    Args:
        cache: The dense model's activations (its moments or log-probs are filled on use).
        model: The candidate, whose head turns ``final`` into logits.
        chunk: One of ``cache``'s chunks.
        final: The candidate's final states on it.  # (1, T, H)
        form: ``moments`` or ``logp`` (see ``KL``).
        stride: Score positions 0, stride, 2·stride, … (1: every one).
    """
    h = final[0, ::stride].contiguous()  # (N, H), N = ⌈T / stride⌉
    if _by_moments(form, cache, model):
        kl = kl_from_moments(dense_moments(cache, chunk, stride), h, *linear_head(model))  # (N,)
        return float(kl.sum()), kl.numel()
    ref = cache.dense_logp(chunk)[:, ::stride]  # (1, N, V)
    return kl_sum(ref, log_probs(logits_of(model, h[None])))


__all__ = [
    "KL",
    "Cosine",
    "Objective",
    "Partial",
    "Perplexity",
    "chunk_kl",
    "dense_moments",
    "head_stride",
    "prompt_cosines",
]
