"""The ``laco`` command line: parses, validates and calls the engine; one module per command.

Every command lives in ``laco_core/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. A LacoError prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import LacoError

COMMANDS = ("analyze", "collapse", "eval", "generate", "auto", "prune", "heal", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="laco", description="Explore layer collapse in causal LMs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(f"commands.{name}"):
                continue  # command not built yet in this checkout
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LacoError as e:
        print(f"laco: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
