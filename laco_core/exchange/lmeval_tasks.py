"""Finding lm-evaluation-harness tasks: our bundled task, include paths, clear offline errors.

Task YAMLs on the include path may name local files relative to their own folder (a private
task travels as one folder); a task whose dataset cannot be downloaded gives one line naming
it, never a traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..assets import ASSETS
from ..errors import LacoError

BUNDLED_TASKS = ASSETS / "tasks"
Progress = Callable[[int, int, str], None]  # (done, total, what) -> None
# Builders of ``datasets`` that read local files; any other dataset_path is a Hub dataset.
LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas"})
OFFLINE_TASK_HINT = "or run an offline task such as laco_mc"


def import_lm_eval():
    """The harness's modules, or a LacoError saying how to install them."""
    try:
        import lm_eval
        from lm_eval.api.model import CacheHook
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
        from lm_eval.tasks._index import Kind
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:
        raise LacoError(
            "lm-evaluation-harness is not installed: pip install 'laco-explorer[eval]' "
            "(or pip install lm-eval==0.4.13)."
        ) from None
    return lm_eval, CacheHook, HFLM, TaskManager, Kind, load_yaml


# ---- include path and task configs -----------------------------------------------------------


def include_paths(include_path: str | Path | Sequence[str | Path] | None = None) -> list[Path]:
    """Our bundled task folder followed by the user's folders (later ones take precedence).

    Raises:
        LacoError: for a folder that does not exist.
    """
    extra = [] if include_path is None else include_path
    if isinstance(extra, (str, Path)):
        extra = [extra]
    paths = [BUNDLED_TASKS]
    for p in extra:
        path = Path(p).expanduser()
        if not path.is_dir():
            raise LacoError(f"Task include path '{p}' is not a folder of lm-eval task YAMLs.")
        paths.append(path.resolve())
    return paths


