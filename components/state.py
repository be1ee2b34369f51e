"""Per-session state: ids and recipe JSON only. Models and tensors live in the engine.

``gr.State`` deep-copies its initial value for every session, so the session's owner token is
drawn lazily, on first use, not when the default ``Session()`` is built.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Entry:
    """One model built in this session: its engine id, a label, its recipe as JSON."""

    id: str
    label: str
    recipe: dict
    metrics: dict = field(default_factory=dict)  # quick metrics and evaluation results

    @property
    def info(self) -> dict:
        return self.recipe.get("info", {}) if isinstance(self.recipe, dict) else {}


@dataclass
class Session:
    """What one browser session owns: its base model spec and the models it derived."""

    spec: str = "default"
    dtype: str = "auto"
    device: str = "auto"
    num_layers: int = 0
    builds: list[Entry] = field(default_factory=list)
    current: str | None = None  # id of the build Compare/Evaluate/Export use
    dense_ppl: float | None = None  # the base model's perplexity, once evaluated
    exports: dict[str, str] = field(default_factory=dict)  # build id -> export folder
    owner: str | None = None

    def token(self) -> str:
        """This session's owner token for the engine (drawn on first use)."""
        if self.owner is None:
            self.owner = uuid.uuid4().hex
        return self.owner

    def add(self, entry: Entry) -> None:
        self.builds = [b for b in self.builds if b.id != entry.id] + [entry]
        self.current = entry.id

    def get(self, did: str | None) -> Entry | None:
        return next((b for b in self.builds if b.id == did), None)

    def choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for dropdowns, newest first."""
        return [(b.label, b.id) for b in reversed(self.builds)]

    def table(self) -> pd.DataFrame:
        """Every build of this session with its recipe summary and any metrics measured."""
        rows = []
        for b in self.builds:
            info = b.info
            before, after = info.get("params_before"), info.get("params_after")
            kinds = [s.get("kind", "") for s in b.recipe.get("steps", [])]
            rows.append(
                {
                    "id": b.id,
                    "steps": " → ".join(kinds),
                    "ranges": " ".join(f"{lo}-{hi}" for lo, hi in info.get("plan", [])),
                    "layers": f"{info.get('layers_before', '?')}→{info.get('layers_after', '?')}",
                    "params_removed_%": round(100 * (1 - after / before), 2)
                    if before and after
                    else None,
                    **{k: v for k, v in b.metrics.items() if isinstance(v, (int, float, str))},
                }
            )
        return pd.DataFrame(rows)
