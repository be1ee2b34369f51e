"""What the engine caches besides models, and how many bytes each holds (measured when
asked: an activation cache grows after it is made)."""

from __future__ import annotations

import numpy as np

from ..analysis.activations import ActivationCache
from ..analysis.similarity import param_similarity, representation_similarity

KEPT = {"analysis": 8, "activations": 4}  # entries of a kind kept at most (others: no cap)


def similarity_arrays(model, tokenizer, prompts: list[str]) -> dict:
    """Parameter and representation similarity of ``model`` as numpy matrices."""
    param = param_similarity(model)
    rep = representation_similarity(model, tokenizer, prompts)
    return {
        "param": {k: _numpy(v) for k, v in param.items()},
        "rep": {
            "cosine": _numpy(rep.cosine),
            "angular": _numpy(rep.angular),
            "block_influence": _numpy(rep.block_influence),
        },
    }


def arrays_bytes(a: dict) -> int:
    """Bytes of a ``similarity_arrays`` result."""
    return sum(x.nbytes for x in [*a["param"].values(), *a["rep"].values()])


def cache_bytes(cache: ActivationCache) -> int:
    """Bytes an activation cache holds now (its dense log-probs and moments included)."""
    return cache.nbytes


def over_cap(keys: list[tuple], kind: str) -> list[tuple]:
    """The oldest keys of ``kind`` beyond its cap in ``KEPT`` (``keys`` oldest first)."""
    same = [k for k in keys if k[0] == kind]
    return same[: max(0, len(same) - KEPT.get(kind, len(same)))]


def _numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()
