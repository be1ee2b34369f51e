"""What every step kind receives: the recipe's base model, the registry, progress and stop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..analysis.activations import ActivationCache


@dataclass
class StepContext:
    """Everything a step needs besides its input model.

    Attributes:
        base: The recipe's base model (``models.LoadedModel``): the dense teacher of a
            distilled heal, the tokenizer of every step.
        registry: Resolves names (``method``, ``objective``, ``strategy``, ``importance``).
        events: Called with a dict per logged event (search candidates, heal steps).
        progress: Called with (fraction done, description).
        stop: Set from another thread to cancel a long step (it raises ``Cancelled``).
    """

    base: Any
    registry: Any
    events: Callable[[dict], None] | None = None
    progress: Callable[[float, str], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    # the engine's memo of dense activations (texts, batch size) -> ActivationCache, so
    # fits and searches on texts it has seen skip the dense forward
    activations_of: Callable[[list[str], int], Any] | None = None
    # results a step may reuse within one run (e.g. one search refitted two ways)
    memo: dict = field(default_factory=dict)
    # the engine's count of a cache made here (another model's), held while it lives
    counted: Callable[[Any], None] | None = None

    @property
    def tokenizer(self):
        return self.base.tokenizer

    def activations(self, model, texts: list[str], batch_size: int = 4, workers=None):
        """Dense activations of ``model`` on ``texts``: the engine's memo for the base model,
        else computed here."""
        if self.activations_of is not None and model is self.base.model:
            return self.activations_of(texts, batch_size)
        cache = ActivationCache(
            model, self.tokenizer, texts, batch_size=batch_size, workers=workers
        )
        if self.counted is not None:
            self.counted(cache)
        return cache

    def event(self, event: dict) -> None:
        if self.events is not None:
            self.events(event)

    def report(self, fraction: float, desc: str) -> None:
        if self.progress is not None:
            self.progress(fraction, desc)
