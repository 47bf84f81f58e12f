"""The bouncing-ball toy data (Buesing et al., appendix A.6) and its use as a "game"."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dreamenv
from dreamenv import AtariSpec, ConfigError
from dreamenv.envs.atari import action_meanings, make_ale_vector
from dreamenv.envs.toy import BouncingBallVector

BALL = AtariSpec("bouncing_ball", screen_size=80, frame_stack=1, frame_skip=1, noop_max=0)


def test_registered_env_passes_the_checker() -> None:
    env = gym.make("dreamenv/BouncingBall-v0", render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (80, 80) and obs.dtype == np.uint8
    assert env.render().shape == (80, 80, 3)


def test_same_seed_same_trajectory_and_diffusion_makes_them_differ() -> None:
    def run(seed: int) -> np.ndarray:
        env = gym.make("dreamenv/BouncingBall-v0")
        frames = [env.reset(seed=seed)[0]]
        frames += [env.step(0)[0] for _ in range(30)]
        return np.stack(frames)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_the_ball_drifts_diffuses_and_bounces() -> None:
    vec = BouncingBallVector(64, screen_size=80)
    vec.reset(seed=np.arange(64))
    start = vec.pos.copy()
    rewards = sum(vec.step(np.zeros(64, np.int64))[1] for _ in range(200))
    assert (rewards > 0).all()  # every ball hits a wall within 200 steps
    assert (vec.pos >= vec.radius).all() and (vec.pos <= 80 - vec.radius).all()
    # same start and drift, another noise: the trajectories spread (diffusion)
    a, b = BouncingBallVector(1), BouncingBallVector(1)
    a.reset(seed=np.array([3]))
    b.reset(seed=np.array([3]))
    b.rngs[0] = np.random.default_rng(99)
    for _ in range(10):
        a.step(np.zeros(1, np.int64))
        b.step(np.zeros(1, np.int64))
    assert np.abs(a.pos - b.pos).max() > 0.5
    assert not np.array_equal(start, vec.pos)


def test_truncation_and_same_step_autoreset() -> None:
    vec = BouncingBallVector(2, max_episode_frames=5, autoreset_mode="SameStep")
    vec.reset(seed=np.array([0, 1]))
    for _ in range(4):
        _, _, term, trunc, _ = vec.step(np.zeros(2, np.int64))
        assert not trunc.any() and not term.any()
    obs, _, term, trunc, info = vec.step(np.zeros(2, np.int64))
    assert trunc.all() and not term.any()
    assert not np.array_equal(info["final_obs"], obs)  # the next episode started


def test_the_toy_is_a_game_of_the_spec(tmp_path: Path) -> None:
    assert AtariSpec("dreamenv/BouncingBall-v0", screen_size=80).game == "bouncing_ball"
    assert action_meanings("bouncing_ball") == ("NOOP",)
    assert isinstance(make_ale_vector(BALL, 2), BouncingBallVector)
    store = dreamenv.collect(tmp_path / "ball", BALL, 300, num_envs=2, progress=False)
    episode = store.episodes()[0]
    assert episode.frames.shape[1:] == (80, 80)


def test_bad_toy_input_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"takes one action \(0, NOOP\) per env"):
        BouncingBallVector(1).step(np.array([1]))
    with pytest.raises(ConfigError, match="screen_size must be one of"):
        AtariSpec("bouncing_ball", screen_size=70)
    with pytest.raises(ConfigError, match="autoreset_mode must be"):
        BouncingBallVector(1, autoreset_mode="Disabled")
