"""A recipe's steps as a link parameter, bounded both ways, and read back through the same
check as a recipe file (``schema.check_recipe``).

A link carries what makes a model (its steps and their settings), never weights: tensor
references, fitted merges and LoRA factors are left out, so a fitted step fits again
(deterministic) when the link's recipe is rebuilt.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib

from ..errors import LacoError
from ..loading.limits import Limits
from ..schema import check_recipe

MAX_LINK = 4096  # characters of a link's packed recipe (browsers take URLs ~16× longer)
MAX_LINK_JSON = 65_536  # bytes a packed recipe may unpack to
LEFT_OUT = ("adapters", "curve", "seconds", "losses", "validation_curve")  # weights, run records


def _has_tensor(value) -> bool:
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, dict):
            if "$tensor" in v:
                return True
            todo += v.values()
        elif isinstance(v, list):
            todo += v
    return False


def steps_only(recipe: dict) -> dict:
    """``recipe`` (its JSON) without weights: base, steps and the plan it makes."""
    steps = []
    for raw in recipe.get("steps", []):
        step = {k: v for k, v in raw.items() if k not in LEFT_OUT}
        if _has_tensor(step.get("merges")):
            step.pop("merges")  # fitted merges: fitted again on the step's own texts
        steps.append(step)
    info = recipe.get("info", {})
    return {
        "format": recipe.get("format", "laco-recipe"),
        "version": recipe.get("version", 1),
        "base": recipe["base"],
        "steps": steps,
        "info": {"plan": info.get("plan", [])},
    }


def pack(recipe: dict) -> str | None:
    """``steps_only(recipe)`` as a link parameter (zlib, base64url), None past ``MAX_LINK``."""
    raw = json.dumps(steps_only(recipe), separators=(",", ":"), sort_keys=True).encode("utf-8")
    text = base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii").rstrip("=")
    return text if len(text) <= MAX_LINK else None


def unpack(text, kinds: dict, limits: Limits | None = None) -> dict:
    """A link's ``recipe=`` parameter back as a recipe's JSON, checked like a recipe file.

    Raises:
        LacoError: one line saying what is wrong with the link.
    """
    if not isinstance(text, str) or len(text) > MAX_LINK:
        raise LacoError(f"The link's recipe is longer than {MAX_LINK:,} characters.")
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        unpacker = zlib.decompressobj()
        raw = unpacker.decompress(packed, MAX_LINK_JSON)
        if unpacker.unconsumed_tail:
            raise LacoError(f"The link's recipe unpacks past {MAX_LINK_JSON:,} bytes.")
        d = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, zlib.error, RecursionError):
        raise LacoError("The link's recipe cannot be read: copy the whole link.") from None
    check_recipe(d, kinds, None, limits)
    if any(_has_tensor(s) for s in d["steps"]):
        raise LacoError("A link's recipe carries no weights; this one names tensors.")
    return d
