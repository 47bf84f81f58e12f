"""Any gymnasium env end to end: collect, fit, Dream-v0 and Real-v0 with identical spaces,
both passing gymnasium's and Stable-Baselines3's env checkers (tiny models)."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dreamenv
from dreamenv.envs.spec import make_spec
from dreamenv.errors import InvalidActionError

CASES = {
    # name: (env id, spec options, family)
    "cartpole-state": ("CartPole-v1", {}, "ensemble"),
    "pendulum-state": ("Pendulum-v1", {}, "ensemble"),
    "pendulum-pixels": (
        "Pendulum-v1",
        {"observation": "render", "screen_size": 64, "action_repeat": 2},
        "rssm",
    ),
    "minigrid-rgb": ("MiniGrid-Empty-5x5-v0", {"screen_size": 32}, "discrete"),
    "carracing-grey": ("CarRacing-v3", {"screen_size": 48, "grayscale": True}, "mdnrnn"),
    "dmc-cartpole-pixels": (
        "dm_control/cartpole-swingup-v0",
        {"observation": "render", "screen_size": 64, "action_repeat": 4},
        "rssm",
    ),
}


@pytest.fixture(scope="module")
def checkpoints(gym_checkpoint):
    def get(case: str) -> Path:
        env_id, options, family = CASES[case]
        return gym_checkpoint(env_id, family, **options)

    return get


@pytest.mark.parametrize("case", sorted(CASES))
def test_dream_and_real_envs_pass_the_checkers(checkpoints, case: str) -> None:
    ckpt = checkpoints(case)
    dream = gym.make("dreamenv/Dream-v0", checkpoint=str(ckpt), render_mode="rgb_array")
    real = gym.make("dreamenv/Real-v0", checkpoint=str(ckpt), render_mode="rgb_array")
    assert dream.observation_space == real.observation_space
    assert dream.action_space == real.action_space
    spec = make_spec(CASES[case][0], **CASES[case][1])
    assert real.action_space == spec.action_spec.space()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for env in (dream, real):
            gym_check_env(env.unwrapped, skip_render_check=False)
            sb3_check_env(env.unwrapped, warn=False)
    dream.close()
    real.close()


def test_real_rewards_are_the_envs(checkpoints) -> None:
    """Pendulum's rewards are real numbers in [-16.3, 0]: Real-v0 gives them unclipped and
    the dream's reward head predicts real values, not their signs."""
    ckpt = checkpoints("pendulum-state")
    support = dreamenv.load_checkpoint(ckpt).model.reward_support
    assert 5 < -min(support) < 16.5 and max(support) == -min(support)  # the data's span
    real = gym.make("dreamenv/Real-v0", checkpoint=str(ckpt))
    real.reset(seed=0)
    rewards = [real.step(real.action_space.sample())[1] for _ in range(20)]
    assert min(rewards) < -0.5 and max(rewards) <= 0 and len(set(np.round(rewards, 3))) > 5
    dream = gym.make("dreamenv/Dream-v0", checkpoint=str(ckpt), reward_mode="mean")
    dream.reset(seed=0)
    imagined = [dream.step(dream.action_space.sample())[1] for _ in range(10)]
    assert len(set(np.round(imagined, 4))) > 1 and not set(imagined) <= {-1.0, 0.0, 1.0}


def test_box_actions_are_checked_and_clipped(checkpoints) -> None:
    ckpt = checkpoints("pendulum-pixels")
    for env_id in ("dreamenv/Dream-v0", "dreamenv/Real-v0"):
        env = gym.make(env_id, checkpoint=str(ckpt))
        env.reset(seed=0)
        env.step(np.array([5.0], np.float32))  # clipped to the bound 2.0, as SB3 clips
        with pytest.raises(InvalidActionError, match=r"actions must be finite, got \[nan\]"):
            env.step(np.array([np.nan], np.float32))
        with pytest.raises(InvalidActionError, match=r"action must be an array of shape \(1,\)"):
            env.step(np.zeros(2, np.float32))
        env.close()


def test_unsupported_envs_fail_at_collect(tmp_path, capsys) -> None:
    from dreamenv.cli import main

    code = main(["collect", "Blackjack-v1", "--out", str(tmp_path / "d"), "--steps", "10"])
    assert code == 2
    assert "Blackjack-v1 has observations Tuple(" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_jumpy_model_takes_chunks_of_box_actions(gym_checkpoint) -> None:
    ckpt = gym_checkpoint(
        "Pendulum-v1",
        "sssm",
        model_overrides={"jump": 2},
        observation="render",
        screen_size=64,
        grayscale=True,
    )
    for env_id in ("dreamenv/Dream-v0", "dreamenv/Real-v0"):
        env = gym.make(env_id, checkpoint=str(ckpt))
        assert env.action_space == gym.spaces.Box(-2.0, 2.0, (2, 1), np.float32)
        env.reset(seed=0)
        _, reward, *_ = env.step(np.array([[1.0], [-1.0]], np.float32))
        assert np.isfinite(reward)
        env.close()


def test_the_loop_runs_on_a_gym_env(tmp_path) -> None:
    """`dreamenv train ENV` on a state env with Box actions: policy-driven collection with
    the agent's continuous actions, refits, dream training and real evaluation."""
    from dreamenv.cli import main
    from dreamenv.train.loop import read_results

    args = ["--quiet", "train", "Pendulum-v1", "--run-dir", str(tmp_path / "run")]
    args += ["--family", "ensemble", "--preset", "quick", "--iterations", "2"]
    args += ["--initial-steps", "200", "--steps-per-iteration", "200", "--wm-epochs", "1", "1"]
    args += ["--warmup-epochs", "0", "--rollouts", "1", "1", "--eval-episodes", "2"]
    args += ["--eval-max-steps", "20"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quick preset's precision is not the ensemble's
        assert main(args) == 0
    rows = read_results(tmp_path / "run")
    assert [r["real_steps"] for r in rows] == [200, 400]
    assert all(np.isfinite(r["mean_return"]) and r["mean_return"] < 0 for r in rows)
