"""What every step kind receives: the recipe's base model, the registry, progress and stop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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

    @property
    def tokenizer(self):
        return self.base.tokenizer

    def event(self, event: dict) -> None:
        if self.events is not None:
            self.events(event)

    def report(self, fraction: float, desc: str) -> None:
        if self.progress is not None:
            self.progress(fraction, desc)
