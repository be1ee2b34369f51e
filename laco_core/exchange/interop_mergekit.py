"""Layer plans to and from mergekit ``passthrough`` configs (the YAML mergekit and PruneMe use).

A mergekit passthrough config lists ``slices``, each copying the half-open layer range
``[a, b)`` of one source model, in order. That expresses a model made of whole layers of the
original, so of our methods only ``drop`` (keep layer LO of each range LO-HI, remove the
rest) can be written that way; every other method builds at least one layer whose tensors
come from several source layers or are computed. :func:`expressible` says which and why.

No mergekit import is needed here: the configs are plain YAML (mergekit 0.1.5 reads them).
"""

from __future__ import annotations

from typing import Any

import yaml

from ..arch.plan import Range, layer_groups, validate_ranges
from ..errors import LacoError
from ..schema import MAX_DEPTH, MAX_LAYERS, check_depth, check_layer_range
from ..version import __version__

MERGEKIT_FILE = "mergekit_config.yml"


def expressible(method) -> tuple[bool, str]:
    """Whether a plan built with ``method`` (a ``MergeMethod``) can be a passthrough config.

    Passthrough copies whole layers of one source per slice; it neither combines layers nor
    computes new tensors. Each method states why it can or cannot (``passthrough``).

    Returns:
        ``(True, why)`` for a pure layer drop, else ``(False, reason)``.
    """
    if method.passthrough is None:
        return True, (
            "keeps layer LO of each range whole and removes LO+1..HI: a list of kept layers, "
            "which is exactly what passthrough slices are"
        )
    return False, method.passthrough


def kept_layers(num_layers: int, plan: list[Range]) -> list[int]:
    """The original layers a ``drop`` collapse of ``plan`` keeps, in order (LO of each range)."""
    ranges = validate_ranges(plan, num_layers)
    return [lo for lo, _ in layer_groups(ranges, num_layers)]


def _slices(kept: list[int]) -> list[tuple[int, int]]:
    """Runs of consecutive layers as half-open ``[a, b)`` ranges."""
    runs: list[tuple[int, int]] = []
    for i in kept:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


class _FlowList(list):
    """A list written inline, ``[0, 17]``, as mergekit's examples write layer ranges."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper plus inline layer ranges (its own class: PyYAML's stays untouched)."""


_Dumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def kept_to_yaml(
    model_ref: str, num_layers: int, kept: list[int], dtype: str | None = None, note: str = ""
) -> str:
    """A mergekit ``passthrough`` config that keeps the layers ``kept`` (in order) of a model.

    Args:
        model_ref: What mergekit should read: a Hub id or a local folder.
        num_layers: Layers of that model.
        kept: The original layers kept, strictly increasing.
        dtype: mergekit's ``dtype`` (e.g. ``bfloat16``); omitted when None.
        note: A comment line describing where the plan came from.
    """
    if not kept or any(b <= a for a, b in zip(kept, kept[1:], strict=False)):
        raise LacoError("A passthrough config keeps layers in their order, each once.")
    if kept[0] < 0 or kept[-1] >= num_layers:
        raise LacoError(f"Kept layers {kept} are outside the model's 0-{num_layers - 1}.")
    config: dict[str, Any] = {
        "slices": [
            {"sources": [{"model": model_ref, "layer_range": _FlowList([a, b])}]}
            for a, b in _slices(kept)
        ],
        "merge_method": "passthrough",
    }
    if dtype:
        config["dtype"] = dtype
    header = (
        f"# mergekit passthrough config written by LaCo Explorer {__version__}\n"
        + (f"# {note}\n" if note else "")
        + f"# keeps {len(kept)} of {num_layers} layers; run: mergekit-yaml THIS_FILE OUT_DIR "
        "--copy-tokenizer\n"
    )
    return header + yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def plan_to_yaml(
    model_ref: str,
    num_layers: int,
    plan: list[tuple[int, int]],
    method,
    dtype: str | None = None,
) -> str:
    """A mergekit ``passthrough`` config that keeps exactly the layers our collapse keeps.

    Args:
        model_ref: What mergekit should read: a Hub id or a local folder.
        num_layers: Layers of that model.
        plan: Our inclusive, 0-based ranges ``(lo, hi)`` in that model's indices; each
            becomes one layer at LO's position.
        method: Our ``MergeMethod``; only a pure drop is expressible (:func:`expressible`).
        dtype: mergekit's ``dtype`` (e.g. ``bfloat16``); omitted when None.

    Returns:
        The YAML text; its slices are half-open ranges, e.g. plan ``[(16, 18)]`` on 30 layers
        gives ``[0, 17]`` and ``[19, 30]``.

    Raises:
        LacoError: for a method passthrough cannot express (with the reason) or a bad plan.
    """
    ok, reason = expressible(method)
    if not ok:
        raise LacoError(f"mergekit passthrough cannot express method '{method.name}': it {reason}.")
    ranges = ", ".join(f"{lo}-{hi}" for lo, hi in sorted(plan))
    note = f"laco plan (inclusive, 0-based, method {method.name}): {ranges}"
    return kept_to_yaml(model_ref, num_layers, kept_layers(num_layers, plan), dtype, note)


