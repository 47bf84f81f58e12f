"""The episode store and real-data collection."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dreamenv
from dreamenv import AtariSpec, DatasetError, EpisodeStore
from dreamenv.data.store import Episode
from dreamenv.errors import ConfigError

SHORT = AtariSpec("pong", max_episode_frames=160)
"""Pong cut after 40 agent steps, so that episodes (and chunks) complete quickly."""


def _copy(store_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "store"
    shutil.copytree(store_dir, target)
    return target


def test_session_store_holds_the_requested_steps(store_dir: Path, store_spec: AtariSpec) -> None:
    store = EpisodeStore.open(store_dir)
    assert store.spec == store_spec
    assert store.num_steps == 400
    episodes = store.episodes()
    assert sum(len(e) for e in episodes) == 400
    assert store.action_meanings[:2] == ("NOOP", "FIRE")
    assert len(store.action_meanings) == 6


def test_stored_episodes_are_well_formed(store_dir: Path) -> None:
    for ep in EpisodeStore.open(store_dir).episodes():
        n = len(ep)
        assert n > 0
        assert ep.frames.shape == (n + 1, 96, 96) and ep.frames.dtype == np.uint8
        assert ep.actions.shape == (n,) and ep.actions.dtype == np.int64
        assert ep.actions.min() >= 0 and ep.actions.max() < 6
        assert ep.rewards.dtype == np.float32
        # only the last step may end the episode, and every stored episode ends
        assert not ep.terminated[:-1].any() and not ep.truncated[:-1].any()
        assert ep.terminated[-1] or ep.truncated[-1]


@pytest.mark.parametrize("steps", [37, 60])
def test_collect_writes_exactly_the_requested_steps(tmp_path: Path, steps: int) -> None:
    store = dreamenv.collect(tmp_path / "s", SHORT, steps, num_envs=2, progress=False)
    assert store.num_steps == steps
    assert sum(len(e) for e in EpisodeStore.open(tmp_path / "s").episodes()) == steps


def test_collect_again_continues_and_keeps_old_chunks(tmp_path: Path) -> None:
    out = tmp_path / "s"
    dreamenv.collect(out, SHORT, 50, num_envs=2, chunk_steps=10_000, progress=False)
    store = EpisodeStore.open(out)
    old = {p.name: p.read_bytes() for p in store.chunk_paths}
    assert list(old) == ["chunk-000000.npz"]
    old_episodes = store.episodes()

    dreamenv.collect(out, SHORT, 130, num_envs=2, chunk_steps=10_000, progress=False)
    store = EpisodeStore.open(out)
    assert store.num_steps == 130
    assert len(store.chunk_paths) > 1
    for name, content in old.items():
        assert (out / name).read_bytes() == content
    new_episodes = store.episodes()
    assert sum(len(e) for e in new_episodes[len(old_episodes) :]) == 80
    for a, b in zip(old_episodes, new_episodes[: len(old_episodes)], strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)


def test_collections_of_one_collector_go_on_with_its_games(tmp_path: Path) -> None:
    out = tmp_path / "s"
    long_games = AtariSpec("pong", max_episode_frames=400)  # 100 agent steps
    with dreamenv.Collector(long_games, num_envs=2) as games:
        games.collect(out, 30, seed=3, progress=False)
        first = EpisodeStore.open(out).episodes()
        games.collect(out, 90, seed=4, progress=False)
    episodes = EpisodeStore.open(out).episodes()
    assert [len(e) for e in first] == [15, 15] and not any(e.continued for e in first)
    assert all(e.truncated[-1] and not e.terminated[-1] for e in first)
    later = episodes[2:]
    assert [len(e) for e in later] == [30, 30] and all(e.continued for e in later)
    for cut, rest in zip(first, later, strict=True):  # each game goes on where it was cut
        np.testing.assert_array_equal(rest.frames[0], cut.frames[-1])
    with dreamenv.Collector(long_games, num_envs=2) as games:  # a new collector: new games
        games.collect(out, 120, seed=5, progress=False)
    assert not any(e.continued for e in EpisodeStore.open(out).episodes()[4:])


def test_a_game_that_ends_with_the_budget_goes_on_as_a_new_game(tmp_path: Path) -> None:
    with dreamenv.Collector(SHORT, num_envs=1) as games:  # SHORT games: 40 steps each
        games.collect(tmp_path / "s", 40, progress=False)
        games.collect(tmp_path / "s", 60, progress=False)
    episodes = EpisodeStore.open(tmp_path / "s").episodes()
    assert [len(e) for e in episodes] == [40, 20] and episodes[0].truncated[-1]
    assert not episodes[1].continued  # its first frame is a reset frame


def test_collect_starts_new_games_every_call(tmp_path: Path) -> None:
    out = tmp_path / "s"
    for steps in (30, 60):
        dreamenv.collect(
            out, AtariSpec("pong", max_episode_frames=400), steps, num_envs=2, progress=False
        )
    assert not any(e.continued for e in EpisodeStore.open(out).episodes())


def test_collect_with_enough_steps_does_nothing(store_dir: Path, tmp_path: Path) -> None:
    out = _copy(store_dir, tmp_path)
    before = sorted(p.name for p in out.iterdir())
    store = dreamenv.collect(out, EpisodeStore.open(out).spec, 100, progress=False)
    assert store.num_steps == 400
    assert sorted(p.name for p in out.iterdir()) == before


def test_store_of_another_spec_is_refused(store_dir: Path, tmp_path: Path) -> None:
    out = _copy(store_dir, tmp_path)
    with pytest.raises(DatasetError, match=r"holds data of .*but .*was requested"):
        dreamenv.collect(out, AtariSpec("pong", screen_size=64), 500, progress=False)
    with pytest.raises(DatasetError, match=r"holds data of .*game='pong'"):
        EpisodeStore.open_or_create(out, AtariSpec("breakout"))


def test_non_empty_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not empty and is not an episode store"):
        dreamenv.collect(tmp_path, SHORT, 10, progress=False)


def test_open_missing_store(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"No episode store at .*store\.json is missing"):
        EpisodeStore.open(tmp_path / "nothing")


def test_open_store_of_another_version(store_dir: Path, tmp_path: Path) -> None:
    out = _copy(store_dir, tmp_path)
    meta = json.loads((out / "store.json").read_text())
    (out / "store.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(DatasetError, match="has format version 99"):
        EpisodeStore.open(out)


def test_damaged_store_json(store_dir: Path, tmp_path: Path) -> None:
    out = _copy(store_dir, tmp_path)
    text = (out / "store.json").read_text()
    (out / "store.json").write_text(text[: len(text) // 2])
    with pytest.raises(DatasetError, match=r"store\.json is not valid JSON"):
        EpisodeStore.open(out)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_chunk_is_named(store_dir: Path, tmp_path: Path, damage: str) -> None:
    out = _copy(store_dir, tmp_path)
    chunk = sorted(out.glob("chunk-*.npz"))[-1]
    content = chunk.read_bytes()
    chunk.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"x" * 100)
    store = EpisodeStore.open(out)
    with pytest.raises(DatasetError, match=rf"Chunk .*{chunk.name} .*is unreadable"):
        store.episodes()
    with pytest.raises(DatasetError, match=rf"{chunk.name}.*Delete that file"):
        store.num_steps  # noqa: B018


def test_leftover_temporary_files_are_ignored(store_dir: Path, tmp_path: Path) -> None:
    out = _copy(store_dir, tmp_path)
    names = [p.name for p in EpisodeStore.open(out).chunk_paths]
    (out / ".chunk-000009.npz.abc123.tmp").write_bytes(b"half a chunk")
    (out / ".store.json.xyz.tmp").write_bytes(b"{")
    store = EpisodeStore.open(out)
    assert [p.name for p in store.chunk_paths] == names
    assert store.num_steps == 400
    assert sum(len(e) for e in store.episodes()) == 400
    new = store.append(store.episodes()[:1])
    assert new.name == f"chunk-{len(names):06d}.npz"


def test_append_needs_episodes(store_dir: Path) -> None:
    with pytest.raises(DatasetError, match="at least one episode"):
        EpisodeStore.open(store_dir).append([])


def test_append_round_trip(tmp_path: Path) -> None:
    store = EpisodeStore.open_or_create(tmp_path / "s", AtariSpec("pong"))
    frames = np.arange(4 * 96 * 96, dtype=np.int64).reshape(4, 96, 96).astype(np.uint8)
    ep = Episode(
        frames,
        np.array([1, 2, 3]),
        np.array([0.0, 1.0, -1.0]),
        np.array([False, False, True]),
        np.array([False, False, False]),
    )
    store.append([ep, ep])
    back = EpisodeStore.open(tmp_path / "s").episodes()
    assert len(back) == 2
    for got in back:
        np.testing.assert_array_equal(got.frames, frames)
        assert got.actions.tolist() == [1, 2, 3]
        assert got.rewards.tolist() == [0.0, 1.0, -1.0]
        assert got.terminated.tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be a positive int, got 0"),
        ({"steps": 10, "num_envs": 0}, "num_envs must be a positive int, got 0"),
        ({"steps": 10, "chunk_steps": -1}, "chunk_steps must be a positive int, got -1"),
    ],
)
def test_collect_rejects_bad_counts(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dreamenv.collect(tmp_path / "s", SHORT, progress=False, **kwargs)
    assert not (tmp_path / "s").exists()


_KILLED_COLLECT = """
import sys
import dreamenv
from dreamenv import AtariSpec
dreamenv.collect(sys.argv[1], AtariSpec("pong", max_episode_frames=160), int(sys.argv[2]),
                 num_envs=2, chunk_steps=40, progress=False)
