"""Outside clients on a real checkpoint: SB3's vec wrappers and tools, and gymnasium's
vector wrappers, over Dream-v0 and Real-v0 (single and vector), as their users use them."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
)

import dreamenv
from dreamenv import DreamVectorEnv, RealVectorEnv
from dreamenv.sb3 import wrap

PPO_TINY = {"n_steps": 8, "batch_size": 16, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}}


def _dream(path: Path, n: int = 2, **kwargs) -> DreamVectorEnv:
    return DreamVectorEnv(path, n, horizon=6, **kwargs)


def test_vec_monitor_counts_the_dream_episodes(checkpoint_dir: Path) -> None:
    env = VecMonitor(wrap(_dream(checkpoint_dir, use_termination=False)))
    agent = PPO("MlpPolicy", env, seed=0, **PPO_TINY).learn(32)
    assert len(agent.ep_info_buffer) >= 4
    assert all(info["l"] == 6 for info in agent.ep_info_buffer)


def test_vec_frame_stack_and_vec_normalize_over_the_dream(checkpoint_dir: Path) -> None:
    env = VecNormalize(VecFrameStack(wrap(_dream(checkpoint_dir, obs_type="embeddings")), 2))
    base = _dream(checkpoint_dir, obs_type="embeddings").single_observation_space
    assert np.prod(env.observation_space.shape) == 2 * np.prod(base.shape)
    agent = PPO("MlpPolicy", env, seed=0, **PPO_TINY).learn(16)
    obs = env.reset()
    assert np.isfinite(obs).all()
    assert agent.num_timesteps >= 16


def test_make_vec_env_with_subprocesses(checkpoint_dir: Path) -> None:
    """``make_vec_env`` builds each env in its own process from the registered id (the
    ``module:`` prefix makes a fresh process import dreamenv, gymnasium's convention)."""
    env = make_vec_env(
        "dreamenv:dreamenv/Dream-v0",
        n_envs=2,
        seed=0,
        vec_env_cls=SubprocVecEnv,
        env_kwargs={"checkpoint": str(checkpoint_dir), "horizon": 5, "use_termination": False},
    )
    try:
        obs = env.reset()
        assert obs.shape == (2, *env.observation_space.shape)
        for _ in range(5):
            obs, reward, done, infos = env.step(np.zeros(2, dtype=np.int64))
        assert done.all()
        assert all("episode" in info for info in infos)  # make_vec_env's Monitor
    finally:
        env.close()


def test_evaluate_policy_on_a_monitored_real_env(checkpoint_dir: Path) -> None:
    agent = PPO("MlpPolicy", wrap(_dream(checkpoint_dir)), seed=0, **PPO_TINY)
    real = Monitor(gym.make("dreamenv/Real-v0", checkpoint=checkpoint_dir))
    mean, std = evaluate_policy(agent, real, n_eval_episodes=2)
    assert np.isfinite(mean) and np.isfinite(std)
    assert len(real.get_episode_lengths()) == 2


def test_an_agent_trained_in_the_dream_learns_on_in_the_real_game(checkpoint_dir: Path) -> None:
    agent = PPO("MlpPolicy", wrap(_dream(checkpoint_dir)), seed=0, **PPO_TINY).learn(16)
    agent.set_env(wrap(RealVectorEnv(checkpoint_dir, 2)))
    agent.learn(16, reset_num_timesteps=False)
    assert agent.num_timesteps >= 32


def test_dummy_vec_env_of_single_dream_envs(checkpoint_dir: Path) -> None:
    env = DummyVecEnv(
        [lambda: Monitor(gym.make("dreamenv/Dream-v0", checkpoint=checkpoint_dir, horizon=4))] * 2
    )
    agent = PPO("MlpPolicy", env, seed=0, **PPO_TINY).learn(32)
    assert len(agent.ep_info_buffer) >= 4


@pytest.mark.parametrize("kind", ["dream", "real"])
def test_gymnasium_vector_wrappers(checkpoint_dir: Path, kind: str) -> None:
    base = (
        _dream(checkpoint_dir, obs_type="embeddings", use_termination=False)
        if kind == "dream"
        else RealVectorEnv(checkpoint_dir, 2, obs_type="embeddings")
    )
    env = gym.wrappers.vector.RecordEpisodeStatistics(
        gym.wrappers.vector.ClipReward(
            gym.wrappers.vector.NormalizeObservation(base), min_reward=-0.5, max_reward=0.5
        )
    )
    obs, _ = env.reset(seed=0)
    assert obs.shape == base.observation_space.shape
    ended = 0
    for _ in range(160 if kind == "real" else 7):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.all(np.abs(reward) <= 0.5)
        if "episode" in info:
            ended += int(info["_episode"].sum())
    assert ended >= 2
    assert np.isfinite(obs).all()
    env.close()


def test_gymnasium_sync_vector_env_of_real_envs(checkpoint_dir: Path) -> None:
    env = gym.make_vec(
        "dreamenv/Real-v0", num_envs=2, vectorization_mode="sync", checkpoint=checkpoint_dir
    )
    obs, _ = env.reset(seed=0)
    same = RealVectorEnv(checkpoint_dir, 2)
    assert env.single_observation_space == same.single_observation_space
    obs, *_ = env.step(np.zeros(2, dtype=np.int64))
    assert obs.shape == (2, *same.single_observation_space.shape)
    env.close()
    same.close()


def test_the_readme_example(checkpoint_dir: Path) -> None:
    dream = gym.make_vec(
        "dreamenv/Dream-v0",
        num_envs=2,
        checkpoint=checkpoint_dir,
        vectorization_mode="vector_entry_point",
    )
    agent = PPO("MlpPolicy", dreamenv.sb3.wrap(dream), seed=0, **PPO_TINY).learn(120)
    assert len(agent.ep_info_buffer) > 0  # ep_rew_mean is logged without a monitor
    real = gym.make("dreamenv/Real-v0", checkpoint=checkpoint_dir)
    obs, _ = real.reset(seed=0)
    action, _ = agent.predict(obs)
    real.step(action)
    real.close()
