"""The pack's one path policy, and safe file writing. Pure Python (no ComfyUI, no torch).

Every node input that names a file or folder is untrusted (ComfyUI may serve on a LAN). It resolves only
inside *roots* the caller gives (ComfyUI's model folders, ``input/``, ``output/``):

* :func:`plain_name` — one folder/file name (``run_name``, a dataset ``name``): no separators, no ``.``/``..``,
  no NUL or control characters, at most :data:`MAX_NAME_CHARS` characters;
* :func:`relative_parts` — a relative name such as ``sub/model.safetensors``: refuses absolute paths (POSIX,
  drive letters, UNC), ``..``, NUL/control characters and names over :data:`MAX_PATH_CHARS`;
* :func:`resolve_in_roots` — a relative name (or an absolute path that lies inside a root) -> the real path of
  an existing file/folder inside a root. The *real* path is checked, so a symlink whose target leaves the root is
  refused (unless the caller's opt-in allows it); :func:`check_tree_inside` does the same for every file inside
  a model folder;
* :func:`make_dirs_inside` — create (or reuse) ``root/a/b``, checking each folder's real path, so a symlinked
  folder cannot redirect writes outside the root.

Error messages name the input and say where files belong; they never say whether anything *outside* the roots
exists (outside paths are refused before the file system is asked about them).

Writing: :func:`atomic_write` gives a fresh temporary name in the target's folder and renames it over the target
only when the writer finished (``os.replace``: readers see the old or the new file, never half of one, and a
symlink at the target name is replaced, not followed); :func:`write_json_atomic` and :func:`write_new` (a new
name that never replaces an existing file: ``os.link`` refuses existing names) build on it.

Opt-ins (environment settings, read when a node runs; see the README's *Security* section):
:data:`ALLOW_EXTERNAL_MODELS` and :data:`ALLOW_EXTERNAL_IMAGE_FOLDERS` (``=1``).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from typing import Iterable, Iterator, List, Optional, Sequence

#: Longest single file/folder name accepted from a node input.
MAX_NAME_CHARS = 100
#: Longest relative path accepted from a node input.
MAX_PATH_CHARS = 1024
#: Environment setting: let model inputs name files/folders outside ComfyUI's model folders.
ALLOW_EXTERNAL_MODELS = "DIFFCAMERA_ALLOW_EXTERNAL_MODELS"
#: Environment setting: let SimulateDataset read an image folder outside ComfyUI's input folder.
ALLOW_EXTERNAL_IMAGE_FOLDERS = "DIFFCAMERA_ALLOW_EXTERNAL_IMAGE_FOLDERS"


class PathRefused(ValueError):
    """A node input names a path the policy refuses; the message names the input and the fix."""


def opted_in(setting: str) -> bool:
    """Whether the environment setting ``setting`` is on (``1``, ``true``, ``yes``)."""
    return os.environ.get(setting, "").strip().lower() in ("1", "true", "yes", "on")


def _where(roots: Sequence[str]) -> str:
    return ", ".join(roots) if roots else "(no folder configured)"


def check_text(value, what: str, max_chars: int = MAX_PATH_CHARS) -> str:
    """``value`` as a string without NUL/control characters and at most ``max_chars`` long."""
    if not isinstance(value, str):
        raise PathRefused(f"{what}: expected text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise PathRefused(f"{what}: {len(value)} characters is too long (at most {max_chars}); use a shorter name")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise PathRefused(f"{what}: contains a NUL or control character; type a plain name")
    return value


def plain_name(value, what: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """One file/folder name (surrounding blanks stripped): no separators, not ``.``/``..``, no control chars."""
    name = check_text(value, what, max(max_chars, MAX_PATH_CHARS)).strip()
    if len(name) > max_chars:
        raise PathRefused(f"{what}: {len(name)} characters is too long (at most {max_chars}); use a shorter name")
    if not name or name in (".", "..") or "/" in name or "\\" in name or ":" in name:
        raise PathRefused(f"{what}: give a plain folder name (letters, digits, '-', '_', '.'; no slashes), "
                          f"got {value!r}")
    return name


def _is_absolute(text: str) -> bool:
    return (os.path.isabs(text) or text.startswith(("/", "\\")) or (len(text) > 1 and text[0].isalpha() and text[1] == ":")
            or text.startswith("~"))


def relative_parts(value, what: str) -> List[str]:
    """The components of a relative name; refuses absolute paths, ``..`` and control characters."""
    text = check_text(value, what).strip()
    if not text:
        raise PathRefused(f"{what}: empty; give a name")
    if _is_absolute(text):
        raise PathRefused(f"{what}: {value!r} is an absolute path; give a name relative to the folder")
    parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefused(f"{what}: {value!r} contains '..'; give a name inside the folder")
    if not parts:
        raise PathRefused(f"{what}: {value!r} names no file; give a name inside the folder")
    if any(len(p) > 255 for p in parts):
        raise PathRefused(f"{what}: a part of {value!r} is over 255 characters")
    return parts


def is_inside(path: str, root: str) -> bool:
    """Whether the real path of ``path`` is ``root``'s real path or below it."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    try:
        return os.path.commonpath([real, base]) == base
    except ValueError:  # different drives
        return False


