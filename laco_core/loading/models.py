"""Loading a model spec: one pipeline, each step visited once.

A *spec* names a model: an embedded model's alias (``default``, ``gemma3-270m``; the table is
``laco_core.loading.embedded``), a Hub id, a folder written by ``save_pretrained`` (our exports and
pruned models included) or a ``.gguf`` file. :func:`load_model` runs it through

1. :func:`resolve`: which source the spec names (``gguf``: an embedded model's or a given
   file; ``pruned``: a folder with a shapes sidecar; ``folder``; ``hub``) and where it is. A
   hosted app never looks at the disk for a spec.
2. :func:`check`: what may load, before any weights: the hosted-mode guard, then the config
   (readable, no remote code, a supported architecture) and the size limit.
3. :func:`read`: config, weights and tokenizer (a GGUF through its converted cache, a pruned
   folder through ``prune.io.read_pruned``).
4. :func:`build`: the ``LoadedModel`` on its device, in eval mode, without gradients.

Failures of steps 2 and 3 are worded in one place (:func:`_reported`): a bad local file is
one ``LacoError`` with a reason a person can act on; an embedded model whose package is
absent and whose Hub copy did not load names both.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from ..arch.adapters import get_adapter, num_layers, supported
from ..arch.sharing import count_params
from ..errors import LacoError
from ..prune.io import SHAPES_SIDECAR, read_pruned
from .devices import DTYPES as DTYPES  # "X as X": callers read these through here too
from .devices import needs_sharding, resolve_device, resolve_dtype
from .embedded import DEFAULT_HUB_ID, DEFAULT_SPEC, EMBEDDED, EmbeddedModel
from .embedded import GEMMA_LICENSE as GEMMA_LICENSE
from .embedded import SPEC_HELP as SPEC_HELP
from .embedded import hub_id_for as hub_id_for
from .gguf_cache import cache_root as cache_root
from .gguf_cache import read_gguf
from .limits import hosted as hosted_default

# owner/name as the Hub spells repo ids (no "..", no leading "/" or "~")
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


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


@dataclass(frozen=True)
class Source:
    """What a spec names, as :func:`resolve` found it.

    Attributes:
        spec: The spec as given (stripped): the name messages use for local files.
        kind: ``gguf``, ``pruned`` (a folder with a shapes sidecar), ``folder`` or ``hub``.
        where: The GGUF file, the folder or the Hub id the files come from.
        hosted: Resolved for a hosted app (only aliases and Hub ids; paths never looked at).
        embedded: The embedded model an alias names, else None.
    """

    spec: str
    kind: str
    where: str
    hosted: bool = False
    embedded: EmbeddedModel | None = None

    @property
    def local(self) -> bool:
        return self.kind != "hub"


def load_model(
    spec: str = DEFAULT_SPEC,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    hosted: bool | None = None,
    max_params: int | None = None,
) -> LoadedModel:
    """Load a causal LM by spec: resolve, check, read, build.

    Args:
        spec: An alias of ``EMBEDDED`` (``default``…), a Hub id, a local directory or a
            ``.gguf`` file.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. On CUDA a model too large
            for one GPU is spread with ``device_map="auto"``.
        trust_remote_code: Off unless explicitly asked for (never when hosted, never for an
            embedded model).
        hosted: A public app (default: ``limits.hosted()``): only embedded aliases and Hub
            ids load, never a path on the server, and messages never say what exists there.
        max_params: Refuse (before downloading weights) a model with more parameters.

    Raises:
        LacoError: when the spec cannot be resolved, the files are corrupt, the architecture
            is unsupported or the model needs remote code.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    t0 = time.perf_counter()
    source = resolve(spec, hosted_default() if hosted is None else hosted)
    trust = trust_remote_code and not source.hosted and source.embedded is None
    with _reported(source):
        config = check(source, trust, max_params)
        model, tok, where = read(source, config, dt, dev, trust)
    return build(source, model, tok, where, dt, dev, time.perf_counter() - t0)


# ---- 1. resolve ------------------------------------------------------------------------------


