"""``DreamVectorEnv``: a batch of imagined episodes as a ``gymnasium.vector.VectorEnv``.

Every env advances in one forward pass of the world model. Gymnasium's three autoreset
modes are supported, and ``reset(options={"reset_mask": mask})`` resets some envs only.
``reset(seed=s)`` seeds env ``i`` with ``s + i``: env ``i`` then rolls out exactly as a
single :class:`~dreamenv.envs.dream.DreamEnv` reset with ``seed=s + i``.

Example:
    >>> envs = gym.make_vec("dreamenv/Dream-v0", num_envs=16, checkpoint="runs/pong/model",
    ...                     vectorization_mode="vector_entry_point")
    >>> obs, info = envs.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import DreamCore, check_render_mode
from dreamenv.envs.options import DreamOptions
from dreamenv.errors import ConfigError, StateError
from dreamenv.random_streams import key_from_seed


def parse_autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """An :class:`AutoresetMode` from itself or its value/name (``"NextStep"``, ``"same_step"``)."""
    if isinstance(mode, AutoresetMode):
        return mode
    for m in AutoresetMode:
        if str(mode).replace("_", "").lower() in (m.value.lower(), m.name.replace("_", "").lower()):
            return m
    raise ConfigError(
        f"autoreset_mode must be one of {[m.value for m in AutoresetMode]}, got {mode!r}."
    )


def parse_reset_mask(options: dict[str, Any] | None, num_envs: int) -> np.ndarray | None:
    """The validated ``options["reset_mask"]`` (None when absent)."""
    if not options or "reset_mask" not in options:
        return None
    mask = options["reset_mask"]
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (num_envs,):
        raise ConfigError(
            f"options['reset_mask'] must be a bool numpy array of shape ({num_envs},), got "
            f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {getattr(mask, 'shape', '')}."
        )
    if not mask.any():
        raise ConfigError("options['reset_mask'] must select at least one env.")
    return mask


def seed_list(
    seed: int | list[int | None] | None, num_envs: int, index: np.ndarray
) -> list[int | None]:
    """Seeds of envs ``index``: an int ``s`` seeds env ``i`` with ``s + i`` (gymnasium's
    convention); a list holds one seed per env (``num_envs`` entries)."""
    if seed is None:
        return [None] * len(index)
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + int(i) for i in index]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ConfigError(f"seed must be an int or a list of {num_envs} seeds, got {len(seeds)}.")
    return [seeds[i] for i in index]


class DreamVectorEnv(VectorEnv):
    """Imagined episodes of a world-model checkpoint, batched; see the module docstring.

    Args:
        checkpoint: a checkpoint directory written by ``dreamenv fit`` (or a loaded one).
        num_envs: episodes advanced together.
        options: the dream options (:class:`~dreamenv.envs.options.DreamOptions`).
        autoreset_mode: gymnasium's ``NextStep`` (default), ``SameStep`` or ``Disabled``.
        render_mode: ``"rgb_array"`` or None.
        game: if given, the game the checkpoint must model.
        **option_fields: single :class:`DreamOptions` fields (``horizon=20``), replacing
            those of ``options``.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | None = None,
        num_envs: int = 1,
        *,
        options: DreamOptions | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        game: str | None = None,
        **option_fields: Any,
    ) -> None:
        options = DreamOptions.from_kwargs(options, option_fields)
        check_render_mode(render_mode)
        self.core = DreamCore(checkpoint, num_envs, options, game)
        self.num_envs = self.core.num_envs
        self.render_mode = render_mode
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._ended = np.zeros(self.num_envs, dtype=bool)
        self._seeded = False

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all envs, or those of ``options["reset_mask"]``; ``seed`` seeds them."""
        mask = parse_reset_mask(options, self.num_envs)
        index = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        if seed is not None or not self._seeded:
            if seed is not None:
                super().reset(seed=seed if isinstance(seed, int) else None)
            self.core.seed(index, [key_from_seed(s) for s in seed_list(seed, self.num_envs, index)])
            self._seeded = True
        self.core.reset_envs(index)
        self._ended[index] = False
        return self.core.observe(), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every env one imagined step (one forward pass for the batch)."""
        action_tensor = self.core.check_actions(actions)
        ended = np.flatnonzero(self._ended)
        if len(ended) and self.autoreset_mode == AutoresetMode.DISABLED:
            raise StateError(
                f"envs {ended.tolist()} have ended and autoreset_mode is Disabled; reset them "
                "first with reset(options={'reset_mask': mask})."
            )
        counters = self.core.rng.counters.clone() if len(ended) else None
        reward_t, term_t, trunc_t = self.core.step(action_tensor)
        reward = reward_t.cpu().numpy().astype(np.float64)
        terminated = term_t.cpu().numpy()
        truncated = trunc_t.cpu().numpy()
        infos: dict[str, Any] = {}
        if len(ended):  # NextStep: the envs that ended last step restart instead of stepping
            idx = torch.as_tensor(ended, device=self.core.device)
            self.core.rng.counters[idx] = counters[idx]
            self.core.reset_envs(ended)
            reward[ended] = 0.0
            terminated[ended] = False
            truncated[ended] = False
        done = terminated | truncated
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            index = np.flatnonzero(done)
            final = np.full(self.num_envs, None, dtype=object)
            final_obs = self.core.observe(index)
            for j, i in enumerate(index):
                final[i] = final_obs[j]
            infos = {
                "final_obs": final,
                "_final_obs": done.copy(),
                "final_info": {},
                "_final_info": done.copy(),
            }
            self.core.reset_envs(index)
            self._ended[:] = False
        else:
            self._ended = done
        return self.core.observe(), reward, terminated, truncated, infos

    def render(self) -> np.ndarray | None:
        """The decoded imagined frame of every env, ``(num_envs, S, S, 3)`` uint8."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'.")
            return None
        return self.core.render_frames()

    def get_state(self) -> dict[str, Any]:
        """Everything that determines the future rollouts; see :meth:`set_state`."""
        return {**self.core.get_state(), "ended": self._ended.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Branch from a state returned by :meth:`get_state`."""
        state = dict(state)
        ended = state.pop("ended", None)
        if ended is None:
            raise StateError("set_state() takes the dict returned by get_state().")
        self.core.set_state(state)
        self._ended = np.array(ended, dtype=bool)
