"""GGUF files, read once: dequantized into a safetensors copy that later loads take instead.

Dequantizing a GGUF takes ~16 s for the default model; the copy lives under ``cache_root()``,
keyed by the file's path, size and mtime, so a changed file gets a fresh copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def cache_root() -> Path:
    """Where converted copies of GGUF models are kept (``LACO_CACHE`` overrides)."""
    root = os.environ.get("LACO_CACHE") or Path.home() / ".cache" / "laco-explorer"
    return Path(root)


def read_gguf(gguf: Path, dtype: torch.dtype):
    """``(model, tokenizer, where)`` of a GGUF file: from its converted copy when there is
    one (``where`` is then the copy's folder), else converted now (and the copy written)."""
    cached = _cache_dir(gguf)
    if (cached / "config.json").exists() and (cached / "model.safetensors").exists():
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(cached)
        return model, tok, str(cached)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # the weights are already dequantized: drop the marker that blocks save_pretrained
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    try:  # write the copy atomically so a crash never leaves half a model behind
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(cached)
    except OSError:
        pass  # a read-only home only costs speed
    return model.to(dtype), tok, str(gguf)


def _cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()
    return cache_root() / f"{gguf.stem}-{key[:12]}"
