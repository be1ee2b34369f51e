"""Export a model: save, write its recipe, reload with plain transformers, verify, then publish.

An export is only useful if anyone can load it with ``AutoModelForCausalLM.from_pretrained``
alone, so every export is written to a temporary folder beside the target, reloaded that way
and compared logit for logit with the in-memory model; only then is it moved into place. A
failed export never leaves a half-written model where a good one was, and an existing
folder is replaced only when the caller says so (never the source model's own folder).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..arch.adapters import num_layers
from ..arch.plan import format_plan, plan_of
from ..arch.sharing import count_params, shared_copy
from ..errors import LacoError
from ..prune.geometry import is_pruned
from ..prune.io import SHAPES_SIDECAR, load_pruned, save_pruned
from ..recipe import RECIPE_FILE, Recipe

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


def check_target(path: str | Path, overwrite: bool = False, protect=()) -> Path:
    """The export folder, refused when writing it would destroy something.

    Args:
        path: The target folder.
        overwrite: Allow replacing an existing non-empty folder.
        protect: Folders that must never be replaced (the source model's own folder).

    Raises:
        LacoError: for a file, a protected folder, an existing non-empty folder without
            ``overwrite``, or a parent that cannot be written.
    """
    path = Path(path).expanduser()
    resolved = path.resolve()
    for p in protect:
        if p and Path(p).expanduser().exists() and Path(p).expanduser().resolve() == resolved:
            raise LacoError(f"'{path}' is the source model's own folder; export somewhere else.")
    if path.exists() and not path.is_dir():
        raise LacoError(f"'{path}' is a file; give a folder to export to.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise LacoError(f"'{path}' exists and is not empty; choose another folder or --overwrite.")
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise LacoError(f"Cannot create '{path}': '{parent}' is a file.")
    if not _writable(parent):
        raise LacoError(f"Cannot write '{path}': '{parent}' is not writable.")
    return path


def _writable(folder: Path) -> bool:
    """True when a folder can be created in ``folder`` (tried: permission bits say nothing to
    root, and read-only mounts or full disks only show when writing)."""
    if not os.access(folder, os.W_OK):
        return False
    try:
        probe = Path(tempfile.mkdtemp(prefix=".laco-probe-", dir=folder))
    except OSError:
        return False
    probe.rmdir()
    return True


def model_card(recipe: Recipe, info: dict) -> str:
    """A short README for an export (the Hub card adds metrics where measured)."""
    plan = format_plan(info.get("plan") or []) or "none"
    return (
        "---\nlibrary_name: transformers\ntags: [laco, layer-collapse, pruning]\n---\n"
        f"# {recipe.base.spec}, compressed with LaCo Explorer\n\n"
        f"Steps: {recipe.describe()}.\n\n"
        f"- merged ranges (original layer indices): {plan}\n"
        f"- layers: {info.get('layers_before')} → {info.get('layers_after')}\n"
        f"- parameters: {info.get('params_before')} → {info.get('params_after')}\n\n"
        + (
            "Width-pruned layers have their own sizes: load with "
            "`from laco_core import load_pruned` (the shapes are in `laco_shapes.json`).\n"
            if info.get("pruned")
            else "Loads with `AutoModelForCausalLM.from_pretrained` alone.\n"
        )
        + f"The recipe that rebuilds it is `{RECIPE_FILE}`.\n"
    )


@torch.no_grad()
def verify_reload(model: PreTrainedModel, tokenizer, path: str | Path) -> float:
    """Reload ``path`` with plain transformers (or the shapes loader for width-pruned models)
    and return the max |logit difference| on a fixed input."""
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if (Path(path) / SHAPES_SIDECAR).exists():
        reloaded = load_pruned(path, dtype)[0].to(dev).eval()
    else:
        reloaded = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(dev).eval()
    ids = tokenizer(CHECK_TEXT, return_tensors="pt").input_ids.to(dev)  # (1, T)
    a = model(input_ids=ids, use_cache=False).logits.float()  # (1, T, V)
    b = reloaded(input_ids=ids, use_cache=False).logits.float()  # (1, T, V)
    if a.shape != b.shape:
        raise LacoError(
            f"The reloaded model gives logits of shape {tuple(b.shape)}, expected {tuple(a.shape)}."
        )
    return float((a - b).abs().max())


def export_model(
    model: PreTrainedModel,
    tokenizer,
    out_dir: str | Path,
    recipe: Recipe | None = None,
    overwrite: bool = False,
    protect=(),
    extra: dict | None = None,
    files: dict[str, str] | None = None,
) -> ExportResult:
    """Save ``model`` + tokenizer + its recipe, verify a plain reload, then move into place.

    Args:
        model: The model to export (never modified: a shallow copy is saved).
        tokenizer: Its tokenizer, saved beside it.
        out_dir: Target folder (see ``check_target``).
        recipe: The recipe that rebuilds it (written as ``laco_recipe.json`` with its tensors).
        overwrite: Replace an existing non-empty folder.
        protect: Folders never to replace (the source model's).
        extra: More facts for the recipe file (e.g. measured metrics).
        files: More text files for the folder (a model card as ``README.md``, a mergekit
            config…), written before the reload check.

    Raises:
        LacoError: for a refused target, or when the reloaded model's logits differ beyond
            tolerance (1e-4 in float32): the export would not be the model evaluated.
    """
    target = check_target(out_dir, overwrite, protect)
    work = shared_copy(model)  # saving sets config fields; never on a shared model object
    pruned = is_pruned(work)
    info = {
        **(recipe.info if recipe else {}),
        "plan": [list(r) for r in plan_of(model)],
        "layers_after": num_layers(model),
        "params_after": count_params(model),
        "pruned": pruned,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }
    tmp = target.parent / f".{target.name}.laco-tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        if pruned:
            save_pruned(work, tokenizer, tmp)  # adds the per-layer shapes sidecar
        else:
            work.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        if recipe is not None:
            recipe.save(tmp, info=info, **(extra or {}))
            (tmp / "README.md").write_text(model_card(recipe, info), encoding="utf-8")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        diff = verify_reload(model, tokenizer, tmp)
        dtype = next(model.parameters()).dtype
        tol = FP32_TOLERANCE if dtype == torch.float32 else 1e-2
        if not diff <= tol:
            raise LacoError(
                f"Export check failed: the reloaded model differs from the in-memory model by "
                f"{diff:.3g} in logits (tolerance {tol:g}); nothing was written."
            )
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except OSError as e:
        raise LacoError(f"Cannot write the export to '{out_dir}': {e.strerror or e}.") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(path=target, max_abs_logit_diff=diff, verified=True)


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
            f"Push to {repo_id} failed: {type(e).__name__}; check the token's write access and "
            "the network."
        ) from None
    return str(url)
