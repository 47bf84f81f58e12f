"""Every image world-model family on gymnasium specs beyond Atari: RGB frames, ``Box``
actions and real-valued rewards (issue 12). Atari behaviour (discrete actions, sign-clipped
rewards, grey frames) is pinned by the families' own test files."""

from __future__ import annotations

import pytest
import torch

from dreamenv.envs.spec import ActionSpec, GymSpec
from dreamenv.errors import ConfigError
from dreamenv.models import FAMILIES, WorldModel, build_model
from dreamenv.models.common import RewardCoder
from dreamenv.random_streams import BatchRandom

IMAGE_FAMILIES = sorted(set(FAMILIES) - {"ensemble"})
"""The families of image frames ("ensemble" models state vectors)."""

BOX = ActionSpec("continuous", 3, (-1.0, 0.0, -2.0), (1.0, 1.0, 2.0))
"""Three continuous dimensions with bounds of their own (the features rescale each)."""


def _spec(grayscale: bool, actions: ActionSpec, frame_stack: int = 1, size: int = 64) -> GymSpec:
    return GymSpec(
        env_id="CartPole-v1",
        observation="render",
        screen_size=size,
        grayscale=grayscale,
        frame_stack=frame_stack,
        actions=actions,
        reward_transform="none",
    )


SPECS = {
    # RGB frames stacked twice: 6 channels, of which the newest frame is 3
    "discrete-rgb": _spec(False, ActionSpec.discrete(2), frame_stack=2),
    "box3-grey": _spec(True, BOX),
}


def _model(family: str, spec: GymSpec) -> WorldModel:
    torch.manual_seed(0)
    return build_model(family, "tiny", spec, spec.action_spec)


def _actions(spec: GymSpec, *shape: int, seed: int = 0) -> torch.Tensor:
    """Random actions ``shape`` (int64) or ``(*shape, n)`` (floats within the bounds)."""
    g = torch.Generator().manual_seed(seed)
    a = spec.action_spec
    if a.kind == "discrete":
        return torch.randint(0, a.n, shape, generator=g)
    low, high = torch.tensor(a.low), torch.tensor(a.high)
    return low + (high - low) * torch.rand(*shape, a.n, generator=g)


def _batch(model: WorldModel, spec: GymSpec, b: int = 2, seq_len: int = 2) -> dict:
    steps = model.window_steps(seq_len)
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(b, steps, generator=g) * 5.0
    rewards[:, ::3] = 0.0
    return {
        "frames": torch.randint(0, 256, (b, steps + 1, *spec.frame_shape), generator=g).byte(),
        "actions": _actions(spec, b, steps),
        "rewards": rewards,
        "terminated": torch.zeros(b, steps, dtype=torch.bool),
        "mask": torch.ones(b, steps, dtype=torch.bool),
    }


