"""Hugging Face Hub model cards for exported models: what was done, how well it does, how to load.

The card's YAML front matter links the base model (``base_model:``) and carries its license
(a pruned model is a derivative of the base model and inherits its terms), so the Hub shows
the model tree and the right license. The body records the recipe, the measured metrics and
the loading code: plain transformers for layer-collapsed models, our loader for width-pruned
ones, whose per-layer sizes transformers 5.x configs cannot state (one ``intermediate_size``
and one head count for all layers, strictly typed as integers).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import yaml

from ..errors import LacoError
from ..loading.models import DEFAULT_SPEC, EMBEDDED, GEMMA_LICENSE
from ..prune.io import SHAPES_SIDECAR
from ..recipe import RECIPE_FILE, Recipe
from ..search.curve import card_lines, validation_lines
from .card_findings import findings_lines
from .interop_mergekit import MERGEKIT_FILE

LOADER_IMPORT = "from laco_core import load_pruned"
PAPER = "LaCo: Large Language Model Pruning via Layer Collapse (Yang, Cao & Zhao 2024, arXiv 2402.11187)"
# Terms that bind every checkpoint of a family and its derivatives, whatever the Hub id, keyed
# by config ``model_type`` (or a GGUF's ``general.architecture``)
FAMILY_LICENSES = {t: GEMMA_LICENSE for t in ("gemma", "gemma2", "gemma3", "gemma3_text")}


def _embedded_info(spec: str) -> dict[str, Any]:
    row = EMBEDDED[spec]
    return {"id": row.hub_id, "name": row.name, **row.license}


DEFAULT_BASE_INFO = _embedded_info(DEFAULT_SPEC)


def license_from_readme(text: str) -> dict[str, str]:
    """``license`` (and ``license_name`` / ``license_link``) from a model card's front matter.

    Returns:
        The keys found, e.g. ``{"license": "apache-2.0"}``; ``{}`` without front matter.
    """
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError:
        return {}
    if not isinstance(meta, dict):
        return {}
    keys = ("license", "license_name", "license_link")
    return {k: str(meta[k]) for k in keys if meta.get(k)}


def base_info_for(spec: str) -> dict[str, Any]:
    """What the card can say about a base model given by a model spec.

    An embedded alias carries its Hub id and licence (``models.EMBEDDED``). A local folder
    contributes the license of its own README front matter, when it has one, but no Hub id.
    Anything else is taken as a Hub id. Without a stated licence, a model of a family whose
    terms bind all its derivatives (``FAMILY_LICENSES``, by the config's ``model_type`` or a
    GGUF's architecture; a Hub config only when already cached) gets that family's licence.
    """
    if spec in EMBEDDED:
        return _embedded_info(spec)
    path = Path(spec).expanduser()
    info: dict[str, Any]
    if path.exists():
        readme = path / "README.md" if path.is_dir() else None
        info = {"id": None, "name": path.name}
        if readme is not None and readme.is_file():
            info.update(license_from_readme(readme.read_text(encoding="utf-8", errors="replace")))
    else:
        info = {"id": spec, "name": spec.rsplit("/", 1)[-1]}
    if "license" not in info:
        info.update(FAMILY_LICENSES.get(_model_type(path, spec), {}))
    return info


def _model_type(path: Path, spec: str) -> str | None:
    """``model_type`` of a folder's or a cached Hub model's config, or a GGUF's architecture."""
    try:
        if path.suffix == ".gguf" and path.is_file():
            return _gguf_architecture(path)
        if path.is_dir():
            config = path / "config.json"
        else:
            from huggingface_hub import try_to_load_from_cache  # never downloads

            config = try_to_load_from_cache(spec, "config.json")
            if not isinstance(config, str):
                return None
        return json.loads(Path(config).read_text(encoding="utf-8")).get("model_type")
    except Exception:  # no readable config: the card then says to check the base's licence
        return None


_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # bytes


def _gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` from a GGUF file's key-value header (GGUF v2/v3).

    gguf's ``GGUFReader`` indexes every tensor first (~30 s for Gemma 3 270M); the key is
    normally the header's first, so this reads a few bytes.
    """
    with path.open("rb") as f:

        def read(fmt: str):
            return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))

        def string() -> str:
            return f.read(read("Q")[0]).decode("utf-8", errors="replace")

        def skip(kind: int) -> None:
            if kind == 8:
                string()
            elif kind == 9:  # an array: element type, count, elements
                sub, n = read("IQ")
                if sub in _GGUF_SCALARS:
                    f.seek(n * _GGUF_SCALARS[sub], 1)
                else:
                    for _ in range(n):
                        skip(sub)
            else:
                f.seek(_GGUF_SCALARS[kind], 1)

        magic, version, _, n_kv = read("4sIQQ")
        if magic != b"GGUF" or version < 2:
            return None
        for _ in range(n_kv):
            key, kind = string(), read("I")[0]
            if key == "general.architecture" and kind == 8:
                return string()
            skip(kind)
    return None


def needs_loader(recipe: Recipe) -> bool:
    """True for a model whose layers have their own widths (saved with a shapes sidecar)."""
    return bool(recipe.info.get("pruned")) or any(s.reshapes for s in recipe.steps)


def _methods_used(recipe: Recipe) -> list[str]:
    names = []
    for step in recipe.steps:
        for name in (getattr(step, "method", None), *_merge_methods(step)):
            if name and name not in names:
                names.append(name)
    return names


def _merge_methods(step) -> list[str]:
    return [m.method for m in (getattr(step, "merges", None) or [])]


def _front_matter(recipe: Recipe, base_info: dict, width_pruned: bool) -> str:
    meta: dict[str, Any] = {}
    if base_info.get("id"):
        meta["base_model"] = base_info["id"]
    for key in ("license", "license_name", "license_link"):
        if base_info.get(key):
            meta[key] = base_info[key]
    if base_info.get("language"):
        meta["language"] = base_info["language"]
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    tags = ["laco-explorer", "pruning"]
    tags += ["per-layer-shapes"] if width_pruned else ["layer-collapse", "laco"]
    tags += [f"laco-{m}".replace("_", "-") for m in _methods_used(recipe)]
    meta["tags"] = tags
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _recipe_lines(recipe: Recipe, methods: dict) -> list[str]:
    lines = [f"- step {i + 1}: {s.describe()}" for i, s in enumerate(recipe.steps)]
    for name in _methods_used(recipe):
        m = methods.get(name)
        if m is not None:
            lines.append(f"- merge method `{name}`: {m.summary.rstrip('.')} (`{m.formula}`)")
    info = recipe.info
    plan = info.get("plan") or []
    if plan:
        text = ", ".join(f"{lo}-{hi}" for lo, hi in plan)
        lines.append(
            "- merged ranges (inclusive, original 0-based layer indices; each became one "
            f"layer at its first index): {text}"
        )
    if info.get("layers_before") is not None and info.get("layers_after") is not None:
        lines.append(f"- layers: {info['layers_before']} → {info['layers_after']}")
    before, after = info.get("params_before"), info.get("params_after")
    if before and after:
        lines.append(
            f"- parameters: {before:,} → {after:,} ({100 * (before - after) / before:.1f} % removed)"
        )
    if info.get("dtype"):
        lines.append(f"- dtype: `{info['dtype']}`")
    return lines


_METRIC_ROWS = (
    ("ppl", "perplexity", 3),
    ("ref_ppl", "base model perplexity (same text)", 3),
    ("kl", "KL(base ‖ this) per token, nats", 4),
    ("top1_agreement", "top-1 agreement with the base model", 3),
    ("final_cosine", "final hidden-state cosine with the base model", 4),
    ("params", "parameters", 0),
    ("params_ratio", "parameters ÷ base model's", 4),
)


def _metrics_section(metrics: dict) -> list[str]:
    rows = [(label, _number(metrics[k], d)) for k, label, d in _METRIC_ROWS if k in metrics]
    if not rows:
        return []
    where = metrics.get("text") or "LaCo Explorer's bundled held-out text"
    seq = f", non-overlapping {metrics['seq_len']}-token windows" if metrics.get("seq_len") else ""
    out = [f"Measured on {where}{seq}.", "", "| metric | value |", "|---|---:|"]
    out += [f"| {label} | {value} |" for label, value in rows]
    return out


def _load_section(repo: str, width_pruned: bool, tool_url: str | None) -> list[str]:
    if not width_pruned:
        return [
            "An ordinary transformers checkpoint (the layer count is in `config.json`):",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
            "```",
        ]
    where = f" ({tool_url})" if tool_url else ""
    return [
        "Each layer keeps its own number of KV heads and MLP channels. transformers 5.x configs "
        "for this architecture hold one `intermediate_size` and one head count for all layers, "
        f"so the per-layer sizes are in `{SHAPES_SIDECAR}` and plain "
        "`AutoModelForCausalLM.from_pretrained` cannot load this model (shape mismatch). "
        f"LaCo Explorer{where} rebuilds the layers to those sizes first:",
        "",
        "```python",
        "from huggingface_hub import snapshot_download",
        LOADER_IMPORT,
        "",
        f'model, tokenizer = load_pruned(snapshot_download("{repo}"))',
        "```",
    ]


