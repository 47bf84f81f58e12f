"""SB3 agents of Box actions: SAC, TD3, PPO and A2C through make_agent, agent files (no
pickle), sample_actions / AgentPolicy temperatures, and SAC trained in an ensemble dream."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.torch_layers import FlattenExtractor

import dreamenv
from dreamenv import CheckpointError, ConfigError
from dreamenv.sb3 import load_agent, make_agent, save_agent, train_in_dream, wrap
from dreamenv.sb3.agent_policy import AgentPolicy, sample_actions

TINY = {"net_arch": [16]}
SETTINGS: dict[str, dict[str, Any]] = {
    "sac": {"learning_starts": 32, "batch_size": 16, "buffer_size": 500},
    "td3": {"learning_starts": 32, "batch_size": 16, "buffer_size": 500},
    "ppo": {"n_steps": 32, "batch_size": 32, "n_epochs": 1},
    "a2c": {"n_steps": 8},
}


class PointMass(gym.Env):
    """A 1-D point mass: observation (x, v, t / 20), a force in [-2, 2], reward -|x|."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space: gym.Space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x, self.v, self.t = float(self.np_random.uniform(-1, 1)), 0.0, 0
        return self._obs(), {}

    def step(self, action: np.ndarray):
        force = float(np.clip(np.asarray(action).reshape(-1)[0], -2.0, 2.0))
        self.v += 0.1 * force
        self.x += 0.1 * self.v
        self.t += 1
        return self._obs(), -abs(self.x), False, self.t >= 20, {}

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.v, self.t / 20], np.float32)


class DiscretePointMass(PointMass):
    action_space = gym.spaces.Discrete(3)

    def step(self, action: Any):
        return super().step(np.array([float(action) - 1.0]))


def _vec(n: int = 2, cls: type[gym.Env] = PointMass):
    return wrap(gym.vector.SyncVectorEnv([cls for _ in range(n)]))


def _agent(algo: str, steps: int = 96, n_envs: int = 2, **kwargs: Any) -> BaseAlgorithm:
    agent = make_agent(
        algo, _vec(n_envs), seed=0, policy_kwargs=dict(TINY), **{**SETTINGS[algo], **kwargs}
    )
    return agent.learn(steps)


@pytest.fixture(scope="module")
def obs() -> np.ndarray:
    return np.stack([PointMass().reset(seed=s)[0] for s in range(5)])


@pytest.fixture(scope="module")
def agents() -> dict[str, BaseAlgorithm]:
    return {algo: _agent(algo) for algo in SETTINGS}


def _no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an agent file was unpickled")

    for module, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (cloudpickle, "loads"),
        (torch, "load"),
    ]:
        monkeypatch.setattr(module, name, refuse)


def _same_optimizers(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    before, after = a.state_dict(), b.state_dict()
    assert before["param_groups"] == after["param_groups"]
    assert before["state"].keys() == after["state"].keys() and before["state"]
    for index, entries in before["state"].items():
        for key, value in entries.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["state"][index][key]))


