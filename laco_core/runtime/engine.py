"""The engine: the façade the app and the CLI call, and the only owner of memory.

Base models are cached by (spec, dtype, device); every model built from them is a *build*: an
id, the session that owns it, its completed recipe (tensors included) and, while in memory,
the model. Activation caches for the preview and similarity analyses live here too. All of it
counts against one memory budget and is evicted least-recently-used: an evicted build keeps
its recipe and is rebuilt on demand; a recipe squeezed out of memory keeps its JSON and
recomputes what it fitted.

Locking: one short lock guards the tables; no lock is ever held while a model runs, so a
quick request never waits behind another user's long job, and a streaming handler can be
abandoned on any thread. Loads and rebuilds of one key are serialised by their own locks.

Requests are checked against ``limits`` before any work (texts a step carries, builds per
session, one long job per session); a hosted engine loads Hub ids and ``default`` only.
Exports made for a download live in the engine's ``ExportStore``, bounded by age and size.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from transformers import PreTrainedModel

from .. import pipeline
from ..analysis.activations import ActivationCache
from ..arch.plan import Range
from ..arch.sharing import model_bytes, new_bytes
from ..assets import is_bundled
from ..errors import LacoError
from ..exchange.export import ExportResult
from ..loading.limits import Limits
from ..loading.models import LoadedModel, load_model, resolve_device, resolve_dtype
from ..ops import preview as ops_preview
from ..recipe import BaseRef, Recipe, Step
from ..steps.collapse import CollapseStep
from .budget import default_budget_bytes, trim
from .builds import BaseKey, Build, dtype_name
from .builds import without_tensors as _without_tensors
from .caches import arrays_bytes, cache_bytes, over_cap, similarity_arrays
from .jobs import JobSlots, Slot
from .store import ExportStore, zip_stored


class Engine:
    """Models, builds and caches under one memory budget.

    Args:
        memory_budget_gb: Bound for everything cached (None: ``default_budget_bytes``).
        limits: Request limits (default: ``Limits.current()``); ``limits.is_hosted`` makes
            this a hosted engine.
        export_dir: Where exports for downloads go (default: ``ExportStore``'s).
    """

    def __init__(
        self,
        memory_budget_gb: float | None = None,
        limits: Limits | None = None,
        export_dir: str | Path | None = None,
    ):
        self.budget = (
            default_budget_bytes() if memory_budget_gb is None else int(memory_budget_gb * 2**30)
        )
        self.limits = limits or Limits.current()
        self.hosted = self.limits.is_hosted
        self.exports = ExportStore(
            self.limits.export_ttl_s, self.limits.export_mb * 10**6, export_dir
        )
        self._jobs = JobSlots(self.limits.long_jobs)
        self._bases: OrderedDict[BaseKey, LoadedModel] = OrderedDict()
        self._builds: OrderedDict[str, Build] = OrderedDict()
        self._caches: OrderedDict[tuple, tuple[object, Callable[[object], int]]] = OrderedDict()
        self._lock = threading.RLock()
        self._loading: dict[tuple, threading.Lock] = {}
        self._counter = itertools.count(1)

    # ---- base models ------------------------------------------------------------------------
    def key(self, spec: str, dtype: str = "auto", device: str = "auto") -> BaseKey:
        dev = resolve_device(device)
        return (spec or "default", dtype_name(resolve_dtype(dtype, dev)), str(dev))

    def load(self, spec: str = "default", dtype: str = "auto", device: str = "auto") -> LoadedModel:
        """Load (or fetch from cache) a base model."""
        key = self.key(spec, dtype, device)
        with self._lock:
            if key in self._bases:
                self._bases.move_to_end(key)
                return self._bases[key]
            gate = self._loading.setdefault(("base", key), threading.Lock())
        with gate:  # one load per key; others wait for it rather than load twice
            with self._lock:
                if key in self._bases:
                    return self._bases[key]
            loaded = load_model(*key, hosted=self.hosted, max_params=self.limits.model_params)
            with self._lock:
                self._bases[key] = loaded
                self._evict(keep={key})
        return loaded

    def base_of(self, ref: BaseRef) -> LoadedModel:
        return self.load(ref.spec, ref.dtype, ref.device)

    def loaded(self) -> list[BaseKey]:
        return list(self._bases)

    # ---- builds -----------------------------------------------------------------------------
    def run(
        self,
        base: LoadedModel,
        steps: list[Step],
        owner: str | None = None,
        parent: str | None = None,
        label: str | None = None,
        events: Callable[[dict], None] | None = None,
        progress: Callable[[float, str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> str:
        """Apply ``steps`` to ``base`` (or to build ``parent``'s model) and register the result.

        Returns:
            The new build's id.

        Raises:
            LimitExceeded: before any work, for inputs over a limit, a session at its
                number of builds, or a session that already runs a long job (one whose
                slot ``stop`` does not hold already).
        """
        self._check_room(owner)
        for step in steps:
            self.limits.check_step(step, base.tokenizer)
        with self.job(owner, stop):
            prior = self.recipe(parent, owner) if parent else None
            if prior is not None:
                base = self.base_of(prior.base)
            ctx = pipeline.context(base, events, progress, stop, self.activations_of(base))
            ctx.counted = self.count
            model, recipe = pipeline.run(base, steps, ctx, prior)
            return self._register(base, recipe, model, owner, label)

    def add_recipe(self, recipe: Recipe, owner: str | None = None, label: str | None = None) -> str:
        """Register a recipe (checked against the limits); its model is built when asked for."""
        self._check_room(owner)
        base = self.base_of(recipe.base)
        for step in recipe.steps:
            self.limits.check_step(step, base.tokenizer)
        return self._register(base, recipe, None, owner, label)

    def job(self, owner: str | None, stop: threading.Event | None = None) -> Slot:
        """The one entry of every long job: one of ``owner``'s ``limits.long_jobs`` slots, taken
        now, released by ``Slot.release`` or a ``with`` block. Work inside a job passes its
        ``stop`` (the key of the slot it holds) down to every loop. CLI (owner None): no limit."""
        return self._jobs.hold(owner, stop)

    def _register(self, base, recipe, model, owner, label) -> str:
        kind = recipe.steps[-1].kind if recipe.steps else "base"
        did = f"{kind}-{next(self._counter)}"
        build = Build(
            did,
            owner,
            self.key(base.spec, dtype_name(base.dtype), str(base.device)),
            recipe,
            "",
            model,
        )
        build.label = label or f"{did} · {recipe.describe()}"
        with self._lock:
            self._builds[did] = build
            self._evict(keep={build.base_key, did})
        trim()  # a build leaves freed temporaries (merge sums, fits) in malloc's arenas
        return did

    def _check_room(self, owner: str | None) -> None:
        if owner is not None:
            self.limits.check("builds", len(self.builds(owner)) + 1)

    def build(self, did: str, owner: str | None = None) -> Build:
        """The build ``did`` (not necessarily in memory); another session's id is unknown."""
        with self._lock:
            b = self._builds.get(did)
        if b is None or (b.owner is not None and b.owner != owner):
            raise LacoError(f"Unknown model id '{did}': build or load one first.")
        return b

    def builds(self, owner: str | None = None) -> list[Build]:
        with self._lock:
            return [b for b in self._builds.values() if b.owner == owner]

    def model(self, did: str, owner: str | None = None) -> tuple[PreTrainedModel, LoadedModel]:
        """The build's model (rebuilt if evicted) and the base it was built from."""
        b = self.build(did, owner)
        base = self.load(*b.base_key)
        with b.lock:  # one rebuild per build at a time
            model = b.model
            if model is None:
                ctx = pipeline.context(base, activations_of=self.activations_of(base))
                ctx.counted = self.count
                model, _, completed = pipeline.rebuild(b.recipe, lambda ref: base, ctx)
                b.recipe = completed
                b.model = model
        with self._lock:
            if did in self._builds:
                self._builds.move_to_end(did)
            self._evict(keep={b.base_key, did})
        return model, base

    def get(self, did: str, owner: str | None = None) -> Build:
        """The build with its model in memory."""
        self.model(did, owner)
        return self.build(did, owner)

    def recipe(self, did: str, owner: str | None = None) -> Recipe:
        return self.build(did, owner).recipe

    def forget(self, did: str, owner: str | None = None) -> None:
        self.build(did, owner)
        with self._lock:
            self._builds.pop(did, None)

    # ---- convenience builds -----------------------------------------------------------------
    def collapse(
        self,
        base: LoadedModel,
        ranges: list[Range],
        method: str = "official",
        owner: str | None = None,
        **params,
    ) -> str:
        """Collapse ``ranges`` of ``base`` with ``method`` (fitted methods are fitted)."""
        step = CollapseStep([list(r) for r in ranges], method, params)
        return self.run(base, [step], owner)

    # ---- caches -----------------------------------------------------------------------------
    def _cached(self, key: tuple, make: Callable[[], object], size: Callable[[object], int]):
        with self._lock:
            if key in self._caches:
                self._caches.move_to_end(key)
                return self._caches[key][0]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._caches:
                    return self._caches[key][0]
            value = make()
            with self._lock:
                self._caches[key] = (value, size)
                for old in over_cap(list(self._caches), key[0]):
                    self._caches.pop(old, None)
                self._evict(keep={key})
        return value

    def activations(self, base: LoadedModel, prompts: list[str], batch_size: int = 4):
        """Dense activations of ``base`` on ``prompts`` (cached; the preview reuses them);
        user prompts are checked against the limits, bundled texts (ours) are not."""
        if not is_bundled(prompts):
            self.limits.check_prompts(base.tokenizer, prompts)
        key = ("activations", self._key_of(base), tuple(prompts), batch_size)

        def make() -> ActivationCache:
            cache = ActivationCache(base.model, base.tokenizer, prompts, batch_size=batch_size)
            ref = weakref.ref(cache)  # no cycle: the cache's tensors go with its last user
            cache.on_grow = lambda: self._grew(key, ref())
            return cache

        return self._cached(key, make, cache_bytes)

    def activations_of(self, base: LoadedModel) -> Callable[..., ActivationCache]:
        """``activations`` of ``base`` as a step context's memo: ``(texts, batch_size)``."""
        return lambda texts, batch_size=4: self.activations(base, list(texts), batch_size)

    def _grew(self, key: tuple, value) -> None:  # counted again if evicted while in use
        with self._lock:
            if value is not None and key not in self._caches:
                self._caches[key] = (value, cache_bytes)
            self._evict(keep={key})

    def count(self, value, size: Callable[[object], int] = cache_bytes) -> None:
        """Count a job's own data (a cache, reference log-probs) while it lives; never evicted."""
        key, ref = ("held", id(value)), weakref.ref(value)
        with self._lock:
            self._caches[key] = (ref, lambda r: size(r()) if r() is not None else 0)
            self._evict(keep={key})
        weakref.finalize(value, self._forget, key)
        if isinstance(value, ActivationCache):
            value.on_grow = lambda: self._grew(key, None)

    def _forget(self, key: tuple) -> None:
        with self._lock:
            self._caches.pop(key, None)

    def analysis(self, base: LoadedModel, prompts: list[str]) -> dict:
        """Parameter and representation similarity of ``base`` (numpy matrices, cached)."""
        self.limits.check_prompts(base.tokenizer, prompts)
        key = ("analysis", self._key_of(base), tuple(prompts))

        return self._cached(
            key, lambda: similarity_arrays(base.model, base.tokenizer, prompts), arrays_bytes
        )

    def preview(
        self,
        base: LoadedModel,
        prompts: list[str],
        ranges: list[Range],
        method: str = "official",
        attention: list[int] | None = None,
        **params,
    ) -> dict:
        """What-if estimate of a plan (merged ranges, and attention sub-blocks removed) from
        cached activations (``ops.preview``)."""
        cache = self.activations(base, prompts)
        return ops_preview(
            base.model, base.tokenizer, prompts, ranges, method, cache, attention, **params
        )

    # ---- outputs ----------------------------------------------------------------------------
    def export(
        self,
        did: str,
        out_dir=None,
        owner: str | None = None,
        overwrite: bool = False,
        protect=(),
        findings: dict | None = None,
    ) -> ExportResult:
        """Export build ``did`` with its base's tokenizer, its recipe and ``findings`` (card and
        ``info``, ``laco_core.findings``); verified. ``out_dir`` None: the export store."""
        model, base = self.model(did, owner)
        b = self.build(did, owner)
        out = self.exports.new(did) if out_dir is None else out_dir
        return pipeline.export(model, base, out, b.recipe, overwrite, protect, b.metrics, findings)

    def download(
        self, did: str, owner: str | None = None, findings: dict | None = None
    ) -> tuple[ExportResult, Path]:
        """Export build ``did`` (and ``findings``) into the export store, zipped: ``(result, zip
        path)``, kept until ``limits.export_ttl_s`` / ``export_mb``; one per session at a time."""
        with self.job(owner):
            res = self.export(did, None, owner, findings=findings)
            archive = zip_stored(res.path)
        self.exports.sweep(keep=res.path)
        return res, archive

    # ---- memory -----------------------------------------------------------------------------
    def usage(self) -> dict[str, int]:
        """Bytes held per kind: base models, built models, recipes, caches (each measured now:
        a cache grows after insertion when an objective fills its dense moments or log-probs)."""
        with self._lock:
            bases = {k: b for k, b in self._bases.items()}
            out = {"bases": sum(model_bytes(b.model) for b in bases.values())}
            out["builds"] = sum(
                new_bytes(bases[b.base_key].model, b.model)
                for b in self._builds.values()
                if b.model is not None and b.base_key in bases
            )
            out["recipes"] = sum(b.recipe.size_bytes() for b in self._builds.values())
            out["caches"] = sum(size(value) for value, size in list(self._caches.values()))
        return out

    def _evict(self, keep: set) -> None:
        """Drop least-recently-used items until everything fits the budget (lock held)."""
        evicted = False
        while sum(self.usage().values()) > self.budget:
            if not self._evict_one(keep):
                break
            evicted = True
        if evicted:
            trim()  # give the freed tensors' pages back, or RSS stays at its peak

    def _evict_one(self, keep: set) -> bool:
        for key in list(self._caches):
            if key not in keep and key[0] != "held":
                self._caches.pop(key)
                return True
        for did, b in self._builds.items():
            if b.model is not None and did not in keep:
                b.model = None
                return True
        for key in list(self._bases):
            if key not in keep and len(self._bases) > 1:
                self._bases.pop(key)
                for b in self._builds.values():  # their models hold the base's tensors
                    if b.base_key == key:
                        b.model = None
                return True
        for did, b in self._builds.items():
            if did not in keep and b.recipe.size_bytes():
                b.recipe = _without_tensors(b.recipe)
                return True
        return False

    def _key_of(self, base: LoadedModel) -> BaseKey:
        return self.key(base.spec, dtype_name(base.dtype), str(base.device))


__all__ = ["Build", "Engine"]
