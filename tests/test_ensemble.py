"""The probabilistic-ensemble family (PETS, Chua et al. 2018) for state-vector envs."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dreamenv.checkpoint import config_from_dict
from dreamenv.envs.atari import AtariSpec
from dreamenv.envs.spec import ActionSpec, GymSpec
from dreamenv.errors import ConfigError
from dreamenv.models import FAMILIES, build_model
from dreamenv.models.ensemble import PRESETS, EnsembleConfig, EnsembleWorldModel
from dreamenv.random_streams import BatchRandom, key_from_seed

CARTPOLE = GymSpec(
    env_id="CartPole-v1", observation="state", state_size=4, actions=ActionSpec.discrete(2)
)
PENDULUM = GymSpec(
    env_id="Pendulum-v1",
    observation="state",
    state_size=3,
    frame_stack=2,
    actions=ActionSpec("continuous", 1, (-2.0,), (2.0,)),
)


def _model(spec: GymSpec = CARTPOLE, seed: int = 0, **overrides) -> EnsembleWorldModel:
    torch.manual_seed(seed)
    return build_model("ensemble", "tiny", spec, spec.actions, overrides or None)


def _rng(batch: int, seed: int = 0) -> BatchRandom:
    rng = BatchRandom(batch, "cpu")
    rng.set_keys(torch.arange(batch), [key_from_seed(seed + i) for i in range(batch)])
    return rng


def _actions(spec: GymSpec, *shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if spec.actions.kind == "discrete":
        return torch.randint(0, spec.actions.n, shape, generator=gen)
    low, high = spec.actions.low[0], spec.actions.high[0]
    return low + (high - low) * torch.rand(*shape, spec.actions.n, generator=gen)


def _batch(spec: GymSpec, b: int = 3, steps: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, steps)
    mask[0, -1] = 0
    return {
        "frames": torch.randn(b, steps + 1, *spec.frame_shape, generator=gen),
        "actions": _actions(spec, b, steps, seed=seed),
        "rewards": torch.randn(b, steps, generator=gen),
        "terminated": torch.zeros(b, steps).bool(),
        "mask": mask,
    }


def _rollout(model, b: int, steps: int, seed: int, temperature: float = 1.0, rows=None):
    """Latents ``(b, steps, D)`` and members ``(b, steps)`` of a dream rollout from fixed
    starts and actions, env ``i`` seeded ``seed + i``; ``rows`` picks envs of that batch
    (their starts, actions and seeds) to roll out alone."""
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(b, *model.spec.frame_shape, generator=gen)
    actions = _actions(model.spec, b, steps, seed=1)
    keys = [key_from_seed(seed + i) for i in range(b)]
    if rows is not None:
        frames, actions, keys = frames[rows], actions[rows], [keys[i] for i in rows]
    n = len(keys)
    rng = BatchRandom(n, "cpu")
    rng.set_keys(torch.arange(n), keys)
    latent, state = model.initial_state(model.encode(frames)[:, None], torch.zeros(n, 0).long())
    latents, members = [], []
    for k in range(steps):
        pred = model.step(state, latent, actions[:, k], rng, temperature)
        latent, state = pred.next_latent, pred.state
        latents.append(latent)
        members.append(state[1])
    return torch.stack(latents, 1), torch.stack(members, 1)


def test_family_is_registered_with_its_presets() -> None:
    assert FAMILIES["ensemble"] is EnsembleWorldModel
    assert set(PRESETS) == {"paper", "small", "tiny"}
    paper = PRESETS["paper"]
    assert (paper.members, paper.hidden, paper.layers) == (5, 200, 4)
    assert paper.member_per == "episode"
    assert EnsembleWorldModel.has_warmup is False
    assert EnsembleWorldModel.obs_types == ("state",)


@pytest.mark.parametrize("spec", [CARTPOLE, PENDULUM], ids=["discrete", "continuous"])
def test_contract_shapes(spec: GymSpec) -> None:
    model = _model(spec).eval()
    b, (stack, d) = 3, spec.frame_shape
    frames = torch.randn(b, stack, d)
    embedding = model.encode(frames)
    assert embedding.shape == (b, stack, d) and embedding.dtype == torch.float32
    context = torch.randn(b, 2, stack, d)
    latent, state = model.initial_state(context, _actions(spec, b, 1))
    assert torch.equal(latent, context[:, -1, -1])
    assert state[0].shape == (b, stack, d) and state[1].tolist() == [-1] * b
    pred = model.step(state, latent, _actions(spec, b), _rng(b))
    assert pred.next_latent.shape == (b, d) and pred.next_latent.dtype == torch.float32
    assert pred.reward_logits.shape == (b, len(model.reward_support)) == (b, 41)
    assert pred.termination_logits.shape == (b,)
    assert pred.state[0].shape == (b, stack, d)
    assert torch.equal(pred.state[0][:, -1], pred.next_latent)
    assert torch.equal(pred.state[0][:, :-1], state[0][:, 1:])  # the stack shifts
    assert ((pred.state[1] >= 0) & (pred.state[1] < 3)).all()
    real = torch.randn(b, stack, d)
    filtered, fstate = model.filter(pred.state, pred.next_latent, _actions(spec, b), real)
    assert torch.equal(filtered, real[:, -1]) and torch.equal(fstate[0], real)
    assert torch.equal(fstate[1], pred.state[1])
    space = model.observation_space("state")
    assert space == gym.spaces.Box(-np.inf, np.inf, (d,), np.float32)
    obs = model.observation(pred.next_latent, "state")
    assert space.contains(obs[0].detach().numpy())
    assert model.action_space == spec.actions.space()
    decoded = model.decode(pred.next_latent)
    assert decoded.shape == (b, *spec.frame_shape) and decoded.dtype == torch.float32
    assert torch.equal(decoded[:, -1], pred.next_latent)
    batch = _batch(spec)
    model.train()
    losses = model.loss(batch, "joint", 0)
    assert losses["loss"].requires_grad and losses["loss"].dim() == 0
    assert {"state_nll", "reward_loss", "termination_loss"} <= set(losses)
    metrics = model.eval().metrics(batch)
    expected = {"state_mse", "nochange_mse", "open_loop_mse", "reward_acc", "reward_mae"}
    assert expected | {"termination_acc", "termination_recall"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())


def test_image_specs_and_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="models state vectors.*'discrete', 'rssm'"):
        build_model("ensemble", "tiny", AtariSpec("pong"), 6)
    image = GymSpec(env_id="CarRacing-v3", actions=ActionSpec.discrete(5))
    with pytest.raises(ConfigError, match="models state vectors"):
        build_model("ensemble", "tiny", image, image.actions)
    model = _model()
    with pytest.raises(ConfigError, match="encodes float state vectors, got dtype torch.uint8"):
        model.encode(torch.zeros(2, 1, 4, dtype=torch.uint8))
    with pytest.raises(ConfigError, match=r"frames must have shape \(B, 1, 4\).*\(2, 1, 5\)"):
        model.encode(torch.zeros(2, 1, 5))
    with pytest.raises(ConfigError, match=r"embeddings must have shape \(B, K, 1, 4\)"):
        model.initial_state(torch.zeros(2, 1, 4), torch.zeros(2, 0).long())
    with pytest.raises(
        ConfigError,
        match=r"obs_type of the 'ensemble' family must be one of \[.*'state'.*\], got 'pixels'",
    ):
        model.observation_space("pixels")
    with pytest.raises(ConfigError, match="phase must be 'warmup' or 'joint'"):
        model.loss(_batch(CARTPOLE), "pretrain", 0)
    with pytest.raises(ConfigError, match=r"batch\['frames'\] must have shape"):
        model.loss(_batch(PENDULUM), "joint", 0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"member_per": "never"}, "member_per must be 'episode'.*got 'never'"),
        ({"members": 0}, "members must be a positive int, got 0"),
        ({"min_logvar_init": 1.0}, "min_logvar_init=1.0 must be below max_logvar_init=0.5"),
        ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0"),
        ({"nll_beta": 2.0}, r"nll_beta must be a number in \[0, 1\]"),
    ],
)
def test_bad_config_is_a_clear_error(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EnsembleConfig(**overrides)


def _linear_batch(b: int, steps: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A noisy linear system in CartPole's shapes: ``s' = s + 0.1 (A s + u_a)``, reward 1
    when ``s'_0 > 0``, and the episode ends when ``|s'_0| > 2``."""
    a = torch.tensor(
        [[0.0, 1.0, 0.0, 0.0], [-1.0, -0.1, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0], [0.3, 0.0, -1.0, 0.0]]
    )
    push = torch.tensor([[0.0, -1.0, 0.0, 0.5], [0.0, 1.0, 0.0, -0.5]])
    actions = torch.randint(0, 2, (b, steps), generator=gen)
    s = torch.randn(b, 4, generator=gen)
    states = [s]
    for k in range(steps):
        s = s + 0.1 * (s @ a.T + push[actions[:, k]])
        s = s + 0.01 * torch.randn(b, 4, generator=gen)
        states.append(s)
    frames = torch.stack(states, 1)[:, :, None]  # (B, L+1, 1, 4)
    nxt = frames[:, 1:, 0, 0]
    return {
        "frames": frames,
        "actions": actions,
        "rewards": (nxt > 0).float(),
        "terminated": nxt.abs() > 2.0,
        "mask": torch.ones(b, steps),
    }