# ---- import ----------------------------------------------------------------------------------


def _model_string(ref: Any, where: str) -> str:
    """mergekit's model reference (string or mapping) as ``path`` or ``path@revision``."""
    if isinstance(ref, str):
        if "+" in ref:
            raise LacoError(
                f"{where} applies a LoRA ('{ref}'), which changes weights; merge the LoRA into "
                "the model first and reference that."
            )
        return ref
    if isinstance(ref, dict) and "model" in ref:
        if ref.get("lora"):
            raise LacoError(
                f"{where} applies a LoRA, which changes weights; merge it into the model first."
            )
        inner = ref["model"]
        if isinstance(inner, dict) and isinstance(inner.get("path"), str):
            rev = inner.get("revision")
            return f"{inner['path']}@{rev}" if rev else inner["path"]
        return _model_string(inner, where)
    raise LacoError(f"{where} has no readable model reference (got {ref!r}).")


def _refuse_parameters(node: dict, where: str) -> None:
    if node.get("parameters"):
        raise LacoError(
            f"{where} sets parameters ({', '.join(map(str, node['parameters']))}), which scale "
            "weights; a laco plan only keeps or removes whole layers."
        )


def yaml_to_kept(text: str) -> tuple[str, list[int]]:
    """Read a mergekit passthrough config of one model as ``(model reference, kept layers)``.

    Raises:
        LacoError: as :func:`yaml_to_plan` (the first-layer rule aside: any kept list in
            order is a valid drop of the others).
    """
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LacoError(f"Not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise LacoError(f"The config nests deeper than {MAX_DEPTH} levels.") from None
    check_depth(cfg, "The config")
    return _kept(cfg)


def _kept(cfg) -> tuple[str, list[int]]:
    """The model and kept layers of a parsed config (every check but the first-layer one)."""
    if not isinstance(cfg, dict):
        raise LacoError("Not a mergekit config: expected a mapping with 'slices'.")
    method = cfg.get("merge_method")
    if method != "passthrough":
        raise LacoError(
            f"merge_method is '{method}': only 'passthrough' (copying whole layers) is a layer "
            "plan; other methods combine weights."
        )
    if "slices" not in cfg or not isinstance(cfg["slices"], list) or not cfg["slices"]:
        form = "modules" if "modules" in cfg else "models" if "models" in cfg else "no slices"
        raise LacoError(
            f"This passthrough config uses {form}; a layer plan needs a top-level 'slices' list."
        )
    _refuse_parameters(cfg, "The config")

    models: set[str] = set()
    layers: list[int] = []
    for i, s in enumerate(cfg["slices"]):
        where = f"Slice {i}"
        if not isinstance(s, dict) or not isinstance(s.get("sources"), list):
            raise LacoError(f"{where} has no 'sources' list.")
        if len(s["sources"]) != 1:
            raise LacoError(
                f"{where} has {len(s['sources'])} sources; passthrough takes one per slice."
            )
        _refuse_parameters(s, where)
        src = s["sources"][0]
        if not isinstance(src, dict):
            raise LacoError(f"{where}: a source must be a mapping with model and layer_range.")
        _refuse_parameters(src, where)
        models.add(_model_string(src.get("model"), where))
        lr = src.get("layer_range")
        if (
            not isinstance(lr, (list, tuple))
            or len(lr) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in lr)
        ):
            raise LacoError(f"{where}: layer_range must be two integers [start, end), got {lr!r}.")
        a, b = lr
        if a < 0 or b < a:
            raise LacoError(f"{where}: layer_range [{a}, {b}) is not a valid half-open range.")
        check_layer_range(a, b, where)
        layers += range(a, b)
        if len(layers) > MAX_LAYERS:
            raise LacoError(
                f"The slices keep more than {MAX_LAYERS} layers, more than any model has."
            )
    if cfg.get("base_model") is not None:
        models.add(_model_string(cfg["base_model"], "base_model"))
    if len(models) != 1:
        raise LacoError(
            f"The config reads {len(models)} models ({', '.join(sorted(models))}); a layer plan "
            "comes from one model."
        )
    if not layers:
        raise LacoError("The slices keep no layers.")
    seen: set[int] = set()
    for prev, cur in zip([-1, *layers], layers, strict=False):
        if cur <= prev:
            what = "repeats" if cur in seen else "reorders"
            raise LacoError(
                f"The slices {what} layers (layer {cur} after layer {prev}); a collapse keeps "
                "layers once each, in order."
            )
        seen.add(cur)
    return models.pop(), layers


