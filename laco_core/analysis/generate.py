"""Streaming generation for one model, or several models side by side with identical decoding.

A hand-written decoding loop (rather than ``model.generate`` with a streamer thread) lets several
models advance token by token in the same loop, each with its own KV cache, so a UI can show
every answer growing at once and time each model's own forward passes separately.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel

from ..errors import LacoError


@dataclass
class DecodeSettings:
    """How to pick each next token; both models of a pair use the same settings.

    Attributes:
        max_new_tokens: Stop after this many generated tokens.
        do_sample: False: greedy (argmax). True: sample with temperature / top-k / top-p.
        temperature: Softmax temperature when sampling.
        top_p: Nucleus threshold when sampling (1.0 disables).
        top_k: Keep the k most likely tokens when sampling (0 disables).
        seed: Seed of each model's own ``torch.Generator`` (same seed → comparable samples).
        chat: Wrap the prompt in the tokenizer's chat template when it has one.
        repetition_penalty: CTRL-style penalty on tokens already in the context (1.0 disables).
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    seed: int = 0
    chat: bool = True
    repetition_penalty: float = 1.0

    def validate(self) -> DecodeSettings:
        """Refuse values no decoder can use, one clear message each."""
        if self.max_new_tokens < 1:
            raise LacoError("max_new_tokens must be at least 1.")
        checks = (
            (self.temperature, 0.0, 10.0, "temperature", False),
            (self.top_p, 0.0, 1.0, "top-p", False),
            (self.repetition_penalty, 1.0, 10.0, "repetition penalty", True),
        )
        for value, lo, hi, name, closed in checks:
            ok = math.isfinite(value) and (lo <= value if closed else lo < value) and value <= hi
            if not ok:
                bracket = "[" if closed else "("
                raise LacoError(f"The {name} must be in {bracket}{lo:g}, {hi:g}], not {value:g}.")
        if self.top_k < 0:
            raise LacoError(f"top-k must be 0 (off) or a positive number, not {self.top_k}.")
        return self


@dataclass
class StreamState:
    """A model's answer so far.

    Attributes:
        text: Decoded generated text (special tokens skipped).
        token_ids: Generated token ids (prompt excluded).
        done: True once EOS or ``max_new_tokens`` was reached.
        tokens_per_s: Generated tokens ÷ ``elapsed_s``.
        first_token_latency_s: Time of the prompt's forward pass and the first token.
        elapsed_s: Time spent in this model's own forward passes and sampling (in a pair, the
            other model's time is not counted, so the two rates are comparable).
    """

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    done: bool = False
    tokens_per_s: float = 0.0
    first_token_latency_s: float | None = None
    elapsed_s: float = 0.0


def build_inputs(tokenizer, prompt: str, chat: bool = True) -> torch.Tensor:
    """Token ids (1, T) of ``prompt``, through the chat template when asked and available."""
    if not prompt or not prompt.strip():
        raise LacoError("The prompt is empty; type something to generate from.")
    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        # the template already contains any BOS it wants
        return tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids  # (1, T)
    return tokenizer(prompt, return_tensors="pt").input_ids  # (1, T)


def eos_ids(model: PreTrainedModel, tokenizer) -> set[int]:
    """Every token id that ends an answer (generation config, model config and tokenizer)."""
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(src, "eos_token_id", None)
        if value is None:
            continue
        ids.update([value] if isinstance(value, int) else value)
    return ids


def first_divergence(ids_a: list[int], ids_b: list[int]) -> int | None:
    """Index of the first generated token where two answers differ; None if identical."""
    for i, (a, b) in enumerate(zip(ids_a, ids_b, strict=False)):
        if a != b:
            return i
    return None if len(ids_a) == len(ids_b) else min(len(ids_a), len(ids_b))


