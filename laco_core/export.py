"""Export a (collapsed) model: save, write its recipe, reload with plain transformers, verify.

An export is only useful if anyone can load it with ``AutoModelForCausalLM.from_pretrained``
alone, so every export is reloaded that way and its logits are compared with the in-memory
model's; a mismatch raises instead of leaving a silently different model on disk.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from . import __version__
from .adapters import num_layers
from .errors import LacoError
from .merge import plan_of
from .models import SHAPES_SIDECAR, count_params, strip_gguf_quantizer

RECIPE_FILE = "laco_recipe.json"
# A fixed check sentence: tokenized, it exercises embeddings, every layer and the head.
CHECK_TEXT = "Layer collapse export check: the quick brown fox jumps over the lazy dog, 1 2 3."
FP32_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    """Where an export went and how its reload compared.

    Attributes:
        path: The export directory.
        max_abs_logit_diff: Largest |logit difference| between the in-memory model and the
            model reloaded from ``path`` on the check input.
        verified: True when that difference is within tolerance (otherwise export raises).
    """

    path: Path
    max_abs_logit_diff: float
    verified: bool


def build_recipe(
    model: PreTrainedModel, recipe: dict | None = None, original: PreTrainedModel | None = None
) -> dict:
    """The ``laco_recipe.json`` content: what was done to which model, and with which tool."""
    recipe = dict(recipe or {})
    layers_after = num_layers(model)
    layer_map = getattr(model, "laco_layer_map", None)
    if original is not None:
        layers_before = num_layers(original)
    else:
        layers_before = layer_map[-1][1] + 1 if layer_map else layers_after
    out = {
        "tool": "laco-explorer",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": recipe.pop("model", recipe.pop("spec", None)),
        "method": recipe.pop("method", None),
        "ranges": [list(r) for r in plan_of(model)],  # original (pre-collapse) layer indices
        "layers_before": layers_before,
        "layers_after": layers_after,
        "params_before": recipe.pop(
            "params_before", count_params(original) if original is not None else None
        ),
        "params_after": count_params(model),
        "architecture": type(model).__name__,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }
    for key, value in recipe.items():
        # measured facts win; the caller's extras fill the rest (search scores, prune plans…)
        if out.get(key) in (None, []):
            out[key] = value
    return out


def _model_card(recipe: dict) -> str:
    ranges = ", ".join(f"{lo}-{hi}" for lo, hi in recipe["ranges"]) or "none"
    return (
        "---\nlibrary_name: transformers\ntags: [laco, layer-collapse, pruning]\n---\n"
        f"# Layer-collapsed {recipe.get('model') or 'model'}\n\n"
        f"Built with LaCo Explorer {recipe['version']} (LaCo: Yang et al. 2024, arXiv 2402.11187).\n\n"
        f"- method: `{recipe.get('method')}`\n- merged ranges (original layer indices): {ranges}\n"
        f"- layers: {recipe['layers_before']} → {recipe['layers_after']}\n"
        f"- parameters: {recipe['params_before']} → {recipe['params_after']}\n\n"
        "Loads with `AutoModelForCausalLM.from_pretrained` alone; the full recipe is in "
        f"`{RECIPE_FILE}`.\n"
    )


@torch.no_grad()
def verify_reload(model: PreTrainedModel, tokenizer, path: str | Path) -> float:
    """Reload ``path`` with plain transformers and return the max |logit difference| on a fixed input."""
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if (Path(path) / SHAPES_SIDECAR).exists():
        # width-pruned: per-layer sizes exist only in the sidecar, which plain transformers ignores
        from .prune import load_pruned

        reloaded = load_pruned(path, dtype)[0].to(dev).eval()
    else:
        reloaded = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(dev).eval()
    ids = tokenizer(CHECK_TEXT, return_tensors="pt").input_ids.to(dev)  # (1, T)
    a = model(input_ids=ids, use_cache=False).logits.float()  # (1, T, V)
    b = reloaded(input_ids=ids, use_cache=False).logits.float()  # (1, T, V)
    if a.shape != b.shape:
        raise RuntimeError(
            f"Reloaded model gives logits of shape {tuple(b.shape)}, expected {tuple(a.shape)}."
        )
    return float((a - b).abs().max())


def export_model(
    model: PreTrainedModel,
    tokenizer,
    out_dir: str | Path,
    recipe: dict | None = None,
    original: PreTrainedModel | None = None,
) -> ExportResult:
    """Save ``model`` + tokenizer + ``laco_recipe.json`` and verify a plain reload.

    Args:
        model: The model to export (collapsed or not).
        tokenizer: Its tokenizer, saved beside it.
        out_dir: Target directory (created; existing model files are overwritten).
        recipe: Extra facts to record (``model`` spec, ``method``, ``params_before``…).
        original: The model it was derived from, to count parameters before.

    Returns:
        ExportResult with the reload's max |logit difference|.

    Raises:
        RuntimeError: when the reloaded model's logits differ beyond tolerance (1e-4 in
            float32): the export would not be the model that was evaluated.
    """
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise LacoError(f"Export target '{path}' is a file; give a directory.")
    path.mkdir(parents=True, exist_ok=True)
    full = build_recipe(model, recipe, original)

    strip_gguf_quantizer(model)  # a GGUF-loaded model refuses save_pretrained otherwise
    from .prune import is_pruned, save_pruned

    if is_pruned(model):
        save_pruned(model, tokenizer, path, full)  # adds the per-layer shapes sidecar
    else:
        (path / SHAPES_SIDECAR).unlink(missing_ok=True)  # a stale sidecar would misload
        model.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
    (path / RECIPE_FILE).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    (path / "README.md").write_text(_model_card(full), encoding="utf-8")

    diff = verify_reload(model, tokenizer, path)
    dtype = next(model.parameters()).dtype
    tol = FP32_TOLERANCE if dtype == torch.float32 else 1e-2
    if not diff <= tol:
        raise RuntimeError(
            f"Export check failed: the model reloaded from {path} differs from the in-memory "
            f"model by {diff:.3g} in logits (tolerance {tol:g}); do not use this export."
        )
    return ExportResult(path=path, max_abs_logit_diff=diff, verified=True)


def zip_export(path: str | Path) -> Path:
    """Zip an export directory into ``<path>.zip`` beside it (for a download button)."""
    path = Path(path)
    if not path.is_dir():
        raise LacoError(f"Nothing to zip: '{path}' is not an export directory.")
    archive = shutil.make_archive(str(path), "zip", root_dir=path.parent, base_dir=path.name)
    return Path(archive)


def push_to_hub(path: str | Path, repo_id: str, token: str, private: bool = True) -> str:
    """Upload an export directory to a Hugging Face model repo; returns the repo URL.

    The token is passed to ``HfApi`` only: never logged, stored or written to disk.
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise LacoError(f"'{path}' is not an export directory (no config.json); export first.")
    if not repo_id or "/" not in repo_id:
        raise LacoError("Give the Hub repo as 'user/name'.")
    if not token:
        raise LacoError(
            "A Hugging Face write token is needed to push; paste one (it is not stored)."
        )
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(path),
            repo_id=repo_id,
            repo_type="model",
            commit_message="Upload layer-collapsed model (LaCo Explorer)",
        )
    except Exception as e:  # network/auth errors: report the kind, never the token
        raise LacoError(
            f"Push to {repo_id} failed: {type(e).__name__}; check the token's write access and the network."
        ) from None
    return str(url)
