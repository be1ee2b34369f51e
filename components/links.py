"""Links that open what they promise: a valid plan (ranges, attention removals, method and its
parameters) or a built result's recipe steps (no weights) as a full URL with a copy button, and
a page opened with such a link showing it on the Collapse tab, saying it came from a link.

A link's query is checked like any user input: ranges within ``schema.MAX_LAYERS``, a packed
recipe through ``laco_core.exchange.links.unpack`` (bounded, then ``schema.check_recipe``).
The full URL is made in the browser (``widgets.ShareLink``): the page knows its own address
behind any proxy.
"""

from __future__ import annotations

import logging
import urllib.parse

from laco_core import schema
from laco_core.arch.plan import format_plan, parse_ranges
from laco_core.errors import LacoError
from laco_core.exchange import links
from laco_core.pipeline import recipe_from_dict
from laco_core.registry import REGISTRY

from .method_picker import METHOD_PARAMS, PARAM_NAMES, read_params
from .plan_map import read_full
from .state import Session

log = logging.getLogger("laco.app")
PARAM_PREFIX = "p."  # a method parameter in a link: ``p.alpha=0.5``


def plan_query(session: Session, plan: str, method: str, attn: str, *param_values) -> str:
    """The ShareLink value of the plan on the page: ``?plan=…`` when the plan, its attention
    removals and the method's parameters are valid, else a line saying why there is none."""
    ranges, attention, error = read_full(plan, attn, session.num_layers)
    if not ranges and not attention and not error:
        return "Add ranges to get a link to this plan for a colleague."
    params, bad = read_params(method, param_values)
    if error or bad:
        return "Fix the plan to get a link to it."
    query = {"plan": format_plan(ranges).replace(" ", ""), "method": method}
    if attention:
        query["attn"] = ",".join(map(str, attention))
    defaults = {d.name: d.default for d in METHOD_PARAMS.get(method, ())}
    for name, value in params.items():
        if value != defaults.get(name):
            query[PARAM_PREFIX + name] = str(value).lower() if isinstance(value, bool) else value
    return "?" + urllib.parse.urlencode(query, safe=",-")


def result_query(session: Session) -> str:
    """The ShareLink value of the session's current build: ``?recipe=…`` (its steps, packed),
    or a line saying why there is none."""
    entry = session.get(session.current)
    steps = entry.recipe.get("steps", []) if entry is not None else []
    if not any(isinstance(s, dict) and "config" in s for s in steps):
        return ""  # no searched result (a stopped or refused run built nothing)
    packed = links.pack(entry.recipe)
    if packed is None:
        return "This result's recipe is too long for a link: download the session instead."
    return "?" + urllib.parse.urlencode({"recipe": packed})


def _plan_of(d: dict) -> str:
    """The plan a link's recipe makes, in the base model's numbering (``info.plan``)."""
    plan = (d.get("info") or {}).get("plan") or []
    pairs = [p for p in plan if isinstance(p, list) and len(p) == 2]
    return ", ".join(
        f"{lo}-{hi}" for lo, hi in pairs if isinstance(lo, int) and isinstance(hi, int)
    )


def _method_of(d: dict) -> str | None:
    """The merge method a link's recipe collapses with: a step's own, or its search's refit
    or method (the settings a step declares, whatever its kind)."""
    for raw in d["steps"]:
        cfg = raw.get("config") if isinstance(raw.get("config"), dict) else {}
        for name in (cfg.get("refit"), cfg.get("method"), raw.get("method")):
            if name in REGISTRY.methods:
                return name
    return None


def read(query: dict, num_layers: int) -> dict | None:
    """What a page's link asks for: ``plan``, ``attn``, ``method``, ``params`` and the
    ``note`` saying where it came from; None when the page has no link.

    Raises:
        LacoError: a link that cannot be read (one line).
    """
    note = "↗ Opened from a link: "
    if query.get("recipe"):
        d = links.unpack(query["recipe"], REGISTRY.steps)
        recipe = recipe_from_dict(d)
        plan, method = _plan_of(d), _method_of(d)
        note += (
            f"**{schema.md_escape(recipe.describe())}** on `{schema.md_escape(recipe.base.spec)}`"
        )
        note += f"; its plan is drawn with *{method}*." if plan and method else "."
        return {"plan": _checked(plan), "method": method, "attn": "", "params": {}, "note": note}
    if not (query.get("plan") or query.get("attn")):
        return None
    plan = _checked(query.get("plan", ""))
    top = num_layers or schema.MAX_LAYERS
    layers = [t.strip() for t in query.get("attn", "").split(",") if t.strip().isdigit()]
    attn = ", ".join(t for t in layers if int(t) < top)
    method = query.get("method") if query.get("method") in REGISTRY.methods else None
    params = {k[len(PARAM_PREFIX) :]: v for k, v in query.items() if k.startswith(PARAM_PREFIX)}
    note += f"plan {plan or '–'} with *{method or 'the default method'}*."
    return {"plan": plan, "method": method, "attn": attn, "params": params, "note": note}


def _checked(text: str) -> str:
    """A link's ranges, refused past ``schema.MAX_LAYERS`` before anything expands them."""
    ranges = parse_ranges(text or "")
    for lo, hi in ranges:
        schema.check_layer_range(lo, hi + 1, "The link's plan")
    return format_plan(ranges)


def param_values(method: str | None, params: dict, as_text: bool = False) -> dict:
    """Method parameters read back (from a link's texts or a kept session) as their
    controls' values; a value of the wrong kind is left out (the control keeps its own)."""
    defs = {d.name: d for d in METHOD_PARAMS.get(method or "", ()) if d.name in PARAM_NAMES}
    out = {}
    for name, value in params.items():
        d = defs.get(name)
        if d is None:
            continue
        try:
            if d.type == "bool":
                value = value.lower() == "true" if as_text else value
                ok = isinstance(value, bool)
            elif d.type in ("int", "float") and d.default is not None:
                value = float(value) if as_text else value
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif d.type == "choice":
                ok = value in d.choices
            else:
                value, ok = str(value), len(str(value)) <= schema.MAX_TEXT
        except (AttributeError, ValueError):
            ok = False
        if ok:
            out[name] = value
    return out


def safe_read(query: dict, num_layers: int) -> dict | None:
    """``read``, with a link that cannot be read answered by a note (never an error)."""
    try:
        return read(query, num_layers)
    except LacoError as e:
        log.info("user error in a link: %s", e)
        return {"plan": None, "method": None, "attn": None, "params": {}, "note": f"⚠ {e}"}