def next_token(
    logits: torch.Tensor,
    context: torch.Tensor,
    settings: DecodeSettings,
    generator: torch.Generator | None,
) -> int:
    """Pick the next token from last-position logits (V,) given the context ids so far (T,)."""
    scores = logits.float().clone()  # (V,)
    if settings.repetition_penalty != 1.0 and context.numel():
        seen = context.unique()
        s = scores[seen]
        scores[seen] = torch.where(
            s > 0, s / settings.repetition_penalty, s * settings.repetition_penalty
        )
    if not settings.do_sample:
        return int(scores.argmax())
    scores = scores / max(settings.temperature, 1e-5)
    if settings.top_k and settings.top_k < scores.numel():
        kth = torch.topk(scores, settings.top_k).values[-1]
        scores[scores < kth] = float("-inf")
    if settings.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cum = torch.softmax(sorted_scores, -1).cumsum(-1)
        # drop a token once the mass before it already reaches top_p (the top token always stays)
        drop = (cum - torch.softmax(sorted_scores, -1)) >= settings.top_p
        scores[order[drop]] = float("-inf")
    probs = torch.softmax(scores, -1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


class _Decoder:
    """One model's incremental decoding state: its KV cache, sampler and timing."""

    def __init__(
        self, model: PreTrainedModel, tokenizer, prompt_ids: torch.Tensor, settings: DecodeSettings
    ):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.device = next(model.parameters()).device
        self.context = prompt_ids[0].cpu()  # (T,)
        self.pending = prompt_ids.to(self.device)  # (1, T) ids not yet fed to the model
        self.cache = DynamicCache(config=model.config)
        # transformers ≥ 5.24 names the KV cache ``cache`` (``past_key_values`` is deprecated)
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.eos = eos_ids(model, tokenizer)
        self.generator = None
        if settings.do_sample:
            self.generator = torch.Generator().manual_seed(int(settings.seed))
        self.state = StreamState()

    @torch.no_grad()
    def step(self) -> StreamState:
        """Feed pending ids, choose one token, update the state."""
        t0 = time.perf_counter()
        out = self.model(input_ids=self.pending, use_cache=True, **{self.cache_arg: self.cache})
        self.cache = getattr(out, self.cache_arg)
        tok = next_token(out.logits[0, -1], self.context, self.settings, self.generator)
        dt = time.perf_counter() - t0
        st = self.state
        st.elapsed_s += dt
        if st.first_token_latency_s is None:
            st.first_token_latency_s = dt
        self.context = torch.cat([self.context, torch.tensor([tok])])
        self.pending = torch.tensor([[tok]], device=self.device)  # (1, 1)
        if tok in self.eos:
            st.done = True
        else:
            st.token_ids.append(tok)
            st.text = self.tokenizer.decode(st.token_ids, skip_special_tokens=True)
        if len(st.token_ids) >= self.settings.max_new_tokens:
            st.done = True
        n = len(st.token_ids) + (1 if tok in self.eos else 0)
        st.tokens_per_s = n / st.elapsed_s if st.elapsed_s > 0 else 0.0
        return st


def _snapshot(st: StreamState) -> StreamState:
    return StreamState(
        st.text,
        list(st.token_ids),
        st.done,
        st.tokens_per_s,
        st.first_token_latency_s,
        st.elapsed_s,
    )


def stream(
    model: PreTrainedModel, tokenizer, prompt: str, settings: DecodeSettings | None = None
) -> Iterator[StreamState]:
    """Generate from one model, yielding the state after every token.

    Yields:
        A fresh StreamState snapshot per generated token; the last one has ``done=True``.
    """
    settings = (settings or DecodeSettings()).validate()
    dec = _Decoder(model, tokenizer, build_inputs(tokenizer, prompt, settings.chat), settings)
    while not dec.state.done:
        yield _snapshot(dec.step())


def stream_many(
    models: Sequence[PreTrainedModel],
    tokenizer,
    prompt: str,
    settings: DecodeSettings | None = None,
) -> Iterator[list[StreamState]]:
    """Generate from several models in one loop, one token each per step, identical decoding.

    Each model has its own KV cache and (when sampling) its own generator seeded with
    ``settings.seed``, so identical models produce identical streams, and each model's
    tokens/s counts only its own forward passes. A model that has finished keeps its final
    state while the others go on. All models share ``tokenizer`` (builds of one base model).

    Yields:
        One snapshot per model, in the order given, after every step.

    Raises:
        LacoError: without any model, or for invalid settings or an empty prompt.
    """
    if not models:
        raise LacoError("Give at least one model to generate from.")
    settings = (settings or DecodeSettings()).validate()
    ids = build_inputs(tokenizer, prompt, settings.chat)
    decs = [_Decoder(m, tokenizer, ids, settings) for m in models]
    while not all(d.state.done for d in decs):
        for d in decs:
            if not d.state.done:
                d.step()
        yield [_snapshot(d.state) for d in decs]


def stream_pair(
    model_a: PreTrainedModel,
    model_b: PreTrainedModel,
    tokenizer,
    prompt: str,
    settings: DecodeSettings | None = None,
) -> Iterator[tuple[StreamState, StreamState]]:
    """:func:`stream_many` of two models, as ``(state_a, state_b)`` pairs."""
    yield from (
        tuple(pair) for pair in stream_many([model_a, model_b], tokenizer, prompt, settings)
    )
