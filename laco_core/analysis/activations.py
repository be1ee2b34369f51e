"""Cached activations of the dense model and suffix forwards from any layer.

Merging top-down never changes the layers below the merge point, so the hidden state that
enters layer ``l`` of a candidate equals the dense model's. We record, in one dense forward,
every layer's input and the keyword arguments the decoder passes to its layers (rotary
position embeddings, causal masks per attention type); a candidate then costs only the
forward of its layers from ``l`` on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from ..arch.adapters import decoder, final_norm, get_layers
from ..arch.tokens import encode_many
from ..errors import LacoError
from .metrics import Moments, log_probs, moments
from .parallel import default_workers, pmap

# type key used for models whose config has no per-layer ``layer_types``
_ALL = "__all__"
# per thread: who hears of each chunk recorded there (``reporting``)
_SINK = threading.local()


@contextmanager
def reporting(progress: Callable[[int, int], None] | None) -> Iterator[None]:
    """Within the block, every activation cache this thread records calls ``progress(chunks
    done, chunks)`` after each chunk (from the worker that ran it). The callback may raise
    (e.g. ``Cancelled``) to stop the recording: nothing is kept of it then."""
    before = getattr(_SINK, "progress", None)
    _SINK.progress = progress
    try:
        yield
    finally:
        _SINK.progress = before


def layer_types(model: PreTrainedModel) -> list[str]:
    """Attention type of each decoder layer (``full_attention``/``sliding_attention``…)."""
    n = len(get_layers(model))
    types = getattr(model.config, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == n:
        return list(types)
    return [_ALL] * n


@dataclass
class Chunk:
    """Calibration prompts packed end to end into one row, without padding.

    Each prompt restarts its position ids at 0; transformers then builds a block-diagonal
    causal mask (per attention type, sliding windows included), so every prompt sees only
    its own tokens and its states equal those of the prompt run alone, up to float rounding.
    """

    input_ids: torch.Tensor  # (1, T) the prompts one after another
    position_ids: torch.Tensor  # (1, T) 0..n−1 within each prompt
    lengths: list[int]  # tokens per prompt
    starts: list[int]  # offset of each prompt in the row
    index: list[int]  # position of each prompt in the prompt list
    inputs: list[torch.Tensor] = field(default_factory=list)  # per layer (1, T, H)
    kwargs: dict[str, dict] = field(default_factory=dict)  # layer type -> layer kwargs
    final: torch.Tensor | None = None  # dense final states after the final norm (1, T, H)
    logp: torch.Tensor | None = None  # dense next-token log-probs (1, T, V), lazily
    moments: Moments | None = None  # what a KL against the dense model needs, lazily

    @property
    def mask(self) -> torch.Tensor:
        """(1, T) bool, True on real tokens: all of them (nothing is padded)."""
        return torch.ones_like(self.input_ids, dtype=torch.bool)

    @property
    def next_valid(self) -> torch.Tensor:
        """(1, T−1) bool: True where position t+1 continues the prompt of position t."""
        ok = torch.ones(1, self.input_ids.shape[1] - 1, dtype=torch.bool)
        for s in self.starts[1:]:
            ok[0, s - 1] = False  # the next token opens another prompt
        return ok

    def segments(self) -> list[slice]:
        """Slices of the row holding each prompt."""
        return [slice(s, s + n) for s, n in zip(self.starts, self.lengths, strict=True)]


def tell(done: int, total: int) -> None:
    """Tell this thread's ``reporting`` callback (if any) that ``done`` of ``total`` chunks
    are through (work on a cache's chunks other than recording it, e.g. filling dense
    log-probs)."""
    heard = getattr(_SINK, "progress", None)
    if heard is not None:
        heard(done, total)


def tokenize(tokenizer, prompts: list[str], batch_size: int = 8) -> list[Chunk]:
    """Tokenize each prompt alone with the tokenizer's defaults, then pack them in chunks.

    Args:
        tokenizer: The model's tokenizer; each prompt starts as it starts a text
            (``tokens.encode``, BOS included when it adds one; no chat template).
        prompts: Calibration prompts, kept in their order.
        batch_size: Prompts per chunk.

    Raises:
        LacoError: when there is no prompt with at least one token.
    """
    ids = list(enumerate(encode_many(tokenizer, list(prompts))))
    ids = [(i, x) for i, x in ids if x]
    if not ids:
        raise LacoError(
            "No calibration prompt produced any token: give at least one non-empty prompt."
        )
    chunks = []
    for start in range(0, len(ids), max(batch_size, 1)):
        rows = ids[start : start + max(batch_size, 1)]
        lengths = [len(r) for _, r in rows]
        starts = [sum(lengths[:k]) for k in range(len(rows))]
        input_ids = torch.tensor([t for _, r in rows for t in r])[None]  # (1, T)
        position_ids = torch.cat([torch.arange(n) for n in lengths])[None]  # (1, T)
        chunks.append(Chunk(input_ids, position_ids, lengths, starts, [i for i, _ in rows]))
    return chunks


def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def record(
    model: PreTrainedModel, chunks: list[Chunk], workers: int = 1
) -> list[tuple[list[torch.Tensor], dict[str, dict], torch.Tensor]]:
    """Run ``model`` once per chunk; per chunk: each layer's input, layer kwargs by type, final state.

    One set of hooks serves every worker: each writes into its own thread's record, and a
    thread that is not recording (another user of the model) passes through untouched.
    """
    layers = get_layers(model)
    types = layer_types(model)
    local = threading.local()
    heard = getattr(_SINK, "progress", None)  # the caller's, called from the workers
    done, count_lock = [0], threading.Lock()

    def hook(i):
        def fn(module, args, kw):
            rec = getattr(local, "rec", None)
            if rec is None:
                return
            inputs, kwargs = rec
            inputs[i] = args[0] if args else kw["hidden_states"]
            if types[i] not in kwargs:
                kw = {k: v for k, v in kw.items() if k != "hidden_states"}
                # replayed forwards never touch a KV cache, under whichever name it is passed
                cache_key = "cache" if "cache" in kw else "past_key_values"
                kw[cache_key] = None
                kw["use_cache"] = False
                kwargs[types[i]] = kw

        return fn

    @torch.inference_mode()
    def one(chunk: Chunk):
        local.rec = ([None] * len(layers), {})
        try:
            final = decoder(model)(
                input_ids=chunk.input_ids.to(model.device),
                position_ids=chunk.position_ids.to(model.device),
                use_cache=False,
            ).last_hidden_state
            out = (*local.rec, final)
        finally:
            local.rec = None
        if heard is not None:
            with count_lock:
                done[0] += 1
                heard(done[0], len(chunks))
        return out

    handles = [
        layer.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)
    ]
    try:
        return pmap(one, chunks, workers)
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def run_layers(
    layers: list[nn.Module], types: list[str], hidden: torch.Tensor, kwargs: dict[str, dict]
) -> torch.Tensor:
    """Apply decoder layers in order, each with the kwargs recorded for its attention type."""
    for layer, t in zip(layers, types, strict=True):
        if t not in kwargs:
            raise RuntimeError(f"no recorded kwargs for layer type {t!r}")
        hidden = _first_tensor(layer(hidden, **kwargs[t]))
    return hidden


def suffix_final(
    model: PreTrainedModel, start: int, hidden: torch.Tensor, kwargs: dict[str, dict]
) -> torch.Tensor:
    """Final state (after the final norm) of ``model`` fed ``hidden`` at the input of layer ``start``."""
    layers = list(get_layers(model))[start:]
    h = run_layers(layers, layer_types(model)[start:], hidden, kwargs)
    with torch.inference_mode():
        return final_norm(model)(h)


@torch.inference_mode()
def logits_of(model: PreTrainedModel, final: torch.Tensor) -> torch.Tensor:
    """LM-head logits from final states, with the architecture's logit soft-capping if any."""
    logits = model.get_output_embeddings()(final)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