def _lexically_inside(path: str, root: str) -> Optional[List[str]]:
    """The parts of absolute ``path`` below ``root`` (no file-system access), or ``None``."""
    p, r = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    try:
        if os.path.commonpath([p, r]) != r:
            return None
    except ValueError:
        return None
    rel = os.path.relpath(p, r)
    return [] if rel == "." else rel.split(os.sep)


def _kind_ok(path: str, kind: str) -> bool:
    return os.path.isfile(path) if kind == "file" else os.path.isdir(path) if kind == "dir" else os.path.exists(path)


def resolve_in_roots(roots: Sequence[str], name, what: str, *, kind: str = "any", allow_external: bool = False,
                     hint: str = "") -> str:
    """The real path of the existing ``kind`` (``"file"``, ``"dir"``, ``"any"``) ``name`` inside one of ``roots``.

    ``name`` is relative to a root, or an absolute path lying inside one. With ``allow_external`` (the caller's
    opt-in) an absolute path anywhere, and links leaving the roots, are accepted. ``hint`` is appended to every
    refusal (where to put the files, how to opt in). Raises :class:`PathRefused`.
    """
    tail = f"; {hint}" if hint else ""
    text = check_text(name, what).strip()
    if not text:
        raise PathRefused(f"{what}: empty; give a name{tail}")
    if _is_absolute(text):
        expanded = os.path.expanduser(text)
        inside = [(r, parts) for r in roots for parts in [_lexically_inside(expanded, r)] if parts is not None]
        if not inside:
            if not allow_external:
                raise PathRefused(f"{what}: {text!r} is outside {_where(roots)}{tail}")
            if not _kind_ok(expanded, kind):
                raise PathRefused(f"{what}: {text!r} is not an existing {'folder' if kind == 'dir' else 'file'}"
                                  f"{tail}")
            return os.path.realpath(expanded)
        candidates = [(r, os.path.join(r, *parts)) for r, parts in inside]
    else:
        parts = relative_parts(text, what)
        candidates = [(r, os.path.join(r, *parts)) for r in roots]
    escaped = False
    for root, cand in candidates:
        if not allow_external and not is_inside(cand, root):
            escaped = True  # decided on the link's target path only: says nothing of what exists there
            continue
        if _kind_ok(cand, kind):
            return os.path.realpath(cand)
    if escaped:
        raise PathRefused(f"{what}: {text!r} is a link that leads outside {_where(roots)}{tail}")
    noun = "folder" if kind == "dir" else "file"
    raise PathRefused(f"{what}: {text!r} is not an existing {noun} in {_where(roots)}{tail}")


def check_tree_inside(folder: str, roots: Sequence[str], what: str, hint: str = "", max_entries: int = 10000) -> None:
    """Refuse when any file or folder below ``folder`` is a link whose real path leaves every root."""
    tail = f"; {hint}" if hint else ""
    count = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for entry in dirnames + filenames:
            count += 1
            if count > max_entries:
                raise PathRefused(f"{what}: {folder!r} holds more than {max_entries} files; is it a model folder?")
            p = os.path.join(dirpath, entry)
            if os.path.islink(p) and not any(is_inside(p, r) for r in roots):
                rel = os.path.relpath(p, folder)
                raise PathRefused(f"{what}: {rel!r} in the model folder is a link that leads outside "
                                  f"{_where(roots)}{tail}")


