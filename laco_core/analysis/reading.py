"""What a researcher should read from the parameter maps, in one line computed from them."""

from __future__ import annotations

import torch

from .similarity import ALL


def off_diagonal(matrix) -> tuple[float, float]:
    """Lowest and highest value off the diagonal of a square matrix (its diagonal alone: 1)."""
    m = torch.as_tensor(matrix, dtype=torch.float32)
    off = m[~torch.eye(m.shape[0], dtype=torch.bool)] if m.shape[0] > 1 else m.reshape(-1)
    return float(off.min()), float(off.max())


def most_structured(param: dict) -> str:
    """The parameter map with the widest spread off its diagonal: the one that shows most."""
    return max(param, key=lambda k: -(lambda lo, hi: lo - hi)(*off_diagonal(param[k])))


def param_reading(param: dict) -> str:
    """What a researcher should read from the parameter maps of this model, in one line."""
    lo, hi = off_diagonal(param[ALL])
    best = most_structured(param)
    b_lo, b_hi = off_diagonal(param[best])
    if hi - lo < 0.1:
        return (
            f"Across layers the weights are nearly orthogonal (cosine {lo:+.3f}…{hi:+.3f} off "
            f"the diagonal): they say little about which layers are alike, so LaCo's sum of "
            f"differences adds near-orthogonal updates. **{best}** varies most "
            f"({b_lo:.2f}…{b_hi:.2f}); plan on the representation map, which measures what "
            "the layers do."
        )
    return (
        f"The weights of different layers are alike to a cosine of {lo:+.2f}…{hi:+.2f}; "
        f"**{best}** varies most ({b_lo:.2f}…{b_hi:.2f}). High off-diagonal blocks mark "
        "layers whose weights a merge changes least."
    )
