"""Layer-removal baselines that LaCo is compared against.

* ShortGPT (Men et al., 2024, arXiv 2403.03853): remove the ``n`` layers with the lowest Block
  Influence ``BI_i = 1 − E_t cos(h_i, h_{i+1})`` (their Eq. 2), computed once on calibration text.
* Gromov et al. (2024, arXiv 2403.17887): remove the contiguous block of ``n`` layers whose
  input ``h_l`` and output ``h_{l+n}`` have the smallest angular distance ``arccos(cos)/π``
  (their Eq. 7; we average over every token instead of the last one).

Both produce layer indices to drop; :func:`drop_layers` builds the smaller model sharing every
kept tensor with the original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from transformers import PreTrainedModel

from ..arch.adapters import get_layers
from ..arch.plan import Range
from ..arch.sharing import count_params, derive, share_layer
from ..errors import LacoError
from .similarity import representation_similarity


def _check_n(n: int, num_layers: int) -> None:
    if not 1 <= n < num_layers:
        raise LacoError(f"Cannot remove {n} of {num_layers} layers: choose 1..{num_layers - 1}.")


def shortgpt_layers(model: PreTrainedModel, tokenizer, prompts: Sequence[str], n: int) -> list[int]:
    """Indices of the ``n`` layers with the lowest Block Influence (ShortGPT), sorted."""
    _check_n(n, len(get_layers(model)))
    bi = representation_similarity(model, tokenizer, prompts).block_influence  # (L,)
    return sorted(bi.argsort()[:n].tolist())


def angular_block(model: PreTrainedModel, tokenizer, prompts: Sequence[str], n: int) -> list[int]:
    """The contiguous ``n`` layers ``l..l+n-1`` minimising d(h_l, h_{l+n}) (Gromov et al.)."""
    num = len(get_layers(model))
    _check_n(n, num)
    ang = representation_similarity(model, tokenizer, prompts).angular  # (L+1, L+1)
    dist = [float(ang[lo, lo + n]) for lo in range(num - n + 1)]
    lo = min(range(len(dist)), key=dist.__getitem__)
    return list(range(lo, lo + n))


def drop_plan(indices: Sequence[int]) -> list[Range] | None:
    """Express dropping ``indices`` as ``drop`` collapse ranges (layer before each run kept).

    Returns None when layer 0 is dropped: no earlier layer can stand for the run.
    """
    idx = sorted(set(indices))
    if not idx or idx[0] == 0:
        return None
    ranges: list[Range] = []
    for i in idx:
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1] = (ranges[-1][0], i)
        else:
            ranges.append((i - 1, i))
    return ranges


def drop_layers(model: PreTrainedModel, indices: Sequence[int]) -> PreTrainedModel:
    """A model without the layers ``indices``, sharing every kept tensor with ``model``.

    Each kept layer stands for itself and the dropped layers after it (as a ``drop`` collapse
    of those ranges); a dropped leading run is stood for by the first kept layer.
    """
    layers = get_layers(model)
    n = len(layers)
    idx = sorted(set(int(i) for i in indices))
    if any(i < 0 or i >= n for i in idx):
        raise LacoError(f"Layer indices {idx} are outside 0-{n - 1}.")
    _check_n(len(idx), n)
    kept = [i for i in range(n) if i not in set(idx)]
    ends = [nxt - 1 for nxt in kept[1:] + [n]]
    groups = [(0 if a == 0 else k, end) for a, (k, end) in enumerate(zip(kept, ends, strict=True))]
    new_layers = [share_layer(layers[k], j) for j, k in enumerate(kept)]
    return derive(model, new_layers, groups, sources=kept)


def layers_for_ratio(model: PreTrainedModel, ratio: float) -> int:
    """How many whole layers to remove so that about ``ratio`` of all parameters go."""
    if not (math.isfinite(ratio) and 0 < ratio < 1):
        raise LacoError(
            f"Ratio {ratio} must be in (0, 1): the fraction of all parameters to remove."
        )
    total = count_params(model)
    per_layer = sum(p.numel() for p in get_layers(model)[0].parameters())
    n = math.ceil(ratio * total / per_layer - 1e-9)  # at least the target, as the LaCo search
    if n >= len(get_layers(model)):
        raise LacoError(
            f"Removing {ratio:.0%} of the parameters needs {n} of {len(get_layers(model))} "
            "layers: lower the ratio."
        )
    return max(1, n)


__all__ = [
    "angular_block",
    "drop_layers",
    "drop_plan",
    "layers_for_ratio",
    "shortgpt_layers",
]
