"""A build: a model made from a base model, with the recipe that rebuilds it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from transformers import PreTrainedModel

from .. import pipeline
from ..recipe import Recipe

BaseKey = tuple[str, str, str]  # (spec, resolved dtype name, resolved device)


@dataclass
class Build:
    """A model built from a base model, with the recipe that rebuilds it.

    Attributes:
        id: Unique id (``collapse-3``).
        owner: The session that made it (None: the CLI or a script); others cannot use it.
        base_key: The base model it was built from (its tokenizer is the build's).
        recipe: The completed recipe.
        label: A human label.
        model: The model while in memory (None once evicted).
        metrics: Measured figures (kept with the build).
    """

    id: str
    owner: str | None
    base_key: BaseKey
    recipe: Recipe
    label: str
    model: PreTrainedModel | None = None
    metrics: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def kind(self) -> str:
        return self.recipe.steps[-1].kind if self.recipe.steps else "base"

    @property
    def params(self) -> int | None:
        return self.recipe.info.get("params_after")


def without_tensors(recipe: Recipe) -> Recipe:
    """The recipe as its JSON holds it: fitted steps will recompute their tensors."""
    return pipeline.recipe_from_dict(recipe.to_dict()[0])


def dtype_name(dtype) -> str:
    """``float32`` for ``torch.float32`` (or the name itself)."""
    return str(dtype).replace("torch.", "")
