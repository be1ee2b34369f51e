"""The code's shape: import layering (import-linter) and file sizes."""

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


def long_files(folder: str) -> list[str]:
    """Files under ``folder`` over MAX_LINES lines with no ``Long file:`` reason at the top."""
    long = []
    for f in sorted((ROOT / folder).rglob("*.py")):
        lines = f.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not any("Long file:" in line for line in lines[:15]):
            long.append(str(f.relative_to(ROOT)))
    return long


@pytest.mark.parametrize("folder", ["laco_core", "components"])
def test_no_long_files_without_a_reason(folder):
    long = long_files(folder)
    assert not long, f"files over {MAX_LINES} lines without a reason at the top: {long}"
