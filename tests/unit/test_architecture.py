"""The code's shape: import layering (import-linter), file sizes, one registry for everything."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400


def test_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("import-linter is not installed: make install (dev extra)")
    proc = subprocess.run(
        [exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_no_long_engine_files_without_a_reason():
    long = []
    for f in sorted((ROOT / "laco_core").rglob("*.py")):
        lines = f.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not any("Long file:" in line for line in lines[:15]):
            long.append(f"{f.relative_to(ROOT)} ({len(lines)} lines)")
    assert not long, f"files over {MAX_LINES} lines without a reason at the top: {long}"


def test_registry_is_the_only_place_components_are_listed():
    """No module writes into another module's table: only registry.py builds them."""
    offenders = []
    for f in sorted((ROOT / "laco_core").rglob("*.py")):
        if f.name == "registry.py":
            continue
        text = f.read_text(encoding="utf-8")
        if "REGISTRY[" in text and "=" in text.split("REGISTRY[", 1)[1].split("\n", 1)[0]:
            offenders.append(str(f.relative_to(ROOT)))
    assert not offenders