def test_fits_a_linear_system_better_than_no_change() -> None:
    model = _model(seed=1)
    gen = torch.Generator().manual_seed(0)
    held_out = _linear_batch(64, 8, torch.Generator().manual_seed(99))
    optimizer = torch.optim.Adam(model.param_groups(3e-3))
    losses = []
    model.train()
    for step in range(300):
        out = model.loss(_linear_batch(32, 8, gen), "joint", step)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["state_nll"]))
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 1.0
    metrics = model.eval().metrics(held_out)
    assert metrics["state_mse"] < 0.2 * metrics["nochange_mse"]
    assert metrics["open_loop_mse"] < metrics["nochange_mse"]
    assert metrics["reward_acc"] > 0.85
    assert metrics["termination_acc"] > 0.9


def test_same_seed_same_rollout_and_envs_are_independent_of_the_batch() -> None:
    model = _model().eval()
    first, _ = _rollout(model, 3, 6, seed=5)
    again, _ = _rollout(model, 3, 6, seed=5)
    other, _ = _rollout(model, 3, 6, seed=6)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    alone, _ = _rollout(model, 3, 6, seed=5, rows=[1])  # env 1 rolled out on its own
    torch.testing.assert_close(alone[0], first[1])


def test_one_member_per_episode_or_per_step() -> None:
    model = _model(members=3).eval()
    _, members = _rollout(model, 4, 12, seed=0)
    assert (members >= 0).all()
    assert (members == members[:, :1]).all()  # fixed for the episode
    step_model = _model(members=3, member_per="step").eval()
    _, members = _rollout(step_model, 4, 12, seed=0)
    assert all(len(set(row.tolist())) > 1 for row in members)