def model_card(
    recipe: Recipe,
    metrics: dict | None,
    lmeval_table_md: str | None,
    base_info: dict,
    *,
    methods: dict | None = None,
    passthrough: tuple[bool, str] | None = None,
    repo_id: str | None = None,
    tool_url: str | None = None,
) -> str:
    """A Hub model card (README.md) for an exported collapsed or pruned model.

    Args:
        recipe: The model's recipe (its ``info`` holds the plan, layers and parameters
            before and after, ``pruned`` for per-layer widths, and ``findings``: what was
            measured on the model, ``laco_core.findings``).
        metrics: ``evaluate.evaluate`` output (``ppl``, ``kl``…; optional ``seq_len`` and
            ``text`` naming the evaluation text), or None when nothing was measured.
        lmeval_table_md: The paper-style table of :func:`laco_core.exchange.lmeval.table_markdown`,
            or None when lm-eval was not run.
        base_info: ``id`` (Hub id of the base model, or None), ``license`` (and optionally
            ``license_name`` / ``license_link`` for ``license: other``), ``name``,
            ``language``; see :func:`base_info_for`.
        methods: The registry's merge methods, for their summaries and formulas.
        passthrough: Whether mergekit's passthrough can rebuild the model, and why (or why
            not); None leaves the section out.
        repo_id: Where the card will live, for the loading snippet (default: a placeholder).
        tool_url: Where LaCo Explorer can be installed from, for width-pruned models.

    Returns:
        The card as markdown with YAML front matter.

    Raises:
        LacoError: for a recipe without anything to describe (no ranges and no pruning).
    """
    width_pruned = needs_loader(recipe)
    if not recipe.steps:
        raise LacoError("This recipe has no steps; there is nothing to describe.")
    base_name = base_info.get("name") or base_info.get("id") or recipe.base.spec
    base_link = (
        f"[{base_info['id']}](https://huggingface.co/{base_info['id']})"
        if base_info.get("id")
        else f"`{base_name}`"
    )
    kind = "Pruned" if width_pruned else "Layer-collapsed"
    out = [_front_matter(recipe, base_info, width_pruned)]
    out += [f"# {kind} {base_name}", ""]
    out.append(
        f"{'Pruned' if width_pruned else 'Collapsed'} from {base_link} with LaCo Explorer"
        + ("" if width_pruned else f", which implements {PAPER}")
        + "."
    )
    out.append("")
    if base_info.get("license"):
        terms = base_info.get("license_name")
        if terms and base_info.get("license_link"):
            terms = f"[{terms}]({base_info['license_link']})"
        out.append(
            f"License: `{base_info['license']}`{f' ({terms})' if terms else ''}, inherited from "
            "the base model; its terms apply."
        )
    else:
        out.append(
            "License: not recorded here. This is a derivative of the base model: check the base "
            "model's license before using or sharing it."
        )
    out += ["", "## Recipe", "", *_recipe_lines(recipe, methods or {}), ""]
    if passthrough is not None:
        ok, reason = passthrough
        if ok:
            out.append(
                "This plan is a pure layer drop, so mergekit can rebuild it from the base model "
                f"with a `passthrough` config (`{MERGEKIT_FILE}`)."
            )
        else:
            out.append(f"mergekit's `passthrough` cannot reproduce this model: {reason}.")
        out.append("")
    out.append(f"The full recipe is in `{RECIPE_FILE}`.")
    out += ["", "## Evaluation", ""]
    measured = False
    for step in recipe.steps:  # a walking search measured each plan on validation text
        if getattr(step, "curve", None):
            out += [*card_lines(step.curve), ""]
            measured = True
    if not measured and recipe.info.get("validation"):  # a build measured once
        out += [*validation_lines(recipe.info["validation"]), ""]
        measured = True
    findings = recipe.info.get("findings")
    if isinstance(findings, dict) and (lines := findings_lines(findings, measured)):
        out += lines  # measured in an app session: held-out, calibration, lm-eval
        measured = True
    if metrics:
        section = _metrics_section(metrics)
        if section:
            out += [*section, ""]
            measured = True
    if lmeval_table_md and lmeval_table_md.strip():
        out += [
            "Zero-shot accuracy (%) through lm-evaluation-harness, with the average and the "
            "average as % of the dense model's:",
            "",
            lmeval_table_md.strip(),
            "",
        ]
        measured = True
    if not measured:
        out += ["Not measured at export time.", ""]
    out += ["## How to load", ""]
    out += _load_section(repo_id or "YOUR_USER/YOUR_REPO", width_pruned, tool_url)
    out += ["", "## Limitations", ""]
    out.append(
        "Removing layers or channels costs quality; the numbers above are the measured cost. "
        "The base model's limitations and intended uses carry over."
    )
    return "\n".join(out).rstrip() + "\n"


__all__ = [
    "DEFAULT_BASE_INFO",
    "FAMILY_LICENSES",
    "LOADER_IMPORT",
    "base_info_for",
    "license_from_readme",
    "model_card",
    "needs_loader",
]
