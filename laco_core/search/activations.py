"""Cached activations of the dense model and suffix forwards from any layer.

Merging top-down never changes the layers below the merge point, so the hidden state that
enters layer ``l`` of a candidate equals the dense model's. We record, in one dense forward,
every layer's input and the keyword arguments the decoder passes to its layers (rotary
position embeddings, causal masks per attention type); a candidate then costs only the
forward of its layers from ``l`` on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from ..adapters import decoder, final_norm, get_layers
from ..errors import LacoError

# type key used for models whose config has no per-layer ``layer_types``
_ALL = "__all__"


def layer_types(model: PreTrainedModel) -> list[str]:
    """Attention type of each decoder layer (``full_attention``/``sliding_attention``…)."""
    n = len(get_layers(model))
    types = getattr(model.config, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == n:
        return list(types)
    return [_ALL] * n


@dataclass
class Chunk:
    """One batch of calibration prompts, right-padded.

    Right padding under a causal mask cannot change any real token's state: a real token
    only attends to earlier positions, which are all real. So batching is exact up to float
    rounding of different matmul shapes.
    """

    input_ids: torch.Tensor  # (B, T)
    lengths: list[int]  # real tokens per row
    mask: torch.Tensor  # (B, T) bool, True on real tokens
    inputs: list[torch.Tensor] = field(default_factory=list)  # per layer (B, T, H)
    kwargs: dict[str, dict] = field(default_factory=dict)  # layer type -> layer kwargs
    final: torch.Tensor | None = None  # dense final states after the final norm (B, T, H)
    logp: torch.Tensor | None = None  # dense next-token log-probs (B, T, V), lazily


def tokenize(tokenizer, prompts: list[str], batch_size: int = 8) -> list[Chunk]:
    """Tokenize each prompt alone with the tokenizer's defaults, then pad right in batches.

    Args:
        tokenizer: The model's tokenizer; called as ``tokenizer(prompt)`` (no chat template).
        prompts: Calibration prompts.
        batch_size: Prompts per chunk (sorted by length so padding stays small).

    Raises:
        LacoError: when there is no prompt with at least one token.
    """
    ids = [list(tokenizer(p)["input_ids"]) for p in prompts]
    ids = [x for x in ids if x]
    if not ids:
        raise LacoError(
            "No calibration prompt produced any token: give at least one non-empty prompt."
        )
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    chunks = []
    for start in range(0, len(order), batch_size):
        rows = [ids[i] for i in order[start : start + batch_size]]
        t = max(len(r) for r in rows)
        pad = rows[0][0]  # any valid id: padded positions never reach a real token
        input_ids = torch.full((len(rows), t), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.bool)
        for b, r in enumerate(rows):
            input_ids[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = True
        chunks.append(Chunk(input_ids, [len(r) for r in rows], mask))
    return chunks


def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.inference_mode()
def record(
    model: PreTrainedModel, chunk: Chunk
) -> tuple[list[torch.Tensor], dict[str, dict], torch.Tensor]:
    """Run ``model`` once on a chunk; return each layer's input, layer kwargs by type, final state.

    Raises:
        RuntimeError: when a layer type appears whose kwargs could not be captured.
    """
    layers = get_layers(model)
    types = layer_types(model)
    inputs: list[torch.Tensor | None] = [None] * len(layers)
    kwargs: dict[str, dict] = {}

    def hook(i):
        def fn(module, args, kw):
            inputs[i] = args[0] if args else kw["hidden_states"]
            if types[i] not in kwargs:
                kw = {k: v for k, v in kw.items() if k != "hidden_states"}
                kw["past_key_values"] = None
                kw["use_cache"] = False
                kwargs[types[i]] = kw

        return fn

    handles = [
        layer.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)
    ]
    try:
        final = decoder(model)(
            input_ids=chunk.input_ids.to(model.device), use_cache=False
        ).last_hidden_state
    finally:
        for h in handles:
            h.remove()
    return inputs, kwargs, final


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


class ActivationCache:
    """Per-layer inputs and final states of a dense model on calibration prompts.

    Computed once per (model, prompts); the app keeps one per base model for the live
    preview, and every search builds one.

    Args:
        model: The dense (original) model.
        tokenizer: Its tokenizer.
        prompts: Calibration prompts, each scored on its own.
        batch_size: Prompts per padded chunk.
    """

    def __init__(self, model: PreTrainedModel, tokenizer, prompts: list[str], batch_size: int = 8):
        self.model = model
        self.prompts = list(prompts)
        self.chunks = tokenize(tokenizer, self.prompts, batch_size)
        for c in self.chunks:
            c.inputs, c.kwargs, c.final = record(model, c)
        self.dense_nll: float | None = None  # filled by the ppl objective

    @property
    def num_prompts(self) -> int:
        return sum(len(c.lengths) for c in self.chunks)

    @property
    def num_tokens(self) -> int:
        return sum(sum(c.lengths) for c in self.chunks)

    def dense_logp(self, chunk: Chunk) -> torch.Tensor:
        """Dense next-token log-probabilities (B, T, V), computed on first use."""
        if chunk.logp is None:
            chunk.logp = F.log_softmax(logits_of(self.model, chunk.final), dim=-1)
        return chunk.logp

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
        out = []
        for k, c in enumerate(self.chunks):
            h = (inputs[k] if inputs is not None else c.inputs)[start]
            out.append(suffix_final(model, start, h, c.kwargs))
        return out