def _step_action(model: WorldModel, spec: GymSpec, b: int) -> torch.Tensor:
    """One action of the dream per env: ``(B[, n])``, or a jumpy model's chunk."""
    if model.jump > 1:
        return _actions(spec, b, model.jump, seed=3)
    return _actions(spec, b, seed=3)


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_loss_is_finite_and_reaches_the_actions(family: str, spec_name: str) -> None:
    spec = SPECS[spec_name]
    model = _model(family, spec).train()
    batch = _batch(model, spec)
    features: list[torch.Tensor] = []
    plain = model.action_features

    def spy(actions: torch.Tensor) -> torch.Tensor:
        out = plain(actions).detach().requires_grad_(True)
        features.append(out)
        return out

    model.action_features = spy  # type: ignore[method-assign]
    if spec.action_spec.kind == "continuous":
        batch["actions"].requires_grad_(True)
    out = model.loss(batch, "joint", 0)
    assert torch.isfinite(out["loss"]), out
    assert {"reward_loss", "reward_acc"} <= set(out)
    assert torch.isfinite(out["reward_loss"]) and 0.0 <= float(out["reward_acc"]) <= 1.0
    out["loss"].backward()
    assert features and all(f.shape[-1] % model.num_actions == 0 for f in features)
    assert any(f.grad is not None and float(f.grad.abs().sum()) > 0 for f in features)
    if spec.action_spec.kind == "continuous":  # plain features: the raw actions get them too
        model.action_features = plain  # type: ignore[method-assign]
        batch["actions"].grad = None
        model.zero_grad()
        model.loss(batch, "joint", 0)["loss"].backward()
        assert batch["actions"].grad is not None and float(batch["actions"].grad.abs().sum()) > 0
    metrics = model.metrics(batch)
    assert 0.0 <= metrics["reward_acc"] <= 1.0


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_contract_shapes(family: str, spec_name: str) -> None:
    spec = SPECS[spec_name]
    model = _model(family, spec).eval()
    b, k = 2, 4
    frames = torch.randint(0, 256, (b, k + 1, *spec.frame_shape), dtype=torch.uint8)
    actions = _actions(spec, b, k - 1)
    action = _step_action(model, spec, b)
    assert model.action_space.contains(action[0].numpy())
    with torch.no_grad():
        embeddings = model.encode(frames.flatten(0, 1)).unflatten(0, (b, k + 1))
        latent, state = model.initial_state(embeddings[:, :k], actions)
        pred = model.step(state, latent, action, BatchRandom(b, "cpu"))
        filtered, _ = model.filter(state, latent, action, embeddings[:, k])
        decoded = model.decode(pred.next_latent)
    assert len(model.reward_support) == 41
    assert pred.reward_logits.shape == (b, len(model.reward_support))
    assert pred.termination_logits.shape == (b,)
    assert pred.next_latent.shape == latent.shape == filtered.shape
    assert torch.isfinite(pred.reward_logits.float()).all()
    assert decoded.dtype == torch.uint8 and decoded.shape == (b, *spec.frame_shape)
    for obs_type in model.obs_types:
        obs = model.observation(pred.next_latent, obs_type)
        assert tuple(obs.shape[1:]) == model.observation_space(obs_type).shape


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_filter_follows_the_game_as_a_burn_in_over_it_would(family: str) -> None:
    """Real-v0's state after each real step is the state a burn-in over the same real
    observations and actions gives (what a planner or a controller reading the state in
    the real game starts from, as it did in the dream)."""
    spec = SPECS["discrete-rgb"]
    if family == "rar":
        pytest.skip("rar's burn-in reads a context of frames at once (init), not a chain")
    model = _model(family, spec).eval()
    if model.jump > 1:
        pytest.skip("a jumpy model filters chunks of actions")
    b, k = 2, 5
    frames = torch.randint(0, 256, (b, k, *spec.frame_shape), dtype=torch.uint8)
    actions = _actions(spec, b, k - 1)
    with torch.no_grad():
        embeddings = model.encode(frames.flatten(0, 1)).unflatten(0, (b, k))
        latent, state = model.initial_state(embeddings[:, :1], actions[:, :0])
        for t in range(1, k):
            latent, state = model.filter(state, latent, actions[:, t - 1], embeddings[:, t])
            burned, burned_state = model.initial_state(embeddings[:, : t + 1], actions[:, :t])
            torch.testing.assert_close(latent, burned)
            for part, expected in zip(state, burned_state, strict=True):
                torch.testing.assert_close(part, expected)


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_a_confident_reward_head_recovers_real_rewards(family: str) -> None:
    model = _model(family, SPECS["box3-grey"])
    assert model.reward_coder.kind == "real"
    rewards = torch.tensor([0.3, -12.0, 0.0, 150.0, -0.01])
    logits = model.reward_coder.targets(rewards).clamp(min=1e-30).log()
    expected = torch.softmax(logits, -1) @ model.reward_values()
    torch.testing.assert_close(expected, rewards, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(RewardCoder("real").mean(logits), rewards, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_a_state_spec_is_a_config_error(family: str) -> None:
    spec = GymSpec(
        env_id="CartPole-v1", observation="state", state_size=4, actions=ActionSpec.discrete(2)
    )
    message = rf"the {family} family models image frames; for state vectors use family 'ensemble'"
    with pytest.raises(ConfigError, match=message):
        build_model(family, "tiny", spec, spec.action_spec)


UNSUPPORTED_SIZES = {"rssm": (32, 48), "mdnrnn": (32,)}
"""Screen sizes a family's encoder cannot take (the others take every GymSpec size)."""


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_small_screens_work_or_name_the_supported_sizes(family: str, size: int) -> None:
    spec = _spec(False, BOX, size=size)
    if size in UNSUPPORTED_SIZES.get(family, ()):
        with pytest.raises(ConfigError, match=rf"64.*got {size}|{size} is too small.*\[48, 64"):
            _model(family, spec)
        return
    model = _model(family, spec).eval()
    frames = torch.randint(0, 256, (2, 1, *spec.frame_shape), dtype=torch.uint8)
    with torch.no_grad():
        latent, _ = model.initial_state(
            model.encode(frames.flatten(0, 1)).unflatten(0, (2, 1)), _actions(spec, 2, 0)
        )
        assert model.decode(latent).shape == (2, *spec.frame_shape)
