"""A slow, literal re-implementation of the official LaCo loop, kept to check the fast one.

It does what the released notebooks do: a deep copy of the current model per candidate,
the merge written into layer l in place, the merged-away layers deleted, and for every
candidate and every sentence the dense and the candidate model both run in full.
"""

from __future__ import annotations

import copy
import time

import torch
from transformers import PreTrainedModel

from ..analysis.metrics import flat_cosine
from ..arch.adapters import get_adapter, get_layers
from ..arch.tokens import encode
from ..errors import LacoError
from .config import SearchConfig
from .strategies.paper import Paper


def literal_merge(
    model: PreTrainedModel, lo: int, extra: int, method=None, **params
) -> PreTrainedModel:
    """Deep-copy ``model`` and merge its layers lo..lo+extra into lo, as the official code does.

    For ``official`` the update is the released code's ``W_lo += W_d − W_lo`` for each
    d in lo+1..lo+extra on every attention/MLP weight (``method`` None or ``official``);
    another ``MergeMethod`` writes its result into layer lo. The merged-away layers are
    deleted.
    """
    extra = min(extra, len(get_layers(model)) - 1 - lo)
    new = copy.deepcopy(model)
    adapter = get_adapter(model)
    src, dst = get_layers(model), get_layers(new)
    with torch.no_grad():
        if method is None or method.name == "official":
            for d in range(lo + 1, lo + 1 + extra):
                d_params = dict(src[d].named_parameters())
                for name, p in dst[lo].named_parameters():
                    if adapter.is_block_param(name):
                        p.data.add_(d_params[name].data - p.data)
        elif extra > 0:
            merged = method.merge(
                [dict(src[i].named_parameters()) for i in range(lo, lo + extra + 1)],
                adapter,
                **params,
            )
            for name, p in dst[lo].named_parameters():
                p.data.copy_(merged[name])
    for d in range(lo + extra, lo, -1):
        del dst[d]
    # bookkeeping the 7B Llama notebooks did not need: masks are chosen per config layer type
    new.config.num_hidden_layers = len(dst)
    types = getattr(new.config, "layer_types", None)
    if isinstance(types, list) and len(types) == len(dst) + extra:
        new.config.layer_types = types[: lo + 1] + types[lo + extra + 1 :]
    return new


@torch.inference_mode()
def literal_similarity(
    dense: PreTrainedModel, cand: PreTrainedModel, tokenizer, prompts: list[str]
) -> float:
    """Mean over sentences of cos(flatten(h_dense), flatten(h_cand)), h = ``hidden_states[-1]``."""
    sims = []
    for p in prompts:
        ids = encode(tokenizer, p)
        if not ids:
            continue
        enc = {"input_ids": torch.tensor([ids])}
        h1 = dense(**enc, output_hidden_states=True, use_cache=False).hidden_states[-1]
        h2 = cand(**enc, output_hidden_states=True, use_cache=False).hidden_states[-1]
        sims.append(flat_cosine(h1, h2))
    return sum(sims) / len(sims)


def reference_search(
    model: PreTrainedModel,
    tokenizer,
    prompts: list[str],
    cfg: SearchConfig | None = None,
    method=None,
) -> dict:
    """Algorithm 1 as the official notebooks run it (cosine objective, fixed threshold).

    Returns:
        ``{"model", "accepted": [(lo, hi, score)], "candidates": [{lo, hi, score, accepted}],
        "seconds"}`` with indices as the loop saw them.

    Raises:
        LacoError: for a target, a non-cosine objective or a non-paper strategy.
    """
    cfg = (cfg or SearchConfig()).validate(len(get_layers(model)))
    if cfg.objective != "cosine" or cfg.strategy != "paper" or cfg.sized or cfg.budget:
        raise LacoError(
            "The reference loop only runs the paper's Algorithm 1 (cosine, fixed threshold)."
        )
    t0 = time.perf_counter()
    c = cfg.merge_count
    high = len(get_layers(model)) if cfg.high is None else cfg.high
    current = copy.deepcopy(model)
    accepted, candidates = [], []
    lay = high - c
    while lay >= cfg.low:
        n = len(get_layers(current))
        hi = min(lay + c - 1, n - 1)
        tmp = literal_merge(current, lay, c - 1, method, **cfg.method_params)
        sim = literal_similarity(model, tmp, tokenizer, prompts)
        ok = sim > cfg.threshold
        candidates.append({"lo": lay, "hi": hi, "score": sim, "accepted": ok})
        if ok:
            accepted.append((lay, hi, sim))
            current = tmp
            lay -= Paper().settings(cfg.strategy_params)["interval"]
            if lay >= len(get_layers(current)):
                lay = len(get_layers(current)) - 1 - c
        else:
            lay -= 1
    return {
        "model": current,
        "accepted": accepted,
        "candidates": candidates,
        "seconds": time.perf_counter() - t0,
    }
