"""Goal-conditioned dreams (TDM / HER): a latent env of a checkpoint as a goal env.

:class:`GoalConditioned` wraps the dream (``Dream-v0``) or the real env (``Real-v0``) of a
checkpoint whose observation is a float vector (the ensemble's ``state``, the state-space
models' and RSSM's ``state``, the discrete model's ``embeddings``, the MDN-RNN's
``latent``) and gives it gymnasium-robotics' goal-env interface: a ``Dict`` observation
of ``observation``, ``achieved_goal`` (the observation itself) and ``desired_goal`` (a
goal in the same latent space), and a vectorised :meth:`GoalConditioned.compute_reward`,
so Stable-Baselines3's ``HerReplayBuffer`` relabels its transitions. Goals are real:
the observations the model gives the real frames of its start bank
(:func:`real_goals`), drawn anew at every reset, so the same goals serve the dream (to
train) and the real env (to evaluate, ``info["is_success"]``).

A goal counts as reached when the achieved goal lies within ``threshold`` (Euclidean, in
the observation's units) of it; the default threshold is the 5th percentile of the
distances between two real goals, so a random real state is within reach of a random goal
about one time in twenty, whatever the latent's scale.

Example:
    >>> env = gym.make("dreamenv/GoalDream-v0", checkpoint="runs/pendulum/model")
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs)
    ['achieved_goal', 'desired_goal', 'observation']
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> info["is_success"] in (0.0, 1.0)
    True
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from dreamenv.agents.actor_critic import default_obs_type
from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import DreamCore, resolve_checkpoint
from dreamenv.envs.dream import DreamEnv
from dreamenv.envs.options import DreamOptions
from dreamenv.envs.real import RealEnv
from dreamenv.errors import ConfigError

GoalReward = Literal["sparse", "dense"]
GOAL_REWARDS: tuple[str, ...] = ("sparse", "dense")

THRESHOLD_QUANTILE = 0.05
"""The default threshold's quantile of the distances between pairs of real goals."""


def real_goals(
    checkpoint: str | Path | Checkpoint, obs_type: str | None = None, device: str = "cpu"
) -> np.ndarray:
    """The observations (``obs_type``; None: the family's float latent) the model gives the newest real frame of every start
    of the checkpoint's start bank, ``(bank_size, *obs_shape)`` float32: the goals of
    :class:`GoalConditioned` (real frames, in the latent space the agent reads)."""
    ckpt = resolve_checkpoint(checkpoint, device, None)
    obs_type = obs_type or default_obs_type(ckpt.model)
    core = DreamCore(ckpt, 1, DreamOptions(obs_type=obs_type, device=device))
    _check_goal_space(core.observation_space, core.obs_type)
    goals = []
    with torch.inference_mode():
        for chunk in torch.arange(core.bank_size, device=core.device).split(256):
            latent, _ = ckpt.model.initial_state(
                core.bank_embeddings(chunk), core.bank_actions[chunk]
            )
            goals.append(ckpt.model.observation(latent, core.obs_type).float().cpu().numpy())
    return np.concatenate(goals).astype(np.float32)


def default_threshold(
    goals: np.ndarray, quantile: float = THRESHOLD_QUANTILE, pairs: int = 4096, seed: int = 0
) -> float:
    """The ``quantile`` of the distances between random pairs of distinct ``goals``."""
    if len(goals) < 2:
        raise ConfigError(
            f"goal-conditioned envs need at least 2 real goals, got {len(goals)}; fit the "
            "checkpoint with a larger start bank (--start-bank-size)."
        )
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(goals), pairs)
    j = (i + rng.integers(1, len(goals), pairs)) % len(goals)
    flat = goals.reshape(len(goals), -1)
    distances = np.linalg.norm(flat[i] - flat[j], axis=-1)
    return float(max(np.quantile(distances, quantile), 1e-6))


def _check_goal_space(space: gym.Space, obs_type: str) -> gym.spaces.Box:
    if not (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)):
        raise ConfigError(
            f"goal-conditioned envs need a float vector observation, got obs_type "
            f"{obs_type!r} ({space}); use the discrete model's 'embeddings', or 'state' of "
            "the ensemble, SSM and RSSM families ('latent' of the MDN-RNN)."
        )
    return space


