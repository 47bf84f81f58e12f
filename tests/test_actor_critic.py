"""The Dreamer actor-critic: settings, lambda-returns, return normalisation, gradients in both
modes, seeding, known-answer toys, learning in a fitted dream, Real-v0, files, the loop with
real data, and the example script."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dreamenv
from dreamenv.agents.actor_critic import (
    ActorCriticConfig,
    ActorPolicy,
    DreamerActorCritic,
    ReturnNormalizer,
    lambda_returns,
    train_actor_critic_loop,
)
from dreamenv.checkpoint import load_checkpoint
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.models.base import Prediction
from dreamenv.train.fit import FitConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "horizon": 4,
    "batch": 8,
    "actor_hidden": 16,
    "critic_hidden": 16,
    "actor_layers": 1,
    "critic_layers": 1,
}


@pytest.fixture(scope="module")
def pendulum(gym_checkpoint) -> Path:
    return gym_checkpoint("Pendulum-v1", "ensemble")


@pytest.fixture(scope="module")
def cartpole(gym_checkpoint) -> Path:
    return gym_checkpoint("CartPole-v1", "ensemble")


def test_bad_settings_name_the_field_and_the_fix(pendulum: Path, cartpole: Path) -> None:
    with pytest.raises(ConfigError, match="ActorCriticConfig.horizon must be a positive int"):
        ActorCriticConfig(horizon=0)
    with pytest.raises(ConfigError, match=r"ActorCriticConfig.discount must be .* got 1.5"):
        ActorCriticConfig(discount=1.5)
    with pytest.raises(ConfigError, match="gradient must be one of.*Did you mean 'dynamics'"):
        ActorCriticConfig(gradient="dynamic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="return_low=0.9 must be below return_high=0.5"):
        ActorCriticConfig(return_low=0.9, return_high=0.5)
    with pytest.raises(ConfigError, match="min_std=2 must be below max_std=1"):
        ActorCriticConfig(min_std=2, max_std=1)
    with pytest.raises(ConfigError, match="entropy must be a finite number"):
        ActorCriticConfig(entropy=float("nan"))
    with pytest.raises(ConfigError, match="Unknown DreamerActorCritic setting 'horizn'.*'horizon'"):
        DreamerActorCritic(pendulum, horizn=3)
    with pytest.raises(ConfigError, match="gradient='dynamics' needs Box actions.*'reinforce'"):
        DreamerActorCritic(cartpole, gradient="dynamics", **TINY)
    with pytest.raises(
        ConfigError, match=r"obs_type of the '\w+' family must be one of \[.*\], got 'pixels'"
    ):
        DreamerActorCritic(pendulum, obs_type="pixels", **TINY)
    agent = DreamerActorCritic(pendulum, **TINY)
    with pytest.raises(ConfigError, match=r"observation must have shape \(num_envs, 3\)"):
        agent.predict(np.zeros((2, 4), np.float32))
    with pytest.raises(ConfigError, match="updates must be a positive int"):
        agent.train(0)


def test_lambda_returns_by_hand() -> None:
    rewards = torch.tensor([[1.0, 2.0]])
    values = torch.tensor([[0.0, 10.0, 20.0]])
    continues = torch.tensor([[1.0, 0.5]])
    # R_1 = 2 + 0.9 * 0.5 * 20 = 11;  R_0 = 1 + 0.9 * (0.5 * 10 + 0.5 * 11) = 10.45
    out = lambda_returns(rewards, values, continues, discount=0.9, lam=0.5)
    torch.testing.assert_close(out, torch.tensor([[10.45, 11.0]]))
    # lambda = 1: discounted rewards to the horizon plus the last value
    mc = lambda_returns(rewards, values, torch.ones(1, 2), discount=0.5, lam=1.0)
    torch.testing.assert_close(mc, torch.tensor([[1 + 0.5 * 2 + 0.25 * 20, 2 + 0.5 * 20]]))
    # lambda = 0: one-step targets
    td = lambda_returns(rewards, values, torch.ones(1, 2), discount=0.5, lam=0.0)
    torch.testing.assert_close(td, torch.tensor([[1 + 0.5 * 10, 2 + 0.5 * 20]]))


def test_return_normalisation_tracks_the_percentile_range() -> None:
    norm = ReturnNormalizer(decay=0.99, low=0.05, high=0.95)
    assert float(norm.update(torch.linspace(0, 100, 101))) == pytest.approx(90.0)
    assert float(norm.low) == pytest.approx(5.0) and float(norm.high) == pytest.approx(95.0)
    # an EMA: the next batch moves the percentiles by 1%
    assert float(norm.update(torch.linspace(0, 200, 101))) == pytest.approx(0.99 * 90 + 1.8)
    # small returns are not blown up: the scale is at least 1
    small = ReturnNormalizer()
    assert float(small.update(torch.linspace(-0.1, 0.1, 50))) == 1.0


def head_grad(agent: DreamerActorCritic) -> torch.Tensor:
    grad = agent.actor.net[-1].weight.grad
    assert grad is not None
    return grad


def test_dynamics_gradients_reach_the_actor_through_the_model(pendulum: Path) -> None:
    agent = DreamerActorCritic(pendulum, entropy=0.0, **TINY)
    assert agent.gradient == "dynamics"
    imagined = agent.imagine(agent.starts())
    assert imagined.rollout.rewards.requires_grad and imagined.features.requires_grad
    agent.losses(imagined)["actor_loss"].backward()
    assert head_grad(agent).abs().sum() > 0
    # an update touches the actor and the critic, never the world model
    agent = DreamerActorCritic(pendulum, **TINY)
    agent.update()
    assert all(p.grad is None for p in agent.model.parameters())
    assert head_grad(agent).abs().sum() > 0


def test_reinforce_gradients_reach_the_actor_through_log_probs(
    pendulum: Path, cartpole: Path
) -> None:
    agent = DreamerActorCritic(cartpole, entropy=0.0, **TINY)
    assert agent.gradient == "reinforce"
    imagined = agent.imagine(agent.starts())
    assert not imagined.rollout.rewards.requires_grad and imagined.log_probs.requires_grad
    agent.losses(imagined)["actor_loss"].backward()
    assert head_grad(agent).abs().sum() > 0
    # Box actions in reinforce mode too
    box = DreamerActorCritic(pendulum, gradient="reinforce", **TINY)
    box.losses(box.imagine(box.starts()))["actor_loss"].backward()
    assert head_grad(box).abs().sum() > 0


def test_the_same_seed_gives_the_same_training(pendulum: Path) -> None:
    def run(seed: int) -> tuple[list[dict[str, float]], torch.Tensor]:
        agent = DreamerActorCritic(pendulum, seed=seed, **TINY)
        rows = agent.train(3, progress=False)
        return rows, agent.actor.net[-1].weight.detach().clone()

    rows, weights = run(0)
    again, weights_again = run(0)
    assert rows == again
    torch.testing.assert_close(weights, weights_again, rtol=0, atol=0)
    other, _ = run(1)
    assert other != rows


def toy_model(model, target) -> None:
    """Replace ``model.step``: the state never changes, the reward is ``target(action)``."""

    def step(state, latent, action, rng, temperature=1.0):
        rng.uniform((1,))
        ends = torch.full((len(latent),), -30.0)
        return Prediction(
            latent.clone(),
            model.reward_coder.targets(target(action)).clamp(min=1e-9).log(),
            ends,
            state,
        )

    model.step = step


def test_the_box_actor_finds_the_known_best_action(pendulum: Path) -> None:
    ckpt = load_checkpoint(pendulum)
    toy_model(ckpt.model, lambda a: -((a[:, 0] - 1.3) ** 2))
    agent = DreamerActorCritic(ckpt, actor_lr=3e-3, seed=0, **TINY)
    assert agent.gradient == "dynamics"
    agent.train(300, progress=False)
    obs = agent.starts(update=10**6).latent.numpy()  # states of the start bank
    actions, _ = agent.predict(obs)
    np.testing.assert_allclose(actions, 1.3, atol=0.1)


def test_the_discrete_actor_finds_the_known_best_action(cartpole: Path) -> None:
    ckpt = load_checkpoint(cartpole)
    toy_model(ckpt.model, lambda a: (a == 1).float())
    agent = DreamerActorCritic(ckpt, actor_lr=3e-3, seed=0, **TINY)
    agent.train(60, progress=False)
    obs = agent.starts(update=10**6).latent.numpy()
    assert (agent.predict(obs)[0] == 1).all()


LEARN_FIT = FitConfig(
    epochs=1, warmup_epochs=0, batch_size=16, seq_len=4, updates_per_epoch=300, lr=3e-3,
    start_bank_size=64, start_context=4,
)  # fmt: skip
"""A fit of the session's 160 random steps long enough to learn CartPole's rewards and
ends and Pendulum's rewards (about 2 s each)."""


