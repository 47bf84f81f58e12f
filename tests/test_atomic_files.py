"""Atomic writes of single files and of file sets (the saves of a checkpoint)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from dreamenv import atomic_files
from dreamenv.atomic_files import (
    COMMIT_DIR,
    PENDING_DIR,
    finish_file_set,
    json_text,
    read_file_set,
    set_file,
    write_atomic,
    write_file_set,
    write_json,
)


def _writers(**contents: str) -> dict:
    return {f"{k}.txt": (lambda p, v=v: p.write_text(v)) for k, v in contents.items()}


def _read(directory: Path, *names: str) -> dict[str, str | None]:
    found = {}
    for name in names:
        path = set_file(directory, f"{name}.txt")
        found[name] = path.read_text() if path is not None and path.is_file() else None
    return found


def test_a_file_set_is_written_under_plain_names(tmp_path: Path) -> None:
    write_file_set(tmp_path, _writers(a="1", b="1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    write_file_set(tmp_path, _writers(a="2", b="2"))
    assert _read(tmp_path, "a", "b") == {"a": "2", "b": "2"}
    assert not (tmp_path / PENDING_DIR).exists() and not (tmp_path / COMMIT_DIR).exists()


def test_a_set_killed_before_its_commit_leaves_the_old_set(tmp_path: Path) -> None:
    write_file_set(tmp_path, _writers(a="1", b="1"))

    def killed(p: Path) -> None:
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        write_file_set(tmp_path, {**_writers(a="2"), "b.txt": killed})
    assert (tmp_path / PENDING_DIR).is_dir()
    assert _read(tmp_path, "a", "b") == {"a": "1", "b": "1"}
    write_file_set(tmp_path, _writers(a="3", b="3"))  # the next write discards the leftover
    assert _read(tmp_path, "a", "b") == {"a": "3", "b": "3"}
    assert not (tmp_path / PENDING_DIR).exists()


def test_a_set_killed_while_moving_reads_whole_and_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_file_set(tmp_path, _writers(a="1", b="1", c="1"))
    real_replace = os.replace
    moves = []

    def killed_after_one_move(src, dst) -> None:
        if moves:
            raise KeyboardInterrupt("killed")
        moves.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(atomic_files.os, "replace", killed_after_one_move)
    with pytest.raises(KeyboardInterrupt):
        write_file_set(tmp_path, _writers(a="2", b="2"), remove=["c.txt"])
    monkeypatch.setattr(atomic_files.os, "replace", real_replace)
    assert len(moves) == 1 and (tmp_path / COMMIT_DIR).is_dir()
    on_disk = {p.name: p.read_text() for p in tmp_path.glob("*.txt")}
    assert on_disk == {"a.txt": "2", "b.txt": "1"}  # the old set half replaced
    assert _read(tmp_path, "a", "b", "c") == {"a": "2", "b": "2", "c": None}
    finish_file_set(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    assert _read(tmp_path, "a", "b") == {"a": "2", "b": "2"}


def test_files_outside_the_set_are_left_alone(tmp_path: Path) -> None:
    write_atomic(tmp_path / "log.csv", lambda p: p.write_text("rows"))
    write_file_set(tmp_path, _writers(a="1"), remove=["gone.txt"])
    assert (tmp_path / "log.csv").read_text() == "rows"


def test_a_read_is_repeated_when_a_writer_changes_the_set(tmp_path: Path) -> None:
    write_file_set(tmp_path, _writers(a="1"))
    seen = []

    def read() -> str:
        seen.append((tmp_path / "a.txt").read_text())
        if len(seen) == 1:
            write_file_set(tmp_path, _writers(a="2"))  # a save in the middle of the read
        return seen[-1]

    assert read_file_set(tmp_path, read) == "2"
    assert seen == ["1", "2"]


def test_a_read_error_of_an_unchanged_set_is_raised_at_once(tmp_path: Path) -> None:
    calls = []

    def read() -> None:
        calls.append(1)
        raise FileNotFoundError("no file")

    with pytest.raises(FileNotFoundError, match="no file"):
        read_file_set(tmp_path, read)
    assert calls == [1]


def test_a_set_that_keeps_changing_gives_up(tmp_path: Path) -> None:
    count = iter(range(100))

    def read() -> None:
        write_file_set(tmp_path, _writers(a=str(next(count))))

    with pytest.raises(TimeoutError, match="changed during each of 3 reads"):
        read_file_set(tmp_path, read, attempts=3)


def test_json_has_no_nan_or_infinity(tmp_path: Path) -> None:
    data = {"p": math.nan, "rows": [1.5, math.inf, (-math.inf, 2)], "name": "pong"}
    write_json(tmp_path / "sub" / "out.json", data)
    text = (tmp_path / "sub" / "out.json").read_text()
    assert text == json_text(data)
    assert json.loads(text) == {"name": "pong", "p": None, "rows": [1.5, None, [None, 2]]}