class GoalConditioned(gym.Wrapper):
    """A latent env as a goal env: ``Dict`` observations and a vectorised reward.

    Args:
        env: a ``Dream-v0`` or ``Real-v0`` env (or any env) with a float ``Box`` observation.
        goals: candidate goals ``(n, *obs_shape)``; every reset draws one (uniformly, from the
            env's ``np_random``) unless ``reset(options={"goal": g})`` gives it.
        threshold: the distance within which a goal is reached (None:
            :func:`default_threshold` of ``goals``).
        reward: ``"sparse"``: -1 per step until within reach, 0 there (as
            gymnasium-robotics' envs and HER); ``"dense"``: minus the distance.
        terminate_on_success: end the episode (terminated) when the goal is reached.
    """

    def __init__(
        self,
        env: gym.Env,
        goals: np.ndarray,
        *,
        threshold: float | None = None,
        reward: GoalReward = "sparse",
        terminate_on_success: bool = False,
    ) -> None:
        super().__init__(env)
        space = _check_goal_space(env.observation_space, "of this env")
        goals = np.asarray(goals, dtype=np.float32)
        if goals.ndim < 1 or goals.shape[1:] != space.shape:
            raise ConfigError(
                f"goals must have shape (n, {', '.join(map(str, space.shape))}) (the "
                f"observation's shape), got {goals.shape}."
            )
        if reward not in GOAL_REWARDS:
            raise ConfigError(f"reward must be one of {list(GOAL_REWARDS)}, got {reward!r}.")
        self.threshold = default_threshold(goals) if threshold is None else float(threshold)
        if not self.threshold > 0:
            raise ConfigError(f"threshold must be positive, got {threshold!r}.")
        self.goals = goals
        self.reward_type = reward
        self.terminate_on_success = bool(terminate_on_success)
        goal_space = gym.spaces.Box(-np.inf, np.inf, space.shape, np.float32)
        self.observation_space = gym.spaces.Dict(
            {"observation": space, "achieved_goal": goal_space, "desired_goal": goal_space}
        )
        self.goal = goals[0]

    def _dict(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        achieved = np.asarray(obs, dtype=np.float32)
        return {
            "observation": obs,
            "achieved_goal": achieved.copy(),
            "desired_goal": self.goal.copy(),
        }

    def distance(self, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        """Euclidean distances over the goal's axes (any leading batch axes)."""
        diff = np.asarray(achieved, np.float32) - np.asarray(desired, np.float32)
        axes = tuple(range(diff.ndim - len(self.goals.shape[1:]), diff.ndim))
        return np.sqrt(np.square(diff).sum(axis=axes))

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any
    ) -> np.ndarray:
        """The reward of reaching ``achieved_goal`` when aiming at ``desired_goal``,
        vectorised over leading axes (HER calls it on batches of relabelled goals)."""
        d = self.distance(achieved_goal, desired_goal)
        if self.reward_type == "dense":
            return (-d).astype(np.float32)
        return -(d > self.threshold).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """A new episode with a new goal: ``options={"goal": g}`` or one of ``goals``."""
        options = dict(options or {})
        goal = options.pop("goal", None)
        obs, info = self.env.reset(seed=seed, options=options or None)
        if goal is None:
            goal = self.goals[self.np_random.integers(len(self.goals))]
        goal = np.asarray(goal, dtype=np.float32)
        if goal.shape != self.goals.shape[1:]:
            raise ConfigError(
                f"options['goal'] must have shape {self.goals.shape[1:]}, got {goal.shape}."
            )
        self.goal = goal.copy()
        return self._dict(obs), {**info, "is_success": self._success(obs)}

    def _success(self, obs: np.ndarray) -> float:
        return float(self.distance(obs, self.goal) <= self.threshold)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """One step; the reward is :meth:`compute_reward` of the new observation."""
        obs, _, terminated, truncated, info = self.env.step(action)
        success = self._success(obs)
        info = {**info, "is_success": success}
        reward = float(self.compute_reward(obs, self.goal, info))
        terminated = bool(terminated) or (self.terminate_on_success and success == 1.0)
        return self._dict(obs), reward, terminated, bool(truncated), info


def _goal_env(
    env: gym.Env,
    ckpt: Checkpoint,
    obs_type: str | None,
    device: str,
    threshold: float | None,
    reward: GoalReward,
    terminate_on_success: bool,
) -> GoalConditioned:
    return GoalConditioned(
        env,
        real_goals(ckpt, obs_type, device),
        threshold=threshold,
        reward=reward,
        terminate_on_success=terminate_on_success,
    )


def make_goal_dream(
    checkpoint: str | Path | Checkpoint | None = None,
    *,
    threshold: float | None = None,
    reward: GoalReward = "sparse",
    terminate_on_success: bool = False,
    **dream_options: Any,
) -> GoalConditioned:
    """``dreamenv/GoalDream-v0``: the dream of ``checkpoint`` (``dream_options``: the
    :class:`DreamOptions` fields) with goals from its real start bank."""
    options = DreamOptions.from_kwargs(None, dream_options)
    ckpt = resolve_checkpoint(checkpoint, options.device, None)
    if options.obs_type is None:  # the family's float latent (the discrete model's embeddings)
        options = dataclasses.replace(options, obs_type=default_obs_type(ckpt.model))
    env = DreamEnv(ckpt, options=options)
    return _goal_env(
        env, ckpt, env.core.obs_type, options.device, threshold, reward, terminate_on_success
    )


def make_goal_real(
    checkpoint: str | Path | Checkpoint | None = None,
    *,
    obs_type: str | None = None,
    device: str = "cpu",
    threshold: float | None = None,
    reward: GoalReward = "sparse",
    terminate_on_success: bool = False,
) -> GoalConditioned:
    """``dreamenv/GoalReal-v0``: the real env of ``checkpoint`` with the dream's goals (the
    same :func:`real_goals` and default threshold), to evaluate a goal-conditioned agent."""
    ckpt = resolve_checkpoint(checkpoint, device, None)
    obs_type = obs_type or default_obs_type(ckpt.model)
    env = RealEnv(ckpt, obs_type=obs_type, device=device)
    return _goal_env(env, ckpt, obs_type, device, threshold, reward, terminate_on_success)
