"""Real envs producing the single preprocessed frames of a spec, for every kind of spec.

:func:`make_source_vector` is the one place collection, ``Real-v0``, evaluation and videos
get their real env from: ale-py's native vector env for an
:class:`~dreamenv.envs.atari.AtariSpec`, gymnasium's own vector env (``gym.make_vec``,
sync or async) of :class:`FrameSource`-wrapped envs for a
:class:`~dreamenv.envs.spec.GymSpec`. Both speak ale-py's vector interface: observations
``(N, 1, *spec.single_frame_shape)``, ``info["final_obs"]`` in ``SameStep`` mode,
``info["lives"]``, ``reset(seed=[...], options={"reset_mask": mask})``.

Example:
    >>> env = make_source_vector(make_spec("CartPole-v1"), 4)
    >>> obs, info = env.reset(seed=[0, 1, 2, 3])
    >>> obs.shape
    (4, 1, 4)
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from dreamenv.envs.spec import GymSpec, _image_of, check_env_id
from dreamenv.errors import ConfigError

VectorMode = Literal["sync", "async"]
"""``"sync"`` (envs stepped in this process) or ``"async"`` (one process per env)."""


def preprocess_image(image: np.ndarray, size: int, grayscale: bool) -> np.ndarray:
    """An ``(H, W[, C])`` uint8 image as a ``(size, size)`` grey or ``(3, size, size)`` RGB
    frame (area-averaged resize, as ale-py's)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    if grayscale:
        return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


class FrameSource(gym.Wrapper):
    """One gymnasium env emitting the spec's single frames, with its action repeat and
    step limit: the per-env half of :func:`make_gym_vector`."""

    def __init__(self, env: gym.Env, spec: GymSpec) -> None:
        super().__init__(env)
        self.spec_ = spec
        self.observation_space = gym.spaces.Box(
            -np.inf if spec.observation == "state" else 0,
            np.inf if spec.observation == "state" else 255,
            spec.single_frame_shape,
            spec.frame_dtype,
        )
        self.action_space = spec.actions.space()
        self._steps = 0

    def _frame(self, obs: Any) -> np.ndarray:
        spec = self.spec_
        if spec.observation == "state":
            return np.asarray(obs, dtype=np.float32).reshape(spec.single_frame_shape)
        if spec.observation == "render":
            image = self.env.render()
            if image is None:
                raise ConfigError(
                    f"{spec.env_id}.render() returned None; observation='render' needs "
                    "env_kwargs={'render_mode': 'rgb_array'}."
                )
        else:
            image = _image_of(obs, spec.image_key, spec.env_id)
        return preprocess_image(np.asarray(image), spec.screen_size, spec.grayscale)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._steps = 0
        return self._frame(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.spec_.actions.kind == "discrete":
            action = int(action)
        else:
            action = np.asarray(action, dtype=np.float32)
        total = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        for _ in range(self.spec_.action_repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        self._steps += 1
        limit = self.spec_.max_episode_steps
        if limit is not None and self._steps >= limit and not terminated:
            truncated = True
        return self._frame(obs), total, bool(terminated), bool(truncated), info


class GymVectorSource:
    """gymnasium's vector env of :class:`FrameSource` envs, behind ale-py's vector interface
    (see the module docstring)."""

    def __init__(
        self,
        spec: GymSpec,
        num_envs: int,
        autoreset_mode: Any = "SameStep",
        vectorization: VectorMode = "sync",
    ) -> None:
        if vectorization not in ("sync", "async"):
            raise ConfigError(f"vectorization must be 'sync' or 'async', got {vectorization!r}.")
        check_env_id(spec.env_id)
        mode = AutoresetMode(str(getattr(autoreset_mode, "value", autoreset_mode)))
        self.spec = spec
        self.num_envs = num_envs
        kwargs = dict(spec.env_kwargs)

        def make() -> gym.Env:
            return FrameSource(gym.make(spec.env_id, **kwargs), spec)

        cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
        self.env = cls([make] * num_envs, autoreset_mode=mode)
        self.single_action_space = spec.actions.space()
        self.single_observation_space = self.env.single_observation_space

    def reset(
        self, *, seed: Any = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(seed, (int, np.integer)):
            seeds: Any = [int(seed) + i for i in range(self.num_envs)]
        elif seed is None:
            seeds = None
        else:
            seeds = [int(s) for s in seed]
            if options and "reset_mask" in options:  # ale-py takes one seed per reset env
                mask = np.asarray(options["reset_mask"], bool)
                if len(seeds) == int(mask.sum()) and len(seeds) != self.num_envs:
                    full: list[int | None] = [None] * self.num_envs
                    for i, s in zip(np.flatnonzero(mask), seeds, strict=True):
                        full[i] = s
                    seeds = full
        obs, info = self.env.reset(seed=seeds, options=options)
        return obs[:, None], self._info(info)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        out = self._info(info)
        if "final_obs" in info:
            final = np.array(obs, copy=True)
            for i in np.flatnonzero(info.get("_final_obs", terminated | truncated)):
                final[i] = info["final_obs"][i]
            out["final_obs"] = final[:, None]
        return obs[:, None], np.asarray(reward, np.float64), terminated, truncated, out

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"lives": np.zeros(self.num_envs, np.int64)}

    def close(self) -> None:
        self.env.close()


def frames_to_rgb(frames: np.ndarray) -> np.ndarray:
    """Single frames ``(N, S, S)`` grey or ``(N, 3, S, S)`` colour as ``(N, S, S, 3)`` uint8
    images; state vectors ``(N, D)`` as one grey bar per value (a crude plot)."""
    if frames.ndim == 3:
        return np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim == 4:
        return np.ascontiguousarray(frames.transpose(0, 2, 3, 1))
    values = np.tanh(np.asarray(frames, np.float32))  # (N, D) in (-1, 1)
    n, d = values.shape
    image = np.zeros((n, 64, 64), np.uint8)
    width = max(1, 64 // d)
    rows = np.arange(64)[None, :, None]
    for i in range(d):
        top = np.round((1 - values[:, i]) * 31.5).astype(int)[:, None, None]
        bar = (rows >= np.minimum(top, 32)) & (rows <= np.maximum(top, 32))
        image[:, :, i * width : (i + 1) * width] = np.where(bar, 255, 0)
    return np.repeat(image[..., None], 3, axis=-1)


def newest_frames(observations: np.ndarray, spec: Any) -> np.ndarray:
    """The newest single frame ``(N, *spec.single_frame_shape)`` of stacked observations
    ``(N, *spec.frame_shape)`` (colour stacks end with the newest frame's C channels)."""
    frame = tuple(spec.single_frame_shape)
    if len(frame) == 3:
        return observations[:, -frame[0] :]
    return observations[:, -1]


def make_source_vector(
    spec: Any,
    num_envs: int,
    *,
    autoreset_mode: Any = "SameStep",
    num_threads: int = 0,
    vectorization: VectorMode = "sync",
) -> Any:
    """The real vector env of ``spec`` (see the module docstring).

    Args:
        spec: an ``AtariSpec`` or a ``GymSpec``.
        num_envs: envs stepped together.
        autoreset_mode: ``"SameStep"`` or ``"NextStep"`` (ale-py's and gymnasium's).
        num_threads: ale-py's threads (0: its choice); ignored for other envs.
        vectorization: ``"sync"`` or ``"async"`` for a ``GymSpec``; ignored for Atari.
    """
    if isinstance(spec, GymSpec):
        return GymVectorSource(spec, num_envs, autoreset_mode, vectorization)
    from dreamenv.envs.atari import make_ale_vector

    return make_ale_vector(spec, num_envs, autoreset_mode=autoreset_mode, num_threads=num_threads)
