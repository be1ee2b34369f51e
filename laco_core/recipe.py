"""Typed, serialisable recipes: a base model plus an ordered list of steps that rebuild a model.

A recipe is JSON (``laco_recipe.json``) plus, beside it, the tensors its steps fitted
(``laco_recipe.safetensors``: drop_lsq weights, LoRA factors…). Tensors never enter the JSON;
in it, each tensor is a reference ``{"$tensor": "<key>"}``. A step that carries what it
computed (fitted tensors, a search's accepted merges, the groups a pruning removed) replays
exactly; a step read back without its tensors recomputes them from its recorded inputs.

Step kinds are dataclasses (``laco_core.steps``); this module only knows the ``Step``
interface, and reading a recipe takes the registry's kinds.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from .assets import read_asset
from .errors import LacoError
from .version import __version__

RECIPE_VERSION = 2
RECIPE_FILE = "laco_recipe.json"
TENSORS_FILE = "laco_recipe.safetensors"
_TENSOR = "$tensor"
# Which layers each list of layer indices counts, written into every recipe JSON ("numbering")
NUMBERING = {
    "indices": "0-based decoder layers; a range [lo, hi] is inclusive",
    "info.plan": "the base model's layers; each range became one layer at lo",
    "steps.ranges, steps.layers, steps.keep": (
        "the layers of the model the step is applied to: the base model for step 1, else "
        "the previous step's output"
    ),
    "steps.merges": (
        "the layers of the model as the search saw it when it accepted that merge: after the "
        "merges it accepted before, which renumber the layers above them"
    ),
    "steps.plan, steps.curve.points.plan": "the base model's layers",
}


def text_sha1(texts: list[str]) -> str:
    return hashlib.sha1("\x1e".join(texts).encode("utf-8")).hexdigest()[:12]


@dataclass
class TextSource:
    """Where a step's calibration or training text came from.

    A bundled asset is referenced by name (``calibration_prompts``, ``train_paragraphs``,
    ``train_text``) and checked by its sha1 when resolved; any other text is kept inline.
    """

    asset: str | None = None
    texts: list[str] | None = None
    limit: int | None = None
    sha1: str | None = None

    @classmethod
    def of(cls, texts: list[str], asset: str | None = None, limit: int | None = None):
        """Describe ``texts``; when they are an asset's first ``limit`` items, by reference."""
        texts = list(texts)
        if asset is not None and read_asset(asset)[:limit] == texts:
            return cls(asset=asset, limit=limit, sha1=text_sha1(texts))
        return cls(texts=texts, sha1=text_sha1(texts))

    def resolve(self) -> list[str]:
        """The texts themselves.

        Raises:
            LacoError: when a referenced asset changed since the recipe was written.
        """
        texts = self.texts if self.asset is None else read_asset(self.asset)[: self.limit]
        if self.sha1 and text_sha1(texts) != self.sha1:
            raise LacoError(
                f"The bundled text '{self.asset}' differs from the one this recipe was made with; "
                "the rebuilt model would differ."
            )
        return list(texts)


class Step:
    """One operation of a recipe. Subclasses are dataclasses with a ``kind``.

    ``apply(model, ctx)`` returns the resulting model and the step as completed (with what
    it computed), so applying the completed step again rebuilds the same model.

    Attributes:
        kind: Registry name (``"kind"`` of the recipe's step).
        summary: One line for the UI and the docs.
        reshapes: Layers come out with their own widths (the export needs the shapes
            sidecar and ``load_pruned``).
        not_passthrough: Why a model this step changed is never a list of unchanged
            original layers (a mergekit passthrough), or None when it may be.
        bounded: ``(limit, field, what)`` per field a ``Limits`` entry bounds.
        result: What the run computed for its caller (a search's decision log, a heal's
            losses); set on the completed step by ``apply``, None on a replayed step and
            never saved.
    """

    kind: ClassVar[str]
    summary: ClassVar[str] = ""
    reshapes: ClassVar[bool] = False
    not_passthrough: ClassVar[str | None] = None
    bounded: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    result: Any = None  # not a dataclass field: never serialised

    def apply(self, model, ctx) -> tuple[Any, Step]:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for tables and labels."""
        return self.kind

    def to_dict(self) -> dict:
        """JSON-ready fields (tensors still inline; ``Recipe`` moves them out)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Step:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LacoError(f"Unknown field(s) {', '.join(unknown)} in a '{cls.kind}' step.")
        return cls(**{k: _typed(cls, k, v) for k, v in d.items()})


def _plain(value):
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _typed(cls, name: str, value):
    """Rebuild nested dataclass fields a step declares through ``nested``."""
    nested = getattr(cls, "nested", {})
    if name in nested and value is not None:
        kind = nested[name]
        if isinstance(value, list):
            return [v if isinstance(v, kind) else kind(**v) for v in value]
        return value if isinstance(value, kind) else kind(**value)
    return value


@dataclass
class BaseRef:
    """The model a recipe starts from."""

    spec: str
    dtype: str = "auto"
    device: str = "auto"
    architecture: str | None = None
    num_layers: int | None = None
    num_params: int | None = None


