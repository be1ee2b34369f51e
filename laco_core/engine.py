"""The engine: one owner for every model in memory, shared by the CLI and all app sessions.

Base models are cached by (spec, dtype, device) under a memory budget; derived models
(collapsed, searched, pruned, healed) are kept by id with the recipe that rebuilds them, so
a session only ever holds ids and recipes, and an evicted model comes back on demand.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from .errors import LacoError
from .merge import build_collapsed, plan_of
from .models import LoadedModel, count_params, load_model, resolve_device, resolve_dtype

BaseKey = tuple[str, str, str]  # (spec, resolved dtype name, resolved device)


@dataclass
class Derived:
    """A model derived from a base model, with the recipe that rebuilds it."""

    id: str
    model: PreTrainedModel
    base_key: BaseKey
    recipe: dict
    created: float = field(default_factory=time.time)

    @property
    def params(self) -> int:
        return count_params(self.model)


def model_bytes(model: torch.nn.Module, exclude: set[int] | None = None) -> int:
    """Bytes of distinct parameter storage, not counting storages in ``exclude``."""
    seen = set(exclude or ())
    total = 0
    for t in itertools.chain(model.parameters(), model.buffers()):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


class Engine:
    """Model cache with a memory budget plus a store of derived models.

    Args:
        memory_budget_gb: Upper bound for base models kept loaded; the least recently used
            are evicted first (derived models of an evicted base go with it). None: no bound.
        max_derived: How many derived models stay in memory; older ones are rebuilt from
            their recipe when asked for again.
    """

    def __init__(self, memory_budget_gb: float | None = None, max_derived: int = 12):
        self.memory_budget = None if memory_budget_gb is None else int(memory_budget_gb * 2**30)
        self.max_derived = max_derived
        self._bases: OrderedDict[BaseKey, LoadedModel] = OrderedDict()
        self._derived: OrderedDict[str, Derived] = OrderedDict()
        self._recipes: dict[str, dict] = {}
        self._counter = itertools.count(1)
        # one lock for all heavy model work: torch on 2 CPU cores or one GPU gains nothing
        # from interleaving, and loads must not race to fill the same cache slot
        self.lock = threading.RLock()

    # ---- base models -------------------------------------------------------------------
    def load(self, spec: str = "default", dtype: str = "auto", device: str = "auto") -> LoadedModel:
        """Load (or fetch from cache) a base model."""
        dev = resolve_device(device)
        key: BaseKey = (spec or "default", _name(resolve_dtype(dtype, dev)), str(dev))
        with self.lock:
            if key in self._bases:
                self._bases.move_to_end(key)
                return self._bases[key]
            loaded = load_model(*key)
            self._bases[key] = loaded
            self._evict()
            return loaded

    def loaded(self) -> list[BaseKey]:
        return list(self._bases)

    def _evict(self) -> None:
        if self.memory_budget is None:
            return
        while (
            len(self._bases) > 1
            and sum(model_bytes(b.model) for b in self._bases.values()) > self.memory_budget
        ):
            key, _ = self._bases.popitem(last=False)
            for did in [d for d, v in self._derived.items() if v.base_key == key]:
                del self._derived[did]

    # ---- derived models ----------------------------------------------------------------
    def add_derived(self, model: PreTrainedModel, base: LoadedModel, recipe: dict) -> str:
        """Register a derived model; returns its id. ``recipe`` must let ``rebuild`` redo it."""
        did = f"{recipe.get('kind', 'model')}-{next(self._counter)}"
        key: BaseKey = (base.spec, _name(base.dtype), str(base.device))
        recipe = {**recipe, "base": {"spec": base.spec, "dtype": key[1], "device": key[2]}}
        with self.lock:
            self._derived[did] = Derived(did, model, key, recipe)
            self._recipes[did] = recipe
            while len(self._derived) > self.max_derived:
                self._derived.popitem(last=False)
        return did

    def collapse(self, base: LoadedModel, ranges, method: str = "official", **params) -> str:
        """Build a collapsed model of ``base`` (ranges in its indices) and register it.

        A method fitted on activations (``drop_lsq``, ``drop_linear``) is fitted range by
        range on the paragraphs of the bundled training text; its recipe replays the steps.
        """
        from .search.correction import collapse_any

        with self.lock:
            model, steps = collapse_any(base.model, base.tokenizer, ranges, method, **params)
        recipe = {
            "kind": "collapse" if steps is None else "auto",
            "method": method,
            "method_params": params,
            "ranges": [list(r) for r in plan_of(model)],
            "layers_before": base.num_layers,
            "layers_after": model.config.num_hidden_layers,
            "params_before": base.num_params,
            "params_after": count_params(model),
        }
        if steps is not None:
            recipe["steps"] = steps
        return self.add_derived(model, base, recipe)

    def get(self, did: str) -> Derived:
        """The derived model ``did``, rebuilt from its recipe if it was evicted."""
        with self.lock:
            if did in self._derived:
                self._derived.move_to_end(did)
                return self._derived[did]
            recipe = self._recipes.get(did)
        if recipe is None:
            raise LacoError(f"Unknown model id '{did}': build a collapse first.")
        model = self.rebuild(recipe)
        with self.lock:
            b = recipe["base"]
            d = Derived(did, model, (b["spec"], b["dtype"], b["device"]), recipe)
            self._derived[did] = d
        return d

    def rebuild(self, recipe: dict) -> PreTrainedModel:
        """Recreate a derived model from its recipe (collapse recipes; other kinds register
        a builder in ``REBUILDERS``)."""
        b = recipe["base"]
        base = self.load(b["spec"], b["dtype"], b["device"])
        kind = recipe.get("kind", "collapse")
        if kind not in REBUILDERS:
            raise LacoError(
                f"Model kind '{kind}' was evicted and cannot be rebuilt; build it again."
            )
        return REBUILDERS[kind](self, base, recipe)

    def recipe(self, did: str) -> dict:
        if did not in self._recipes:
            raise LacoError(f"Unknown model id '{did}'.")
        return self._recipes[did]


def _rebuild_collapse(engine: Engine, base: LoadedModel, recipe: dict) -> PreTrainedModel:
    with engine.lock:
        return build_collapsed(
            base.model,
            [tuple(r) for r in recipe["ranges"]],
            recipe["method"],
            **recipe.get("method_params", {}),
        )


# kind -> function(engine, base, recipe) -> model. Other modules (search, prune, heal) add theirs.
REBUILDERS = {"collapse": _rebuild_collapse, "auto": _rebuild_collapse}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
