"""The CEM planner: SB3's predict for Box and Discrete checkpoints, bounds, seeding, a toy
problem with a known answer, Real-v0 through evaluate(), and the example script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamenv.agents import CEMConfig, CEMPlanner
from dreamenv.checkpoint import load_checkpoint
from dreamenv.envs.real import RealVectorEnv
from dreamenv.errors import ConfigError
from dreamenv.evaluate import evaluate, play
from dreamenv.models.base import Prediction

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"horizon": 4, "candidates": 16, "iterations": 2, "elites": 4}


@pytest.fixture(scope="module")
def checkpoints(gym_checkpoint):
    return lambda env_id: gym_checkpoint(env_id, "ensemble")


def test_predict_on_box_actions(checkpoints) -> None:
    planner = CEMPlanner(checkpoints("Pendulum-v1"), **SMALL)
    obs = np.array([[1, 0, 0], [-1, 0, 1], [0, 1, -8], [0, -1, 8]], np.float32)
    for deterministic in (True, False):
        actions, state = planner.predict(obs, deterministic=deterministic)
        assert state is None
        assert actions.shape == (4, 1) and actions.dtype == np.float32
        assert (actions >= -2).all() and (actions <= 2).all()
    single, _ = planner.predict(obs[0])
    assert single.shape == (1,)
    assert planner.plan_params is not None and planner.plan_params[0].shape == (1, 4, 1)


def test_predict_on_discrete_actions(checkpoints) -> None:
    planner = CEMPlanner(checkpoints("CartPole-v1"), **SMALL)
    obs = np.zeros((3, 4), np.float32)
    for deterministic in (True, False):
        actions, _ = planner.predict(obs, deterministic=deterministic)
        assert actions.shape == (3,) and actions.dtype == np.int64
        assert set(actions.tolist()) <= {0, 1}


def test_the_same_seed_plans_the_same(checkpoints) -> None:
    obs = np.array([[1, 0, 0], [-1, 0, 1]], np.float32)

    def plan(seed: int) -> np.ndarray:
        planner = CEMPlanner(checkpoints("Pendulum-v1"), seed=seed, **SMALL)
        return np.stack([planner.predict(obs)[0] for _ in range(3)])

    np.testing.assert_array_equal(plan(0), plan(0))
    assert not np.array_equal(plan(0), plan(1))


def toy_step(model, target):
    """A model whose state never changes and whose reward is ``target(action)``."""

    def step(state, latent, action, rng, temperature=1.0):
        rng.uniform((1,))
        reward = target(action)
        ends = torch.full((len(latent),), -30.0)
        return Prediction(
            latent.clone(), model.reward_coder.targets(reward).clamp(min=1e-9).log(), ends, state
        )

    return step


def test_the_planner_finds_the_known_best_box_action(checkpoints, monkeypatch) -> None:
    ckpt = load_checkpoint(checkpoints("Pendulum-v1"))
    target = lambda a: -((a[:, 0] - 1.3) ** 2)  # noqa: E731  (best action: 1.3)
    monkeypatch.setattr(ckpt.model, "step", toy_step(ckpt.model, target))
    planner = CEMPlanner(ckpt, horizon=3, candidates=64, iterations=5, elites=8, seed=0)
    actions, _ = planner.predict(np.zeros((4, 3), np.float32))
    np.testing.assert_allclose(actions, 1.3, atol=0.1)
    random = np.random.default_rng(0).uniform(-2, 2, (1000, 1)).astype(np.float32)
    planned_reward = target(torch.as_tensor(actions)).mean()
    assert planned_reward > target(torch.as_tensor(random)).mean() + 1.0
    again = CEMPlanner(ckpt, horizon=3, candidates=64, iterations=5, elites=8, seed=0)
    np.testing.assert_array_equal(again.predict(np.zeros((4, 3), np.float32))[0], actions)


def test_the_planner_finds_the_known_best_discrete_action(checkpoints, monkeypatch) -> None:
    ckpt = load_checkpoint(checkpoints("CartPole-v1"))
    monkeypatch.setattr(ckpt.model, "step", toy_step(ckpt.model, lambda a: (a == 1).float()))
    planner = CEMPlanner(ckpt, horizon=3, candidates=32, iterations=3, elites=4)
    actions, _ = planner.predict(np.zeros((5, 4), np.float32))
    assert (actions == 1).all()


def test_evaluate_plays_the_planner_in_real_v0(checkpoints) -> None:
    ckpt = checkpoints("Pendulum-v1")
    planner = CEMPlanner(ckpt, **SMALL)
    returns = evaluate(planner, ckpt, episodes=1, num_envs=1, max_steps=5, deterministic=True)
    assert returns.shape == (1,) and np.isfinite(returns).all()
    # following a Real-v0 env's model state instead of rebuilding it from the observation
    env = RealVectorEnv(ckpt, 2)
    try:
        follower = CEMPlanner(ckpt, real_env=env, **SMALL)
        stats = play(env, follower.act, 2, max_steps=3)
        assert stats.lengths.tolist() == [3, 3]
    finally:
        env.close()


def test_bad_settings_name_the_fix(checkpoints) -> None:
    ckpt = checkpoints("Pendulum-v1")
    with pytest.raises(ConfigError, match="Unknown CEMPlanner setting 'horizn'.*'horizon'"):
        CEMPlanner(ckpt, horizn=3)
    with pytest.raises(ConfigError, match="elites=20 exceeds candidates=10"):
        CEMConfig(candidates=10, elites=20)
    with pytest.raises(ConfigError, match="CEMConfig.horizon must be a positive int"):
        CEMConfig(horizon=0)
    with pytest.raises(ConfigError, match="CEMConfig.momentum must be a finite number"):
        CEMConfig(momentum=1.5)
    planner = CEMPlanner(ckpt, **SMALL)
    with pytest.raises(ConfigError, match=r"observation must have shape \(num_envs, 3\)"):
        planner.predict(np.zeros((2, 4), np.float32))


def test_a_recurrent_model_needs_the_real_env_it_plans_in(gym_checkpoint) -> None:
    ckpt = gym_checkpoint(
        "Pendulum-v1", "rssm", observation="render", screen_size=64, grayscale=True
    )
    assert not CEMPlanner.rebuilds_state(load_checkpoint(ckpt).model)
    with pytest.raises(ConfigError, match="'rssm'.*Pass real_env=RealVectorEnv"):
        CEMPlanner(ckpt, **SMALL)


@pytest.mark.parametrize("family", ["ensemble", "rssm"])
def test_the_example_runs_with_tiny_arguments(gym_checkpoint, family, tmp_path: Path) -> None:
    pixels = {"observation": "render", "screen_size": 64, "grayscale": True}
    ckpt = gym_checkpoint("Pendulum-v1", family, **(pixels if family == "rssm" else {}))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/cem_planner.py"),
            "--checkpoint",
            str(ckpt),
            *("--horizon", "3", "--candidates", "8", "--iterations", "2", "--elites", "2"),
            *("--episodes", "2", "--num-envs", "2", "--max-steps", "4"),
            *("--json", str(tmp_path / "result.json")),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, f"failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "CEM planner (H=3 N=8 J=2 K=2" in proc.stdout
    assert "Welch's t" in proc.stdout and (tmp_path / "result.json").exists()
