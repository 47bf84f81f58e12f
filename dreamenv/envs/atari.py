"""The one Atari preprocessing spec shared by collection, training, dream and real envs.

Every real frame dreamenv ever sees comes from :func:`make_ale_vector` (ale-py's native
vector env, one grayscale frame per step) and is stacked by :func:`stack_frames` or
:class:`FrameStacker`. The spec is stored in each episode store and checkpoint, so the
real env of a checkpoint preprocesses exactly as the data it was trained on.

Example:
    >>> spec = AtariSpec(game="pong")
    >>> spec.frame_shape
    (4, 96, 96)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from dreamenv.envs.spec import ActionSpec
from dreamenv.envs.toy import TOY_GAMES
from dreamenv.errors import ConfigError

SCREEN_SIZES = (64, 80, 96)
"""Frame sides the models take (multiples of 16)."""


@lru_cache(maxsize=1)
def _rom_ids() -> tuple[str, ...]:
    import ale_py.roms

    return tuple(ale_py.roms.get_all_rom_ids())


def normalize_game(game: str) -> str:
    """Return ale-py's ROM id for ``game``: ``"ALE/MsPacman-v5"``, ``"MsPacman"`` -> ``"ms_pacman"``;
    dreamenv's toy games too (``"dreamenv/BouncingBall-v0"`` -> ``"bouncing_ball"``).

    Raises:
        ConfigError: if no ROM (or toy game) of that name exists.
    """
    if not isinstance(game, str) or not game:
        raise ConfigError(f"game must be a non-empty string such as 'pong', got {game!r}.")
    name = game.split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    name = re.sub(r"NoFrameskip$", "", name)
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    snake = snake.lower().replace("-", "_")
    if snake in TOY_GAMES:
        return snake
    ids = _rom_ids()
    for candidate in (snake, snake.replace("_", "")):
        if candidate in ids:
            return candidate
    close = difflib.get_close_matches(snake, ids, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"game={game!r} is not an Atari ROM shipped with ale-py.{hint} "
        "Pass a ROM id such as 'pong' or 'ms_pacman' (ale_py.roms.get_all_rom_ids() lists all)."
    )


@dataclass(frozen=True)
class AtariSpec:
    """How real Atari frames are produced and preprocessed (Robine et al. defaults)."""

    game: str = "pong"
    """ale-py ROM id (``"pong"``, ``"ms_pacman"``; ``"ALE/Pong-v5"`` style names are accepted),
    or a toy game of :mod:`dreamenv.envs.toy` (``"bouncing_ball"``)."""
    frame_skip: int = 4
    """Emulator frames per agent step (the last two are max-pooled)."""
    screen_size: int = 96
    """Square side of the grayscale frames: 96 (paper), 80 (the bouncing ball) or 64."""
    frame_stack: int = 4
    """Frames stacked into one observation (1 disables stacking)."""
    repeat_action_probability: float = 0.0
    """Sticky-action probability; off as in the paper, 0.25 for the ALE v5 protocol."""
    noop_max: int = 30
    """Up to this many no-op steps after each reset (0 disables)."""
    max_episode_frames: int = 108_000
    """Emulator frames after which a real episode is truncated."""

    kind = "atari"
    channels = 1
    frame_dtype = np.uint8
    reward_kind = "ternary"
    """Rewards are sign-clipped (the Atari protocol): the reward head predicts their sign."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "game", normalize_game(self.game))
        if self.screen_size not in SCREEN_SIZES:
            raise ConfigError(
                f"screen_size must be one of {SCREEN_SIZES} (the models need a multiple of 16), "
                f"got {self.screen_size!r}."
            )
        if not (isinstance(self.frame_skip, int) and self.frame_skip >= 1):
            raise ConfigError(f"frame_skip must be an int >= 1, got {self.frame_skip!r}.")
        if not (isinstance(self.frame_stack, int) and 1 <= self.frame_stack <= 16):
            raise ConfigError(f"frame_stack must be an int in [1, 16], got {self.frame_stack!r}.")
        if not 0.0 <= float(self.repeat_action_probability) <= 1.0:
            raise ConfigError(
                "repeat_action_probability must lie in [0, 1], "
                f"got {self.repeat_action_probability!r}."
            )
        if not (isinstance(self.noop_max, int) and self.noop_max >= 0):
            raise ConfigError(f"noop_max must be an int >= 0, got {self.noop_max!r}.")

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Shape of one stacked observation: (frame_stack, screen_size, screen_size)."""
        return (self.frame_stack, self.screen_size, self.screen_size)

    @property
    def single_frame_shape(self) -> tuple[int, int]:
        """Shape of one stored (unstacked) frame: (screen_size, screen_size)."""
        return (self.screen_size, self.screen_size)

    @property
    def action_spec(self) -> ActionSpec:
        """``Discrete`` over the game's minimal action set."""
        return ActionSpec.discrete(len(action_meanings(self.game)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AtariSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise a :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k != "kind"}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(
                f"Unknown AtariSpec fields {sorted(unknown)}; known: {sorted(names)}."
            )
        return cls(**data)


def make_ale_vector(
    spec: AtariSpec, num_envs: int, *, autoreset_mode: Any = "SameStep", num_threads: int = 0
) -> Any:
    """ale-py's native vector env producing single preprocessed frames of ``spec``.

    Observations have shape ``(num_envs, 1, S, S)``; stack them with :class:`FrameStacker`.
    Rewards are the game's, unclipped. ``num_threads=0`` lets ale-py choose. A toy game
    gives :class:`~dreamenv.envs.toy.BouncingBallVector`, with the same interface.
    """
    if spec.game in TOY_GAMES:
        from dreamenv.envs.toy import BouncingBallVector

        return BouncingBallVector(
            num_envs,
            screen_size=spec.screen_size,
            frame_skip=spec.frame_skip,
            max_episode_frames=spec.max_episode_frames,
            noop_max=spec.noop_max,
            autoreset_mode=str(getattr(autoreset_mode, "value", autoreset_mode)),
        )
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        spec.game,
        num_envs,
        num_threads=num_threads,
        max_num_frames_per_episode=spec.max_episode_frames,
        repeat_action_probability=spec.repeat_action_probability,
        autoreset_mode=autoreset_mode,
        img_height=spec.screen_size,
        img_width=spec.screen_size,
        grayscale=True,
        stack_num=1,
        frameskip=spec.frame_skip,
        maxpool=True,
        noop_max=spec.noop_max,
        reward_clipping=False,
        use_fire_reset=False,
    )


