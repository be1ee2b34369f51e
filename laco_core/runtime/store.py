"""The engine's disk: export folders and their zips, kept for a while, then removed.

Every export made for a download lives in one folder the engine owns (a fresh temporary
folder, or ``LACO_EXPORT_DIR``). An entry is removed once it is older than the TTL, and the
oldest entries go first whenever the total exceeds the byte cap, so a public app's disk use
is bounded whatever its visitors click. Sweeps run on every new export; nothing runs in the
background.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
import zipfile
from pathlib import Path


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def zip_stored(path: str | Path) -> Path:
    """``<path>.zip`` beside the folder, without compression.

    Deflating ~500 MB of float weights took ~3 min on 2 busy cores for a 2× smaller file;
    storing takes seconds, which matters behind a button.
    """
    path = Path(path)
    archive = path.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for f in sorted(path.rglob("*")):
            if f.is_file():
                zf.write(f, Path(path.name) / f.relative_to(path))
    return archive


class ExportStore:
    """Folders for exports under one root, bounded by age and total size.

    Args:
        ttl_s: Seconds an entry is kept after it was made.
        max_bytes: Total bytes kept; the oldest entries are removed beyond it.
        root: The folder (default ``LACO_EXPORT_DIR``, else a fresh temporary folder that is
            removed with the store).
    """

    def __init__(self, ttl_s: float, max_bytes: int, root: str | Path | None = None):
        self.ttl_s, self.max_bytes = ttl_s, max_bytes
        root = root or os.environ.get("LACO_EXPORT_DIR")
        if root:
            self.root = Path(root).expanduser()
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            self.root = Path(tempfile.mkdtemp(prefix="laco-exports-"))
            weakref.finalize(self, shutil.rmtree, str(self.root), True)
        self._lock = threading.Lock()

    def new(self, name: str) -> Path:
        """A fresh entry folder; the export goes to ``<entry>/<name>``."""
        self.sweep()
        entry = self.root / f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        entry.mkdir()
        return entry / name

    def entries(self) -> list[Path]:
        """Entry folders, oldest first."""
        items = [p for p in self.root.iterdir() if p.is_dir()]
        return sorted(items, key=lambda p: p.stat().st_mtime)

    def bytes(self) -> int:
        return sum(_size(p) for p in self.entries())

    def sweep(self, keep: Path | None = None) -> list[Path]:
        """Remove entries past their TTL, then the oldest until under the byte cap.

        Args:
            keep: An entry (or a path inside one) never removed by this sweep.

        Returns:
            The entries removed.
        """
        removed = []
        keep_entry = self.entry_of(keep) if keep is not None else None
        with self._lock:
            now = time.time()
            entries = self.entries()
            sizes = {p: _size(p) for p in entries}
            total = sum(sizes.values())
            for p in entries:
                if p == keep_entry:
                    continue
                if now - p.stat().st_mtime > self.ttl_s or total > self.max_bytes:
                    shutil.rmtree(p, ignore_errors=True)
                    total -= sizes[p]
                    removed.append(p)
        return removed

    def entry_of(self, path: str | Path) -> Path | None:
        """The entry folder ``path`` lies in (None when outside the store)."""
        path = Path(path).resolve()
        root = self.root.resolve()
        if root not in path.parents:
            return None
        return root / path.relative_to(root).parts[0]
