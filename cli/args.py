"""Argument checks the subcommands share: a normalised point, input files that must exist, outputs that must not.

Each raises ``ValueError`` / ``FileNotFoundError`` naming the flag; :func:`diffcamera.cli.main` prints it and
exits with status 2.
"""
from __future__ import annotations

import os
from typing import Tuple


def parse_point(text: str, flag: str = "--focus") -> Tuple[float, float]:
    """``"x,y"`` -> ``(x, y)``, normalised image coordinates in ``0..1`` (x right, y down)."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} must be 'x,y' with numbers in 0..1, got {text!r}") from None
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"{flag} {text}: x and y must be in 0..1")
    return x, y


def require_file(path: str, flag: str) -> str:
    """``path`` is an existing file, else ``FileNotFoundError`` naming ``flag``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: {os.path.basename(path)!r} not found in "
                                f"{os.path.dirname(os.path.abspath(path))}")
    return path


def refuse_existing(path: str, force: bool, flag: str = "--out") -> str:
    """``path`` does not exist yet, or ``force`` allows overwriting it."""
    if path and os.path.exists(path) and not force:
        raise ValueError(f"{flag} {path} exists; pass --force to overwrite it or choose another name")
    return path
