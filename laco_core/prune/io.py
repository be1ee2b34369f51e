"""Saving and loading width-pruned models: safetensors plus a sidecar of per-layer sizes.

Transformers' configs hold one size per model, so a pruned model is saved with
``laco_shapes.json`` and reloaded by :func:`load_pruned` (or, through any model spec, by
``models.load_model``, which calls :func:`read_pruned`), rebuilding the layers' shapes before
loading the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedModel

from ..errors import LacoError
from .geometry import model_shapes
from .surgery import apply_shapes

SHAPES_SIDECAR = "laco_shapes.json"  # per-layer sizes a transformers config cannot hold


def save_pruned(model: PreTrainedModel, tokenizer, out_dir: str | Path) -> Path:
    """Write a width-pruned model: safetensors, tokenizer and the per-layer shapes sidecar.

    Args:
        model: Any model (its per-layer sizes are read from its weights).
        tokenizer: Saved beside the weights (None: not saved).
        out_dir: Created if missing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    sidecar = {"format": 1, "layers": {str(i): s for i, s in model_shapes(model).items()}}
    (out / SHAPES_SIDECAR).write_text(json.dumps(sidecar, indent=1))
    return out


def _skeleton(config, dtype: torch.dtype) -> PreTrainedModel:
    """A model of ``config`` without spending time on random initialisation where possible."""
    from transformers import AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def load_pruned(path: str | Path, dtype: torch.dtype = torch.float32):
    """Load a model saved by :func:`save_pruned`, rebuilding the per-layer sizes first.

    Returns:
        ``(model, tokenizer)``, the model in eval mode.
    """
    from transformers import AutoConfig, AutoTokenizer

    model = read_pruned(path, AutoConfig.from_pretrained(path), dtype)
    model.eval()
    model.requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(path)


def read_pruned(path: str | Path, config, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The weights of a folder saved by :func:`save_pruned`, into a model of ``config`` whose
    layers first take the sidecar's per-layer sizes (``models.load_model`` reads the config
    and the tokenizer itself).

    Raises:
        LacoError: when the folder has no weights or they do not match the sidecar.
    """
    from safetensors.torch import load_file

    path = Path(path)
    sidecar = json.loads((path / SHAPES_SIDECAR).read_text())
    model = _skeleton(config, dtype)
    apply_shapes(model, sidecar["layers"])
    files = sorted(f for f in path.glob("*.safetensors") if not f.name.startswith("laco_"))
    if not files:
        raise LacoError(f"No .safetensors weights in {path}; save the model with save_pruned.")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = (
        {k for k in missing if k.endswith("lm_head.weight")}
        if config.tie_word_embeddings
        else set()
    )
    if set(missing) - tied or unexpected:
        raise LacoError(
            f"Weights in {path} do not match its shapes sidecar: {sorted(set(missing) - tied)[:3]}"
            f" {unexpected[:3]}"
        )
    if tied:
        model.tie_weights()
    return model.to(dtype)
