"""Atomic file writes: a file, or a set of files, is either its old content or its new one.

A single write goes to a temporary file in the same directory, is flushed to disk, then
``os.replace``-d over the target, so a process killed with SIGKILL never leaves a
half-written file under the target's name.

A *file set* (the files of one checkpoint save) is written as a redo log, so the files
keep their plain names in the directory and a reader always sees one save, whole:

1. every file goes into ``DIR/.pending/`` with a ``MANIFEST.json`` naming them, each
   flushed to disk (a crash here leaves the old set untouched; the next write discards
   the leftover);
2. ``.pending`` is renamed ``.commit``: this one atomic rename commits the new set;
3. the files move from ``.commit`` over their plain names, the names the set drops are
   removed, and ``.commit`` goes last.

A crash in step 3 leaves ``.commit``: readers take those files from it (see
:func:`set_file`) and the next write finishes the move first (:func:`finish_file_set`).
:func:`read_file_set` retries a read that a concurrent writer changed under it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

PENDING_DIR = ".pending"
"""A file set being written; not yet part of the directory."""
COMMIT_DIR = ".commit"
"""A committed file set whose files are being moved to their names."""
MANIFEST_FILE = "MANIFEST.json"
"""Inside a file set: the names it writes and the names it removes."""

T = TypeVar("T")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then move the result to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync_file(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(data: Any) -> str:
    """``data`` as indented, standard JSON: a NaN or infinite float (JSON has none, and
    strict parsers such as ``jq`` or JavaScript's reject Python's ``NaN`` token) becomes
    ``null``.

    Example:
        >>> json.loads(json_text({"p": float("nan"), "t": 2.5}))
        {'p': None, 't': 2.5}
    """
    return json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def null_as_nan(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of figures read back from :func:`json_text`: each ``null`` (a NaN or infinity
    when written) as NaN, so the row computes as it did before it was saved.

    Example:
        >>> null_as_nan({"p": None, "t": 2.5})
        {'p': nan, 't': 2.5}
    """
    return {k: math.nan if v is None else v for k, v in row.items()}


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as :func:`json_text`, atomically (creating the parent directories)."""
    text = json_text(data)
    write_atomic(path, lambda p: p.write_text(text))


def _manifest(commit: Path) -> dict[str, list[str]] | None:
    try:
        return json.loads((commit / MANIFEST_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None  # all moved (the manifest goes just before the directory)


def finish_file_set(directory: Path) -> None:
    """Complete the move of a committed set that a killed writer left in ``.commit``."""
    directory = Path(directory)
    commit = directory / COMMIT_DIR
    if not commit.is_dir():
        return
    manifest = _manifest(commit)
    if manifest is not None:
        for name in manifest["remove"]:
            (directory / name).unlink(missing_ok=True)
        for name in manifest["files"]:
            if (commit / name).is_file():
                os.replace(commit / name, directory / name)
        _fsync_dir(directory)
        (commit / MANIFEST_FILE).unlink()
    shutil.rmtree(commit)
    _fsync_dir(directory)


def write_file_set(
    directory: Path,
    writers: Mapping[str, Callable[[Path], object]],
    remove: Iterable[str] = (),
) -> None:
    """Write the files ``{name: write(tmp_path)}`` into ``directory`` as one atomic set.

    ``remove`` names files the new set drops: they disappear in the same switch. Files
    of ``directory`` named in neither are left alone.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    finish_file_set(directory)
    pending = directory / PENDING_DIR
    if pending.exists():
        shutil.rmtree(pending)  # a set a killed writer never committed
    pending.mkdir()
    for name, write in writers.items():
        write(pending / name)
        _fsync_file(pending / name)
    manifest = {"files": list(writers), "remove": sorted(set(remove) - set(writers))}
    (pending / MANIFEST_FILE).write_text(json.dumps(manifest))
    _fsync_file(pending / MANIFEST_FILE)
    _fsync_dir(pending)
    os.rename(pending, directory / COMMIT_DIR)
    _fsync_dir(directory)
    finish_file_set(directory)


def set_file(directory: Path, name: str) -> Path | None:
    """Where the latest committed version of ``name`` lies now (``None``: the set removed
    it); ``directory / name`` unless a killed writer left the move unfinished."""
    directory = Path(directory)
    manifest = _manifest(directory / COMMIT_DIR)
    if manifest is not None:
        if name in manifest["remove"]:
            return None
        if name in manifest["files"] and (directory / COMMIT_DIR / name).is_file():
            return directory / COMMIT_DIR / name
    return directory / name


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    entries = []
    for folder in (directory, directory / COMMIT_DIR):
        try:
            with os.scandir(folder) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False):
                        s = e.stat(follow_symlinks=False)
                        entries.append(
                            (f"{folder.name}/{e.name}", s.st_ino, s.st_mtime_ns, s.st_size)
                        )
        except (FileNotFoundError, NotADirectoryError):
            pass
    return tuple(sorted(entries))


def read_file_set(directory: Path, read: Callable[[], T], attempts: int = 5) -> T:
    """``read()`` of files of ``directory``, again while a writer changes them under it.

    An error of ``read`` is raised as it is when nothing changed meanwhile.

    Raises:
        TimeoutError: the files changed during each of ``attempts`` reads.
    """
    directory = Path(directory)
    for attempt in range(attempts):
        before = _fingerprint(directory)
        try:
            result = read()
        except Exception:
            if _fingerprint(directory) == before or attempt == attempts - 1:
                raise
        else:
            if _fingerprint(directory) == before:
                return result
        time.sleep(0.05 * (attempt + 1))
    raise TimeoutError(
        f"The files of {str(directory)!r} changed during each of {attempts} reads: a process "
        "is writing them. Read them again when it is done."
    )
