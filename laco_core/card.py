"""Hugging Face Hub model cards for exported models: what was done, how well it does, how to load.

The card's YAML front matter links the base model (``base_model:``) and carries its license
(a pruned model is a derivative of the base model and inherits its terms), so the Hub shows
the model tree and the right license. The body records the recipe, the measured metrics and
the loading code: plain transformers for layer-collapsed models, our loader for width-pruned
ones, whose per-layer sizes transformers 5.x configs cannot state (one ``intermediate_size``
and one head count for all layers, strictly typed as integers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import LacoError
from .interop_mergekit import MERGEKIT_FILE, expressible
from .methods import REGISTRY
from .models import DEFAULT_HUB_ID, DEFAULT_SPEC, SHAPES_SIDECAR

# One place to change when the loader moves (the issue asks for `from laco_core import ...`).
LOADER_IMPORT = "from laco_core.prune import load_pruned"
RECIPE_FILE = "laco_recipe.json"  # export.RECIPE_FILE; not imported, so export can import us
PAPER = "LaCo: Large Language Model Pruning via Layer Collapse (Yang, Cao & Zhao 2024, arXiv 2402.11187)"
DEFAULT_BASE_INFO = {"id": DEFAULT_HUB_ID, "license": "apache-2.0", "name": "SmolLM2-135M-Instruct"}


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

    ``default`` is SmolLM2-135M-Instruct (apache-2.0). A local folder contributes the license
    of its own README front matter, when it has one, but no Hub id. Anything else is taken as a
    Hub id whose license is not known here (pass one in ``base_info`` when you know it).
    """
    if spec == DEFAULT_SPEC:
        return dict(DEFAULT_BASE_INFO)
    path = Path(spec).expanduser()
    if path.exists():
        readme = path / "README.md" if path.is_dir() else None
        info: dict[str, Any] = {"id": None, "name": path.name}
        if readme is not None and readme.is_file():
            info.update(license_from_readme(readme.read_text(encoding="utf-8", errors="replace")))
        return info
    return {"id": spec, "name": spec.rsplit("/", 1)[-1]}


def needs_loader(recipe: dict) -> bool:
    """True for a model whose layers have their own widths (saved with a shapes sidecar)."""
    return bool(recipe.get("shapes_sidecar")) or recipe.get("kind") == "llm_pruner"


def _front_matter(recipe: dict, base_info: dict, width_pruned: bool) -> str:
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
    tags += ["width-pruning", "llm-pruner"] if width_pruned else ["layer-collapse", "laco"]
    if recipe.get("method"):
        tags.append(f"laco-{recipe['method']}".replace("_", "-"))
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


