"""The real game emitting a checkpoint's latent observations: ``Real-v0`` and its vector env.

The real env runs the checkpoint's own :class:`~dreamenv.envs.atari.AtariSpec` through
ale-py's native vector env, stacks frames exactly as training did, and encodes them with
the checkpoint's encoder. Its observation and action spaces are those of the dream env
of the same checkpoint and ``obs_type``, so an agent trained in the dream plays here
unchanged. Rewards are the game's real, unclipped rewards; episodes are whole games.
With ``obs_type="pixels"`` the observations are the real stacked frames.

Example:
    >>> real = gym.make("dreamenv/Real-v0", checkpoint="runs/pong/model")
    >>> obs, info = real.reset(seed=0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.atari import FrameStacker, make_ale_vector
from dreamenv.envs.core import (
    check_num_envs,
    check_render_mode,
    resolve_checkpoint,
    validate_actions,
)
from dreamenv.envs.vector import parse_autoreset_mode, parse_reset_mask, seed_list
from dreamenv.errors import InvalidActionError, StateError


class LatentEncoder:
    """Stacked real frames ``(N, stack, S, S)`` uint8 to a checkpoint's observations."""

    def __init__(self, checkpoint: Checkpoint, obs_type: str, device: str = "cpu") -> None:
        checkpoint.model.check_obs_type(obs_type)
        self.model = checkpoint.model
        self.obs_type = obs_type
        self.device = torch.device(device)
        self.space = self.model.observation_space(obs_type)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if self.obs_type == "pixels":
            return frames.copy()
        latent = self.model.encode(torch.as_tensor(frames, device=self.device))
        obs = self.model.observe(latent, self.obs_type)
        return obs.cpu().numpy().astype(self.space.dtype, copy=False)


def _ale_seed(seed: int | None, generator: np.random.Generator | None = None) -> int:
    gen = generator if generator is not None else seeding.np_random(seed)[0]
    return int(gen.integers(0, 2**31 - 1))


