"""Merge methods, one per file; the registry that lists them is ``laco_core.registry``."""

from .base import LayerParams, MergeMethod

__all__ = ["LayerParams", "MergeMethod"]
