"""Stable-Baselines3 integration: the VecEnv adapter, the latent extractor, training in the
dream, evaluation in the real game."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import VecEnv

import dreamenv
from dreamenv import CheckpointError, ConfigError, DreamEnv, DreamVectorEnv, load_checkpoint
from dreamenv.data.store import EpisodeStore
from dreamenv.evaluate import evaluate, infer_obs_type, random_policy
from dreamenv.sb3 import (
    AgentPolicy,
    LatentExtractor,
    make_agent,
    train_in_dream,
    wrap,
)

SMALL_NET = {"net_arch": [16]}


@pytest.fixture(scope="module")
def ckpt(checkpoint_dir: Path) -> dreamenv.Checkpoint:
    return load_checkpoint(checkpoint_dir)


@pytest.fixture(scope="module")
def agent(ckpt: dreamenv.Checkpoint) -> PPO:
    """A PPO agent with the latent extractor, trained briefly in the dream."""
    return train_in_dream(
        ckpt,
        64,
        num_envs=2,
        seed=0,
        progress=False,
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        policy_kwargs={
            "features_extractor_kwargs": {"features_dim": 16, "channels": 8},
            "net_arch": [],
        },
    )


def _venv(ckpt: dreamenv.Checkpoint, n: int = 2, **kwargs) -> VecEnv:
    return wrap(DreamVectorEnv(ckpt, n, **kwargs))


@pytest.mark.parametrize(
    ("algo", "kwargs"),
    [
        (PPO, {"n_steps": 32, "batch_size": 32, "n_epochs": 1}),
        (A2C, {"n_steps": 8}),
        (DQN, {"learning_starts": 40, "buffer_size": 500, "batch_size": 16, "train_freq": 4}),
    ],
)
def test_sb3_algorithms_learn_in_the_dream(
    ckpt: dreamenv.Checkpoint, algo: type, kwargs: dict
) -> None:
    venv = _venv(ckpt, 4, horizon=20)
    model = algo("MlpPolicy", venv, policy_kwargs=SMALL_NET, seed=0, device="cpu", **kwargs)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    assert model.num_timesteps >= 256
    after = list(model.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), "no update"
    obs = venv.reset()
    actions, _ = model.predict(obs)
    assert actions.shape == (4,)
    assert ((actions >= 0) & (actions < 6)).all()


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_adapter_marks_truncation_at_the_horizon(ckpt: dreamenv.Checkpoint, mode: str) -> None:
    horizon = 3
    venv = _venv(ckpt, 2, horizon=horizon, use_termination=False, autoreset_mode=mode)
    reference = DreamVectorEnv(ckpt, 2, horizon=horizon, use_termination=False)
    venv.seed(4)
    obs = venv.reset()
    ref_obs, _ = reference.reset(seed=4)
    np.testing.assert_array_equal(obs, ref_obs)
    actions = np.array([1, 2])
    for t in range(1, 2 * horizon + 1):
        obs, reward, dones, infos = venv.step(actions)
        ref_obs, *_ = reference.step(actions)
        assert reward.dtype == np.float32 and dones.dtype == bool
        if t % horizon:
            assert not dones.any()
            assert all("terminal_observation" not in i for i in infos)
            np.testing.assert_array_equal(obs, ref_obs)
        else:
            assert dones.all()
            for i, info in enumerate(infos):
                assert info["TimeLimit.truncated"] is True
                np.testing.assert_array_equal(info["terminal_observation"], ref_obs[i])
            ref_obs, *_ = reference.step(actions)  # NextStep's reset step
            np.testing.assert_array_equal(obs, ref_obs)


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_adapter_terminations_are_not_time_limits(
    ending_ckpt: dreamenv.Checkpoint, mode: str
) -> None:
    venv = _venv(ending_ckpt, 4, horizon=1000, autoreset_mode=mode)
    venv.seed(0)
    venv.reset()
    space = venv.observation_space
    for a in np.random.default_rng(0).integers(0, 6, (60, 4)):
        _, _, dones, infos = venv.step(a)
        for i in np.flatnonzero(dones):
            assert infos[i]["TimeLimit.truncated"] is False
            assert space.contains(infos[i]["terminal_observation"])
        if dones.any():
            return
    pytest.fail("no dream episode terminated")


def test_wrap_refuses_a_single_env(ckpt: dreamenv.Checkpoint) -> None:
    with pytest.raises(ConfigError, match=r"wrap\(\) takes a gymnasium VectorEnv .*got DreamEnv"):
        wrap(DreamEnv(ckpt))


def test_wrap_refuses_disabled_autoreset(ckpt: dreamenv.Checkpoint) -> None:
    with pytest.raises(ConfigError, match=r"needs a vector env that autoresets .*got Disabled"):
        wrap(DreamVectorEnv(ckpt, 2, autoreset_mode="Disabled"))


def test_adapter_renders_every_env(ckpt: dreamenv.Checkpoint) -> None:
    venv = _venv(ckpt, 2, render_mode="rgb_array")
    venv.reset()
    images = venv.get_images()
    assert len(images) == 2 and images[0].shape == (96, 96, 3)


@pytest.mark.parametrize("obs_type", ["indices", "embeddings"])
def test_latent_extractor(ckpt: dreamenv.Checkpoint, obs_type: str) -> None:
    envs = DreamVectorEnv(ckpt, 3, obs_type=obs_type)
    obs, _ = envs.reset(seed=0)
    space = envs.single_observation_space
    extractor = LatentExtractor(space, features_dim=12, channels=8)
    features = extractor(preprocess_obs(torch.as_tensor(obs), space))
    assert features.shape == (3, 12)
    assert torch.isfinite(features).all()
    features.sum().backward()
    assert all(p.grad is not None for p in extractor.parameters())

    venv = wrap(envs)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=16,
        batch_size=24,
        n_epochs=1,
        device="cpu",
        seed=0,
        policy_kwargs={
            "features_extractor_class": LatentExtractor,
            "features_extractor_kwargs": {"features_dim": 12, "channels": 8},
        },
    )
    model.learn(48)
    assert isinstance(model.policy.features_extractor, LatentExtractor)


def test_latent_extractor_reads_indices_as_a_code_grid(ckpt: dreamenv.Checkpoint) -> None:
    """Moving a code to another cell must move the features: the grid layout is kept."""
    space = DreamVectorEnv(ckpt, 1).single_observation_space
    torch.manual_seed(0)
    extractor = LatentExtractor(space, features_dim=8, channels=4)
    obs = torch.zeros(2, 36, dtype=torch.int64)
    obs[0, 0], obs[1, 35] = 5, 5
    features = extractor(preprocess_obs(obs, space))
    assert not torch.allclose(features[0], features[1])


def test_latent_extractor_refuses_other_spaces() -> None:
    with pytest.raises(
        ConfigError, match=r"LatentExtractor takes obs_type 'indices' or 'embeddings'"
    ):
        LatentExtractor(gym.spaces.Box(0, 1, (36,), np.float32))
    with pytest.raises(ConfigError, match=r"needs a square grid of codes, got 35 cells"):
        LatentExtractor(gym.spaces.MultiDiscrete([128] * 35))


def test_latent_extractor_refuses_pixels(ckpt: dreamenv.Checkpoint) -> None:
    space = ckpt.model.observation_space("pixels")
    with pytest.raises(ConfigError, match=r"Use SB3's CnnPolicy for 'pixels'"):
        LatentExtractor(space, features_dim=1, channels=1)  # tiny, should it be built


def test_make_agent_picks_the_policy(ckpt: dreamenv.Checkpoint) -> None:
    indices = make_agent("a2c", _venv(ckpt, 2), n_steps=4)
    assert isinstance(indices.policy.features_extractor, LatentExtractor)
    pixels = make_agent("a2c", _venv(ckpt, 2, obs_type="pixels"), n_steps=4)
    assert not isinstance(pixels.policy.features_extractor, LatentExtractor)
    with pytest.raises(
        ConfigError, match=r"algo must be one of \['a2c', 'dqn', 'ppo', 'sac', 'td3'\], got 'ddpg'"
    ):
        make_agent("ddpg", _venv(ckpt, 2))
    with pytest.raises(ConfigError, match=r"SAC takes Box actions, and this env's are Discrete"):
        make_agent("sac", _venv(ckpt, 2))
    with pytest.raises(
        ConfigError, match=r"'gama' is not a setting of PPO .*Did you mean 'gamma'\?"
    ):
        make_agent("ppo", _venv(ckpt, 2), gama=0.9)


def test_train_in_dream_then_evaluate_in_the_real_game(agent: PPO, checkpoint_dir: Path) -> None:
    assert isinstance(agent, PPO)
    assert agent.num_timesteps >= 64
    assert isinstance(agent.policy.features_extractor, LatentExtractor)
    returns = evaluate(agent, checkpoint_dir, episodes=2, num_envs=2, max_steps=50)
    assert returns.shape == (2,)
    assert np.isfinite(returns).all()
    assert ((returns >= -21) & (returns <= 21)).all()


def test_evaluate_counts_episodes_not_envs(ckpt: dreamenv.Checkpoint) -> None:
    returns = evaluate(random_policy(6), ckpt, episodes=3, num_envs=2, max_steps=10)
    assert returns.shape == (3,)


def test_train_in_dream_continues_an_agent(agent: PPO, ckpt: dreamenv.Checkpoint) -> None:
    before = agent.num_timesteps
    same = train_in_dream(ckpt, 32, num_envs=2, agent=agent, progress=False)
    assert same is agent
    assert agent.num_timesteps >= before + 32


def test_train_in_dream_leaves_no_logger_folders(
    ckpt: dreamenv.Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    train_in_dream(ckpt, 16, num_envs=2, progress=False, n_steps=8, batch_size=16, n_epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_agent_policy_samples_valid_actions(
    agent: PPO, checkpoint_dir: Path, store_dir: Path
) -> None:
    episode = EpisodeStore.open(store_dir).episodes()[0]
    policy = AgentPolicy(agent, checkpoint_dir, temperature=0.5)
    observations = policy.observations(8, policy.checkpoint.spec)
    observations.start(episode.frames[np.arange(0, 64, 8)])
    obs = observations.observe()
    actions = policy(obs, np.random.default_rng(0))
    assert actions.shape == (8,) and actions.dtype == np.int64
    assert ((actions >= 0) & (actions < 6)).all()
    again = policy(obs, np.random.default_rng(0))
    np.testing.assert_array_equal(actions, again)


def test_agent_policy_collects_real_data(
    agent: PPO, checkpoint_dir: Path, store_spec: dreamenv.AtariSpec, tmp_path: Path
) -> None:
    store = dreamenv.collect(
        tmp_path / "data",
        store_spec,
        20,
        num_envs=2,
        policy=AgentPolicy(agent, checkpoint_dir),
        progress=False,
    )
    assert store.num_steps == 20


def test_agent_policy_refuses_another_spec(agent: PPO, checkpoint_dir: Path) -> None:
    policy = AgentPolicy(agent, checkpoint_dir)
    other = dreamenv.AtariSpec("pong", screen_size=64)
    with pytest.raises(ConfigError, match=r"trained on AtariSpec.*this collection uses AtariSpec"):
        policy.observations(2, other)


def test_agent_policy_refuses_a_bad_temperature(agent: PPO, checkpoint_dir: Path) -> None:
    with pytest.raises(ConfigError, match="temperature must be positive, got 0"):
        AgentPolicy(agent, checkpoint_dir, temperature=0)


@pytest.mark.parametrize("obs_type", ["indices", "embeddings", "pixels"])
def test_infer_obs_type(ckpt: dreamenv.Checkpoint, obs_type: str) -> None:
    assert infer_obs_type(ckpt.model.observation_space(obs_type), ckpt) == obs_type


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Box(0, 1, (3,), np.float32),
        gym.spaces.MultiDiscrete([128] * 16),
        gym.spaces.Box(0, 255, (4, 64, 64), np.uint8),
    ],
)
def test_infer_obs_type_mismatch(ckpt: dreamenv.Checkpoint, space: gym.Space) -> None:
    with pytest.raises(CheckpointError, match=r"matches no observation of the checkpoint .*'pong'"):
        infer_obs_type(space, ckpt)


def test_train_in_dream_shows_progress_without_rich(checkpoint_dir, capsys) -> None:
    from dreamenv.sb3 import train_in_dream

    agent = train_in_dream(checkpoint_dir, 64, num_envs=2, progress=True, n_steps=32, batch_size=32)
    assert agent.num_timesteps >= 64
    assert "dream" in capsys.readouterr().err


def test_train_in_dream_without_termination_ends_episodes_at_the_horizon(checkpoint_dir) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    from dreamenv.sb3 import train_in_dream

    class Ends(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[bool] = []

        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                if done:
                    self.ends.append(bool(info.get("TimeLimit.truncated", False)))
            return True

    agent = train_in_dream(
        checkpoint_dir,
        64,
        num_envs=2,
        options=dreamenv.DreamOptions(horizon=4, use_termination=False),
        progress=False,
        n_steps=32,
        batch_size=32,
    )
    ends = Ends()
    agent.learn(64, callback=ends, reset_num_timesteps=False)
    assert ends.ends and all(ends.ends)  # every episode was cut by the horizon, none terminated
    assert agent.get_env().env.core.options.use_termination is False
