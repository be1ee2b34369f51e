"""Parameter and representation similarity between the decoder layers of a causal LM.

Pure tensor code: models and tokenizers in, tensors / dataclasses / DataFrames out. Every
function runs without autograd (a cosine loop over parameters that require grad keeps every
intermediate alive) and accumulates in fp32 whatever the model's dtype.

Labels (shared with the UI and the CLI): layer ``i`` of a model is ``"L{i}"`` (0-based, the
same indices as a collapse plan ``LO-HI``); a layer of a collapsed model that stands for
original layers ``lo..hi`` is ``"L{lo}-{hi}"``. Representations add ``"emb"`` (the input
embeddings) in front, so row ``i + 1`` of a representation matrix is the output of layer ``i``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..arch.adapters import decoder, final_norm, get_adapter, get_layers, kind_group, module_kind
from ..arch.plan import layer_map
from ..arch.tokens import encode_many
from ..errors import LacoError

GROUPS = ("attention", "mlp", "norms")
ALL = "all"

# Parameter Grams stream (L, c) chunks of the stacked layers. On CPU, c = 32768 columns keeps
# a chunk in cache for its (L x c) @ (c x L) product and each row copy under torch's parallel
# grain (one serial memcpy, no thread sync per row); on CUDA a large chunk keeps the GEMMs
# long, and the byte budget bounds the extra memory for 7B-scale models.
_CPU_CHUNK_COLS = 32768
_CHUNK_BYTES = {"cuda": 512 * 2**20}
# Adjacent cosines walk one slice per layer; on CPU the previous slice must still be in L3.
_ADJ_SLICE = {"cpu": 2**20, "cuda": 2**24}


# ---- labels and frames -------------------------------------------------------------------


def layer_labels(model: nn.Module) -> list[str]:
    """``["L0", "L1", ...]``; a merged layer of a collapsed model reads ``"L16-18"``."""
    return [f"L{lo}" if lo == hi else f"L{lo}-{hi}" for lo, hi in layer_map(model)]


def hidden_labels(model: nn.Module) -> list[str]:
    """Labels of ``[embeddings, output of layer 0, ..., output of layer L-1]``."""
    return ["emb", *layer_labels(model)]


def matrix_frame(matrix: torch.Tensor, labels: Sequence[str]) -> pd.DataFrame:
    """A square matrix as a DataFrame with ``labels`` on both axes (rows = columns)."""
    m = matrix.detach().to("cpu", torch.float64).numpy()
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(labels):
        raise ValueError(f"matrix of shape {tuple(m.shape)} does not match {len(labels)} labels")
    return pd.DataFrame(m, index=list(labels), columns=list(labels))


def vector_frame(vector: torch.Tensor, labels: Sequence[str], name: str) -> pd.DataFrame:
    """A per-layer vector as a two-column DataFrame ``layer, <name>``."""
    v = vector.detach().to("cpu", torch.float64).numpy()
    if v.ndim != 1 or v.shape[0] != len(labels):
        raise ValueError(f"vector of shape {tuple(v.shape)} does not match {len(labels)} labels")
    return pd.DataFrame({"layer": list(labels), name: v})


# ---- parameter similarity ----------------------------------------------------------------


@dataclass
class _Layout:
    """Per-layer parameter names grouped by kind, checked equal across layers."""

    kinds: dict[str, list[str]]  # kind -> parameter names relative to a layer
    groups: dict[str, list[str]]  # group -> kinds
    tensors: list[dict[str, torch.Tensor]]  # per layer: name -> tensor
    device: torch.device


def _layout(model: nn.Module) -> _Layout:
    adapter = get_adapter(model)
    layers = get_layers(model)
    if len(layers) == 0:
        raise LacoError("The model has no decoder layers to compare.")
    tensors = [dict(layer.named_parameters()) for layer in layers]
    first = tensors[0]
    for i, t in enumerate(tensors[1:], start=1):
        if t.keys() != first.keys() or any(t[n].shape != first[n].shape for n in first):
            bad = next((n for n in first if n not in t or t[n].shape != first[n].shape), "?")
            raise LacoError(
                f"Layer {i} differs in shape from layer 0 ({bad}): parameter similarity needs "
                "layers of equal shape; compare an unpruned model."
            )
    kinds: dict[str, list[str]] = {}
    groups: dict[str, list[str]] = {}
    for name in first:
        kind = module_kind(name)
        if kind not in kinds:
            kinds[kind] = []
            groups.setdefault(kind_group(adapter, name), []).append(kind)
        kinds[kind].append(name)
    device = next(iter(first.values())).device
    return _Layout(kinds, groups, tensors, device)


def _chunk_cols(num_layers: int, device: torch.device) -> int:
    if device.type not in _CHUNK_BYTES:
        return _CPU_CHUNK_COLS
    return max(_CPU_CHUNK_COLS, _CHUNK_BYTES[device.type] // (4 * num_layers))


def _stacked_chunks(
    flats: list[torch.Tensor], cols: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> Iterator[torch.Tensor]:
    """Yield ``(L, c)`` slices of the stacked ``(L, n)`` matrix without building it whole."""
    n = flats[0].numel()
    buf = torch.empty(len(flats), min(cols, n), dtype=dtype, device=device)
    for c0 in range(0, n, cols):
        w = min(cols, n - c0)
        x = buf[:, :w]  # (L, w)
        for i, f in enumerate(flats):
            x[i].copy_(f[c0 : c0 + w])  # casts and moves device in the same copy
        yield x


def _gram_native(flats: list[torch.Tensor], cols: int, device: torch.device) -> torch.Tensor | None:
    """On CUDA, bf16/fp16 chunks go straight into a GEMM with fp32 output: products of half
    floats are exact in fp32 and cuBLAS accumulates in fp32, so this equals the fp32 Gram
    while moving half the bytes. None where that kernel does not exist (CPU, old torch)."""
    dtype = flats[0].dtype
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    gram = torch.zeros(len(flats), len(flats), dtype=torch.float32, device=device)
    try:
        for x in _stacked_chunks(flats, cols * 2, device, dtype):
            gram += torch.mm(x, x.T, out_dtype=torch.float32)
    except (RuntimeError, TypeError, NotImplementedError):
        return None
    return gram


def _gram_to_cosine(gram: torch.Tensor) -> torch.Tensor:
    """cos_ij = G_ij / sqrt(G_ii G_jj); two all-zero tensors count as identical (1)."""
    norms = gram.diagonal().clamp_min(0).sqrt()  # (L,)
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, gram / denom.clamp_min(1e-30), torch.zeros_like(gram))
    zero = norms == 0
    cos[zero[:, None] & zero[None, :]] = 1.0
    return cos.clamp_(-1.0, 1.0)


def _combine(per_kind: dict[str, torch.Tensor], layout: _Layout) -> dict[str, torch.Tensor]:
    """Add ``all`` and the group keys as sums of kind statistics."""
    out = {ALL: sum(per_kind.values())}
    for group in (*GROUPS, *sorted(set(layout.groups) - set(GROUPS))):
        if group in layout.groups:
            out[group] = sum(per_kind[k] for k in layout.groups[group])
    out.update(per_kind)
    return out


@torch.no_grad()
def param_grams(model: nn.Module) -> dict[str, torch.Tensor]:
    """Uncentred fp32 Gram matrices ``G = X X^T`` of the layers' flattened parameters.

    Keys: ``all``, ``attention``, ``mlp``, ``norms`` and every module kind. Each kind is read
    once, in chunks of a stacked ``(L, n_kind)`` matrix; group and overall Grams are sums of
    kind Grams, because a dot product over a concatenation is the sum of the parts' dot products.
    """
    layout = _layout(model)
    num = len(layout.tensors)
    cols = _chunk_cols(num, layout.device)
    per_kind: dict[str, torch.Tensor] = {}
    for kind, names in layout.kinds.items():
        gram = torch.zeros(num, num, dtype=torch.float32, device=layout.device)  # (L, L)
        for name in names:
            flats = [t[name].detach().reshape(-1) for t in layout.tensors]
            native = _gram_native(flats, cols, layout.device)
            if native is not None:
                gram += native
                continue
            for x in _stacked_chunks(flats, cols, layout.device):
                gram.addmm_(x, x.T)
        per_kind[kind] = gram
    return _combine(per_kind, layout)


def param_similarity(model: nn.Module) -> dict[str, torch.Tensor]:
    """L×L cosine similarity of layer parameters, overall, per group and per module kind.

    cos(θ_i, θ_j) = <θ_i, θ_j> / (‖θ_i‖ ‖θ_j‖) with θ_i the flattened parameters of layer i
    (for ``all``: every parameter of the layer concatenated). Computed from batched Gram
    products (see ``param_grams``), never a loop over pairs.

    Returns:
        ``{"all", "attention", "mlp", "norms", <kind>...: (L, L) fp32 tensor on the model's
        device}``; kinds are ``adapters.module_kind`` names (``q_proj``, ``input_layernorm``…).
    """
    return {k: _gram_to_cosine(g) for k, g in param_grams(model).items()}


@torch.no_grad()
def adjacent_param_similarity(model: nn.Module) -> dict[str, torch.Tensor]:
    """cos(θ_i, θ_{i+1}) for consecutive layers, with the same keys as ``param_similarity``.

    Near one read of the weights: slices of each tensor are visited layer after layer, so the
    previous layer's slice is still in cache for its dot product with the next one.

    Returns:
        ``{key: (L-1,) fp32 tensor}``.
    """
    layout = _layout(model)
    num = len(layout.tensors)
    cols = _ADJ_SLICE.get(layout.device.type, _ADJ_SLICE["cpu"])
    stats: dict[str, torch.Tensor] = {}  # kind -> (2, L): row 0 squared norms, row 1 dots
    for kind, names in layout.kinds.items():
        acc = torch.zeros(2, num, dtype=torch.float32, device=layout.device)
        for name in names:
            flats = [t[name].detach().reshape(-1) for t in layout.tensors]
            n = flats[0].numel()
            for c0 in range(0, n, cols):
                prev = None
                for i, f in enumerate(flats):
                    x = f[c0 : c0 + cols].to(layout.device, torch.float32)
                    acc[0, i] += torch.dot(x, x)
                    if prev is not None:
                        acc[1, i - 1] += torch.dot(prev, x)
                    prev = x
        stats[kind] = acc
    out = {}
    for key, acc in _combine(stats, layout).items():
        norms = acc[0].clamp_min(0).sqrt()  # (L,)
        denom = norms[:-1] * norms[1:]  # (L-1,)
        cos = torch.where(denom > 0, acc[1, :-1] / denom.clamp_min(1e-30), 0.0)
        cos[(norms[:-1] == 0) & (norms[1:] == 0)] = 1.0
        out[key] = cos.clamp_(-1.0, 1.0)
    return out


# ---- representation similarity -----------------------------------------------------------


@dataclass
class RepresentationSimilarity:
    """Similarity of hidden states ``[emb, layer 0 out, ..., layer L-1 out]`` on real tokens.

    Attributes:
        cosine: (L+1, L+1) mean over tokens of cos(h_a[t], h_b[t]).
        angular: (L+1, L+1) mean over tokens of arccos(cos)/π, the angular distance of
            Gromov et al. 2024 ("The Unreasonable Ineffectiveness of the Deeper Layers", Eq. 7),
            averaged over every token rather than the last one only.
        block_influence: (L,) ShortGPT's BI_i = 1 − E_t cos(h_i[t], h_{i+1}[t]) (Men et al.
            2024, Eq. 2): how much layer i changes its input; small = redundant layer.
        num_tokens: Real (unpadded) tokens averaged over.
        labels: Row/column labels of the matrices (``hidden_labels``).
    """

    cosine: torch.Tensor
    angular: torch.Tensor
    block_influence: torch.Tensor
    num_tokens: int
    labels: list[str] = field(default_factory=list)

    def frames(self) -> dict[str, pd.DataFrame]:
        """``cosine`` and ``angular`` as labelled DataFrames, ``block_influence`` per layer."""
        return {
            "cosine": matrix_frame(self.cosine, self.labels),
            "angular": matrix_frame(self.angular, self.labels),
            "block_influence": vector_frame(
                self.block_influence, self.labels[1:], "block_influence"
            ),
        }


def _pad_batch(
    tokenizer, prompts: Sequence[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(B, T)`` ids and mask; right padding keeps every real token's position
    and its causal context identical to the prompt run alone."""
    enc = encode_many(tokenizer, list(prompts), max_length)
    if any(len(ids) == 0 for ids in enc):
        raise LacoError("A calibration prompt tokenizes to nothing; remove empty prompts.")
    width = max(len(ids) for ids in enc)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(enc), width), pad, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for b, row in enumerate(enc):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, : len(row)] = 1
    return ids, mask