@pytest.fixture(scope="module")
def fitted(gym_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    made: dict[str, Path] = {}

    def get(env_id: str) -> Path:
        if env_id not in made:
            data = gym_checkpoint(env_id, "ensemble").parent / "data"
            out = tmp_path_factory.mktemp("fitted") / "model"
            made[env_id] = dreamenv.fit(
                data, out, family="ensemble", preset="tiny", config=LEARN_FIT, progress=False
            )
        return made[env_id]

    return get


@pytest.mark.parametrize(("env_id", "gradient", "gain"), [
    ("CartPole-v1", "reinforce", 0.5),  # about 4.8 -> 5.85: fewer imagined falls
    ("Pendulum-v1", "dynamics", 1.5),  # about -77.5 -> -73.5 (seeds 0-3: +3.0 to +4.7)
])  # fmt: skip
def test_the_imagined_return_improves_in_a_fitted_dream(
    fitted, env_id: str, gradient: str, gain: float
) -> None:
    settings = {**TINY, "horizon": 10, "batch": 32, "actor_lr": 1e-2}
    agent = DreamerActorCritic(fitted(env_id), seed=0, **settings)
    assert agent.gradient == gradient
    before = agent.imagined_return(batch=64, horizon=10)
    agent.train(40, progress=False)
    after = agent.imagined_return(batch=64, horizon=10)
    assert after > before + gain, (before, after)


@pytest.mark.parametrize("which", ["pendulum", "cartpole", "pong"])
def test_it_trains_and_acts_in_real_v0(which: str, request: pytest.FixtureRequest) -> None:
    name = {"pendulum": "pendulum", "cartpole": "cartpole", "pong": "checkpoint_dir"}[which]
    ckpt = request.getfixturevalue(name)
    agent = DreamerActorCritic(ckpt, **TINY)
    rows = agent.train(2, progress=False)
    assert len(rows) == 2 and all(np.isfinite(list(r.values())).all() for r in rows)
    returns = agent.evaluate(episodes=2, num_envs=2, max_steps=4)
    assert returns.shape == (2,) and np.isfinite(returns).all()
    obs = np.zeros((3, *agent.observation_space.shape), agent.observation_space.dtype)
    for deterministic in (True, False):
        actions, state = agent.predict(obs, deterministic=deterministic)
        assert state is None and len(actions) == 3
        assert all(agent.action_space.contains(a) for a in actions)
    if which == "pong":
        assert agent.obs_type == "embeddings" and agent.gradient == "reinforce"


def test_save_and_load_give_the_same_agent(pendulum: Path, cartpole: Path, tmp_path: Path) -> None:
    agent = DreamerActorCritic(pendulum, **TINY)
    agent.train(2, progress=False)
    agent.save(tmp_path / "agent")
    loaded = DreamerActorCritic.load(tmp_path / "agent")
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs)[0], agent.predict(obs)[0])
    sampled = agent.predict(obs, deterministic=False)[0]
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=False)[0], sampled)
    assert loaded.config == agent.config and loaded.updates == 2
    assert loaded.update() == agent.update()  # training continues exactly
    with pytest.raises(CheckpointError, match="was trained on"):
        DreamerActorCritic.load(tmp_path / "agent", checkpoint=cartpole)
    with pytest.raises(CheckpointError, match="Use a model of the same env and family"):
        agent.set_checkpoint(cartpole)
    with pytest.raises(CheckpointError, match="holds no actor-critic"):
        DreamerActorCritic.load(tmp_path / "missing")
    (tmp_path / "agent" / "weights.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="is damaged"):
        DreamerActorCritic.load(tmp_path / "agent")


def test_the_loop_collects_with_the_actor_and_refits(tmp_path: Path) -> None:
    fit = FitConfig(
        epochs=1, warmup_epochs=0, batch_size=4, seq_len=4, updates_per_epoch=2,
        start_bank_size=8, start_context=4,
    )  # fmt: skip
    rows = train_actor_critic_loop(
        "Pendulum-v1",
        tmp_path / "run",
        2,
        steps=64,
        epochs=1,
        updates=2,
        preset="tiny",
        fit_config=fit,
        config=ActorCriticConfig(**TINY),  # type: ignore[arg-type]
        collect_envs=2,
        eval_episodes=2,
        eval_envs=2,
        progress=False,
    )
    assert [r["iteration"] for r in rows] == [1, 2] and rows[1]["real_steps"] == 128
    assert all(len(r["returns"]) == 2 for r in rows)
    from dreamenv.data.store import EpisodeStore

    assert EpisodeStore.open(tmp_path / "run" / "data").num_steps >= 128
    agent = DreamerActorCritic.load(tmp_path / "run" / "agent-2")
    assert agent.updates == 4  # the second iteration went on training the first's agent
    policy = ActorPolicy(agent)
    actions = policy(np.zeros((3, 3), np.float32), np.random.default_rng(0))
    assert actions.shape == (3, 1) and (np.abs(actions) <= 2).all()
    with pytest.raises(ConfigError, match="Collect with the checkpoint's spec"):
        policy.observations(1, dataclasses.replace(agent.checkpoint.spec, frame_stack=2))


def test_the_example_runs_with_tiny_arguments(pendulum: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/dreamer_actor_critic.py"),
            *("--checkpoint", str(pendulum), "--updates", "2", "--horizon", "3"),
            *("--batch", "4", "--hidden", "8", "--episodes", "2", "--num-envs", "2"),
            *("--max-steps", "4", "--json", str(tmp_path / "result.json")),
            *("--save", str(tmp_path / "agent")),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, f"failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Dreamer actor-critic (dynamics, H=3 B=4, 2 updates)" in proc.stdout
    assert "Welch's t" in proc.stdout and (tmp_path / "result.json").exists()
    assert (tmp_path / "agent" / "actor_critic.json").is_file()
