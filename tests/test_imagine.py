"""The torch imagination API: no host sync in a rollout, gradients through the ensemble's
dynamics, branching, seeding, and agreement with Dream-v0 (tiny models)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamenv.checkpoint import load_checkpoint
from dreamenv.envs.vector import DreamVectorEnv
from dreamenv.errors import ConfigError
from dreamenv.imagine import Imagination, ImagineConfig, fan_out

SYNCS = ("cpu", "item", "numpy", "tolist", "__bool__", "__float__", "__int__", "__index__")
"""Tensor methods that copy a value to the host (a sync on a GPU)."""


@pytest.fixture(scope="module")
def pendulum(gym_checkpoint) -> Path:
    return gym_checkpoint("Pendulum-v1", "ensemble")


@pytest.fixture(scope="module")
def pixels(gym_checkpoint) -> Path:
    return gym_checkpoint(
        "Pendulum-v1", "rssm", observation="render", screen_size=64, grayscale=True
    )


@contextlib.contextmanager
def no_host_sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every tensor-to-host conversion raises inside the block."""

    def forbidden(name: str):
        def raise_(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"host sync: Tensor.{name} called inside a rollout")

        return raise_

    with monkeypatch.context() as m:
        for name in SYNCS:
            m.setattr(torch.Tensor, name, forbidden(name))
        yield


