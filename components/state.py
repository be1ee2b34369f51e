"""Per-session state: ids and recipes only. Models live in the engine (gr.State deep-copies)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Build:
    """One derived model built in this session (collapse, auto search, ...)."""

    id: str
    label: str
    recipe: dict
    metrics: dict = field(default_factory=dict)  # quick metrics and evaluation results


@dataclass
class Session:
    """What one browser session owns: its base model spec and the models it derived."""

    spec: str = "default"
    dtype: str = "auto"
    device: str = "auto"
    num_layers: int = 0
    builds: list[Build] = field(default_factory=list)
    current: str | None = None  # id of the derived model Compare/Evaluate/Export use
    dense_ppl: float | None = None  # the base model's perplexity, once evaluated
    exports: dict[str, str] = field(default_factory=dict)  # build id -> export folder

    def add(self, build: Build) -> None:
        self.builds.append(build)
        self.current = build.id

    def get(self, did: str | None) -> Build | None:
        return next((b for b in self.builds if b.id == did), None)

    def choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for dropdowns, newest first."""
        return [(b.label, b.id) for b in reversed(self.builds)]

    def table(self) -> pd.DataFrame:
        """Every build of this session with its recipe summary and any metrics measured."""
        rows = []
        for b in self.builds:
            r = b.recipe
            before, after = r.get("params_before"), r.get("params_after")
            rows.append(
                {
                    "id": b.id,
                    "kind": r.get("kind", ""),
                    "method": r.get("method", ""),
                    "ranges": " ".join(f"{lo}-{hi}" for lo, hi in r.get("ranges", [])),
                    "layers": f"{r.get('layers_before', '?')}→{r.get('layers_after', '?')}",
                    "params_removed_%": round(100 * (1 - after / before), 2)
                    if before and after
                    else None,
                    **{k: v for k, v in b.metrics.items() if isinstance(v, (int, float, str))},
                }
            )
        return pd.DataFrame(rows)