@torch.no_grad()
def hidden_states(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> list[torch.Tensor]:
    """``[emb, layer 0 out, ..., layer L-1 out]``, each (B, T, D), from ONE decoder forward.

    transformers replaces the last entry of ``hidden_states`` by its final-norm output; the raw
    last-layer output is taken instead as the final norm's input, through a temporary hook.
    The LM head is skipped: logits are not needed.
    """
    raw: list[torch.Tensor] = []
    me = threading.get_ident()

    def grab(_module, args, kwargs):
        if threading.get_ident() == me:  # another user's forward of this model passes by
            raw.append(args[0] if args else next(iter(kwargs.values())))

    handle = final_norm(model).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        out = decoder(model)(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
        )
    finally:
        handle.remove()
    states = list(out.hidden_states)
    if len(raw) != 1 or len(states) != len(get_layers(model)) + 1:
        raise RuntimeError(
            "unexpected hidden states: the decoder or its final norm was not run once"
        )
    states[-1] = raw[0]
    return states


@torch.no_grad()
def representation_similarity(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    max_length: int = 128,
    batch_size: int = 16,
) -> RepresentationSimilarity:
    """All-pairs similarity of hidden states on calibration prompts (ONE forward pass).

    Args:
        model: A causal LM (any supported architecture).
        tokenizer: Its tokenizer.
        prompts: Calibration prompts; each is cut to ``max_length`` tokens.
        max_length: Token limit per prompt.
        batch_size: Prompts per forward (bounds the memory used).

    Returns:
        A ``RepresentationSimilarity`` with (L+1)×(L+1) mean per-token cosine and angular
        distance, (L,) Block Influence and the number of real tokens used.
    """
    prompts = [p for p in prompts if p and p.strip()]
    if not prompts:
        raise LacoError("No calibration prompts: give at least one non-empty prompt.")
    device = model.get_input_embeddings().weight.device
    cos_sum = ang_sum = None
    count = 0
    # batches of prompts: peak memory is set by the batch, not by the number of prompts
    for start in range(0, len(prompts), batch_size):
        ids, mask = _pad_batch(tokenizer, prompts[start : start + batch_size], max_length)
        ids, mask = ids.to(device), mask.to(device)
        states = hidden_states(model, ids, mask)
        real = mask.reshape(-1).nonzero().squeeze(1)  # (N,) flat indices of real tokens
        # (N, S, D) unit vectors of every real token at every depth, S = L+1, fp32
        tokens = torch.stack(
            [h.reshape(-1, h.shape[-1]).to(device).index_select(0, real).float() for h in states],
            dim=1,
        )
        del states
        tokens = F.normalize(tokens, dim=-1)
        per_token = torch.bmm(tokens, tokens.transpose(1, 2)).clamp_(-1.0, 1.0)  # (N, S, S)
        per_token.diagonal(dim1=1, dim2=2).fill_(1.0)  # exact: rounding would give acos ≈ 1e-4
        c = per_token.sum(0, dtype=torch.float64)  # (S, S)
        a = per_token.acos_().sum(0, dtype=torch.float64)  # (S, S)
        cos_sum = c if cos_sum is None else cos_sum + c
        ang_sum = a if ang_sum is None else ang_sum + a
        count += int(real.numel())
    cosine = (cos_sum / count).float()  # (S, S)
    angular = (ang_sum / count / math.pi).float()  # (S, S)
    block_influence = 1.0 - cosine.diagonal(offset=1)  # (L,)
    return RepresentationSimilarity(
        cosine=cosine,
        angular=angular,
        block_influence=block_influence.clone(),
        num_tokens=count,
        labels=hidden_labels(model),
    )