def yaml_to_plan(text: str, num_layers: int | None = None) -> tuple[str, list[tuple[int, int]]]:
    """Read a mergekit passthrough config of one model as ``(model reference, drop plan)``.

    Any slice layout whose layers, read in order, are strictly increasing is accepted (one
    slice per kept run, one per layer, empty slices…); the plan keeps those layers with our
    ``drop`` method. Layers after the last slice are dropped when ``num_layers`` is given;
    without it the last slice is taken to end at the model's last layer (pass the model's
    layer count whenever it is known).

    Args:
        text: The YAML.
        num_layers: The source model's layer count, when known.

    Returns:
        ``(model reference as mergekit writes it, plan)``; plan ranges are inclusive and
        0-based, to be built with method ``drop``. A config that keeps every layer gives ``[]``.

    Raises:
        LacoError: for YAML that is not a passthrough of one model's whole layers in order:
            other merge methods, several source models, LoRAs, scaling parameters,
            reordered or repeated layers, a dropped first layer, or ranges past the model.
    """
    model, layers = yaml_to_kept(text)
    n = layers[-1] + 1 if num_layers is None else num_layers
    if layers[-1] >= n:
        raise LacoError(
            f"The slices reach layer {layers[-1]} but the model has {n} layers (0-{n - 1})."
        )
    if layers[0] != 0:
        raise LacoError(
            f"The slices drop the first layer(s) 0-{layers[0] - 1}; a laco plan keeps the first "
            "layer of each range, so it cannot remove a model's first layers."
        )
    bounds = layers[1:] + [n]
    plan = [(k, nxt - 1) for k, nxt in zip(layers, bounds, strict=True) if nxt - 1 > k]
    return model, plan


__all__ = [
    "MERGEKIT_FILE",
    "expressible",
    "kept_layers",
    "plan_to_yaml",
    "kept_to_yaml",
    "yaml_to_kept",
    "yaml_to_plan",
]
