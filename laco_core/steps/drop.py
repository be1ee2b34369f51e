"""Step kind ``drop``: remove whole layers chosen by a baseline (ShortGPT, angular) or by hand."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..analysis.baselines import drop_layers, layers_for_ratio
from ..arch.adapters import get_layers
from ..assets import read_asset
from ..errors import LacoError
from ..recipe import Step, TextSource

DEFAULT_CALIBRATION = "calibration_prompts"


@dataclass
class DropStep(Step):
    """Drop ``layers`` (the input model's indices), keep only ``keep`` (a mergekit
    passthrough plan), or let ``selector`` choose the layers that remove ``ratio`` of the
    parameters: ``shortgpt`` (lowest Block Influence, Men et al. 2024) or ``angular`` (most
    similar contiguous block, Gromov et al. 2024)."""

    kind = "drop"
    summary = "Remove whole layers (ShortGPT, angular distance, or a list)."
    nested = {"calibration": TextSource}

    selector: str = "manual"
    ratio: float | None = None
    layers: list[int] | None = None
    keep: list[int] | None = None
    calibration: TextSource | None = None

    def describe(self) -> str:
        if self.keep is not None:
            return f"{self.selector}: keep {len(self.keep)} layers"
        shown = ", ".join(map(str, self.layers)) if self.layers else f"{self.ratio:.0%}"
        return f"{self.selector} drop {shown}"

    def apply(self, model, ctx):
        if self.keep is not None:
            n = len(get_layers(model))
            if self.keep and self.keep[-1] >= n:
                raise LacoError(f"The plan keeps layer {self.keep[-1]}; this model has {n}.")
            kept = set(self.keep)
            return drop_layers(model, [i for i in range(n) if i not in kept]), self
        if self.layers is not None:
            return drop_layers(model, self.layers), self
        if self.ratio is None:
            raise LacoError("A drop step needs the layers to drop or a ratio to reach.")
        select = ctx.registry.selector(self.selector)
        cal = self.calibration or TextSource.of(
            read_asset(DEFAULT_CALIBRATION), DEFAULT_CALIBRATION
        )
        n = layers_for_ratio(model, self.ratio)
        layers = sorted(select(model, ctx.tokenizer, cal.resolve(), n))
        return drop_layers(model, layers), replace(self, layers=layers, calibration=cal)
