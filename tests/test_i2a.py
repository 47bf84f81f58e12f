"""The I2A features extractor: one imagined rollout per action from the real frames, a
reverse-order LSTM encoder beside a model-free path, a rollout policy distilled from the agent."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import dreamenv
from dreamenv.envs.real import RealVectorEnv
from dreamenv.errors import ConfigError
from dreamenv.sb3 import wrap
from dreamenv.sb3.imagination_extractor import (
    DistillRolloutPolicy,
    I2AExtractor,
    latent_obs_type,
)


@pytest.fixture(scope="module")
def sssm(family_checkpoint) -> Path:
    return family_checkpoint("sssm")


def _frames(ckpt: Path, n: int = 3) -> tuple[gym.Space, torch.Tensor]:
    env = RealVectorEnv(ckpt, n, obs_type="pixels")
    obs, _ = env.reset(seed=0)
    env.close()
    return env.single_observation_space, torch.as_tensor(obs).float() / 255.0


def _extractor(ckpt: Path, **kwargs) -> tuple[I2AExtractor, torch.Tensor]:
    space, obs = _frames(ckpt)
    torch.manual_seed(0)
    return I2AExtractor(space, ckpt, encoder_hidden=8, features_dim=16, **kwargs), obs


def test_features_have_gradients_and_the_model_is_frozen(sssm: Path) -> None:
    extractor, obs = _extractor(sssm, rollout_steps=2)
    features = extractor(obs)
    assert features.shape == (3, 16) and torch.isfinite(features).all()
    features.sum().backward()
    for part in (extractor.step_encoder, extractor.lstm, extractor.model_free, extractor.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    names = [name for name, _ in extractor.named_parameters()]
    assert not any(name.startswith("world_model") for name in names)
    model_params = {id(p) for p in extractor.world_model.parameters()}
    assert not model_params & {id(p) for p in extractor.parameters()}


def test_each_action_is_imagined_from_the_same_start(sssm: Path) -> None:
    extractor, obs = _extractor(sssm, rollout_steps=1)
    latents, scalars = extractor.imagine(obs)
    a = extractor.num_actions
    assert latents.shape[:2] == (3 * a, 1) and scalars.shape == (3 * a, 1, 2)
    imagination = extractor.imagination
    branches = imagination.fan_out(extractor.start(obs), a)
    first = torch.arange(a).repeat(3)[:, None]
    expected = imagination.rollout(branches, 1, actions=first)
    model = extractor.world_model
    want = model.observation(expected.latents[:, 1], extractor.obs_type).float()
    torch.testing.assert_close(latents[:, 0], want)
    torch.testing.assert_close(scalars[..., 0], expected.rewards.float())


def test_a_batch_imagines_the_same_futures_every_time(sssm: Path) -> None:
    extractor, obs = _extractor(sssm, rollout_steps=3)
    torch.testing.assert_close(extractor(obs), extractor(obs))


def test_distillation_fits_the_rollout_policy_to_the_agent(sssm: Path) -> None:
    extractor, obs = _extractor(sssm)
    target = torch.zeros(3, extractor.num_actions)
    target[:, 1] = 1.0
    first = extractor.distill(obs, target, 1, 1e-2)
    last = extractor.distill(obs, target, 50, 1e-2)
    assert last < first / 2
    logits = extractor.rollout_policy(extractor.latents(obs))
    assert (logits.argmax(-1) == 1).all()


def test_ppo_trains_with_i2a_in_the_real_env_and_reloads(sssm: Path, tmp_path: Path) -> None:
    env = wrap(RealVectorEnv(sssm, 2, obs_type="pixels"))
    agent = PPO(
        "CnnPolicy",
        env,
        n_steps=8,
        batch_size=8,
        n_epochs=1,
        seed=0,
        policy_kwargs={
            "features_extractor_class": I2AExtractor,
            "features_extractor_kwargs": {"checkpoint": str(sssm), "rollout_steps": 2},
        },
    )
    callback = DistillRolloutPolicy(epochs=2)
    agent.learn(32, callback=callback)
    assert agent.num_timesteps == 32 and len(callback.losses) == 2
    agent.save(tmp_path / "agent")
    loaded = PPO.load(tmp_path / "agent")
    obs = env.reset()
    np.testing.assert_array_equal(
        agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
    env.close()


def test_ppo_trains_with_i2a_in_the_dream(sssm: Path) -> None:
    dream = gym.make_vec(
        "dreamenv/Dream-v0",
        num_envs=2,
        checkpoint=sssm,
        obs_type="pixels",
        vectorization_mode="vector_entry_point",
    )
    kwargs = {"checkpoint": str(sssm), "rollout_steps": 1}
    agent = PPO(
        "CnnPolicy",
        wrap(dream),
        n_steps=8,
        batch_size=8,
        n_epochs=1,
        policy_kwargs={
            "features_extractor_class": I2AExtractor,
            "features_extractor_kwargs": kwargs,
        },
    )
    agent.learn(16, callback=DistillRolloutPolicy(epochs=1))
    assert agent.num_timesteps == 16


def test_the_callback_refuses_an_agent_without_i2a(checkpoint_dir: Path) -> None:
    env = wrap(RealVectorEnv(checkpoint_dir, 2, obs_type="pixels"))
    agent = PPO("CnnPolicy", env, n_steps=4, batch_size=4, n_epochs=1)
    with pytest.raises(ConfigError, match=r"features extractor is an I2AExtractor.*NatureCNN"):
        agent.learn(8, callback=DistillRolloutPolicy())
    env.close()


def test_bad_inputs_name_what_is_supported(sssm: Path, gym_checkpoint) -> None:
    space, _ = _frames(sssm)
    with pytest.raises(ConfigError, match=r"stacked real frames \(4, 96, 96\).*got Box"):
        I2AExtractor(gym.spaces.Box(0, 1, (3,), np.float32), sssm)
    with pytest.raises(ConfigError, match=r"rollout_steps must be a positive int, got 0"):
        I2AExtractor(space, sssm, rollout_steps=0)
    pendulum = gym_checkpoint("Pendulum-v1", "ensemble")
    with pytest.raises(ConfigError, match=r"needs Discrete actions"):
        I2AExtractor(space, pendulum)
    ar = dreamenv.load_checkpoint(sssm).model
    ar.obs_types = ("pixels",)  # an instance attribute: as the AR baseline's
    with pytest.raises(ConfigError, match=r"family has none \(obs_types \['pixels'\]\)"):
        latent_obs_type(ar)
