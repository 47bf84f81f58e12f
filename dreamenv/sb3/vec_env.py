"""The SB3 ``VecEnv`` face of a gymnasium ``VectorEnv`` (``DreamVectorEnv``, ``RealVectorEnv``).

Example:
    >>> dream = gym.make_vec("dreamenv/Dream-v0", num_envs=16, checkpoint="runs/pong/model",
    ...                      vectorization_mode="vector_entry_point")
    >>> agent = PPO("MlpPolicy", wrap(dream)).learn(10_000)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from dreamenv.errors import ConfigError


class VectorEnvAdapter(VecEnv):
    """An SB3 ``VecEnv`` over a gymnasium ``VectorEnv`` (NextStep or SameStep autoreset)."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode == AutoresetMode.DISABLED:
            raise ConfigError(
                "wrap() needs a vector env that autoresets (NextStep or SameStep), got Disabled."
            )
        self.env = env
        self.same_step = mode == AutoresetMode.SAME_STEP
        self.render_mode = getattr(env, "render_mode", None)
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seeds = self._seeds
        seed = None if all(s is None for s in seeds) else seeds
        obs, _ = self.env.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(
            self.num_envs, *self.env.single_action_space.shape
        )

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        done = np.logical_or(terminated, truncated)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            if self.same_step:
                final = info["final_obs"]
            else:
                final = list(obs)
                obs, _ = self.env.reset(options={"reset_mask": done})
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.env.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.env, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(
        self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any
    ) -> list[Any]:
        return [getattr(self.env, method_name)(*args, **kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))


def wrap(env: gym.vector.VectorEnv) -> VectorEnvAdapter:
    """``env`` as an SB3 ``VecEnv`` that PPO, A2C and DQN take directly."""
    if not isinstance(env, gym.vector.VectorEnv):
        raise ConfigError(
            f"wrap() takes a gymnasium VectorEnv such as gym.make_vec('dreamenv/Dream-v0', ...), "
            f"got {type(env).__name__}. A single gym.Env can be passed to SB3 as it is."
        )
    return VectorEnvAdapter(env)