def linear_head(model: PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The LM head's (weight (V, H), bias) when logits are exactly ``W h + b``; None when the
    head is not one linear map or the logits are soft-capped (then only full log-probs do)."""
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or getattr(model.config, "final_logit_softcapping", None):
        return None
    return head.weight, head.bias


class ActivationCache:
    """Per-layer inputs and final states of a dense model on calibration prompts.

    Computed once per (model, prompts); the app keeps one per base model for the live
    preview, and every search builds one.

    Args:
        model: The dense (original) model.
        tokenizer: Its tokenizer.
        prompts: Calibration prompts, each scored on its own.
        batch_size: Prompts packed per chunk.
        workers: Chunks run side by side, one CPU thread each (None: one per torch thread).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        prompts: list[str],
        batch_size: int = 4,
        workers: int | None = None,
    ):
        self.model = model
        self.prompts = list(prompts)
        self.chunks = tokenize(tokenizer, self.prompts, batch_size)
        self.workers = default_workers(model) if workers is None else workers
        for c, (ins, kw, final) in zip(
            self.chunks, record(model, self.chunks, self.workers), strict=True
        ):
            c.inputs, c.kwargs, c.final = ins, kw, final
        self.dense_nll: float | None = None  # filled by the ppl objective
        # held while dense log-probs or moments are filled: a second user (a preview asked
        # while the app's warm-up fills them) waits for them instead of computing them twice
        self.fill_lock = threading.Lock()
        # told after the cache grows (dense log-probs or moments kept): the engine's memory
        # budget counts the bytes then, not only when the cache was made
        self.on_grow: Callable[[], None] | None = None

    def grew(self) -> None:
        """Tell ``on_grow`` (if any) that this cache now holds more bytes."""
        if self.on_grow is not None:
            self.on_grow()

    @property
    def num_prompts(self) -> int:
        return sum(len(c.lengths) for c in self.chunks)

    @property
    def num_tokens(self) -> int:
        return sum(sum(c.lengths) for c in self.chunks)

    @property
    def nbytes(self) -> int:
        """Memory held now: every recorded layer input, final state, dense log-probs and
        moments (the last two grow after the cache is built: read it again, not once)."""
        total = 0
        for c in self.chunks:
            for t in [*c.inputs, c.final, c.logp]:
                if t is not None:
                    total += t.numel() * t.element_size()
            if c.moments is not None:
                total += c.moments.nbytes
        return total

    def dense_logp(self, chunk: Chunk) -> torch.Tensor:
        """Dense next-token log-probabilities (B, T, V), computed on first use."""
        with self.fill_lock:
            if chunk.logp is None:
                chunk.logp = log_probs(logits_of(self.model, chunk.final))
                self.grew()
        return chunk.logp

    def dense_moments(self, chunk: Chunk) -> Moments:
        """The dense model's next-token ``Moments`` (per token: Σ p log p and Wᵀp), computed on
        first use over vocabulary slices (never a (T, V) tensor).

        Raises:
            ValueError: for a model whose logits are not one linear map (``linear_head``).
        """
        head = linear_head(self.model)
        if head is None:
            raise ValueError("this model's logits are not W h + b: use dense_logp")
        with self.fill_lock:
            if chunk.moments is None:
                chunk.moments = moments(chunk.final[0], *head)
                self.grew()
        return chunk.moments

    def finals(
        self, model: PreTrainedModel, start: int, inputs: list[list[torch.Tensor]] | None = None
    ) -> list[torch.Tensor]:
        """Final states of ``model`` per chunk, running only its layers from ``start``.

        Args:
            model: A model whose layers below ``start`` equal the dense model's (or whose
                layer inputs at ``start`` are given in ``inputs``).
            start: First layer to run.
            inputs: Per chunk, per layer inputs of the model the candidate derives from;
                default: the dense model's.
        """
        ins = [c.inputs if inputs is None else inputs[k] for k, c in enumerate(self.chunks)]
        return pmap(
            lambda k: suffix_final(model, start, ins[k][start], self.chunks[k].kwargs),
            range(len(self.chunks)),
            self.workers,
        )
