"""Where a model runs and in which precision: ``auto`` resolved to a real device and dtype."""

from __future__ import annotations

import torch

from ..errors import LacoError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise LacoError(f"Unknown device '{device}'; use auto, cpu, cuda or mps.") from e
    if dev.type not in ("cpu", "cuda", "mps"):  # meta holds no weights: nothing would run
        raise LacoError(f"Unknown device '{device}'; use auto, cpu, cuda or mps.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LacoError("CUDA was requested but no CUDA device is available; use device 'cpu'.")
    return dev


def resolve_dtype(dtype: str = "auto", device: torch.device | None = None) -> torch.dtype:
    """``auto`` is float32 on CPU (bf16 matmuls are slow there) and bfloat16/float16 on GPUs."""
    if dtype in (None, "", "auto"):
        if device is not None and device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device is not None and device.type == "mps":
            return torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise LacoError(f"Unknown dtype '{dtype}'; use auto, {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def needs_sharding(config, dtype: torch.dtype, dev: torch.device) -> bool:
    """Whether a model of ``config`` is too large for one GPU: parameters × bytes against 90 %
    of the GPU's free memory (the estimate errs on the large side: no GQA, untied embeddings)."""
    if dev.type != "cuda":
        return False
    h, n = config.hidden_size, config.num_hidden_layers
    inter = getattr(config, "intermediate_size", 0)
    approx = n * (4 * h * h + 3 * h * inter) + 2 * config.vocab_size * h
    free, _ = torch.cuda.mem_get_info(dev)
    return approx * torch.finfo(dtype).bits // 8 > 0.9 * free
