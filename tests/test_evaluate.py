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
from dreamenv.evaluate import evaluate, random_policy


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
    a = evaluate(predictor, checkpoint_dir, episodes=2, num_envs=2, max_steps=30, deterministic=True)
    b = evaluate(
        lambda obs: np.full(len(obs), 2), checkpoint_dir, episodes=2, num_envs=2, max_steps=30
    )
    np.testing.assert_array_equal(a, b)
    assert predictor.deterministic and all(predictor.deterministic)


def test_random_policy_takes_a_count_or_a_space() -> None:
    obs = np.zeros((5, 3))
    assert random_policy(4)(obs).shape == (5,)
    assert random_policy(gym.spaces.MultiDiscrete([6] * 4))(obs).shape == (5, 4)
    with pytest.raises(ConfigError, match="random_policy takes a number of actions"):
        random_policy(gym.spaces.Box(0, 1, (2,)))