def make_dirs_inside(root: str, parts: Iterable[str], what: str) -> str:
    """Create (or reuse) the folder ``root/parts...``; every existing or created folder's real path must be
    inside ``root`` (a symlinked folder leading elsewhere is refused). Returns the folder's path."""
    os.makedirs(root, exist_ok=True)
    cur = root
    for part in parts:
        cur = os.path.join(cur, part)
        if not os.path.lexists(cur):
            try:
                os.mkdir(cur)
            except FileExistsError:
                pass
        if not is_inside(cur, root):
            raise PathRefused(f"{what}: {os.path.relpath(cur, root)!r} is a link that leads outside {root}; "
                              f"choose another name")
        if not os.path.isdir(cur):
            raise PathRefused(f"{what}: {os.path.relpath(cur, root)!r} in {root} is a file, not a folder; "
                              f"choose another name")
    return cur


# ------------------------------------------------------------------------------------------ writing
def _fresh_temp(folder: str, base: str) -> str:
    """Create an empty file with a new random name in ``folder`` (exclusive: never an existing name/link)."""
    for _ in range(100):
        tmp = os.path.join(folder, f".{base[:80]}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise OSError(f"could not create a temporary file in {folder}")


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[str]:
    """``with atomic_write(path) as tmp: write(tmp)``: ``tmp`` replaces ``path`` when the block succeeds
    (``os.replace``), and is removed when it fails — ``path`` is then untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = _fresh_temp(folder, os.path.basename(path))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_json_atomic(obj, path: str, **dump_kwargs) -> None:
    """JSON ``obj`` to ``path`` atomically (see :func:`atomic_write`)."""
    dump_kwargs.setdefault("indent", 1)
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, **dump_kwargs)
            fh.flush()
            os.fsync(fh.fileno())


def _link_new(tmp: str, dest: str) -> bool:
    """Give ``tmp``'s content the new name ``dest``; ``False`` when ``dest`` exists (never replaced)."""
    try:
        os.link(tmp, dest)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system: check, then rename (a tiny race only)
        if os.path.lexists(dest):
            return False
        os.replace(tmp, dest)
        return True


def write_new(folder: str, stem: str, writers: Sequence[tuple], max_tries: int = 10000) -> str:
    """Write a group of files under a name that is new in ``folder``: ``stem``, else ``stem_2``, ``stem_3``...

    ``writers`` is ``[(suffix, fn(tmp_path)), ...]``: every file of the group gets the same stem (e.g. a model
    ``.safetensors`` and its ``.json``). No existing file is ever replaced. Returns the chosen stem's path
    (without suffix).
    """
    for n in range(1, max_tries + 1):
        name = stem if n == 1 else f"{stem}_{n}"
        base = os.path.join(folder, name)
        if any(os.path.lexists(base + suffix) for suffix, _ in writers):
            continue
        made: List[str] = []
        ok = True
        for suffix, fn in writers:
            tmp = _fresh_temp(folder, name + suffix)
            try:
                fn(tmp)
                if not _link_new(tmp, base + suffix):
                    ok = False
                    break
                made.append(base + suffix)
            finally:
                if os.path.lexists(tmp):
                    os.remove(tmp)
        if ok:
            return base
        for p in made:  # another writer took part of this name meanwhile: give it back, try the next
            os.remove(p)
    raise OSError(f"no free name for {stem!r} in {folder}")


def copy_new(src: str, folder: str, stem: str, suffixes: Sequence[str]) -> str:
    """Copy ``src_without_suffix + suffix`` for each suffix into ``folder`` under a new stem (:func:`write_new`)."""
    src_base = os.path.splitext(src)[0]
    writers = [(s, (lambda tmp, s=s: shutil.copyfile(src_base + s, tmp))) for s in suffixes]
    return write_new(folder, stem, writers)


def refuse_link(path: str, what: str) -> None:
    """Refuse to write through a symlink at ``path`` (e.g. before appending to a log)."""
    if os.path.islink(path):
        raise PathRefused(f"{what}: {path!r} is a link; remove it or choose another folder")


__all__ = ["PathRefused", "opted_in", "check_text", "plain_name", "relative_parts", "is_inside", "resolve_in_roots",
           "check_tree_inside", "make_dirs_inside", "atomic_write", "write_json_atomic", "write_new", "copy_new",
           "refuse_link", "ALLOW_EXTERNAL_MODELS", "ALLOW_EXTERNAL_IMAGE_FOLDERS", "MAX_NAME_CHARS",
           "MAX_PATH_CHARS"]
