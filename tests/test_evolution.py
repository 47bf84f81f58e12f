"""The CMA-ES controller: settings, one batch per generation, seeding, the temperature, Box
and Discrete actions, Real-v0, save/load, a toy problem with a known answer, the example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from dreamenv.agents import CMAESConfig, CMAESController, LinearController
from dreamenv.checkpoint import load_checkpoint
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.evaluate import evaluate
from dreamenv.models.base import Prediction

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"population": 6, "episodes": 3, "horizon": 4, "eval_episodes": 5}


@pytest.fixture(scope="module")
def pendulum(gym_checkpoint) -> Path:
    return gym_checkpoint("Pendulum-v1", "ensemble")


@pytest.fixture(scope="module")
def cartpole(gym_checkpoint) -> Path:
    return gym_checkpoint("CartPole-v1", "ensemble")


def test_bad_settings_name_the_field_and_the_fix(pendulum) -> None:
    with pytest.raises(ConfigError, match=r"CMAESConfig.population must be an int >= 2.*got 1"):
        CMAESConfig(population=1)
    with pytest.raises(ConfigError, match="CMAESConfig.horizon must be a positive int, got 0"):
        CMAESConfig(horizon=0)
    with pytest.raises(ConfigError, match=r"CMAESConfig.sigma0 must be a finite number > 0"):
        CMAESConfig(sigma0=0.0)
    with pytest.raises(ConfigError, match=r"CMAESConfig.temperature must be .*>= 0.*got -1"):
        CMAESConfig(temperature=-1)
    with pytest.raises(ConfigError, match=r"CMAESConfig.features must be one of \['latent'"):
        CMAESConfig(features="state")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="CMAESConfig.covariance must be one of"):
        CMAESConfig(covariance="dense")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="CMAESConfig.reward_mode must be one of"):
        CMAESConfig(reward_mode="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="CMAESConfig.seed must be an int >= 0, got -3"):
        CMAESConfig(seed=-3)
    with pytest.raises(ConfigError, match="CMAESConfig.use_termination must be True or False"):
        CMAESConfig(use_termination=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"CMAESConfig.reset_share must be a number in \[0, 1\]"):
        CMAESConfig(reset_share=-0.1)
    with pytest.raises(ConfigError, match="CMAESConfig.precision must be one of"):
        CMAESConfig(precision="float16")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match="Unknown CMAESController setting 'populaton'.*'population'"
    ):
        CMAESController(pendulum, populaton=8)
    with pytest.raises(ConfigError, match=r"obs_type='pixels' is not an observation.*\['state'\]"):
        CMAESController(pendulum, obs_type="pixels")
    with pytest.raises(ConfigError, match="burn_in=9 exceeds the start bank's context of 4"):
        CMAESController(pendulum, burn_in=9)
    controller = CMAESController(pendulum, **SMALL)
    with pytest.raises(ConfigError, match=r"observation must have shape \(num_envs, 3\)"):
        controller.predict(np.zeros((2, 4), np.float32))
    with pytest.raises(ConfigError, match=r"params must have shape \(P, 4\)"):
        controller.imagined_returns(np.zeros((2, 5)), seed=0)
    with pytest.raises(ConfigError, match="generations must be a positive int"):
        controller.fit(0)


def test_one_generation_is_one_batch_of_population_times_episodes(pendulum, monkeypatch) -> None:
    controller = CMAESController(pendulum, **SMALL)
    calls: list[tuple[int, int]] = []
    rollout = controller.imagination.rollout

    def counted(start, horizon, **kwargs):
        calls.append((start.batch, horizon))
        return rollout(start, horizon, **kwargs)

    monkeypatch.setattr(controller.imagination, "rollout", counted)
    steps: list[int] = []
    step = controller.model.step

    def counted_step(state, latent, *args, **kwargs):
        steps.append(len(latent))
        return step(state, latent, *args, **kwargs)

    monkeypatch.setattr(controller.model, "step", counted_step)
    controller.fit(1)
    # one rollout of 6 candidates x 3 episodes, and 2 x 3 episodes (>= 5) of the CMA-ES mean
    assert controller.mean_copies == 2
    assert calls == [((6 + 2) * 3, 4)]
    assert steps == [24] * 4  # one batched model step per imagined step
    assert len(controller.history) == 1 and controller.generation == 1
    stats = controller.history[0]
    assert controller.best_return == stats.mean_controller == stats.kept  # the first mean: kept
    # keep="best": the candidates alone, the best one kept
    best = CMAESController(pendulum, keep="best", **SMALL)
    calls.clear()
    monkeypatch.setattr(best.imagination, "rollout", counted)
    best.fit(2)
    assert calls == [(18, 4)] * 2 and best.mean_copies == 0
    assert best.best_return == max(h.best for h in best.history)
    # with the state among the features: one step a call, still every row at once
    stateful = CMAESController(pendulum, features="latent+state", **SMALL)
    calls.clear()
    monkeypatch.setattr(stateful.imagination, "rollout", counted)
    stateful.fit(1)
    assert calls == [(24, 1)] * 4


def test_each_row_acts_with_its_own_candidate() -> None:
    space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    linear = LinearController(3, space)
    assert linear.num_params == 2 * 3 + 2
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(4, linear.num_params, generator=gen)
    features = torch.randn(4 * 5, 3, generator=gen)
    batched = linear.batched(params, features)
    for p in range(4):
        one = LinearController(3, space, params[p])
        rows = features[p * 5 : (p + 1) * 5]
        expected = 2.0 * torch.tanh(rows @ one.weight.T + one.bias)
        torch.testing.assert_close(batched[p * 5 : (p + 1) * 5], expected)
        torch.testing.assert_close(one(rows), expected)


def test_the_same_seed_evolves_the_same(pendulum) -> None:
    def run(seed: int) -> tuple[list[float], np.ndarray]:
        c = CMAESController(pendulum, seed=seed, **SMALL).fit(3)
        return [h.mean for h in c.history], c.controller.params.numpy()

    means, params = run(0)
    again_means, again_params = run(0)
    assert means == again_means
    np.testing.assert_array_equal(params, again_params)
    assert run(1)[0] != means


def test_the_temperature_reaches_the_model(pendulum, monkeypatch) -> None:
    controller = CMAESController(pendulum, temperature=1.15, **SMALL)
    assert controller.imagination.config.temperature == 1.15
    seen: list[float] = []
    step = controller.model.step

    def recording(state, latent, action, rng, temperature=1.0):
        seen.append(temperature)
        return step(state, latent, action, rng, temperature)

    monkeypatch.setattr(controller.model, "step", recording)
    controller.fit(1)
    assert seen == [1.15] * 4 and len(seen) == controller.config.horizon


@pytest.mark.parametrize("env", ["pendulum", "cartpole"])
def test_box_and_discrete_actions_in_real_v0(env, request) -> None:
    ckpt = request.getfixturevalue(env)
    controller = CMAESController(ckpt, **SMALL).fit(2)
    space = controller.action_space
    assert controller.best_return == max(h.mean_controller for h in controller.history)
    # saturated controllers still act inside the action space
    controller.controller.set_params(100 * torch.randn(controller.num_params))
    obs = np.random.default_rng(0).normal(0, 5, (7, *controller.observation_space.shape))
    actions, state = controller.predict(obs.astype(np.float32))
    assert state is None and len(actions) == 7
    assert all(space.contains(a) for a in actions)
    if env == "pendulum":
        assert actions.dtype == np.float32 and actions.shape == (7, 1)
    else:
        assert actions.dtype == np.int64 and actions.shape == (7,)
    returns = evaluate(controller, ckpt, episodes=2, num_envs=2, max_steps=5, deterministic=True)
    assert returns.shape == (2,) and np.isfinite(returns).all()


def test_the_discrete_family_with_its_state_plays_real_v0(checkpoint_dir) -> None:
    controller = CMAESController(
        checkpoint_dir, features="latent+state", population=2, episodes=1, horizon=2
    )
    assert controller.obs_type == "embeddings"  # code vectors, not code indices
    assert controller.state_size > 0 and controller.diagonal  # thousands of parameters
    controller.fit(1)
    with pytest.raises(ConfigError, match="reads the 'discrete' model's state.*real_env"):
        controller.predict(np.zeros((1, *controller.observation_space.shape), np.float32))
    stats = controller.play_real(2, num_envs=2, max_steps=3)
    assert stats.lengths.tolist() == [3, 3]


def test_save_and_load_give_the_same_actions(pendulum, cartpole, tmp_path: Path) -> None:
    controller = CMAESController(pendulum, temperature=0.5, **SMALL).fit(2)
    path = controller.save(tmp_path / "controller.safetensors")
    loaded = CMAESController.load(path, pendulum)
    assert loaded.config == controller.config
    assert loaded.best_return == controller.best_return and loaded.generation == 2
    obs = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs)[0], controller.predict(obs)[0])
    with pytest.raises(CheckpointError, match="Load it with the checkpoint it was evolved in"):
        CMAESController.load(path, cartpole)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        CMAESController.load(tmp_path / "junk.safetensors", pendulum)
    # a loaded controller evolves on, from where it was
    assert loaded.fit(1).generation == 3


def toy_step(model, target):
    """A model whose state never changes and whose reward is ``target(action)``."""

    def step(state, latent, action, rng, temperature=1.0):
        rng.uniform((1,))
        ends = torch.full((len(latent),), -30.0)
        return Prediction(
            latent.clone(),
            model.reward_coder.targets(target(action)).clamp(min=1e-9).log(),
            ends,
            state,
        )

    return step


def test_evolution_finds_the_known_best_action(pendulum, monkeypatch) -> None:
    ckpt = load_checkpoint(pendulum)
    target = lambda a: -((a[:, 0] - 1.3) ** 2)  # noqa: E731  (best action: 1.3)
    monkeypatch.setattr(ckpt.model, "step", toy_step(ckpt.model, target))
    controller = CMAESController(
        ckpt, population=8, episodes=4, horizon=3, sigma0=0.3, eval_episodes=32
    )
    controller.fit(20)
    first = controller.history[0]
    assert controller.best_return > first.mean + 1.0
    assert controller.best_return > -0.05 * 3  # close to the optimum, 0
    assert controller.history[-1].mean > first.mean
    # on dream episodes it was not selected on, too (the zero controller: about -5)
    held_out = controller.imagined_returns(controller.controller.params[None], seed=12345)
    assert held_out.mean() > -0.05 * 3
    bank = ckpt.start_bank  # the states the dream episodes start from
    states = bank.observations(1, np.arange(bank.size))[:, 0, 0].astype(np.float32)
    actions, _ = controller.predict(states)
    np.testing.assert_allclose(actions, 1.3, atol=0.2)


def test_zero_state_weights_give_the_latent_controllers_returns(pendulum) -> None:
    latent = CMAESController(pendulum, **SMALL)
    both = CMAESController(pendulum, features="latent+state", **SMALL)
    assert both.state_size == 3  # the ensemble's stack of one state (its member is an int)
    params = torch.randn(6, latent.num_params, generator=torch.Generator().manual_seed(0))
    weight = params[:, :3].view(6, 1, 3)
    padded = torch.cat([weight, torch.zeros(6, 1, 3)], 2).reshape(6, -1)
    params_both = torch.cat([padded, params[:, 3:]], 1)
    torch.testing.assert_close(
        both.imagined_returns(params_both, seed=5), latent.imagined_returns(params, seed=5)
    )


def test_the_example_runs_with_tiny_arguments(pendulum, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/cmaes_controller.py"),
            *("--checkpoint", str(pendulum)),
            *("--generations", "2", "--population", "4", "--rollouts", "2", "--horizon", "3"),
            *("--episodes", "2", "--num-envs", "2", "--max-steps", "4", "--reset-share", "0.5"),
            *("--save", str(tmp_path / "controller.safetensors")),
            *("--json", str(tmp_path / "result.json")),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, f"failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "CMA-ES controller (P=4 E=2 H=3" in proc.stdout and "Welch's t" in proc.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["controller_returns"]) == 2 and len(result["history"]) == 2
    assert (tmp_path / "controller.safetensors").is_file()
    assert result["settings"]["reset_share"] == 0.5
    bad = [sys.executable, str(ROOT / "examples/cmaes_controller.py"), "--episodes", "1"]
    proc = subprocess.run(bad, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 1 and "--episodes must be >= 2" in proc.stderr
