"""The ``diffcamera`` command line: one subcommand per module under ``cli/``.

Each subcommand module defines ``add_parser(subparsers)`` (cheap: no torch import) and ``run(args)``.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import List

#: Subcommands in ``--help`` order.
SUBCOMMANDS = ("demo", "bokeh", "depth", "refocus", "simulate", "train", "bench")
#: A value that starts like a negative number: ``-0.1,0``, ``-.5``, ``-1e-3`` (never a flag name).
NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffcamera",
                                     description="Refocus images after the fact (DiffCamera for ComfyUI).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def _attach_negative_values(parser: argparse.ArgumentParser, argv: List[str]) -> List[str]:
    """``--flag -0.1,0`` -> ``--flag=-0.1,0`` for options that take a value: argparse reads a value that starts with
    ``-`` and is not a plain negative number as a flag ("expected one argument"), where the option's own check
    would say what is wrong with it."""
    takes_value = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                takes_value |= {o for a in sub._actions if a.option_strings and a.nargs is None
                                for o in a.option_strings}
    out: List[str] = []
    for token in argv:
        if out and out[-1] in takes_value and NEGATIVE_VALUE.match(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_negative_values(parser, list(sys.argv[1:] if argv is None else argv)))
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
