"""Running recipes: apply steps to a base model, read recipe files, rebuild models from them.

Everything that turns a name into a component goes through ``registry.REGISTRY`` here (or in
``ops``); the steps themselves receive it through their ``StepContext``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from . import findings as found
from . import schema
from .arch.adapters import num_layers
from .arch.plan import plan_of
from .arch.sharing import count_params, layer_sources
from .arch.subblocks import attention_free, attention_layers
from .assets import read_asset
from .errors import LacoError
from .exchange.card import base_info_for, model_card
from .exchange.export import ExportResult, export_model
from .exchange.interop_mergekit import MERGEKIT_FILE, kept_to_yaml, yaml_to_kept
from .loading.limits import Limits
from .loading.models import EMBEDDED, LoadedModel, hub_id_for
from .prune.geometry import is_pruned
from .recipe import RECIPE_FILE, BaseRef, Recipe, Step, TextSource, read_files
from .registry import REGISTRY
from .search.config import Merge, SearchConfig
from .steps.attention import AttentionStep
from .steps.base import StepContext
from .steps.collapse import DEFAULT_FIT_TEXT, CollapseStep
from .steps.drop import DropStep
from .steps.search import SearchStep


def context(
    base: LoadedModel,
    events: Callable[[dict], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
    stop: threading.Event | None = None,
    activations_of=None,
) -> StepContext:
    """A step context over ``base`` with the registry (``activations_of``: a memo of dense
    activations of ``base``, e.g. the engine's)."""
    return StepContext(base, REGISTRY, events, progress, stop or threading.Event(), activations_of)


def base_ref(base: LoadedModel) -> BaseRef:
    """How a recipe names ``base`` (resolved dtype and device, for exact rebuilds)."""
    return BaseRef(
        spec=base.spec,
        dtype=str(base.dtype).replace("torch.", ""),
        device=str(base.device),
        architecture=type(base.model).__name__,
        num_layers=base.num_layers,
        num_params=base.num_params,
    )


def apply_steps(model, steps: list[Step], ctx: StepContext):
    """Apply ``steps`` in order from ``model``; returns the model and the completed steps."""
    done = []
    for step in steps:
        model, completed = step.apply(model, ctx)
        done.append(completed)
    return model, done


def run(base: LoadedModel, steps: list[Step], ctx: StepContext | None = None, recipe=None):
    """Apply ``steps`` to ``base`` (after ``recipe``'s steps when given).

    Returns:
        ``(model, recipe)``: the model and the completed recipe that rebuilds it, with
        layers and parameters before and after in its ``info``.
    """
    ctx = ctx or context(base)
    recipe = recipe or Recipe(base_ref(base))
    model, prior = apply_steps(base.model, recipe.steps, ctx) if recipe.steps else (base.model, [])
    model, done = apply_steps(model, steps, ctx)
    return model, Recipe(recipe.base, [*prior, *done], {**recipe.info, **sizes(base, model)})


def sizes(base: LoadedModel, model) -> dict:
    """Layers and parameters before and after, and the plan in original layers."""
    return {
        "layers_before": base.num_layers,
        "layers_after": num_layers(model),
        "params_before": base.num_params,
        "params_after": count_params(model),
        "plan": [list(r) for r in plan_of(model)],
        "attention_removed": attention_free(model),
        "kv_cache_layers": [len(attention_layers(base.model)), len(attention_layers(model))],
    }


def rebuild(recipe: Recipe, load: Callable[[BaseRef], LoadedModel], ctx: StepContext | None = None):
    """The model ``recipe`` describes, rebuilt from its base; returns ``(model, base, recipe)``.

    ``load`` turns the recipe's ``BaseRef`` into a loaded model (the engine's cache, or
    ``models.load_model``). Steps with their results replay; others recompute.
    """
    base = load(recipe.base)
    if recipe.base.num_layers is not None and recipe.base.num_layers != base.num_layers:
        raise LacoError(
            f"The recipe was made on a {recipe.base.num_layers}-layer model; "
            f"'{recipe.base.spec}' has {base.num_layers} layers."
        )
    schema.check_layers(recipe, base.num_layers)
    model, done = apply_steps(base.model, recipe.steps, ctx or context(base))
    # an imported recipe (a mergekit YAML, an older format) learns its sizes here
    info = {**sizes(base, model), **recipe.info}
    return model, base, Recipe(recipe.base, done, info, recipe.version)


def passthrough_of(recipe: Recipe, base, model) -> tuple[list[int] | None, str]:
    """The original layers a pure-drop model keeps (for a mergekit passthrough config), or
    None and why not. A layer counts as kept when every tensor it holds is one original
    layer's, unchanged."""
    kept = layer_sources(base.model, model)
    if all(k is not None for k in kept) and all(
        b > a for a, b in zip(kept, kept[1:], strict=False)
    ):
        return kept, "every layer is an original layer, unchanged"
    for step in recipe.steps:
        names = [
            getattr(step, "method", None),
            *[m.method for m in getattr(step, "merges", []) or []],
        ]
        for name in names:
            if name and name in REGISTRY.methods and REGISTRY.method(name).passthrough:
                return None, f"`{name}` {REGISTRY.method(name).passthrough}"
        if step.not_passthrough:
            return None, step.not_passthrough
        if attention_free(model):
            return None, AttentionStep.not_passthrough
    return None, "some layers are not unchanged copies of the base model's layers"


def export(
    model,
    base: LoadedModel,
    out_dir,
    recipe: Recipe,
    overwrite: bool = False,
    protect=(),
    metrics: dict | None = None,
    findings: found.Findings | None = None,
) -> ExportResult:
    """Export with a model card and, for a pure layer drop, a mergekit passthrough config.

    ``findings``: what was measured on the model (``laco_core.findings``, e.g. an app
    session's held-out and lm-eval figures); they join the recipe's own
    (``info["findings"]``, section by section) and the card states them all.
    """
    if findings:
        found.check(findings)
        kept_findings = found.merged(recipe.info.get("findings"), findings)
        info = {**recipe.info, "findings": kept_findings}
        recipe = Recipe(recipe.base, recipe.steps, info, recipe.version)
    kept, why = passthrough_of(recipe, base, model)
    files = {}
    if kept is not None:
        ref = hub_id_for(recipe.base.spec)
        dtype = recipe.base.dtype if recipe.base.dtype != "auto" else None
        files[MERGEKIT_FILE] = kept_to_yaml(ref, base.num_layers, kept, dtype, recipe.describe())
    described = Recipe(recipe.base, recipe.steps, {**recipe.info, "pruned": is_pruned(model)})
    files["README.md"] = model_card(
        described,
        metrics,
        None,
        base_info_for(recipe.base.spec),
        methods=dict(REGISTRY.methods),
        passthrough=(kept is not None, why),
    )
    extra = {"metrics": metrics} if metrics else None
    return export_model(model, base.tokenizer, out_dir, recipe, overwrite, protect, extra, files)


def read_recipe(path: str | Path, limits: Limits | None = None) -> Recipe:
    """A recipe from ``laco_recipe.json`` (or its folder, with its tensors) or a mergekit
    YAML, older formats converted; checked (``schema``) before anything is built."""
    path = Path(path).expanduser()
    file = path / RECIPE_FILE if path.is_dir() else path
    if not file.is_file():
        raise LacoError(f"No recipe at '{path}': give a laco_recipe.json or its folder.")
    if file.suffix in (".yml", ".yaml"):
        return from_mergekit(file.read_text(encoding="utf-8", errors="replace"))
    d, tensors = read_files(file)
    if _is_v1(d):
        schema.check_depth(d, "The recipe")
        return from_v1(d)
    schema.check_recipe(d, REGISTRY.steps, tensors, limits)
    return Recipe.from_dict(d, REGISTRY.steps, tensors)


def from_mergekit(text: str) -> Recipe:
    """A mergekit passthrough config of one model as a recipe that keeps the same layers."""
    model, kept = yaml_to_kept(text)
    # an embedded model's Hub id loads its bundled copy
    spec = next((alias for alias, row in EMBEDDED.items() if row.hub_id == model), model)
    return Recipe(BaseRef(spec), [DropStep("mergekit", keep=kept)], {"imported_from": "mergekit"})


def recipe_from_dict(d: dict, limits: Limits | None = None) -> Recipe:
    """A recipe from its JSON content (no tensors: fitted steps recompute), checked first."""
    if _is_v1(d):
        schema.check_depth(d, "The recipe")
        return from_v1(d)
    schema.check_recipe(d, REGISTRY.steps, None, limits)
    return Recipe.from_dict(d, REGISTRY.steps)


def _is_v1(d) -> bool:
    return isinstance(d, dict) and d.get("format") != "laco-recipe"


def from_v1(d: dict) -> Recipe:
    """Convert a recipe written before typed recipes (a flat dict with ``ranges``/``method``).

    Collapse plans convert (a fitted method is refitted on the bundled training text, as it
    was made); pruning and healing recipes of that format did not record their calibration
    text, so they are refused rather than rebuilt differently.
    """
    if not isinstance(d, dict):
        raise LacoError("This is not a LaCo recipe.")
    kind = d.get("kind")
    spec = (d.get("base") or {}).get("spec") or d.get("model")
    if not spec:
        raise LacoError("The recipe does not name its base model ('model').")
    if kind in ("llm_pruner", "heal") or d.get("healed") or d.get("dropped_layers"):
        raise LacoError(
            "This recipe comes from an older version that did not record its calibration text; "
            "build it again to get a recipe that rebuilds exactly."
        )
    ranges = d.get("ranges") or []
    method = d.get("method") or "official"
    method_obj = REGISTRY.method(method)
    if not ranges:
        raise LacoError("The recipe holds no plan to rebuild (no 'ranges').")
    steps = d.get("steps") or []
    if method_obj.fitted or (kind == "auto" and steps):
        merges_step = _v1_replay(steps, method) if not method_obj.fitted else None
        if merges_step is not None:
            return Recipe(BaseRef(spec), [merges_step], {"converted_from": 1})
        cal = TextSource.of(read_asset(DEFAULT_FIT_TEXT), DEFAULT_FIT_TEXT)
        step = CollapseStep([list(r) for r in ranges], method, {}, cal)
        return Recipe(BaseRef(spec), [step], {"converted_from": 1})
    params = {k: v for k, v in (d.get("method_params") or {}).items() if k != "fit"}
    step = CollapseStep([list(r) for r in ranges], method, params)
    return Recipe(BaseRef(spec), [step], {"converted_from": 1})


def _v1_replay(steps: list[dict], method: str):
    """An old search's accepted merges as a search step to replay (non-fitted methods)."""
    merges = [
        Merge(int(s["lo"]), int(s["hi"]), s.get("method", method), dict(s.get("params", {})))
        for s in steps
    ]
    return SearchStep(SearchConfig(method=method), TextSource(texts=[]), None, merges)