def _recipe_lines(recipe: dict, width_pruned: bool) -> list[str]:
    lines = []
    if width_pruned:
        lines.append(
            "- pruning: LLM-Pruner-style width pruning (Ma et al. 2023) of KV-head groups and "
            "MLP channels"
        )
        for key in ("ratio", "importance", "aggregation", "layers", "num_samples", "seq_len"):
            if recipe.get(key) is not None:
                lines.append(f"- {key.replace('_', ' ')}: `{recipe[key]}`")
    method = recipe.get("method")
    if method:
        m = REGISTRY.get(method)
        what = f" — {m.summary.rstrip('.')} (`{m.formula}`)" if m else ""
        lines.append(f"- merge method: `{method}`{what}")
    ranges = recipe.get("ranges") or []
    if ranges:
        text = ", ".join(f"{lo}-{hi}" for lo, hi in ranges)
        lines.append(
            f"- merged ranges (inclusive, original 0-based layer indices; each became one "
            f"layer at its first index): {text}"
        )
    if recipe.get("layers_before") is not None and recipe.get("layers_after") is not None:
        lines.append(f"- layers: {recipe['layers_before']} → {recipe['layers_after']}")
    before, after = recipe.get("params_before"), recipe.get("params_after")
    if before and after:
        lines.append(
            f"- parameters: {before:,} → {after:,} ({100 * (before - after) / before:.1f} % removed)"
        )
    for key in ("fit_text", "steps", "heal_steps", "teacher"):
        if recipe.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: `{recipe[key]}`")
    if recipe.get("dtype"):
        lines.append(f"- dtype: `{recipe['dtype']}`")
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
    recipe: dict,
    metrics: dict | None,
    lmeval_table_md: str | None,
    base_info: dict,
    *,
    repo_id: str | None = None,
    tool_url: str | None = None,
) -> str:
    """A Hub model card (README.md) for an exported collapsed or pruned model.

    Args:
        recipe: The export's ``laco_recipe.json`` content (``method``, ``ranges``,
            ``layers_before/after``, ``params_before/after``…, or an LLM-Pruner recipe with
            ``kind: llm_pruner``; ``shapes_sidecar: true`` marks any per-layer-width model).
        metrics: ``evaluate.evaluate`` output (``ppl``, ``kl``…; optional ``seq_len`` and
            ``text`` naming the evaluation text), or None when nothing was measured.
        lmeval_table_md: The paper-style table of :func:`laco_core.lmeval.table_markdown`,
            or None when lm-eval was not run.
        base_info: ``id`` (Hub id of the base model, or None), ``license`` (and optionally
            ``license_name`` / ``license_link`` for ``license: other``), ``name``,
            ``language``; see :func:`base_info_for`.
        repo_id: Where the card will live, for the loading snippet (default: a placeholder).
        tool_url: Where LaCo Explorer can be installed from, for width-pruned models.

    Returns:
        The card as markdown with YAML front matter.

    Raises:
        LacoError: for a recipe without anything to describe (no ranges and no pruning).
    """
    width_pruned = needs_loader(recipe)
    if not width_pruned and not recipe.get("ranges") and recipe.get("layers_after") is None:
        raise LacoError(
            "This recipe records neither merged ranges nor pruning; nothing to describe."
        )
    base_name = (
        base_info.get("name") or base_info.get("id") or recipe.get("model") or "the base model"
    )
    base_link = (
        f"[{base_info['id']}](https://huggingface.co/{base_info['id']})"
        if base_info.get("id")
        else f"`{base_name}`"
    )
    kind = "Width-pruned" if width_pruned else "Layer-collapsed"
    out = [_front_matter(recipe, base_info, width_pruned)]
    out += [f"# {kind} {base_name}", ""]
    out.append(
        f"{'Pruned' if width_pruned else 'Collapsed'} from {base_link} with LaCo Explorer"
        f"{' ' + str(recipe['version']) if recipe.get('version') else ''}"
        + ("" if width_pruned else f", which implements {PAPER}")
        + "."
    )
    out.append("")
    if base_info.get("license"):
        out.append(
            f"License: `{base_info['license']}`, inherited from the base model; its terms apply."
        )
    else:
        out.append(
            "License: not recorded here. This is a derivative of the base model: check the base "
            "model's license before using or sharing it."
        )
    out += ["", "## Recipe", "", *_recipe_lines(recipe, width_pruned), ""]
    method = recipe.get("method")
    if method in REGISTRY and recipe.get("ranges"):
        ok, reason = expressible(method)
        if ok:
            out.append(
                "This plan is a pure layer drop, so mergekit can rebuild it from the base model "
                f"with a `passthrough` config (`{MERGEKIT_FILE}`)."
            )
        else:
            out.append(
                f"mergekit's `passthrough` cannot reproduce this model: `{method}` {reason}."
            )
        out.append("")
    out.append(f"The full recipe is in `{RECIPE_FILE}`.")
    out += ["", "## Evaluation", ""]
    measured = False
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
    "LOADER_IMPORT",
    "base_info_for",
    "license_from_readme",
    "model_card",
    "needs_loader",
]