def resolve_local_files(config: dict, base: Path) -> bool:
    """Make a local-file task's relative ``data_files`` / ``data_dir`` absolute against ``base``.

    lm-eval hands them to ``datasets.load_dataset`` as they are, which reads them relative to
    the working directory; a task folder is only portable when they are read relative to the
    YAML. A path that does not exist beside the YAML is left alone.

    Returns:
        True when ``config`` was changed (in place).
    """
    if config.get("dataset_path") not in LOCAL_BUILDERS:
        return False
    kwargs = config.get("dataset_kwargs")
    if not isinstance(kwargs, dict):
        return False
    changed = False

    def fix(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists():
            changed = True
            return str(base / value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    if "data_dir" in kwargs:
        kwargs["data_dir"] = fix(kwargs["data_dir"])
    elif "data_files" in kwargs:
        kwargs["data_files"] = fix(kwargs["data_files"])
    return changed


def _task_manager(tasks: list[str], paths: list[Path]):
    """A TaskManager that knows ``tasks``: only our include paths when that suffices.

    Indexing lm-eval's ~15,000 built-in entries takes seconds, so tasks that all live in the
    include paths are served by an index of those paths alone.
    """
    _, _, _, TaskManager, Kind, _ = import_lm_eval()
    small = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
    index = small.task_index
    if all(name in index and index[name].kind == Kind.TASK for name in tasks):
        return small
    return _full_index(tuple(str(p) for p in paths))


@functools.lru_cache(maxsize=4)
def _full_index(paths: tuple[str, ...]):
    """lm-eval's whole task index with ``paths`` added: built once per process (seconds)."""
    return import_lm_eval()[3](include_path=list(paths))


def _dataset_of(entry, load_yaml) -> str | None:
    """``'path'`` or ``'path' (config name)``: the dataset a task entry reads, per its YAML."""
    if entry is None or entry.yaml_path is None:
        return None
    try:
        cfg = load_yaml(entry.yaml_path, resolve_func=False)
    except Exception:  # an unreadable YAML is reported by lm-eval's own load below
        return None
    path, name = cfg.get("dataset_path"), cfg.get("dataset_name")
    if not path:
        return None
    return f"'{path}' (config {name})" if name else f"'{path}'"


def _is_network_error(error: BaseException) -> bool:
    """True for errors that mean 'could not download' (OSError family, HTTP client errors)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return True
        mod = type(e).__module__.split(".")[0]
        if mod.startswith(("httpx", "requests", "urllib3", "aiohttp", "huggingface_hub")):
            return True
        e = e.__cause__ or e.__context__
    return False


def _offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def load_tasks(
    tasks: Sequence[str],
    include_path: str | Path | Sequence[str | Path] | None = None,
    progress: Progress | None = None,
) -> tuple[Any, dict[str, Any]]:
    """lm-eval Task objects for ``tasks``, their datasets downloaded (or read locally).

    Args:
        tasks: lm-eval task, group or tag names.
        include_path: Folder(s) of extra task YAMLs (our ``assets/tasks`` is always included).
        progress: Called as ``progress(i, n, "loading TASK")`` before each task.

    Returns:
        ``(task_manager, {name: Task or Group})``, tasks in the order asked; pass the
        manager on to ``simple_evaluate`` (without one it indexes every built-in task again).

    Raises:
        LacoError: for an unknown task, a dataset that cannot be downloaded (offline, Hub
            unreachable) or a local data file that is missing; always one line.
    """
    names = [t.strip() for t in tasks if t and t.strip()]
    if not names:
        raise LacoError("No tasks given: name at least one lm-eval task, e.g. --tasks laco_mc.")
    if len(set(names)) != len(names):
        raise LacoError(f"A task is named twice in {', '.join(names)}; name each once.")
    _, _, _, _, Kind, load_yaml = import_lm_eval()
    paths = include_paths(include_path)
    manager = _task_manager(names, paths)
    index = manager.task_index
    loaded: dict[str, Any] = {}
    for i, name in enumerate(names):
        if progress:
            progress(i, len(names), f"loading {name}")
        entry = index.get(name)
        if entry is None:
            where = ", ".join(str(p) for p in paths)
            raise LacoError(
                f"Unknown lm-eval task '{name}': not built in and not in {where}; "
                "`lm-eval ls tasks` lists the built-in ones."
            )
        spec: str | dict = name
        if entry.kind == Kind.TASK and entry.yaml_path is not None:
            cfg = load_yaml(entry.yaml_path, resolve_func=True)
            if resolve_local_files(cfg, Path(entry.yaml_path).parent):
                spec = cfg  # an inline config carrying the absolute data paths
        try:
            built = manager.load([spec])
        except Exception as e:
            raise _load_error(name, _dataset_of(entry, load_yaml), e) from None
        loaded.update(built["groups"] or built["tasks"])
    if progress:
        progress(len(names), len(names), "tasks loaded")
    return manager, loaded


def _load_error(task: str, dataset: str | None, error: Exception) -> LacoError:
    """One actionable line for a task whose data could not be read."""
    if not _is_network_error(error):
        return LacoError(f"lm-eval could not load task '{task}': {type(error).__name__}: {error}")
    builder = dataset.split("'")[1] if dataset else None
    if builder in LOCAL_BUILDERS:
        return LacoError(
            f"lm-eval task '{task}' could not read its {builder} data files "
            f"({error}); check dataset_kwargs in its YAML (relative paths are read from the "
            "YAML's folder)."
        )
    name = f"dataset {dataset}" if dataset else "its dataset"
    why = (
        "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
        if _offline()
        else f"the Hugging Face Hub could not be reached or refused it ({type(error).__name__})"
    )
    return LacoError(
        f"Could not download {name} for lm-eval task '{task}': {why}; run with network "
        f"access to the Hub, {OFFLINE_TASK_HINT}."
    )


# ---- running ---------------------------------------------------------------------------------