@pytest.mark.parametrize("algo", ["sac", "td3", "ppo", "a2c"])
def test_box_agents_round_trip_without_pickle(
    agents: dict[str, BaseAlgorithm],
    obs: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    algo: str,
) -> None:
    agent = agents[algo]
    path = save_agent(agent, tmp_path / "agent")
    with monkeypatch.context() as patch:
        _no_unpickling(patch)
        loaded = load_agent(path)
    assert type(loaded) is type(agent) and loaded.action_space == agent.action_space
    sa, sb = agent.policy.state_dict(), loaded.policy.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    np.testing.assert_array_equal(
        agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
    assert loaded.num_timesteps == agent.num_timesteps and loaded._n_updates == agent._n_updates
    manifest = json.loads((path / "agent.json").read_text())
    names = {"sac": ["actor.optimizer", "critic.optimizer", "ent_coef_optimizer"]}
    expected = names.get(algo, ["actor.optimizer", "critic.optimizer"] if algo == "td3" else [])
    assert sorted(manifest["optimizers"]) == (expected or ["policy.optimizer"])
    for name in manifest["optimizers"]:
        _same_optimizers(agent_optimizer(agent, name), agent_optimizer(loaded, name))
    if algo == "sac":
        assert "critic_target.qf0.0.weight" in sa and "actor.mu.weight" in sa
        assert torch.equal(agent.log_ent_coef, loaded.log_ent_coef)
        assert agent.log_ent_coef.item() != 0.0  # learned, not the initial log(1)
        assert loaded.ent_coef_optimizer.param_groups[0]["params"][0] is loaded.log_ent_coef
        assert loaded.target_entropy == agent.target_entropy == -1.0
        assert loaded.ent_coef == "auto" and loaded.gradient_steps == -1
    if algo == "td3":
        assert "actor_target.mu.0.weight" in sa
        noise = loaded.action_noise
        assert isinstance(noise, NormalActionNoise)
        np.testing.assert_array_equal(noise._sigma, [0.1])
        assert loaded.policy_delay == agent.policy_delay
    # and it trains on (SB3 refills the replay buffer of an off-policy agent)
    loaded.set_env(_vec())
    loaded.learn(48, reset_num_timesteps=False)
    assert loaded.num_timesteps >= agent.num_timesteps + 48


def agent_optimizer(agent: BaseAlgorithm, name: str) -> torch.optim.Optimizer:
    target: Any = agent
    for part in name.split("."):
        target = getattr(target, part)
    return target


def test_sac_with_a_fixed_entropy_coefficient_round_trips(tmp_path: Path, obs) -> None:
    agent = _agent("sac", 48, ent_coef=0.05, gradient_steps=1)
    loaded = load_agent(save_agent(agent, tmp_path / "agent"))
    assert loaded.ent_coef == 0.05 and loaded.ent_coef_optimizer is None
    assert loaded.gradient_steps == 1
    np.testing.assert_array_equal(
        agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


def test_version_1_agent_files_still_load(agents, obs, tmp_path: Path) -> None:
    """Version 1 named its one optimizer ``optimizer`` with unprefixed tensor keys."""
    ppo = agents["ppo"]
    path = save_agent(ppo, tmp_path / "agent")
    manifest = json.loads((path / "agent.json").read_text())
    name = manifest["files"]["optimizer"]
    tensors = load_file(str(path / name))
    save_file({k.removeprefix("policy.optimizer/"): v for k, v in tensors.items()}, path / name)
    manifest["optimizer"] = manifest.pop("optimizers")["policy.optimizer"]
    manifest["version"] = 1
    del manifest["variables"]
    (path / "agent.json").write_text(json.dumps(manifest))
    loaded = load_agent(path)
    _same_optimizers(ppo.policy.optimizer, loaded.policy.optimizer)
    np.testing.assert_array_equal(
        ppo.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


def test_sb3_zips_of_sac_and_td3_load_with_allow_pickle(
    agents, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for algo, cls in (("sac", SAC), ("td3", TD3)):
        path = save_agent(agents[algo], tmp_path / f"{algo}.zip", format="sb3")
        with pytest.warns(UserWarning, match="can execute code"):
            assert type(load_agent(path, allow_pickle=True)) is cls
    # the guard of the round-trip test above does catch SB3's unpickling
    with monkeypatch.context() as patch, pytest.warns(UserWarning):
        _no_unpickling(patch)
        with pytest.raises(CheckpointError, match="an agent file was unpickled"):
            load_agent(path, allow_pickle=True)


def test_make_agent_for_box_actions() -> None:
    sac = make_agent("sac", _vec(2))
    assert sac.gradient_steps == -1  # one gradient step per transition of the 2 envs
    assert isinstance(sac.policy.actor.features_extractor, FlattenExtractor)
    assert make_agent("sac", _vec(1)).gradient_steps == 1  # SB3's default
    assert make_agent("SAC", _vec(2), gradient_steps=1).gradient_steps == 1
    td3 = make_agent("td3", _vec(2))
    assert isinstance(td3.action_noise, NormalActionNoise)
    assert make_agent("td3", _vec(2), action_noise=None).action_noise is None
    ppo = make_agent("ppo", _vec(2), batch_size=100)
    assert ppo.n_steps == 50 and isinstance(ppo.policy.features_extractor, FlattenExtractor)


def test_algorithms_refuse_the_other_action_kind() -> None:
    with pytest.raises(
        ConfigError, match=r"DQN takes Discrete actions, .*Box.*; use 'sac' or 'ppo' for Box"
    ):
        make_agent("dqn", _vec(2))
    with pytest.raises(ConfigError, match=r"SAC takes Box actions, .*Discrete\(3\); use 'ppo'"):
        make_agent("sac", _vec(2, DiscretePointMass))
    with pytest.raises(ConfigError, match=r"TD3 takes Box actions"):
        make_agent("td3", _vec(2, DiscretePointMass))


# --- sample_actions: the temperature of Box actions ------------------------------------------
@pytest.mark.parametrize("algo", ["sac", "td3", "ppo"])
def test_temperature_zero_is_the_deterministic_action(agents, obs, algo: str) -> None:
    agent = agents[algo]
    actions = sample_actions(agent, obs, 0.0, np.random.default_rng(0))
    assert actions.shape == (5, 1) and actions.dtype == np.float32
    np.testing.assert_array_equal(actions, agent.predict(obs, deterministic=True)[0])
    again = sample_actions(agent, obs, 1.0, np.random.default_rng(1))
    np.testing.assert_array_equal(again, sample_actions(agent, obs, 1.0, np.random.default_rng(1)))
    assert not np.array_equal(again, actions)
    wild = sample_actions(agent, np.repeat(obs, 200, 0), 50.0, np.random.default_rng(2))
    assert wild.min() >= -2.0 and wild.max() <= 2.0
    assert wild.min() == -2.0 and wild.max() == 2.0  # clipped to the bounds


def _one_obs(obs: np.ndarray, n: int = 4000) -> np.ndarray:
    return np.repeat(obs[:1], n, 0)


def test_temperature_scales_the_std_of_a_gaussian(agents, obs) -> None:
    ppo = agents["ppo"]
    std = ppo.policy.get_distribution(ppo.policy.obs_to_tensor(obs[:1])[0]).distribution.stddev
    mean = ppo.predict(obs[:1], deterministic=True)[0]
    for temperature in (0.05, 0.2):
        actions = sample_actions(ppo, _one_obs(obs), temperature, np.random.default_rng(0))
        assert actions.std() == pytest.approx(temperature * std.item(), rel=0.06)
        assert actions.mean() == pytest.approx(mean.item(), abs=4 * temperature * std.item() / 60)


def test_temperature_scales_the_std_of_sacs_squashed_gaussian(agents, obs) -> None:
    sac = agents["sac"]
    tensor = sac.policy.obs_to_tensor(obs[:1])[0]
    with torch.no_grad():
        mean, log_std, _ = sac.actor.get_action_dist_params(tensor)
    actions = sample_actions(sac, _one_obs(obs), 0.5, np.random.default_rng(0))
    pre = np.arctanh(np.clip(sac.policy.scale_action(actions), -1 + 1e-6, 1 - 1e-6))
    assert pre.std() == pytest.approx(0.5 * log_std.exp().item(), rel=0.06)
    assert pre.mean() == pytest.approx(mean.item(), abs=0.05)


def test_td3_temperature_scales_its_exploration_noise(agents, obs) -> None:
    td3 = agents["td3"]
    deterministic = td3.policy.scale_action(td3.predict(obs[:1], deterministic=True)[0])
    assert abs(deterministic.item()) < 0.6  # the noise below is not clipped at +-1
    actions = sample_actions(td3, _one_obs(obs), 2.0, np.random.default_rng(0))
    noise = td3.policy.scale_action(actions) - deterministic
    assert noise.std() == pytest.approx(2.0 * 0.1, rel=0.06)


def test_temperature_errors(agents, obs) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"temperature must be >= 0 for Box actions, got -1"):
        sample_actions(agents["sac"], obs, -1, rng)
    discrete = make_agent("ppo", _vec(2, DiscretePointMass), n_steps=8, batch_size=8)
    actions = sample_actions(discrete, obs, 1.0, rng)
    assert actions.shape == (5,) and actions.dtype == np.int64 and set(actions) <= {0, 1, 2}
    with pytest.raises(ConfigError, match=r"temperature must be positive, got 0.0 \(Discrete"):
        sample_actions(discrete, obs, 0.0, rng)


# --- SAC in the dream of a state-vector model (family "ensemble") ----------------------------
@pytest.fixture(scope="module")
def pendulum(gym_checkpoint) -> tuple[Path, Path]:
    model = gym_checkpoint("Pendulum-v1", "ensemble")
    return model.parent / "data", model


def test_sac_trains_in_a_box_dream_and_collects(pendulum, tmp_path: Path) -> None:
    _, model = pendulum
    dream = dreamenv.DreamVectorEnv(model, 2)
    assert dream.single_action_space == gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    agent = train_in_dream(
        model,
        200,
        algo="sac",
        num_envs=2,
        progress=False,
        policy_kwargs=dict(TINY),
        learning_starts=50,
        batch_size=16,
        buffer_size=500,
        gradient_steps=1,
    )
    assert agent.num_timesteps >= 200 and agent._n_updates > 0
    loaded = load_agent(save_agent(agent, tmp_path / "agent"))
    obs, _ = dream.reset(seed=0)
    np.testing.assert_array_equal(
        agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
    again = train_in_dream(model, 32, agent=loaded, progress=False)
    assert again.num_timesteps >= agent.num_timesteps + 32
    # the loop's next collection: the agent acting on the real env at a temperature
    policy = AgentPolicy(loaded, model, temperature=0.5)
    store = dreamenv.collect(
        tmp_path / "data", policy.checkpoint.spec, 50, num_envs=2, policy=policy, progress=False
    )
    assert store.num_steps >= 50
    actions = np.concatenate([e.actions for e in store.episodes()])
    assert actions.dtype == np.float32 and actions.shape[1:] == (1,)
    assert np.abs(actions).max() <= 2.0 and len(np.unique(actions)) > 10