class RealVectorEnv(VectorEnv):
    """``num_envs`` real games with the checkpoint's preprocessing and encoder.

    Args:
        checkpoint: the checkpoint directory (or a loaded checkpoint).
        num_envs: games run together (ale-py's threaded vector env).
        obs_type: as the dream env's: ``"indices"``, ``"embeddings"`` or ``"pixels"``.
        device: where the encoder runs.
        autoreset_mode: ``NextStep`` (default), ``SameStep`` or ``Disabled``.
        render_mode: ``"rgb_array"`` (the newest preprocessed frame) or None.
        game: if given, the game the checkpoint must model.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | None = None,
        num_envs: int = 1,
        *,
        obs_type: str = "indices",
        device: str = "cpu",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        game: str | None = None,
    ) -> None:
        check_num_envs(num_envs)
        check_render_mode(render_mode)
        self.checkpoint = resolve_checkpoint(checkpoint, device, game)
        self.encoder = LatentEncoder(self.checkpoint, obs_type, device)
        spec = self.checkpoint.spec
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        ale_mode = "SameStep" if self.autoreset_mode == AutoresetMode.SAME_STEP else "NextStep"
        self.ale = make_ale_vector(spec, self.num_envs, autoreset_mode=ale_mode)
        self.stacker = FrameStacker(self.num_envs, spec.frame_stack, spec.screen_size)
        self.single_observation_space = self.encoder.space
        self.single_action_space = gym.spaces.Discrete(self.checkpoint.model.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._ended = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all games, or those of ``options["reset_mask"]``; ``seed`` seeds them."""
        if seed is not None:
            super().reset(seed=seed if isinstance(seed, int) else None)
        mask = parse_reset_mask(options, self.num_envs)
        index = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        seeds = seed_list(seed, self.num_envs, index)
        ale_seeds = [
            _ale_seed(s) if s is not None else _ale_seed(None, self.np_random) for s in seeds
        ]
        return self.reset_with_ale_seeds(ale_seeds, mask)

    def reset_with_ale_seeds(
        self, ale_seeds: list[int], mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset with explicit ale-py seeds (one per env reset)."""
        if mask is not None and not self._started:
            raise StateError("The first reset must reset every env; call reset() without a mask.")
        ale_options = None if mask is None else {"reset_mask": mask}
        obs, info = self.ale.reset(seed=np.asarray(ale_seeds, dtype=np.int64), options=ale_options)
        self.stacker.reset(obs[:, 0], mask)
        self._ended[slice(None) if mask is None else mask] = False
        self._started = True
        return self.encoder(self.stacker.buffer), {"lives": info["lives"]}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One real step of every game."""
        if not self._started:
            raise StateError("Cannot call step() before reset(); call reset() first.")
        actions = validate_actions(actions, self.num_envs, self.checkpoint.action_meanings)
        ended = self._ended.copy()
        if ended.any() and self.autoreset_mode == AutoresetMode.DISABLED:
            raise StateError(
                f"envs {np.flatnonzero(ended).tolist()} have ended and autoreset_mode is "
                "Disabled; reset them first with reset(options={'reset_mask': mask})."
            )
        obs, reward, terminated, truncated, info = self.ale.step(actions)
        frames = obs[:, 0]
        done = terminated | truncated
        infos: dict[str, Any] = {"lives": info["lives"]}
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            last = frames.copy()
            last[done] = info["final_obs"][done, 0]
            final_obs = self.encoder(self.stacker.peek(last)[done])
            final = np.full(self.num_envs, None, dtype=object)
            for j, i in enumerate(np.flatnonzero(done)):
                final[i] = final_obs[j]
            infos.update(
                final_obs=final, _final_obs=done.copy(), final_info={}, _final_info=done.copy()
            )
            self.stacker.push(frames)
            self.stacker.reset(frames, done)
        else:
            self.stacker.push(frames)
            if ended.any():  # NextStep: ale-py restarted these games this step
                self.stacker.reset(frames, ended)
            self._ended = done
        return (
            self.encoder(self.stacker.buffer),
            reward.astype(np.float64),
            terminated,
            truncated,
            infos,
        )

    def render(self) -> np.ndarray | None:
        """The newest preprocessed frame of every game, ``(num_envs, S, S, 3)`` uint8."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'.")
            return None
        return np.repeat(self.stacker.buffer[:, -1, :, :, None], 3, axis=-1)

    def close_extras(self, **kwargs: Any) -> None:
        self.ale.close()


class RealEnv(gym.Env):
    """One real game emitting the checkpoint's observations (the single-env ``Real-v0``).

    Takes the arguments of :class:`RealVectorEnv` except ``num_envs`` and ``autoreset_mode``.
    ``reset(seed=s)`` plays the same game as env 0 of a :class:`RealVectorEnv` reset with
    ``seed=s``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | None = None,
        *,
        obs_type: str = "indices",
        device: str = "cpu",
        render_mode: str | None = None,
        game: str | None = None,
    ) -> None:
        self.vec = RealVectorEnv(
            checkpoint, 1, obs_type=obs_type, device=device, render_mode=render_mode, game=game
        )
        self.render_mode = render_mode
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new game."""
        super().reset(seed=seed)
        obs, info = self.vec.reset_with_ale_seeds([_ale_seed(None, self.np_random)])
        return obs[0], {"lives": int(info["lives"][0])}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One real step."""
        arr = np.asarray(action)
        if arr.shape not in ((), (1,)):
            raise InvalidActionError(
                f"action must be a single int in [0, {self.action_space.n - 1}], got shape {arr.shape}."
            )
        obs, reward, terminated, truncated, info = self.vec.step(arr.reshape(1))
        return (
            obs[0],
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            {"lives": int(info["lives"][0])},
        )

    def render(self) -> np.ndarray | None:
        """The newest preprocessed frame, ``(S, S, 3)`` uint8."""
        frames = self.vec.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        self.vec.close()
