"""The ``diffcamera`` command line: one subcommand per module under ``cli/``.

Each subcommand module defines ``add_parser(subparsers)`` (cheap: no torch import) and ``run(args)``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: Subcommands in ``--help`` order.
SUBCOMMANDS = ("demo", "bokeh", "depth", "refocus", "simulate", "train", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffcamera",
                                     description="Refocus images after the fact (DiffCamera for ComfyUI).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError, MemoryError) as exc:  # bad input, unreadable/unwritable files: one line, no trace
        text = str(exc).strip() or type(exc).__name__
        print(f"diffcamera {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffcamera {args.command}: interrupted", file=sys.stderr)
        return 130