def test_the_sync_guard_catches_syncs(monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.ones(2)
    with no_host_sync(monkeypatch):
        for sync in (
            lambda: t[0].item(),
            lambda: float(t[0]),
            lambda: bool(t[0] > 0),
            lambda: t.cpu(),
            lambda: t.numpy(),
            lambda: t.tolist(),
            lambda: int(t[0]),
        ):
            with pytest.raises(AssertionError, match="host sync"):
                sync()
    assert t[0].item() == 1.0  # restored afterwards


@pytest.mark.parametrize("family", ["ensemble", "rssm"])
def test_a_rollout_has_no_host_sync(
    family: str, pendulum: Path, pixels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = pendulum if family == "ensemble" else pixels
    for config in (
        ImagineConfig(),
        ImagineConfig(reward_mode="sample", termination_mode="sample", grad=False),
        ImagineConfig(reward_mode="mode", precision="bfloat16"),
    ):
        imagination = Imagination(ckpt, config)
        start = imagination.from_start_bank(3, seed=0)
        linear = torch.nn.Linear(start.latent.shape[-1], 1)

        def policy(s: torch.Tensor, linear: torch.nn.Module = linear) -> torch.Tensor:
            return torch.tanh(linear(s))

        actions = torch.zeros(6, 4, 1)
        with no_host_sync(monkeypatch):
            branches = imagination.fan_out(start, 2)
            by_policy = imagination.rollout(start, 4, policy=policy)
            by_actions = imagination.rollout(branches, 4, actions=actions)
            returns = by_policy.returns(0.9) + by_actions.returns().view(3, 2).sum(-1)
        assert by_policy.latents.shape == (3, 5, *start.latent.shape[1:])
        assert by_actions.rewards.shape == by_actions.alive.shape == (6, 4)
        assert by_actions.terminations.shape == (6, 4) and by_actions.actions.shape == (6, 4, 1)
        assert torch.isfinite(returns).all()


def test_gradients_reach_the_policy_through_the_ensemble(pendulum: Path) -> None:
    imagination = Imagination(pendulum)
    start = imagination.from_start_bank(8, seed=1)
    torch.manual_seed(0)
    policy = torch.nn.Linear(3, 1)
    rollout = imagination.rollout(start, 5, policy=lambda s: 2 * torch.tanh(policy(s)))
    rollout.rewards.sum().backward()
    assert policy.weight.grad is not None
    assert torch.isfinite(policy.weight.grad).all() and policy.weight.grad.abs().sum() > 0
    # the state itself depends on the actions (reparameterised Gaussian step)
    actions = torch.zeros(8, 5, 1, requires_grad=True)
    imagination.rollout(start, 5, actions=actions).latents[:, -1].sum().backward()
    assert actions.grad is not None and actions.grad[:, :-1].abs().sum() > 0


def test_rssm_rewards_have_gradients_wrt_actions(pixels: Path) -> None:
    imagination = Imagination(pixels)
    start = imagination.from_start_bank(2, seed=0)
    actions = torch.zeros(2, 3, 1, requires_grad=True)
    imagination.rollout(start, 3, actions=actions).rewards[:, -1].sum().backward()
    assert actions.grad is not None and actions.grad[:, :-1].abs().sum() > 0


def test_grad_false_records_nothing(pendulum: Path) -> None:
    imagination = Imagination(pendulum, ImagineConfig(grad=False))
    start = imagination.from_start_bank(2, seed=0)
    rollout = imagination.rollout(start, 3, actions=torch.zeros(2, 3, 1, requires_grad=True))
    assert not rollout.rewards.requires_grad


def test_branches_are_independent_and_reproducible(pendulum: Path) -> None:
    imagination = Imagination(pendulum)
    start = imagination.from_start_bank(1, seed=0)
    actions = torch.zeros(5, 6, 1)
    first = imagination.rollout(imagination.fan_out(start, 5), 6, actions=actions)
    again = imagination.rollout(imagination.fan_out(start, 5), 6, actions=actions)
    torch.testing.assert_close(first.latents, again.latents, rtol=0, atol=0)
    assert (first.latents[:, 0] == start.latent).all()  # all branch from the same state
    ends = first.latents[:, -1]
    distinct = torch.cdist(ends, ends) + torch.eye(5)
    assert (distinct > 0).all(), "every pair of branches differs"
    # the bare fan_out repeats rows
    state, latent = fan_out(start.state, start.latent, 3)
    assert latent.shape[0] == 3 and all(s.shape[0] == 3 for s in state)


def test_same_seed_same_rollout_other_seed_other(pendulum: Path) -> None:
    imagination = Imagination(pendulum)
    actions = torch.linspace(-2, 2, 4 * 5).view(4, 5, 1)

    def rollout(seed: int):
        return imagination.rollout(imagination.from_start_bank(4, seed=seed), 5, actions=actions)

    a, b, c = rollout(3), rollout(3), rollout(4)
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)
    torch.testing.assert_close(a.rewards, b.rewards, rtol=0, atol=0)
    assert not torch.equal(a.latents, c.latents)
    # a start is not consumed: rolling out from it again gives the same trajectory
    start = imagination.from_start_bank(4, seed=3)
    first = imagination.rollout(start, 5, actions=actions)
    torch.testing.assert_close(
        imagination.rollout(start, 5, actions=actions).latents, first.latents
    )
    # and the final streams continue: the next steps differ from the first ones
    later = imagination.rollout(first.final, 5, actions=actions)
    assert later.latents.shape == first.latents.shape


@pytest.mark.parametrize("reward_mode", ["mean", "sample"])
def test_rollouts_from_the_start_bank_are_the_dream_envs(pendulum: Path, reward_mode: str) -> None:
    actions = np.linspace(-2, 2, 3 * 6, dtype=np.float32).reshape(3, 6, 1)
    env = DreamVectorEnv(str(pendulum), 3, reward_mode=reward_mode, use_termination=False)
    obs, _ = env.reset(seed=5)
    observed, rewards = [obs], []
    for t in range(6):
        obs, reward, *_ = env.step(actions[:, t])
        observed.append(obs)
        rewards.append(reward)
    config = ImagineConfig(reward_mode=reward_mode, use_termination=False, grad=False)  # type: ignore[arg-type]
    imagination = Imagination(load_checkpoint(pendulum), config)
    rollout = imagination.rollout(
        imagination.from_start_bank(3, seed=5), 6, actions=torch.as_tensor(actions)
    )
    np.testing.assert_allclose(rollout.latents.numpy(), np.stack(observed, 1), atol=1e-5)
    np.testing.assert_allclose(rollout.rewards.numpy(), np.stack(rewards, 1), atol=1e-4)
    assert (rollout.alive == 1).all()


def test_starts_from_observations_and_a_real_env(pendulum: Path) -> None:
    from dreamenv.envs.real import RealVectorEnv

    imagination = Imagination(pendulum)
    obs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]], np.float32)
    start = imagination.from_observations(obs[:, None])
    assert torch.equal(start.latent, torch.as_tensor(obs))
    real = RealVectorEnv(imagination.checkpoint, 2)
    try:
        first, _ = real.reset(seed=0)
        from_env = imagination.from_real_env(real)
        np.testing.assert_allclose(from_env.latent.numpy(), first)
    finally:
        real.close()


