"""``DreamEnv``: one imagined episode at a time, as a ``gymnasium.Env``.

The same engine as :class:`~dreamenv.envs.vector.DreamVectorEnv` with a batch of one.

Example:
    >>> env = gym.make("dreamenv/Dream-v0", checkpoint="runs/pong/model")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import DreamCore, check_render_mode, single_action
from dreamenv.envs.options import DreamOptions
from dreamenv.random_streams import key_from_generator


class DreamEnv(gym.Env):
    """Imagined episodes of a world-model checkpoint.

    Args:
        checkpoint: a checkpoint directory written by ``dreamenv fit`` (or a loaded one).
        options: the dream options (:class:`~dreamenv.envs.options.DreamOptions`: horizon,
            obs_type, reward_mode, use_termination, burn_in, device, temperature).
        render_mode: ``"rgb_array"`` (the decoded imagined frame) or None.
        game: if given, the game the checkpoint must model.
        **option_fields: single :class:`DreamOptions` fields (``horizon=20``), replacing
            those of ``options``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | None = None,
        *,
        options: DreamOptions | None = None,
        render_mode: str | None = None,
        game: str | None = None,
        **option_fields: Any,
    ) -> None:
        options = DreamOptions.from_kwargs(options, option_fields)
        check_render_mode(render_mode)
        self.core = DreamCore(checkpoint, 1, options, game)
        self.render_mode = render_mode
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self._keyed = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an imagined episode from a random real context of the start bank."""
        super().reset(seed=seed)
        if seed is not None or not self._keyed:
            self.core.seed(np.arange(1), [key_from_generator(self.np_random)])
            self._keyed = True
        self.core.reset_envs(np.arange(1))
        return self.core.observe()[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One imagined step."""
        arr = single_action(action, self.action_space)
        reward, terminated, truncated = self.core.step(self.core.check_actions(arr[None]))
        return (
            self.core.observe()[0],
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            {},
        )

    def render(self) -> np.ndarray | None:
        """The decoded imagined frame, ``(S, S, 3)`` uint8."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'.")
            return None
        return self.core.render_frames()[0]

    def get_state(self) -> dict[str, Any]:
        """Everything that determines the future of this episode; see :meth:`set_state`."""
        return self.core.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Branch from a state returned by :meth:`get_state`."""
        self.core.set_state(state)
