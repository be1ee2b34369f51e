"""Step kind ``attention``: remove the attention sub-block of given layers (keep their MLPs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..arch.subblocks import drop_attention
from ..recipe import Step


@dataclass
class AttentionStep(Step):
    """Remove the attention of ``layers`` (the input model's indices). The model then needs
    the shapes sidecar to be saved and ``load_pruned`` to be loaded (heads 0 in a layer)."""

    kind = "attention"
    not_passthrough = "removing an attention sub-block changes a layer, not the layer list"
    summary = "Remove attention sub-blocks of chosen layers (their MLPs stay)."

    layers: list[int] = field(default_factory=list)

    def describe(self) -> str:
        return "drop attention of " + ", ".join(map(str, self.layers))

    def apply(self, model, ctx):
        return drop_attention(model, self.layers), self
