"""Argument checks the subcommands share: a normalised point, numbers in a range, input files that must exist,
outputs that must not (and may never be one of the inputs), all done before any heavy work.

Each raises ``ValueError`` / ``FileNotFoundError`` naming the flag; :func:`diffcamera.cli.main` prints it and
exits with status 2.
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Optional, Sequence, Tuple


def parse_point(text: str, flag: str = "--focus") -> Tuple[float, float]:
    """``"x,y"`` -> ``(x, y)``, normalised image coordinates in ``0..1`` (x right, y down)."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} must be 'x,y' with numbers in 0..1, got {text!r}") from None
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"{flag} {text}: x and y must be in 0..1")
    return x, y


#: ``--model`` values that name a built-in choice instead of a file (``./toy`` for a file of that name).
NAMED_MODELS = ("physics", "toy")


def model_name(text: str) -> str:
    """A ``--model`` value: a built-in name of :data:`NAMED_MODELS` in any case (``PHYSICS`` -> ``physics``), else
    the path as given."""
    named = text.strip().lower()
    return named if named in NAMED_MODELS else text


def check_number(value: Optional[float], flag: str, lo: float = -math.inf, hi: float = math.inf,
                 lo_open: bool = False, hint: str = "") -> Optional[float]:
    """``value`` (``None`` passes) is finite and in ``lo..hi`` (``lo`` excluded with ``lo_open``), else
    ``ValueError`` naming ``flag`` (:func:`diffcamera.core.checks.check_values`)."""
    from ..core.checks import check_values
    check_values(value, 1, flag, lo, hi, lo_open=lo_open, hint=hint)
    return value


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


def same_file(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` name the same file (links and ``./`` spellings followed; neither need exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def check_folder_for(path: str, flag: str, is_folder: bool = False) -> None:
    """The folder ``path`` will be written in (``path`` itself with ``is_folder``) is a folder, or can be made
    (its nearest existing parent is a writable folder)."""
    folder = os.path.abspath(path) if is_folder else os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: {folder} is a file, not a folder; choose another place")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: no permission to write in {folder}; choose another folder")


def check_outputs(outputs: Sequence[Tuple[Optional[str], str]], force: bool,
                  inputs: Iterable[Tuple[str, str]] = (), bits: int = 8) -> None:
    """Output image files ``[(path, flag), ...]`` (``None`` paths skipped) before any work: each has an image
    extension (:func:`diffcamera.core.files.check_write_path`), is not a folder, lies in a folder that is or can
    be made, differs from every other output and from every input ``[(path, flag)]`` (an input is never
    overwritten, not even with ``force``), and does not exist unless ``force``."""
    from ..core.files import check_write_path
    inputs = [(p, f) for p, f in inputs if p]
    given = [(p, f) for p, f in outputs if p]
    for i, (path, flag) in enumerate(given):
        if os.path.isdir(path):
            raise ValueError(f"{flag} {path} is a folder; give a file name such as {os.path.join(path, 'out.png')}")
        for src, src_flag in inputs:
            if same_file(path, src):
                raise ValueError(f"{flag} {path} is the {src_flag} file; inputs are never overwritten (not even "
                                 f"with --force): choose another name")
        for other, other_flag in given[:i]:
            if same_file(path, other):
                raise ValueError(f"{flag} and {other_flag} are the same file ({path}); give each its own name")
        check_write_path(path, flag, bits)
        refuse_existing(path, force, flag)
        check_folder_for(path, flag)
