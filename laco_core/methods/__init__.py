"""Merge methods, one per file, listed in an explicit registry."""

from .average import Average
from .base import LayerParams, MergeMethod
from .calibrated import CalibratedRDSC
from .drop import Drop
from .linear import DropLinear
from .lsq import DropLsq
from .official import Official
from .rdsc import RDSC

REGISTRY: dict[str, MergeMethod] = {
    m.name: m
    for m in (Official(), RDSC(), Average(), Drop(), CalibratedRDSC(), DropLinear(), DropLsq())
}

__all__ = ["REGISTRY", "LayerParams", "MergeMethod"]
