"""The docs stay true to the code: the components page is the generator's current output, it
names every registered component, and every `laco` command shown in the README and the docs
parses with the real command line."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from laco_core.cli import build_parser
from laco_core.docs_tables import COMMAND, PAGE, components_markdown
from laco_core.registry import REGISTRY, Registry

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_components_page_is_current():
    assert PAGE.read_text(encoding="utf-8") == components_markdown(), (
        f"docs/components.md is out of date with the registry: run `{COMMAND}` and commit it."
    )


def test_every_registered_name_is_on_the_page():
    text = components_markdown()
    for field in dataclasses.fields(Registry):
        for name in getattr(REGISTRY, field.name):
            assert f"| `{name}` |" in text, f"{field.name}: {name} missing"


COMMAND_LINE = re.compile(r"^\s*(?:[A-Z_]+=\S*\s+)*(laco\s.*)$")  # HF_HUB_OFFLINE=0 laco …


def _commands(page: Path) -> list[str]:
    """`laco …` command lines of the page's shell code blocks (continuations joined)."""
    out, fence, lines = [], None, []
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if fence is None:
                fence, lines = line[3:].strip(), []
                continue
            if fence in ("", "sh", "bash", "shell", "console"):
                for command in "\n".join(lines).replace("\\\n", " ").splitlines():
                    match = COMMAND_LINE.match(command)
                    if match:
                        out.append(shlex.join(shlex.split(match.group(1), comments=True)))
            fence = None
        elif fence is not None:
            lines.append(line)
    return out


CASES = [(p.relative_to(ROOT).as_posix(), c) for p in PAGES for c in _commands(p)]


def test_the_docs_show_commands():
    assert any(page == "README.md" for page, _ in CASES)


@pytest.mark.parametrize(("page", "command"), CASES)
def test_documented_commands_parse(page, command, capsys):
    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit:
        pytest.fail(f"{page}: `{command}` does not parse: {capsys.readouterr().err.strip()}")
