"""Collapse plans: inclusive, 0-based, non-overlapping layer ranges, and what a model stands for.

A plan is a list of ranges ``(lo, hi)`` in the indices of the model being collapsed; each range
becomes one layer at ``lo``'s position. Every model built by this package records, per layer,
the range of ORIGINAL layers it stands for (``laco_layer_map``), so collapses of collapses
still report plans in original indices.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from ..errors import LacoError
from .adapters import get_layers

Range = tuple[int, int]

LAYER_MAP_ATTR = "laco_layer_map"


def parse_ranges(text: str | Iterable) -> list[Range]:
    """Parse ``"20-23, 10-12"`` (or a list of such strings / pairs) into ranges.

    Raises:
        LacoError: on anything that is not ``LO-HI`` with integers.
    """
    if isinstance(text, str):
        items = [s for s in re.split(r"[,\s;]+", text.strip()) if s]
    else:
        items = list(text)
    out: list[Range] = []
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            lo, hi = item
        else:
            m = re.fullmatch(r"\s*(\d+)\s*[-:]\s*(\d+)\s*", str(item))
            if not m:
                raise LacoError(
                    f"Cannot read range '{item}': write LO-HI with layer numbers ≥ 0, e.g. 20-23."
                )
            lo, hi = m.groups()
        out.append((int(lo), int(hi)))
    return out


def validate_ranges(ranges: Iterable[Range], num_layers: int | None) -> list[Range]:
    """Sort and check ranges against a model with ``num_layers`` layers (None: not known yet).

    Raises:
        LacoError: for LO > HI, single-layer ranges, indices outside 0..L-1, or overlaps.
    """
    ranges = sorted((int(lo), int(hi)) for lo, hi in ranges)
    if not ranges:
        raise LacoError("The plan is empty: add at least one range LO-HI.")
    for lo, hi in ranges:
        if lo > hi:
            raise LacoError(f"Range {lo}-{hi} has LO > HI.")
        if lo == hi:
            raise LacoError(f"Range {lo}-{hi} covers one layer; a merge needs at least two.")
        if lo < 0:
            raise LacoError(f"Range {lo}-{hi} starts below layer 0.")
        if num_layers is not None and hi >= num_layers:
            raise LacoError(f"Range {lo}-{hi} is outside the model's layers 0-{num_layers - 1}.")
    for (a_lo, a_hi), (b_lo, b_hi) in zip(ranges, ranges[1:], strict=False):
        if b_lo <= a_hi:
            raise LacoError(f"Ranges {a_lo}-{a_hi} and {b_lo}-{b_hi} overlap.")
    return ranges


def layer_groups(ranges: list[Range], num_layers: int) -> list[Range]:
    """Every layer of the collapsed model as the range of source layers it comes from."""
    starts = dict(ranges)
    groups, i = [], 0
    while i < num_layers:
        hi = starts.get(i, i)
        groups.append((i, hi))
        i = hi + 1
    return groups


def layer_map(model: nn.Module) -> list[Range]:
    """Original-index range of each layer of ``model`` (identity for a model not built here)."""
    return getattr(model, LAYER_MAP_ATTR, None) or [(i, i) for i in range(len(get_layers(model)))]


def plan_of(model: nn.Module) -> list[Range]:
    """The collapse plan, in original indices, that ``model`` realises."""
    return [r for r in layer_map(model) if r[0] != r[1]]


def format_plan(ranges: Iterable[Range]) -> str:
    """``[(4, 5), (12, 18)]`` -> ``"4-5, 12-18"``."""
    return ", ".join(f"{lo}-{hi}" for lo, hi in ranges)