def test_a_real_env_starts_plans_from_the_state_its_game_led_to(checkpoint_dir: Path) -> None:
    """The discrete model's observation is the codes alone, but a planner starting from
    Real-v0 reads its ConvLSTM state too: the burn-in over the game so far, not a fresh one."""
    from dreamenv.envs.real import RealVectorEnv

    imagination = Imagination(checkpoint_dir)
    model = imagination.model
    real = RealVectorEnv(imagination.checkpoint, 2)
    try:
        observed = [real.reset(seed=0)[0]]
        imagination.from_real_env(real)  # planning starts with the games
        actions = np.array([[1, 0], [2, 1], [0, 2]])
        for a in actions:
            obs, _, terminated, truncated, _ = real.step(a)
            assert not (terminated | truncated).any()
            observed.append(obs)
        start = imagination.from_real_env(real)
    finally:
        real.close()
    codes = torch.as_tensor(np.stack(observed, 1)).view(2, len(observed), model.grid, model.grid)
    latent, state = model.initial_state(codes, torch.as_tensor(actions.T))
    assert torch.equal(start.latent, latent)
    for part, expected in zip(start.state, state, strict=True):
        torch.testing.assert_close(part, expected)
    assert any(float(part.abs().sum()) > 0 for part in start.state)  # not the zero state


def test_planning_from_a_real_env_mid_game_names_the_fix(checkpoint_dir: Path) -> None:
    from dreamenv.envs.real import RealVectorEnv

    imagination = Imagination(checkpoint_dir)
    real = RealVectorEnv(imagination.checkpoint, 2)
    try:
        real.reset(seed=0)
        real.step(np.array([1, 0]))  # an SB3 agent: Real-v0 follows the codes alone
        with pytest.raises(
            ConfigError,
            match=r"in envs \[0, 1\] since their games began.*"
            r"right after reset\(\)",
        ):
            imagination.from_real_env(real)
        real.reset(seed=1)
        assert imagination.from_real_env(real).batch == 2
    finally:
        real.close()


def test_bad_input_names_the_fix(pendulum: Path) -> None:
    imagination = Imagination(pendulum)
    start = imagination.from_start_bank(2, seed=0)
    with pytest.raises(ConfigError, match=r"actions must have shape \(2, 3, 1\)"):
        imagination.rollout(start, 3, actions=torch.zeros(2, 4, 1))
    with pytest.raises(ConfigError, match="exactly one of policy= .* got both"):
        imagination.rollout(start, 3, policy=lambda s: s[:, :1], actions=torch.zeros(2, 3, 1))
    with pytest.raises(ConfigError, match="exactly one of policy= .* got neither"):
        imagination.rollout(start, 3)
    with pytest.raises(ConfigError, match="horizon must be a positive int"):
        imagination.rollout(start, 0, actions=torch.zeros(2, 0, 1))
    with pytest.raises(ConfigError, match="continuous actions must be floats"):
        imagination.rollout(start, 3, actions=torch.zeros(2, 3, 1, dtype=torch.long))
    with pytest.raises(ConfigError, match="burn_in=9 exceeds the start bank's context of 4"):
        imagination.from_start_bank(2, burn_in=9)
    with pytest.raises(ConfigError, match=r"observations must have shape \(B, 1, 3\)"):
        imagination.from_observations(np.zeros((2, 4), np.float32))
    with pytest.raises(ConfigError, match="reward_mode must be one of"):
        ImagineConfig(reward_mode="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="temperature must be a finite number >= 0"):
        ImagineConfig(temperature=-1.0)
    with pytest.raises(ConfigError, match="needs a checkpoint's start bank"):
        Imagination(imagination.model).from_start_bank(2)
