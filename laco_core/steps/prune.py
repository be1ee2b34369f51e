"""Step kind ``prune``: LLM-Pruner width pruning of KV head groups and MLP channels."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..assets import read_asset
from ..prune.llm_pruner import apply_pruning, prune_llm_pruner
from ..recipe import Step, TextSource

DEFAULT_CALIBRATION = "calibration_prompts"


@dataclass
class PruneStep(Step):
    """LLM-Pruner (Ma et al. 2023) at ``ratio`` of all parameters; ``dropped`` records the
    groups removed per layer, so the step replays without gradients."""

    kind = "prune"
    reshapes = True
    not_passthrough = "width pruning removes heads and channels inside layers"
    summary = "Width pruning: remove KV head groups and MLP channels (LLM-Pruner)."
    bounded = (
        ("prompts", "num_samples", "Pruning calibration samples"),
        ("seq_len", "seq_len", "The pruning window"),
    )
    nested = {"calibration": TextSource}

    ratio: float = 0.2
    importance: str = "param_first"
    aggregation: str = "sum"
    layers: list[int] | None = None
    num_samples: int = 10
    seq_len: int = 64
    seed: int = 0
    calibration: TextSource | None = None
    dropped: dict | None = None

    def describe(self) -> str:
        return f"llm-pruner {self.ratio:.0%} ({self.importance})"

    def apply(self, model, ctx):
        if self.dropped is not None:
            return apply_pruning(model, self.dropped), self
        cal = self.calibration or TextSource.of(
            read_asset(DEFAULT_CALIBRATION), DEFAULT_CALIBRATION
        )
        ctx.report(0.1, "Gradients of the calibration samples…")
        res = prune_llm_pruner(
            model,
            ctx.tokenizer,
            cal.resolve(),
            self.ratio,
            ctx.registry.importance(self.importance),
            self.aggregation,
            tuple(self.layers) if self.layers else None,
            self.num_samples,
            self.seq_len,
            self.seed,
        )
        dropped = {str(i): d for i, d in res.dropped.items()}
        done = replace(self, calibration=cal, dropped=dropped)
        done.result = res
        return res.model, done