@dataclass
class Recipe:
    """A base model and the steps that turn it into the model.

    Attributes:
        base: The starting model.
        steps: The steps, in order.
        info: Facts measured when it was made (layers/parameters before and after…).
        version: The format version.
    """

    base: BaseRef
    steps: list[Step] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    version: int = RECIPE_VERSION

    def then(self, step: Step, **info) -> Recipe:
        """A new recipe with ``step`` appended (``info`` updated)."""
        return Recipe(self.base, [*self.steps, step], {**self.info, **info}, self.version)

    def describe(self) -> str:
        return " → ".join(s.describe() for s in self.steps) or "base model"

    # ---- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """The JSON-safe content and the tensors it references."""
        tensors: dict[str, torch.Tensor] = {}
        steps = []
        for i, s in enumerate(self.steps):
            body = _split(s.to_dict(), f"steps.{i}", tensors)
            steps.append({"kind": s.kind, **body})
        d = {
            "format": "laco-recipe",
            "version": self.version,
            "tool": f"laco-explorer {__version__}",
            "base": asdict(self.base),
            "steps": steps,
            "info": _split(self.info, "info", tensors),
            "numbering": NUMBERING,
        }
        return d, tensors

    def to_json(self) -> str:
        """The recipe as JSON without tensors (a step that needs them will recompute them)."""
        return json.dumps(self.to_dict()[0], indent=2, default=_json_default)

    @classmethod
    def from_dict(
        cls, d: dict, kinds: dict[str, type[Step]], tensors: dict[str, torch.Tensor] | None = None
    ) -> Recipe:
        """Read a recipe; steps referencing missing tensors lose them (and recompute)."""
        if not isinstance(d, dict) or "steps" not in d or "base" not in d:
            raise LacoError("This is not a LaCo recipe (no 'base' and 'steps').")
        version = d.get("version", 1)
        if version > RECIPE_VERSION:
            raise LacoError(
                f"Recipe format {version} is newer than this tool reads ({RECIPE_VERSION}); "
                "update laco-explorer."
            )
        tensors = tensors or {}
        steps = []
        for i, raw in enumerate(d["steps"]):
            raw = dict(raw)
            kind = raw.pop("kind", None)
            if kind not in kinds:
                raise LacoError(
                    f"Recipe step {i + 1} has unknown kind '{kind}'; known: {', '.join(kinds)}."
                )
            steps.append(kinds[kind].from_dict(_join(raw, tensors)))
        base = d["base"]
        if not isinstance(base, dict) or not base.get("spec"):
            raise LacoError("The recipe's base model has no 'spec'.")
        known = {f.name for f in fields(BaseRef)}
        return cls(
            BaseRef(**{k: v for k, v in base.items() if k in known}),
            steps,
            _join(d.get("info", {}), tensors),
            RECIPE_VERSION,
        )

    def save(self, folder: str | Path, **extra) -> Path:
        """Write ``laco_recipe.json`` (and ``laco_recipe.safetensors`` if any tensor) in
        ``folder``; ``extra`` keys are added to the JSON (e.g. measured metrics)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        d, tensors = self.to_dict()
        d.update(extra)
        d["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        (folder / RECIPE_FILE).write_text(
            json.dumps(d, indent=2, default=_json_default) + "\n", encoding="utf-8"
        )
        target = folder / TENSORS_FILE
        if tensors:
            save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, target)
        else:
            target.unlink(missing_ok=True)
        return folder / RECIPE_FILE

    @classmethod
    def load(cls, path: str | Path, kinds: dict[str, type[Step]]) -> Recipe:
        """Read ``laco_recipe.json`` (a file, or a folder holding it) and its tensors."""
        d, tensors = read_files(path)
        return cls.from_dict(d, kinds, tensors)

    def size_bytes(self) -> int:
        """Bytes of the tensors the recipe holds."""
        return sum(t.numel() * t.element_size() for t in self.to_dict()[1].values())


def read_json(file: Path):
    """A JSON file's content, or a one-line ``LacoError`` saying why it is none."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LacoError(f"'{file.name}' is not a JSON recipe ({type(e).__name__}).") from None
    except RecursionError:
        raise LacoError(f"'{file.name}' nests too deeply to be a recipe.") from None


def read_files(path: str | Path) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """The JSON content of ``laco_recipe.json`` (a file, or a folder holding it) and the
    tensors of the ``laco_recipe.safetensors`` beside it (None: no sidecar), unchecked."""
    path = Path(path).expanduser()
    file = path / RECIPE_FILE if path.is_dir() else path
    if not file.is_file():
        raise LacoError(f"No recipe at '{path}': give a laco_recipe.json or its folder.")
    d = read_json(file)
    tensors = None
    tfile = file.parent / TENSORS_FILE
    if tfile.is_file() and file.name == RECIPE_FILE:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(tfile))
        except (SafetensorError, OSError) as e:
            raise LacoError(f"'{tfile.name}' is unreadable ({type(e).__name__}).") from None
    return d, tensors


def _split(obj, prefix: str, tensors: dict[str, torch.Tensor]):
    """Replace every tensor inside ``obj`` by a reference, collecting it in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        return {k: _split(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join(obj, tensors: dict[str, torch.Tensor]):
    """Put tensors back where ``_split`` left references (a missing one becomes None)."""
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors.get(obj[_TENSOR])
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def _json_default(value):
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
