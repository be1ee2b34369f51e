"""Width pruning in the style of LLM-Pruner: geometry, importance, surgery, saving/loading."""

from .geometry import LayerShape, is_pruned, layer_geometry, model_shapes
from .importance import AGGREGATIONS, Importance, group_importance
from .io import load_pruned, save_pruned
from .llm_pruner import PrunedResult, apply_pruning, default_layer_range, prune_llm_pruner
from .surgery import apply_shapes, prune_layer

__all__ = [
    "AGGREGATIONS",
    "Importance",
    "LayerShape",
    "PrunedResult",
    "apply_pruning",
    "apply_shapes",
    "default_layer_range",
    "group_importance",
    "is_pruned",
    "layer_geometry",
    "load_pruned",
    "model_shapes",
    "prune_layer",
    "prune_llm_pruner",
    "save_pruned",
]
