"""Evaluation in the real game: any policy, no Stable-Baselines3 needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from dreamenv import ConfigError
from dreamenv.evaluate import EpisodeStats, evaluate, play, play_episodes, random_policy


def test_evaluation_imports_no_stable_baselines3() -> None:
    code = (
        "import sys, dreamenv.evaluate; "
        "sys.exit(int(any(m.startswith('stable_baselines3') for m in sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


class Constant:
    """A policy object with SB3's predict signature, not from SB3."""

    def __init__(self, action: int) -> None:
        self.action = action
        self.deterministic: list[bool] = []

    def predict(self, obs: np.ndarray, deterministic: bool = False) -> tuple[Any, None]:
        self.deterministic.append(deterministic)
        return np.full(len(obs), self.action, dtype=np.int64), None


def test_a_predictor_and_a_function_play_the_same_games(checkpoint_dir: Path) -> None:
    predictor = Constant(2)
    a = evaluate(
        predictor, checkpoint_dir, episodes=2, num_envs=2, max_steps=30, deterministic=True
    )
    b = evaluate(
        lambda obs: np.full(len(obs), 2), checkpoint_dir, episodes=2, num_envs=2, max_steps=30
    )
    np.testing.assert_array_equal(a, b)
    assert predictor.deterministic and all(predictor.deterministic)


def test_random_policy_takes_a_count_or_a_space() -> None:
    obs = np.zeros((5, 3))
    assert random_policy(4)(obs).shape == (5,)
    assert random_policy(gym.spaces.MultiDiscrete([6] * 4))(obs).shape == (5, 4)
    box = random_policy(gym.spaces.Box(np.array([0.0, -2.0]), np.array([1.0, 2.0])))(
        np.zeros((500, 3))
    )
    assert box.shape == (500, 2) and box.dtype == np.float32
    assert box[:, 0].min() >= 0 and box[:, 1].max() <= 2 and box[:, 1].min() < -1.5
    with pytest.raises(ConfigError, match="random_policy needs a Box with finite bounds"):
        random_policy(gym.spaces.Box(-np.inf, np.inf, (2,)))
    with pytest.raises(ConfigError, match="random_policy takes a number of actions"):
        random_policy(gym.spaces.MultiBinary(3))


class Countdown(gym.vector.VectorEnv):
    """A NextStep vector env whose env ``i`` ends its episodes after ``i + 2`` steps, with
    reward 2.5 on every step and -3 on the last; its step after an end only restarts."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0, 1, (1,))
        self.single_action_space = gym.spaces.Discrete(2)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.ended = np.zeros(num_envs, dtype=bool)
        self.resets = 0

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict]:
        mask = (options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool))
        self.t[mask] = 0
        self.ended[mask] = False
        self.resets += 1
        return np.zeros((self.num_envs, 1)), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        restarting = self.ended.copy()
        self.t[restarting] = 0
        self.t[~restarting] += 1
        terminated = ~restarting & (self.t == np.arange(self.num_envs) + 2)
        reward = np.where(terminated, -3.0, 2.5) * ~restarting
        self.ended = terminated
        return np.zeros((self.num_envs, 1)), reward, terminated, np.zeros_like(terminated), {}


def test_play_counts_agent_steps_not_the_restart_steps() -> None:
    stats = play(Countdown(2), lambda obs: np.zeros(len(obs), dtype=np.int64), 4)
    # env 0: 2 steps (2.5 - 3), env 1: 3 steps (2.5 + 2.5 - 3), twice each, as they end
    np.testing.assert_array_equal(stats.lengths, [2, 3, 2, 3])
    np.testing.assert_allclose(stats.returns, [-0.5, 2.0, -0.5, 2.0])
    np.testing.assert_allclose(stats.clipped_returns, [0.0, 1.0, 0.0, 1.0])


def test_play_caps_episodes_at_max_steps() -> None:
    env = Countdown(2)
    stats = play(env, lambda obs: np.zeros(len(obs), dtype=np.int64), 4, max_steps=2)
    np.testing.assert_array_equal(stats.lengths, [2, 2, 2, 2])
    # env 1 is cut twice (2 x 2.5) before env 0, restarting, ends its second episode
    np.testing.assert_allclose(stats.clipped_returns, [0.0, 2.0, 2.0, 0.0])
    assert env.resets == 3  # the first reset, then env 1 after each cut


def test_play_episodes_gives_the_returns_of_evaluate(checkpoint_dir: Path) -> None:
    policy = random_policy(6, seed=3)
    stats = play_episodes(policy, checkpoint_dir, episodes=3, num_envs=2, max_steps=25, seed=1)
    returns = evaluate(
        random_policy(6, seed=3), checkpoint_dir, episodes=3, num_envs=2, max_steps=25, seed=1
    )
    np.testing.assert_array_equal(stats.returns, returns)
    assert isinstance(stats, EpisodeStats) and stats.lengths.dtype == np.int64
    np.testing.assert_array_equal(stats.lengths, [25, 25, 25])
    assert np.all(np.abs(stats.clipped_returns) <= np.abs(stats.returns) + 1e-9)  # Pong: +-1