def test_temperature_scales_the_noise() -> None:
    model = _model(members=1).eval()
    cold_a, _ = _rollout(model, 2, 4, seed=0, temperature=0.0)
    cold_b, _ = _rollout(model, 2, 4, seed=7, temperature=0.0)
    assert torch.equal(cold_a, cold_b)  # one member, no noise: the mean
    warm, _ = _rollout(model, 2, 4, seed=0, temperature=1.0)
    assert not torch.allclose(cold_a, warm)


def test_normalisation_statistics_follow_the_masked_training_data() -> None:
    model = _model(PENDULUM)
    first, second = _batch(PENDULUM, seed=1), _batch(PENDULUM, seed=2)
    model.eval().loss(first, "joint", 0)
    assert float(model.stats_count) == 0  # eval mode leaves the statistics alone
    model.train()
    model.loss(first, "joint", 0)
    model.loss(second, "joint", 1)
    states, deltas = [], []
    for batch in (first, second):
        keep = batch["mask"].bool()
        newest = batch["frames"][:, :-1, -1][keep].double()
        states.append(newest)
        deltas.append(batch["frames"][:, 1:, -1][keep].double() - newest)
    states, deltas = torch.cat(states), torch.cat(deltas)
    assert float(model.stats_count) == len(states) == 22
    mean, std, delta_mean, delta_std = model.normalizer()
    torch.testing.assert_close(mean, states.mean(0).float())
    torch.testing.assert_close(std, states.std(0, unbiased=False).float())
    torch.testing.assert_close(delta_mean, deltas.mean(0).float())
    torch.testing.assert_close(delta_std, deltas.std(0, unbiased=False).float())


