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
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.autoreset import AutoresetVectorEnv, StepResult
from dreamenv.envs.core import DreamCore, check_render_mode
from dreamenv.envs.options import DreamOptions
from dreamenv.errors import StateError
from dreamenv.random_streams import key_from_seed


class DreamVectorEnv(AutoresetVectorEnv):
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

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": 15,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

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
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._init_autoreset(autoreset_mode)
        self._seeded = False

    # --- the engine (the rules are AutoresetVectorEnv's) ---------------------------------
    def _reset_envs(self, index: np.ndarray, seeds: list[int | None]) -> dict[str, Any]:
        if any(s is not None for s in seeds) or not self._seeded:
            self.core.seed(index, [key_from_seed(s) for s in seeds])
            self._seeded = True
        self.core.reset_envs(index)
        return {}

    def _check_actions(self, actions: Any) -> torch.Tensor:
        return self.core.check_actions(actions)

    def _advance(self, actions: torch.Tensor, restarting: np.ndarray) -> StepResult:
        counters = self.core.rng.counters.clone() if restarting.any() else None
        reward, terminated, truncated = self.core.step(actions)
        if counters is not None:  # restarting envs draw as if they had not stepped
            index = np.flatnonzero(restarting)
            idx = torch.as_tensor(index, device=self.core.device)
            self.core.rng.counters[idx] = counters[idx]
            self.core.reset_envs(index)
        return (
            reward.cpu().numpy().astype(np.float64),
            terminated.cpu().numpy(),
            truncated.cpu().numpy(),
            {},
        )

    def _autorestart(self, index: np.ndarray) -> None:
        self.core.reset_envs(index)

    def _observe(self, index: np.ndarray | None = None) -> np.ndarray:
        return self.core.observe(index)

    def render(self) -> np.ndarray | None:  # type: ignore[override]  # one batch array
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
