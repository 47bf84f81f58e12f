"""Goal-conditioned dreams: GoalDream-v0 / GoalReal-v0 as gymnasium-robotics' goal envs,
trained on by Stable-Baselines3's HerReplayBuffer."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import SAC, HerReplayBuffer
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dreamenv
from dreamenv.envs.goals import GoalConditioned, default_threshold, real_goals
from dreamenv.errors import ConfigError


@pytest.fixture(scope="module")
def pendulum(gym_checkpoint) -> Path:
    return gym_checkpoint("Pendulum-v1", "ensemble")


def _unwrapped_goal_env(env: gym.Env) -> GoalConditioned:
    while not isinstance(env, GoalConditioned):
        env = env.env  # type: ignore[attr-defined]
    return env


@pytest.mark.parametrize("env_id", ["dreamenv/GoalDream-v0", "dreamenv/GoalReal-v0"])
def test_goal_envs_pass_the_env_checkers(pendulum: Path, env_id: str) -> None:
    env = gym.make(env_id, checkpoint=pendulum)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(_unwrapped_goal_env(env))
    obs, info = env.reset(seed=0)
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    np.testing.assert_array_equal(obs["observation"], obs["achieved_goal"])
    assert info["is_success"] in (0.0, 1.0)
    env.close()


def test_dream_and_real_share_spaces_goals_and_threshold(pendulum: Path) -> None:
    dream = dreamenv.envs.goals.make_goal_dream(pendulum)
    real = dreamenv.envs.goals.make_goal_real(pendulum)
    assert dream.observation_space == real.observation_space
    assert dream.action_space == real.action_space
    np.testing.assert_array_equal(dream.goals, real.goals)
    assert dream.threshold == real.threshold
    real.close()


def test_goals_are_the_real_start_frames(pendulum: Path) -> None:
    ckpt = dreamenv.load_checkpoint(pendulum)
    goals = real_goals(ckpt)
    bank = ckpt.start_bank
    assert goals.shape == (bank.size, 3)
    newest = bank.observations(1, np.arange(bank.size))[:, -1]  # (n, stack * 3) states
    np.testing.assert_allclose(goals, newest.reshape(bank.size, -1)[:, -3:], atol=1e-5)


def test_reset_draws_goals_from_the_bank_and_takes_one_given(pendulum: Path) -> None:
    env = dreamenv.envs.goals.make_goal_dream(pendulum)
    drawn = {tuple(env.reset(seed=s)[0]["desired_goal"]) for s in range(8)}
    assert len(drawn) > 1
    assert all(np.isin(np.array(g), env.goals).all() for g in drawn)
    goal = np.array([1.0, 0.0, 0.5], np.float32)
    obs, _ = env.reset(options={"goal": goal})
    np.testing.assert_array_equal(obs["desired_goal"], goal)
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(obs["desired_goal"], goal)
    with pytest.raises(ConfigError, match=r"options\['goal'\] must have shape \(3,\), got \(2,\)"):
        env.reset(options={"goal": np.zeros(2)})


def test_compute_reward_is_vectorised_and_matches_step(pendulum: Path) -> None:
    env = dreamenv.envs.goals.make_goal_dream(pendulum)
    obs, _ = env.reset(seed=0)
    obs, reward, _, _, info = env.step(env.action_space.sample())
    assert reward == env.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
    assert reward == info["is_success"] - 1.0
    achieved = np.stack([obs["desired_goal"], obs["desired_goal"] + 10 * env.threshold])
    desired = np.stack([obs["desired_goal"]] * 2)
    np.testing.assert_array_equal(env.compute_reward(achieved, desired, [info] * 2), [0.0, -1.0])
    dense = GoalConditioned(env.env, env.goals, reward="dense")
    assert dense.compute_reward(achieved, desired, None)[1] == pytest.approx(
        -10 * env.threshold * np.sqrt(3), rel=1e-4
    )


def test_terminate_on_success_ends_the_episode_at_the_goal(pendulum: Path) -> None:
    env = dreamenv.envs.goals.make_goal_dream(pendulum, terminate_on_success=True)
    env.reset(seed=0)
    huge = GoalConditioned(env.env, env.goals, threshold=1e6, terminate_on_success=True)
    huge.reset(seed=0)
    _, reward, terminated, _, info = huge.step(huge.action_space.sample())
    assert terminated and reward == 0.0 and info["is_success"] == 1.0


def test_default_threshold_is_a_low_quantile_of_goal_distances() -> None:
    goals = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    t = default_threshold(goals)
    d = np.linalg.norm(goals[:, None] - goals[None], axis=-1)[~np.eye(200, dtype=bool)]
    assert np.mean(d <= t) == pytest.approx(0.05, abs=0.02)
    with pytest.raises(ConfigError, match=r"at least 2 real goals, got 1"):
        default_threshold(goals[:1])


def test_integer_observations_are_refused(checkpoint_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"float vector observation, got obs_type 'indices'.*"):
        dreamenv.envs.goals.make_goal_dream(checkpoint_dir, obs_type="indices")


def test_discrete_embeddings_make_a_goal_dream(checkpoint_dir: Path) -> None:
    env = dreamenv.envs.goals.make_goal_dream(checkpoint_dir)  # the default: embeddings
    assert env.env.core.obs_type == "embeddings"
    obs, _ = env.reset(seed=0)
    assert obs["desired_goal"].shape == env.observation_space["observation"].shape
    assert env.threshold > 0


def test_bad_options_name_the_argument(pendulum: Path) -> None:
    env = dreamenv.envs.goals.make_goal_dream(pendulum)
    with pytest.raises(ConfigError, match=r"reward must be one of \['sparse', 'dense'\]"):
        GoalConditioned(env.env, env.goals, reward="shaped")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"goals must have shape \(n, 3\).*got \(4, 2\)"):
        GoalConditioned(env.env, np.zeros((4, 2)))
    with pytest.raises(ConfigError, match=r"threshold must be positive, got -1"):
        GoalConditioned(env.env, env.goals, threshold=-1)


def test_her_trains_sac_in_the_goal_dream(pendulum: Path) -> None:
    env = gym.make("dreamenv/GoalDream-v0", checkpoint=pendulum, horizon=10)
    agent = SAC(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": 4, "goal_selection_strategy": "future"},
        learning_starts=20,
        batch_size=16,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    agent.learn(60)
    assert agent.num_timesteps == 60
    real = gym.make("dreamenv/GoalReal-v0", checkpoint=pendulum)
    obs, _ = real.reset(seed=0)
    action, _ = agent.predict(obs, deterministic=True)
    assert real.action_space.contains(action)
    real.close()