"""


def test_collect_killed_with_sigkill_leaves_a_readable_store(tmp_path: Path) -> None:
    out, total = tmp_path / "s", 3000
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_COLLECT, str(out), str(total)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("chunk-*.npz")) and proc.poll() is None:
            assert time.monotonic() < deadline, "no chunk was written"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()

    store = EpisodeStore.open(out)
    assert store.chunk_paths
    killed_at = store.num_steps
    assert 0 < killed_at < total
    episodes = store.episodes()  # every chunk is readable
    assert sum(len(e) for e in episodes) == killed_at
    for ep in episodes:
        assert len(ep.frames) == len(ep) + 1

    store = dreamenv.collect(out, SHORT, total, num_envs=2, chunk_steps=400, progress=False)
    assert store.num_steps == total
    assert sum(len(e) for e in EpisodeStore.open(out).episodes()) == total


def test_collect_marks_lost_lives(tmp_path: Path) -> None:
    """Breakout's random play loses lives long before the game ends: each loss is one
    ``life_lost`` step inside an episode, never the step that ends it."""
    store = dreamenv.collect(
        tmp_path / "s", AtariSpec("breakout", screen_size=64), 600, num_envs=2, progress=False
    )
    episodes = store.episodes()
    assert sum(int(e.life_lost.sum()) for e in episodes) >= 2  # type: ignore[union-attr]
    for e in episodes:
        assert len(e.life_lost) == len(e)  # type: ignore[arg-type]
        if e.terminated[-1]:
            assert not e.life_lost[-1]  # type: ignore[index]
            assert int(e.life_lost.sum()) == 4  # type: ignore[union-attr]  # 5 lives


def test_chunks_of_earlier_versions_read_without_lost_lives_or_continuations(
    tmp_path: Path,
) -> None:
    store = EpisodeStore.open_or_create(tmp_path / "s", AtariSpec("pong"))
    frames = np.zeros((3, 96, 96), np.uint8)
    np.savez_compressed(  # a chunk as earlier versions wrote it
        tmp_path / "s" / "chunk-000000.npz",
        frames=frames,
        actions=np.array([1, 2]),
        rewards=np.zeros(2, np.float32),
        terminated=np.array([False, True]),
        truncated=np.zeros(2, bool),
        lengths=np.array([2]),
    )
    (ep,) = store.episodes()
    assert ep.life_lost.tolist() == [False, False]  # type: ignore[union-attr]
    assert not ep.continued


def test_a_chunk_marking_too_few_episodes_as_continued_is_refused(tmp_path: Path) -> None:
    store = EpisodeStore.open_or_create(tmp_path / "s", AtariSpec("pong"))
    np.savez_compressed(
        tmp_path / "s" / "chunk-000000.npz",
        frames=np.zeros((5, 96, 96), np.uint8),
        actions=np.array([1, 2, 3]),
        rewards=np.zeros(3, np.float32),
        terminated=np.array([True, False, True]),
        truncated=np.zeros(3, bool),
        lengths=np.array([1, 2]),
        continued=np.array([False]),
    )
    with pytest.raises(DatasetError, match=r"marks 1 episodes as continued or not and holds 2"):
        store.episodes()


def test_episodes_after_some_steps_are_those_ending_later(store_dir: Path) -> None:
    store = EpisodeStore.open(store_dir)
    every = store.episodes()
    ends = np.cumsum([len(e) for e in every])
    for after in (0, 1, int(ends[0]), int(ends[len(ends) // 2]) + 3, int(ends[-1])):
        later = store.episodes(after_steps=after)
        expected = [e for e, end in zip(every, ends, strict=True) if end > after]
        assert [len(e) for e in later] == [len(e) for e in expected]
        for got, want in zip(later, expected, strict=True):
            np.testing.assert_array_equal(got.frames, want.frames)