def resolve(spec: str | None, hosted: bool = False) -> Source:
    """Which source ``spec`` names. A hosted app resolves aliases and takes anything else for
    a Hub id (``check`` refuses what is not one), so no answer depends on the server's disk.

    Raises:
        LacoError: a ``.gguf`` that is not there, a folder without config.json, another file,
            or an embedded package that cannot write its GGUF.
    """
    spec = (spec or DEFAULT_SPEC).strip()
    row = EMBEDDED.get(spec)
    if row is not None:
        gguf = row.gguf_path()  # None without its package: the same model from the Hub
        kind, where = ("hub", row.hub_id) if gguf is None else ("gguf", str(gguf))
        return Source(spec, kind, where, hosted, row)
    if hosted:
        return Source(spec, "hub", spec, hosted=True)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LacoError(f"GGUF file not found: {spec}")
        return Source(spec, "gguf", str(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise LacoError(
                f"'{spec}' is a directory without config.json; save models with save_pretrained."
            )
        return Source(spec, "pruned" if (path / SHAPES_SIDECAR).exists() else "folder", str(path))
    if path.exists():
        raise LacoError(
            f"'{spec}' is a file but not a .gguf model; give a directory or a .gguf file."
        )
    return Source(spec, "hub", spec)


# ---- 2. check --------------------------------------------------------------------------------


def check(
    source: Source, trust_remote_code: bool = False, max_params: int | None = None
) -> PretrainedConfig | None:
    """What may load, before any weights are read.

    Returns:
        The model's config, or None for a GGUF file (its config comes with its weights and
        ``build`` checks its architecture).

    Raises:
        LacoError: a spec a hosted app may not load, an unreadable config, a config that needs
            remote code, an unsupported architecture, or more parameters than ``max_params``.
    """
    if source.kind == "gguf":
        return None
    if source.hosted:
        check_hosted_spec(source.spec)
    raw = _raw_config(source)
    if not trust_remote_code and "auto_map" in raw:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        if raw.get("model_type") not in CONFIG_MAPPING:
            raise LacoError(
                f"'{source.spec if source.local else source.where}' needs its own Python code "
                f"(auto_map in its config): remote code is not run here. Supported "
                f"architectures: {supported()}."
            )
    try:
        config = AutoConfig.from_pretrained(source.where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise LacoError(
            f"Cannot read the config of '{source.where}' ({type(e).__name__}); "
            f"supported: {supported()}."
        ) from e
    _check_architecture(config)
    approx = approx_params(config)
    if max_params and approx > max_params:
        raise LacoError(
            f"'{source.where}' has about {approx / 1e9:.1f} B parameters, over the limit of "
            f"{max_params / 1e9:.1f} B (LACO_MAX_MODEL_PARAMS raises it on a self-hosted instance)."
        )
    return config


def check_hosted_spec(spec: str) -> None:
    """A hosted app loads embedded models (by alias) and Hub ids only.

    Anything else is refused with one message whatever exists on the server, and a Hub-like
    name that is also a local folder is refused like a Hub miss, so no answer tells apart a
    file, a folder and nothing.
    """
    if spec in EMBEDDED:  # they load from a pip package, never from a path the user names
        return
    if not HUB_ID.fullmatch(spec) or ".." in spec:
        raise LacoError(
            f"'{spec}' is not a Hub model id: this hosted app loads '{DEFAULT_SPEC}' or a Hub id "
            f"like {DEFAULT_HUB_ID}, never files on the server."
        )
    if Path(spec).exists():
        raise LacoError(f"Cannot load model '{spec}': not found on the Hub.")


def _raw_config(source: Source) -> dict:
    """The config as JSON: a folder's config.json, or the Hub's (cached) one."""
    if source.local:
        try:
            raw = json.loads((Path(source.where) / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise LacoError(
                f"Cannot read the model '{source.spec}': its config.json is not valid JSON."
            ) from None
        if not isinstance(raw, dict):
            raise LacoError(
                f"Cannot read the model '{source.spec}': its config.json is not an object."
            )
        return raw
    try:
        return PretrainedConfig.get_config_dict(source.where)[0]
    except (OSError, ValueError) as e:
        if source.hosted:  # the words check_hosted_spec uses for a Hub-like local name
            raise LacoError(f"Cannot load model '{source.where}': not found on the Hub.") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (offline: only cached models load)" if offline else ""
        raise LacoError(
            f"Cannot load model '{source.where}'{hint}: not a local path and not found on the Hub."
        ) from e


def _check_architecture(config) -> None:
    try:
        get_adapter(config)
    except LacoError:
        raise
    except Exception as e:  # pragma: no cover - defensive
        raise LacoError(f"Could not read the model config ({e}); supported: {supported()}.") from e


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


# ---- 3. read ---------------------------------------------------------------------------------


def read(
    source: Source,
    config: PretrainedConfig | None,
    dtype: torch.dtype,
    dev: torch.device,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, object, str]:
    """The weights and the tokenizer, and where they really came from (for ``describe``)."""
    if source.kind == "gguf":
        model, tok, where = read_gguf(Path(source.where), dtype)
        if source.hosted:  # never a server path in what a hosted app shows
            where = f"embedded {source.embedded.name}"
        return model, tok, where
    if source.kind == "pruned":
        model = read_pruned(source.where, config, dtype)  # per-layer shapes first
    else:
        kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
        if needs_sharding(config, dtype, dev):
            kwargs["device_map"] = "auto"
        model = AutoModelForCausalLM.from_pretrained(source.where, config=config, **kwargs)
    tok = AutoTokenizer.from_pretrained(source.where, trust_remote_code=trust_remote_code)
    return model, tok, source.where


# ---- 4. build --------------------------------------------------------------------------------


def build(
    source: Source,
    model: PreTrainedModel,
    tok,
    where: str,
    dtype: torch.dtype,
    dev: torch.device,
    seconds: float,
) -> LoadedModel:
    """The model on its device, in eval mode, with no autograd graphs (similarity and search
    never need them) and a pad token."""
    _check_architecture(model.config)  # a GGUF's config is first seen here
    if getattr(model, "hf_device_map", None) is None:
        model = model.to(dev)
    model.eval()
    model.requires_grad_(False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model, tok, source.spec, dtype, dev, seconds, where)


# ---- how failures read -----------------------------------------------------------------------


@contextmanager
def _reported(source: Source) -> Iterator[None]:
    """One ``LacoError`` a person can act on for whatever fails while checking and reading."""
    try:
        yield
    except LacoError as e:
        row = source.embedded
        if row is None or source.local:
            raise
        raise LacoError(
            f"'{row.spec}' ({row.name}) needs the {row.package} package "
            f"(pip install {row.package}) or the Hub model {row.hub_id}, which did not load: {e}"
        ) from None
    except Exception as e:  # safetensors, gguf and json readers each raise their own types
        if not source.local:
            raise
        raise LacoError(f"Cannot read the model '{source.spec}': {_file_problem(e)}.") from None


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
