"""What a model spec may load, and how a bad model file is reported.

A hosted app loads the embedded models' aliases and Hub ids only; every failure to read local model files
(corrupt or truncated safetensors, a file that is not GGUF, a GGUF version we cannot read,
an invalid config) becomes one ``LacoError`` with a reason a person can act on; a config
that needs its own Python code (``auto_map``) is refused: remote code is not run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from pathlib import Path

from .adapters import supported
from .errors import LacoError

DEFAULT_SPEC = "default"
# owner/name as the Hub spells repo ids (no "..", no leading "/" or "~")
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_hosted_spec(spec: str, aliases: Collection[str] = (DEFAULT_SPEC,)) -> None:
    """A hosted app loads embedded models (by alias) and Hub ids only.

    Anything else is refused with one message whatever exists on the server, and a Hub-like
    name that is also a local folder is refused like a Hub miss, so no answer tells apart a
    file, a folder and nothing.

    Args:
        spec: The model spec asked for.
        aliases: The embedded models' aliases (``models.EMBEDDED``); they load from a pip
            package, never from a path the user names.
    """
    if spec in aliases:
        return
    if not HUB_ID.fullmatch(spec) or ".." in spec:
        raise LacoError(
            f"'{spec}' is not a Hub model id: this hosted app loads 'default' or a Hub id "
            "like HuggingFaceTB/SmolLM2-135M-Instruct, never files on the server."
        )
    if Path(spec).exists():
        raise LacoError(f"Cannot load model '{spec}': not found on the Hub.")


def read_local(spec: str, load):
    """Run ``load`` on local files; a corrupt or truncated file becomes one LacoError."""
    try:
        return load()
    except LacoError:
        raise
    except Exception as e:  # safetensors, gguf and json readers each raise their own types
        raise LacoError(f"Cannot read the model '{spec}': {_file_problem(e)}.") from None


def _file_problem(e: Exception) -> str:
    """A short, path-free reason for a failed read of local model files."""
    text = str(e)
    if "GGUF magic" in text:
        return "it is not a GGUF file (no GGUF magic bytes at its start)"
    m = re.search(r"GGUF v(\d+)", text)
    if m:
        return f"it is GGUF version {m.group(1)}, which is not supported (versions 2 and 3 are)"
    if type(e).__name__ == "SafetensorError" or "safetensors" in text.lower():
        return "its safetensors weights are corrupt or truncated; export or download it again"
    if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)):
        return "a JSON file in it (config or tokenizer) is not valid; save the model again"
    if isinstance(e, OSError):
        return f"a file could not be read ({e.strerror or type(e).__name__})"
    if isinstance(e, (RuntimeError, ValueError, KeyError)):
        return (
            "its files do not fit together (weights of other shapes than the config, or a "
            f"corrupt file: {type(e).__name__})"
        )
    return f"unexpected {type(e).__name__} while reading it"


def check_local_config(path: Path, spec: str, trust_remote_code: bool, max_params) -> None:
    """Refuse a folder whose config.json is unreadable or asks for remote code."""
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise LacoError(
            f"Cannot read the model '{spec}': its config.json is not valid JSON."
        ) from None
    if not isinstance(cfg, dict):
        raise LacoError(f"Cannot read the model '{spec}': its config.json is not an object.")
    check_remote_code(cfg, spec, trust_remote_code)


def check_remote_code(cfg: dict, name: str, trust_remote_code: bool) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if trust_remote_code or "auto_map" not in cfg:
        return
    if cfg.get("model_type") not in CONFIG_MAPPING:
        raise LacoError(
            f"'{name}' needs its own Python code (auto_map in its config): remote code is not "
            f"run here. Supported architectures: {supported()}."
        )


def check_size(config, name: str, max_params: int | None) -> None:
    if not max_params:
        return
    approx = approx_params(config)
    if approx > max_params:
        raise LacoError(
            f"'{name}' has about {approx / 1e9:.1f} B parameters, over the limit of "
            f"{max_params / 1e9:.1f} B (LACO_MAX_MODEL_PARAMS raises it on a self-hosted instance)."
        )


def approx_params(config) -> int:
    """Parameters a decoder config implies (attention, gated MLP, embeddings)."""
    h = config.hidden_size
    n = config.num_hidden_layers
    inter = getattr(config, "intermediate_size", 0) or 4 * h
    heads = getattr(config, "num_attention_heads", 1) or 1
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attn = 2 * h * heads * head_dim + 2 * h * kv * head_dim
    tied = getattr(config, "tie_word_embeddings", True)
    return n * (attn + 3 * h * inter) + (1 if tied else 2) * config.vocab_size * h
