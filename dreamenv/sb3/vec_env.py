"""The SB3 ``VecEnv`` face of a gymnasium ``VectorEnv`` (``DreamVectorEnv``, ``RealVectorEnv``).

Example:
    >>> dream = gym.make_vec("dreamenv/Dream-v0", num_envs=16, checkpoint="runs/pong/model",
    ...                      vectorization_mode="vector_entry_point")
    >>> agent = PPO("MlpPolicy", wrap(dream)).learn(10_000)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices

from dreamenv.envs.autoreset import step_same_step
from dreamenv.errors import ConfigError


class VectorEnvAdapter(VecEnv):
    """An SB3 ``VecEnv`` over a gymnasium ``VectorEnv`` (NextStep or SameStep autoreset).

    Ended envs restart in the same step (:func:`~dreamenv.envs.autoreset.step_same_step`),
    their last observation goes to ``info["terminal_observation"]`` and
    ``info["TimeLimit.truncated"]`` marks truncations. Every ended episode's
    ``info["episode"]`` holds its return ``r``, length ``l`` and wall time ``t``, as SB3's
    ``Monitor`` writes it, so ``ep_rew_mean`` is logged with no wrapper (the env's own
    gymnasium ``RecordEpisodeStatistics`` figures are used where the env has them).
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode == AutoresetMode.DISABLED:
            raise ConfigError(
                "wrap() needs a vector env that autoresets (NextStep or SameStep), got Disabled."
            )
        self.env = env
        self.render_mode = getattr(env, "render_mode", None)
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._starts = np.full(self.num_envs, time.perf_counter())

    def reset(self) -> np.ndarray:
        seeds: list[int | None] = list(self._seeds)
        seed = None if all(s is None for s in seeds) else seeds
        obs, _ = self.env.reset(seed=seed, options=self._options[0] or None)  # type: ignore[arg-type]  # our envs and gymnasium's take one seed per env
        self._reset_seeds()
        self._reset_options()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._starts[:] = time.perf_counter()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        shape = tuple(self.env.single_action_space.shape or ())
        self._actions = np.asarray(actions).reshape(self.num_envs, *shape)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, reward, terminated, truncated, final, info = step_same_step(self.env, self._actions)
        self._returns += reward
        self._lengths += 1
        done = np.logical_or(terminated, truncated)
        infos = per_env_infos(info, self.num_envs)
        now = time.perf_counter()
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = final[int(i)]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if not isinstance(infos[i].get("episode"), dict):
                infos[i]["episode"] = {
                    "r": float(self._returns[i]),
                    "l": int(self._lengths[i]),
                    "t": round(now - self._starts[i], 6),
                }
        self._returns[done] = 0.0
        self._lengths[done] = 0
        self._starts[done] = now
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames: Any = self.env.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of the vector env, once per env of ``indices`` (the envs of a
        gymnasium vector env share their attributes)."""
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the vector env; it is shared by all envs, so ``indices``
        must select all of them."""
        self._require_all(indices, f"set_attr({attr_name!r})")
        setattr(self.env, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call a method of the vector env once, for the envs of ``indices``; its result
        is split per env where it has one row per env (as ``render`` or ``get_state``)."""
        selected = list(self._get_indices(indices))
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        if isinstance(result, (np.ndarray, list, tuple)) and len(result) == self.num_envs:
            return [result[i] for i in selected]
        return [result for _ in selected]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def _require_all(self, indices: VecEnvIndices, what: str) -> None:
        selected = sorted(int(i) for i in self._get_indices(indices))
        if selected != list(range(self.num_envs)):
            raise ConfigError(
                f"{what} with indices={indices!r}: the {self.num_envs} envs of a gymnasium "
                "vector env share one object, so an attribute is set for all of them; pass "
                "indices=None."
            )


def per_env_infos(info: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """A gymnasium vector info dict (arrays with ``_key`` masks) as SB3's list of dicts."""
    infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in info.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = info.get(f"_{key}")
        if isinstance(value, dict):
            for i, sub in enumerate(per_env_infos(value, num_envs)):
                if sub and (mask is None or mask[i]):
                    infos[i][key] = sub
        elif isinstance(value, np.ndarray) and value.shape[:1] == (num_envs,):
            for i in range(num_envs):
                if mask is None or mask[i]:
                    infos[i][key] = value[i].item() if value[i].ndim == 0 else value[i]
    return infos


def wrap(env: gym.vector.VectorEnv) -> VectorEnvAdapter:
    """``env`` as an SB3 ``VecEnv`` that PPO, A2C, DQN, SAC and TD3 take directly (each
    step of it is ``num_envs`` transitions: see :func:`~dreamenv.sb3.make_agent` for the
    off-policy defaults this implies)."""
    if not isinstance(env, gym.vector.VectorEnv):
        raise ConfigError(
            f"wrap() takes a gymnasium VectorEnv such as gym.make_vec('dreamenv/Dream-v0', ...), "
            f"got {type(env).__name__}. A single gym.Env can be passed to SB3 as it is."
        )
    return VectorEnvAdapter(env)