def test_save_load_round_trip_reproduces_outputs(tmp_path) -> None:
    model = _model(PENDULUM, seed=0).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(3):
        out = model.loss(_batch(PENDULUM, seed=step), "joint", step)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.st")
    loaded = _model(PENDULUM, seed=1).eval()
    fresh, _ = _rollout(loaded, 2, 5, seed=3)
    loaded.load_state_dict(load_file(tmp_path / "w.st"))
    assert float(loaded.stats_count) == float(model.stats_count) > 0
    expected, _ = _rollout(model, 2, 5, seed=3)
    got, _ = _rollout(loaded, 2, 5, seed=3)
    assert torch.equal(expected, got) and not torch.allclose(expected, fresh)
    batch = _batch(PENDULUM, seed=9)
    assert model.metrics(batch) == pytest.approx(loaded.metrics(batch), nan_ok=True)
    config = config_from_dict(EnsembleConfig, dataclasses.asdict(model.config))
    assert config == model.config


def test_bootstrap_weights_each_member_differently() -> None:
    model = _model(bootstrap=True).train()
    batch = _batch(CARTPOLE)
    torch.manual_seed(0)
    a = model.loss(batch, "joint", 0)["state_nll"]
    b = model.loss(batch, "joint", 0)["state_nll"]
    assert torch.isfinite(a) and not torch.equal(a, b)


def test_a_dream_of_an_env_that_never_terminates_does_not_end_early(gym_checkpoint) -> None:
    """Pendulum only truncates: its fitted termination head, started at the data's rate,
    must not end imagined episodes before the horizon."""
    from dreamenv import DreamVectorEnv

    envs = DreamVectorEnv(gym_checkpoint("Pendulum-v1", "ensemble"), 16, horizon=40)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    ends = 0
    for _ in range(39):
        _, _, terminated, truncated, _ = envs.step(envs.action_space.sample())
        ends += int(terminated.sum())
        assert not truncated.any()
    assert ends == 0


def test_forced_step_heads_read_the_real_next_state() -> None:
    model = _model(PENDULUM, members=3).eval()
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(2, *PENDULUM.frame_shape, generator=gen)
    real = torch.randn(2, *PENDULUM.frame_shape, generator=gen)
    action = _actions(PENDULUM, 2, seed=1)
    with torch.no_grad():
        latent, (stack, _) = model.initial_state(model.encode(frames)[:, None], action[:, :0])
        state = (stack, torch.tensor([0, 2]))  # each env's member, as after its first step
        forced = model.forced_step(state, latent, action, model.encode(real), _rng(2, seed=5))
        again = model.forced_step(state, latent, action, model.encode(real), _rng(2, seed=9))
        drawn = model.step(state, latent, action, _rng(2, seed=5))
    torch.testing.assert_close(forced.reward_logits, again.reward_logits)  # whatever is drawn
    torch.testing.assert_close(forced.next_latent, drawn.next_latent)
    assert not torch.equal(forced.reward_logits, drawn.reward_logits)
