"""The ``laco`` command line: parses, validates and calls the engine; one module per command.

Every command lives in ``laco_core/commands/<name>.py`` with ``HELP`` (and optionally
``DESCRIPTION``), ``add_flags(parser)`` and ``run(args) -> int``; the sub-parser is made here.
A LacoError prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import LacoError

COMMANDS = (
    "analyze",
    "collapse",
    "eval",
    "generate",
    "auto",
    "prune",
    "heal",
    "compare",
    "rebuild",
    "lens",
)


class Parser(argparse.ArgumentParser):
    """argparse with the tool's one-line errors (``laco: error: …``, exit 2)."""

    def error(self, message: str):
        sys.stderr.write(f"laco: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="laco", description="Explore layer collapse in causal LMs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        command = importlib.import_module(f".commands.{name}", __package__)
        description = getattr(command, "DESCRIPTION", None)
        p = sub.add_parser(name, help=command.HELP, description=description)
        command.add_flags(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # one line per event, no bars
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a flag error already printed on one line (2)
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except LacoError as e:
        print(f"laco: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
