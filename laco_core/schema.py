"""One check of every file a user hands in, before any model work: recipes (JSON and their
tensors sidecar), session files, mergekit configs and share links.

The field types come from the step kinds themselves (their dataclass annotations), their
bounds from what they declare (``params`` ParamDefs, ``bounded`` limits); every ``list[int]``
or ``list[list[int]]`` field of a step holds layer indices. A refusal is one ``LacoError``
line that says what is wrong and where ("Step 2 (collapse): 'ranges' must be …").
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
import typing
from functools import cache
from types import NoneType, UnionType

import torch

from . import findings
from .assets import ASSET_TEXTS
from .errors import LacoError
from .loading.devices import DTYPES
from .loading.limits import Limits
from .recipe import RECIPE_VERSION, TENSORS_FILE, TextSource

MAX_DEPTH = 32  # our own files nest about 8 levels deep
MAX_LAYERS = 1024  # more decoder layers than any released model has
MAX_TEXT = 200  # characters of a label or a base model's name
TENSOR_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,2})?")
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MODULE_PATH = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\.lora_[AB]")
_TENSOR = "$tensor"
# the page a session keeps (``ui``): text fields and their longest lengths
SESSION_UI = {"plan": 1000, "attn": 1000, "method": 64, "map": 64, "tab": 64, "prompt": 4000}


def _show(value) -> str:
    """A value in a message, short, and escaped: the app shows messages as HTML."""
    text = repr(value) if isinstance(value, str) else str(value)
    text = text if len(text) <= 40 else text[:37] + "…"
    return html.escape(text.replace("\n", " "), quote=False)


def md_escape(text) -> str:
    """``text`` safe inside Markdown or HTML: tags escaped, Markdown punctuation literal."""
    return re.sub(r"([\\`*_\[\]{}()#+!|~>])", r"\\\1", html.escape(str(text), quote=True))


def check_depth(obj, what: str = "The file") -> None:
    """Refuse data nested deeper than ``MAX_DEPTH`` (walked without recursion)."""
    todo = [(obj, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise LacoError(f"{what} nests deeper than {MAX_DEPTH} levels.")
        if isinstance(value, dict):
            todo += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            todo += [(v, depth + 1) for v in value]


def check_layer_range(lo: int, hi: int, where: str) -> None:
    """A half-open ``[lo, hi)`` range of layers no model could hold is refused unexpanded."""
    if hi > MAX_LAYERS:
        raise LacoError(
            f"{where}: layer_range [{lo}, {hi}) reaches past {MAX_LAYERS} layers, more than "
            "any model has."
        )


# ---- field types, from the step kinds' annotations -------------------------------------------


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _is_ref(v) -> bool:
    return isinstance(v, dict) and set(v) == {_TENSOR} and isinstance(v[_TENSOR], str)


def _check_type(hint, value, name: str, where: str) -> None:
    """Refuse ``value`` when it does not have the type ``hint`` (a field's annotation)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, UnionType):
        if value is None and NoneType in args:
            return
        rest = [a for a in args if a is not NoneType]
        if len(rest) == 1:
            return _check_type(rest[0], value, name, where)
        return
    bad = f"{where}: '{name}' must be"
    if hint is bool and not isinstance(value, bool):
        raise LacoError(f"{bad} true or false, not {_show(value)}.")
    if hint is int and not _is_int(value):
        raise LacoError(f"{bad} a whole number, not {_show(value)}.")
    if hint is float and not _is_number(value):
        raise LacoError(f"{bad} a finite number, not {_show(value)}.")
    if hint is str and not (isinstance(value, str) and len(value) <= MAX_TEXT):
        raise LacoError(f"{bad} a text of at most {MAX_TEXT} characters, not {_show(value)}.")
    if hint is dict and not isinstance(value, dict):
        raise LacoError(f"{bad} a mapping, not {_show(value)}.")
    if (hint is list or origin is list) and not isinstance(value, list):
        raise LacoError(f"{bad} a list, not {_show(value)}.")
    if origin is list and args:
        item = args[0]
        if item == list[int]:
            if not all(isinstance(p, list) and len(p) == 2 and all(map(_is_int, p)) for p in value):
                raise LacoError(
                    f"{bad} a list of [lo, hi] pairs of whole numbers, not {_show(value)}."
                )
        elif item is int and not all(map(_is_int, value)):
            raise LacoError(f"{bad} a list of whole numbers, not {_show(value)}.")
        elif item is float and not all(map(_is_number, value)):
            raise LacoError(f"{bad} a list of finite numbers, not {_show(value)}.")
        elif item is str and not all(isinstance(t, str) for t in value):
            raise LacoError(f"{bad} a list of texts, not {_show(value)}.")
        elif dataclasses.is_dataclass(item):
            for j, v in enumerate(value):
                _check_fields(item, v, f"{name}.{j}", where)
    elif dataclasses.is_dataclass(hint):
        _check_fields(hint, value, name, where)


def _check_fields(cls, d, name: str, where: str) -> None:
    """A nested record (a text source, a merge, a search's settings) field by field."""
    if not isinstance(d, dict):
        raise LacoError(f"{where}: '{name}' must be a mapping, not {_show(d)}.")
    hints = _hints(cls)
    for key, value in d.items():
        if key in hints:
            _check_type(hints[key], value, f"{name}.{key}", where)
    if cls is TextSource and d.get("asset") is not None:
        if d["asset"] not in ASSET_TEXTS:
            raise LacoError(
                f"{where}: '{name}.asset' names no bundled text ({_show(d['asset'])}); "
                f"known: {', '.join(ASSET_TEXTS)}."
            )


# ---- recipes --------------------------------------------------------------------------------


def check_recipe(
    d,
    kinds: dict,
    tensors: dict[str, torch.Tensor] | None = None,
    limits: Limits | None = None,
) -> None:
    """Refuse a recipe's JSON content (and its sidecar ``tensors``, when one came with it)
    unless every field has its step kind's type and bounds.

    Raises:
        LacoError: one line naming the step, the field and what is wrong.
    """
    limits = limits or Limits.current()
    if not isinstance(d, dict) or "steps" not in d or "base" not in d:
        raise LacoError("This is not a LaCo recipe (no 'base' and 'steps').")
    check_depth(d, "The recipe")
    version = d.get("version", 1)
    if not _is_int(version) or version < 1:
        raise LacoError(
            f"The recipe's 'version' must be a whole number from 1, not {_show(version)}."
        )
    if version > RECIPE_VERSION:
        return  # Recipe.from_dict says to update
    _check_base(d["base"])
    if not isinstance(d["steps"], list):
        raise LacoError(f"The recipe's 'steps' must be a list of steps, not {_show(d['steps'])}.")
    if not isinstance(d.get("info", {}), dict):
        raise LacoError(f"The recipe's 'info' must be a mapping, not {_show(d['info'])}.")
    if d.get("info", {}).get("findings") is not None:
        findings.check(d["info"]["findings"], "The recipe's 'info.findings'")
    bound = d["base"].get("num_layers") or MAX_LAYERS
    for i, raw in enumerate(d["steps"]):
        if not isinstance(raw, dict):
            raise LacoError(f"Step {i + 1} must be a mapping with a 'kind', not {_show(raw)}.")
        cls = kinds.get(raw.get("kind"))
        if cls is not None:  # an unknown kind is refused by Recipe.from_dict, naming the known
            _check_step(cls, raw, f"Step {i + 1} ({cls.kind})", bound, limits)
    if tensors is not None:
        _check_tensors(d, tensors)


def _check_base(base) -> None:
    if not isinstance(base, dict) or not isinstance(base.get("spec"), str) or not base["spec"]:
        raise LacoError("The recipe's base model has no 'spec'.")
    if len(base["spec"]) > MAX_TEXT:
        raise LacoError(f"The recipe's base model name is over {MAX_TEXT} characters.")
    dtype, device = base.get("dtype", "auto"), base.get("device", "auto")
    if dtype not in ("auto", *DTYPES):
        raise LacoError(
            f"The recipe's base dtype {_show(dtype)} is not one of auto, {', '.join(DTYPES)}."
        )
    if not (isinstance(device, str) and DEVICE.fullmatch(device)):
        raise LacoError(
            f"The recipe's base device {_show(device)} is not one of auto, cpu, cuda, cuda:N, mps."
        )
    n = base.get("num_layers")
    if n is not None and not (_is_int(n) and 1 <= n <= MAX_LAYERS):
        raise LacoError(
            f"The recipe's base 'num_layers' must be a whole number from 1 to {MAX_LAYERS}, "
            f"not {_show(n)}."
        )


def _check_step(cls, raw: dict, where: str, bound: int, limits: Limits) -> None:
    hints = _hints(cls)
    declared = {p.name: p for p in getattr(cls, "params", ())}
    for name, value in raw.items():
        if name not in hints or value is None and name != "kind":
            continue  # unknown fields: Step.from_dict names them
        hint = hints[name]
        _check_type(hint, value, name, where)
        if hint is str and not NAME.fullmatch(value):
            raise LacoError(
                f"{where}: '{name}' must be a name (letters, digits, _ . -), not {_show(value)}."
            )
        p = declared.get(name)
        if p is not None and p.choices and value not in p.choices:
            raise LacoError(
                f"{where}: '{name}' is {_show(value)}; it must be one of {', '.join(p.choices)}."
            )
        if p is not None and _is_number(value):
            if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
                span = f"from {p.low:g}" if p.high is None else f"between {p.low:g} and {p.high:g}"
                raise LacoError(f"{where}: '{name}' is {value:,}; it must be {span}.")
        _check_indices(hint, value, name, where, bound)
    for limit, name, what in getattr(cls, "bounded", ()):
        if _is_int(raw.get(name)):
            if raw[name] < 0:
                raise LacoError(f"{where}: '{name}' must not be negative, not {raw[name]}.")
            limits.check(limit, raw[name], f"{where}: {what}")
    if isinstance(raw.get("adapters"), dict):
        _check_adapters(raw["adapters"], raw.get("rank"), where)


def _check_indices(hint, value, name: str, where: str, bound: int) -> None:
    """Layer indices (every ``list[int]`` / ``list[list[int]]`` field) inside the base."""
    if typing.get_origin(hint) in (typing.Union, UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not NoneType)
    if value is None or hint not in (list[int], list[list[int]]):
        return
    pairs = hint == list[list[int]]
    flat = [i for p in value for i in p] if pairs else value
    bad = next((i for i in flat if not 0 <= i < bound), None)
    if bad is not None:
        raise LacoError(
            f"{where}: '{name}' names layer {bad:,}; the base model has layers 0 to {bound - 1}."
        )
    if pairs:
        lo_hi = next((p for p in value if p[0] > p[1]), None)
        if lo_hi is not None:
            raise LacoError(f"{where}: '{name}' holds {lo_hi[0]}-{lo_hi[1]}, whose LO > HI.")
    elif len(set(value)) != len(value) or (name == "keep" and value != sorted(value)):
        order = "in increasing order, each once" if name == "keep" else "each once"
        raise LacoError(f"{where}: '{name}' must list layers {order}, not {_show(value)}.")


def _check_adapters(adapters: dict, rank, where: str) -> None:
    """LoRA factors: tensor references under ``<module path>.lora_A/B`` keys, in pairs."""
    for key, value in adapters.items():
        if not MODULE_PATH.fullmatch(key):
            raise LacoError(f"{where}: adapter {_show(key)} is not '<module>.lora_A' or '.lora_B'.")
        if not _is_ref(value):
            raise LacoError(
                f"{where}: adapter {_show(key)} must be a tensor in {TENSORS_FILE}, "
                f"not {_show(value)}."
            )
        pair = key[:-1] + ("B" if key.endswith("A") else "A")
        if pair not in adapters:
            raise LacoError(f"{where}: adapter {_show(key)} comes without {_show(pair)}.")


def _check_tensors(d: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Every reference of ``d`` names a finite floating tensor of the sidecar; LoRA factors
    have the step's rank."""
    for key, t in tensors.items():
        if t.dtype not in TENSOR_DTYPES:
            raise LacoError(
                f"{TENSORS_FILE}: tensor {_show(key)} is {str(t.dtype).replace('torch.', '')}; "
                "a recipe holds float32, bfloat16 or float16 tensors."
            )
        if not bool(torch.isfinite(t).all()):
            raise LacoError(f"{TENSORS_FILE}: tensor {_show(key)} holds NaN or infinite values.")
    todo = [(d, None)]
    while todo:
        value, step = todo.pop()
        if _is_ref(value):
            if value[_TENSOR] not in tensors:
                raise LacoError(
                    f"{TENSORS_FILE} lacks the tensor {_show(value[_TENSOR])} the recipe names."
                )
        elif isinstance(value, dict):
            todo += [(v, step) for v in value.values()]
        elif isinstance(value, list):
            todo += [(v, step) for v in value]
    for i, raw in enumerate(d["steps"]):
        adapters, rank = raw.get("adapters"), raw.get("rank")
        if not isinstance(adapters, dict):
            continue
        for key, ref in adapters.items():
            t = tensors[ref[_TENSOR]]
            want = 0 if key.endswith("A") else 1  # A: (r, in), B: (out, r)
            if t.dim() != 2 or t.shape[want] != rank:
                raise LacoError(
                    f"Step {i + 1} ({raw.get('kind')}): adapter {_show(key)} has shape "
                    f"{list(t.shape)}; a rank-{rank} LoRA factor is 2-D with {rank} "
                    f"{'rows' if want == 0 else 'columns'}."
                )


def check_layers(recipe, num_layers: int) -> None:
    """Once the base is loaded: every layer index a step names is one of its layers."""
    for i, step in enumerate(recipe.steps):
        raw = step.to_dict()
        for name, hint in _hints(type(step)).items():
            if name in raw:
                _check_indices(hint, raw[name], name, f"Step {i + 1} ({step.kind})", num_layers)


# ---- session files ----------------------------------------------------------------------------


def check_session(d: dict, kinds: dict, limits: Limits | None = None) -> None:
    """A session file: its builds are (id, label, recipe JSON, metrics, lm-eval scores), each
    recipe checked, the dense model's lm-eval scores (``dense_lmeval``) too; what it
    keeps of the page (``ui``) has the types of ``SESSION_UI``."""
    check_depth(d, "The session file")
    check_ui(d.get("ui") or {})
    builds = d.get("builds") or []
    if not isinstance(builds, list):
        raise LacoError(f"The session's 'builds' must be a list, not {_show(builds)}.")
    if d.get("dense_lmeval") is not None:
        findings.check_scores(d["dense_lmeval"], "dense_lmeval", "The session file")
    for j, b in enumerate(builds):
        where = f"Session build {j + 1}"
        if not isinstance(b, dict) or not isinstance(b.get("id"), str):
            raise LacoError(f"{where} must be a mapping with an 'id', not {_show(b)}.")
        if not NAME.fullmatch(b["id"]):
            raise LacoError(f"{where}: its id {_show(b['id'])} is not a build id.")
        label = b.get("label", "")
        if not isinstance(label, str) or len(label) > MAX_TEXT:
            raise LacoError(f"{where}: its label must be a text of at most {MAX_TEXT} characters.")
        findings.check_metrics(b.get("metrics", {}), where)
        if b.get("lmeval"):  # {} until lm-eval ran on it
            findings.check_lmeval(b["lmeval"], "lmeval", where)
        try:
            check_recipe(b.get("recipe"), kinds, None, limits)
        except LacoError as e:
            raise LacoError(f"{where} ({b['id']}): {e}") from None


def check_ui(ui) -> None:
    """What a session keeps of the page: its ``SESSION_UI`` texts and method ``params``."""
    params = (ui.get("params") or {}) if isinstance(ui, dict) else None
    if not isinstance(params, dict):
        raise LacoError(f"The session's 'ui' and 'ui.params' must be mappings, not {_show(ui)}.")
    for key, most in SESSION_UI.items():
        if ui.get(key) is not None and not (isinstance(ui[key], str) and len(ui[key]) <= most):
            raise LacoError(f"The session's 'ui.{key}' must be a text of ≤ {most} characters.")
    for name, v in params.items():
        if not NAME.fullmatch(str(name)) or not (
            isinstance(v, bool) or _is_number(v) or (isinstance(v, str) and len(v) <= MAX_TEXT)
        ):
            raise LacoError(f"The session's 'ui.params' {_show(name)} must hold a number or text.")


__all__ = [
    "MAX_DEPTH",
    "MAX_LAYERS",
    "check_depth",
    "check_layer_range",
    "check_layers",
    "check_recipe",
    "check_session",
    "md_escape",
]
