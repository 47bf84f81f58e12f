"""The on-disk episode store: complete episodes of real frames, in atomic chunks.

Layout of a store directory::

    store.json            format, version, the env spec, the env's action meanings
    chunk-000000.npz      episodes: frames (uint8), actions, rewards, terminated, truncated,
                          life_lost, continued (both absent from chunks of earlier versions)
    chunk-000001.npz      ...

Each chunk is written atomically (:mod:`dreamenv.atomic_files`), so a collection killed at any
moment leaves a readable store holding every complete chunk. Chunks are loaded with
``allow_pickle=False``: reading a store never runs code.

Example:
    >>> store = EpisodeStore.open_or_create("runs/pong/data", AtariSpec("pong"))
    >>> store.num_steps
    0
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dreamenv.atomic_files import write_atomic, write_json
from dreamenv.envs.atari import action_meanings
from dreamenv.envs.spec import EnvSpec, GymSpec, spec_from_dict
from dreamenv.errors import DatasetError

STORE_FORMAT = "dreamenv-episodes"
STORE_VERSION = 1
_KEYS = ("frames", "actions", "rewards", "terminated", "truncated", "lengths")


@dataclass
class Episode:
    """One real episode (or the collected part of one) of single preprocessed frames."""

    frames: np.ndarray
    """``(T+1, *frame)``: the reset frame, then the frame after each step (uint8 ``(S, S)``
    grey or ``(3, S, S)`` colour images, float32 ``(D,)`` state vectors)."""
    actions: np.ndarray
    """``(T,)`` int64 discrete actions, or ``(T, n)`` float32 continuous ones."""
    rewards: np.ndarray
    """``(T,)`` float32 real (unclipped) rewards."""
    terminated: np.ndarray
    """``(T,)`` bool; only the last step can be True (the game ended)."""
    truncated: np.ndarray
    """``(T,)`` bool; True at the last step when the episode was cut (time limit, budget)."""
    life_lost: np.ndarray | None = None
    """``(T,)`` bool; True at the steps after which the game had one life fewer and went on
    (ale-py's ``lives``); all False in stores collected before this was recorded, and for
    games without lives."""
    continued: bool = False
    """True when ``frames[0]`` is not a reset frame: the episode picks up a game that the
    previous collection cut (:class:`~dreamenv.data.collect.Collector` with games that go
    on), so it holds the rest of that game, or the next part of it."""

    def __post_init__(self) -> None:
        if self.life_lost is None:
            self.life_lost = np.zeros(len(self.actions), dtype=bool)

    def __len__(self) -> int:
        return len(self.actions)


class EpisodeStore:
    """A directory of episode chunks; see the module docstring."""

    def __init__(self, path: Path, spec: EnvSpec, meanings: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.spec = spec
        self.action_meanings = meanings

    # --- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> EpisodeStore:
        """An existing store; :class:`DatasetError` if there is none or it is damaged."""
        path = Path(path)
        meta_path = path / "store.json"
        if not meta_path.is_file():
            raise DatasetError(
                f"No episode store at {str(path)!r}: {meta_path.name} is missing. "
                "Create one with `dreamenv collect GAME --out DIR` or dreamenv.collect()."
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{meta_path} is not valid JSON ({err}); the store is damaged."
            ) from err
        if meta.get("format") != STORE_FORMAT:
            raise DatasetError(
                f"{path} is not a dreamenv episode store (format={meta.get('format')!r})."
            )
        if meta.get("version") != STORE_VERSION:
            raise DatasetError(
                f"Episode store {path} has format version {meta.get('version')!r}; this dreamenv "
                f"reads version {STORE_VERSION}. Collect the data again with this version."
            )
        spec = spec_from_dict(meta["spec"])
        return cls(path, spec, tuple(meta["action_meanings"]))

    @classmethod
    def open_or_create(cls, path: str | Path, spec: EnvSpec) -> EpisodeStore:
        """Open the store at ``path``, checking it holds ``spec``'s data, or create it."""
        path = Path(path)
        if (path / "store.json").exists():
            store = cls.open(path)
            if store.spec != spec:
                raise DatasetError(
                    f"The episode store at {str(path)!r} holds data of {store.spec}, but "
                    f"{spec} was requested. Use another --out directory, or the same settings."
                )
            return store
        if path.exists() and any(path.iterdir()):
            raise DatasetError(
                f"{str(path)!r} exists, is not empty and is not an episode store; choose another directory."
            )
        meanings = spec.action_meanings if isinstance(spec, GymSpec) else action_meanings(spec.game)
        meta = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "spec": spec.to_dict(),
            "action_meanings": list(meanings),
        }
        write_json(path / "store.json", meta)
        return cls(path, spec, meanings)

    # --- contents -------------------------------------------------------------------------
    @property
    def chunk_paths(self) -> list[Path]:
        return sorted(self.path.glob("chunk-*.npz"))

    def _read_chunk(self, path: Path) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in _KEYS}
                for key in ("life_lost", "continued"):  # absent from earlier chunks
                    if key in data.files:
                        arrays[key] = data[key]
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
            raise DatasetError(
                f"Chunk {path} of the episode store is unreadable ({err}). Delete that file "
                "and rerun the collection to replace it."
            ) from err
        return arrays

    @property
    def num_steps(self) -> int:
        """Agent steps (transitions) stored."""
        return sum(int(self._read_lengths(p).sum()) for p in self.chunk_paths)

    def _read_lengths(self, path: Path) -> np.ndarray:
        try:
            with np.load(path, allow_pickle=False) as data:
                return data["lengths"]
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
            raise DatasetError(
                f"Chunk {path} of the episode store is unreadable ({err}). Delete that file "
                "and rerun the collection to replace it."
            ) from err

    def append(self, episodes: list[Episode]) -> Path:
        """Write ``episodes`` as the next chunk, atomically; returns its path."""
        if not episodes:
            raise DatasetError("append() needs at least one episode.")
        paths = self.chunk_paths
        index = int(paths[-1].stem.split("-")[1]) + 1 if paths else 0
        target = self.path / f"chunk-{index:06d}.npz"
        arrays: dict[str, np.ndarray] = {
            "frames": np.concatenate([e.frames for e in episodes]).astype(self.spec.frame_dtype),
            "actions": np.concatenate([e.actions for e in episodes]).astype(
                self.spec.action_spec.dtype
            ),
            "rewards": np.concatenate([e.rewards for e in episodes]).astype(np.float32),
            "terminated": np.concatenate([e.terminated for e in episodes]).astype(bool),
            "truncated": np.concatenate([e.truncated for e in episodes]).astype(bool),
            "life_lost": np.concatenate([e.life_lost for e in episodes]).astype(bool),
            "lengths": np.array([len(e) for e in episodes], dtype=np.int64),
            "continued": np.array([e.continued for e in episodes], dtype=bool),
        }

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy stubs type the kwargs as allow_pickle

        write_atomic(target, write)
        return target

    def episodes(self, after_steps: int = 0) -> list[Episode]:
        """The stored episodes in collection order; with ``after_steps``, only those ending
        after the store's first ``after_steps`` steps (chunks wholly before them are not
        read: what the newest collections added, cheaply)."""
        out: list[Episode] = []
        done = 0
        for path in self.chunk_paths:
            lengths = self._read_lengths(path) if after_steps else None
            if lengths is not None and done + int(lengths.sum()) <= after_steps:
                done += int(lengths.sum())
                continue
            data = self._read_chunk(path)
            f0 = a0 = 0
            continued = data.get("continued", np.zeros(len(data["lengths"]), bool))
            if len(continued) != len(data["lengths"]):
                raise DatasetError(
                    f"Chunk {path} is inconsistent: it marks {len(continued)} episodes as "
                    f"continued or not and holds {len(data['lengths'])}. Delete that file and "
                    "rerun the collection to replace it."
                )
            for length, cont in zip(data["lengths"], continued, strict=True):
                length = int(length)
                done += length
                if done > after_steps:
                    out.append(
                        Episode(
                            frames=data["frames"][f0 : f0 + length + 1],
                            actions=data["actions"][a0 : a0 + length],
                            rewards=data["rewards"][a0 : a0 + length],
                            terminated=data["terminated"][a0 : a0 + length],
                            truncated=data["truncated"][a0 : a0 + length],
                            life_lost=data["life_lost"][a0 : a0 + length]
                            if "life_lost" in data
                            else None,
                            continued=bool(cont),
                        )
                    )
                f0 += length + 1
                a0 += length
            if f0 != len(data["frames"]) or a0 != len(data["actions"]):
                raise DatasetError(
                    f"Chunk {path} is inconsistent: its lengths do not match its arrays."
                )
        return out