@lru_cache(maxsize=64)
def action_meanings(game: str) -> tuple[str, ...]:
    """Names of the minimal action set of ``game`` in ale-py's order (``("NOOP", "FIRE", ...)``)."""
    if normalize_game(game) in TOY_GAMES:
        return TOY_GAMES[normalize_game(game)]
    import ale_py
    import ale_py.roms

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    rom = ale_py.roms.get_rom_path(normalize_game(game))
    if rom is None:
        raise ConfigError(f"ale-py has no ROM of {game!r}; install ale-py >= 0.9 (ROMs included).")
    ale.loadROM(rom)
    return tuple(a.name for a in ale.getMinimalActionSet())


def merge_stack(stacked: np.ndarray, frame_ndim: int) -> np.ndarray:
    """Stacked frames ``(..., stack, *frame)`` as observations: colour frames ``(C, S, S)``
    merge into ``(..., stack * C, S, S)``; grey ``(S, S)`` and state ``(D,)`` frames stay."""
    if frame_ndim != 3:
        return stacked
    shape = stacked.shape
    return stacked.reshape(*shape[:-4], shape[-4] * shape[-3], *shape[-2:])


def stack_frames(frames: np.ndarray, index: np.ndarray, stack: int) -> np.ndarray:
    """Stacked observations of one episode's single frames.

    Args:
        frames: ``(T, *frame)`` frames of one episode (grey ``(S, S)``, colour ``(C, S, S)``
            or state ``(D,)``), ``frames[0]`` the reset frame.
        index: positions ``t`` (any shape); the result stacks ``frames[t-stack+1 .. t]``.
        stack: frames per observation. Positions before the reset repeat the reset frame.

    Returns:
        ``(*index.shape, stack, S, S)`` (colour: ``(*index.shape, stack * C, S, S)``; state:
        ``(*index.shape, stack, D)``), of the frames' dtype.
    """
    offsets = np.arange(-stack + 1, 1)
    positions = np.clip(np.asarray(index)[..., None] + offsets, 0, None)
    return merge_stack(frames[positions], frames.ndim - 1)


class FrameStacker:
    """Keeps the last ``stack`` frames of a batch of episodes (the live counterpart of
    :func:`stack_frames`: a reset fills the stack with copies of the reset frame).

    ``frame`` is the side of square grey frames, or the shape of one frame (``(C, S, S)``,
    ``(D,)``); :attr:`buffer` is ``(num_envs, stack, *frame)`` and :meth:`stacks` the
    observations of :func:`stack_frames`' layout."""

    def __init__(
        self, num_envs: int, stack: int, frame: int | tuple[int, ...], dtype: Any = np.uint8
    ) -> None:
        shape = (frame, frame) if isinstance(frame, (int, np.integer)) else tuple(frame)
        self.frame_ndim = len(shape)
        self.buffer = np.zeros((num_envs, stack, *shape), dtype=dtype)

    def view(self, stacks: np.ndarray | None = None) -> np.ndarray:
        """``stacks`` (default: the buffer) in the observations' layout (a view)."""
        return merge_stack(self.buffer if stacks is None else stacks, self.frame_ndim)

    def reset(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Start the envs in ``mask`` (all if None) from ``frames`` ``(num_envs, *frame)``."""
        if mask is None:
            self.buffer[:] = frames[:, None]
        else:
            self.buffer[mask] = frames[mask][:, None]
        return self.buffer

    def push(self, frames: np.ndarray) -> np.ndarray:
        """Append one frame per env and return the stacks ``(num_envs, stack, *frame)``."""
        self.buffer[:, :-1] = self.buffer[:, 1:]
        self.buffer[:, -1] = frames
        return self.buffer

    def peek(self, frames: np.ndarray) -> np.ndarray:
        """The stacks that :meth:`push` would give, without changing the buffer."""
        return np.concatenate([self.buffer[:, 1:], frames[:, None]], axis=1)
