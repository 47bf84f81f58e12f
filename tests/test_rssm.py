"""The RSSM family (PlaNet / Dreamer), for Gaussian and categorical latents."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dreamenv.envs.atari import AtariSpec
from dreamenv.errors import ConfigError
from dreamenv.models.base import FAMILIES, build_model, resolve_config
from dreamenv.models.common import NLL_CONTEXT
from dreamenv.models.rssm import RSSMConfig, RSSMWorldModel
from dreamenv.random_streams import BatchRandom, key_from_seed

SPEC = AtariSpec("pong", screen_size=64)
ACTIONS = 6
KINDS = ("gaussian", "categorical")


def _model(kind: str, **overrides: object) -> RSSMWorldModel:
    torch.manual_seed(0)
    return build_model("rssm", "tiny", SPEC, ACTIONS, {"stochastic": kind, **overrides})


@pytest.fixture(scope="module", params=KINDS)
def model(request: pytest.FixtureRequest) -> RSSMWorldModel:
    return _model(request.param).eval()


def _frames(*shape: int, seed: int = 0, spec: AtariSpec = SPEC) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, *spec.frame_shape), generator=gen, dtype=torch.uint8)


def _rng(batch: int, seed: int = 0) -> BatchRandom:
    rng = BatchRandom(batch, "cpu")
    rng.set_keys(torch.arange(batch), [key_from_seed(seed + i) for i in range(batch)])
    return rng


def _batch(b: int = 2, steps: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, steps, dtype=torch.bool)
    mask[-1, -1] = False
    terminated = torch.zeros(b, steps, dtype=torch.bool)
    terminated[0, -1] = True
    return {
        "frames": _frames(b, steps + 1, seed=seed),
        "actions": torch.randint(0, ACTIONS, (b, steps), generator=gen),
        "rewards": torch.randint(-1, 2, (b, steps), generator=gen).float() * 3.0,
        "terminated": terminated,
        "mask": mask,
    }


def _moving_square(b: int, n: int) -> torch.Tensor:
    """Black frames with a white square moving right: learnable by a tiny model."""
    frames = torch.zeros(b, n, *SPEC.frame_shape, dtype=torch.uint8)
    for i in range(b):
        for t in range(n):
            x = 8 * (i + t)
            frames[i, t, :, 20:36, x : x + 16] = 255
    return frames


def _start(model: RSSMWorldModel, b: int = 2, k: int = 3):
    with torch.no_grad():
        emb = model.encode(_frames(b * k)).view(b, k, -1)
        return model.initial_state(emb, torch.arange(b * (k - 1)).view(b, k - 1) % ACTIONS)


# --- config and construction -------------------------------------------------------------
def test_rssm_is_registered_with_presets() -> None:
    assert FAMILIES["rssm"] is RSSMWorldModel
    assert RSSMWorldModel.has_warmup is False
    assert RSSMWorldModel.obs_types == ("state", "pixels")
    paper = RSSMWorldModel.presets["paper"]
    assert (paper.deter_size, paper.stoch_size, paper.hidden_size) == (200, 30, 200)
    assert (paper.encoder_depth, paper.min_std, paper.free_nats) == (32, 0.1, 3.0)
    categorical = resolve_config("rssm", "paper", {"stochastic": "categorical"})
    assert (categorical.categoricals, categorical.classes, categorical.kl_balance) == (32, 32, 0.8)
    assert categorical.stoch_features == 1024
    assert set(RSSMWorldModel.presets) >= {"paper", "small", "tiny"}


def test_bad_stochastic_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"stochastic must be one of \['gaussian', 'categorical'\], got 'mixture'"
    ):
        RSSMConfig(stochastic="mixture")
    with pytest.raises(ConfigError, match=r"got 'vq'"):
        build_model("rssm", "tiny", SPEC, ACTIONS, {"stochastic": "vq"})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kl_balance", 1.5, r"kl_balance must lie in \[0, 1\]"),
        ("free_nats", -1.0, r"free_nats must be a number >= 0, got -1.0"),
        ("deter_size", 0, r"deter_size must be a positive int, got 0"),
        ("conv_activation", "tanh", r"conv_activation must be one of \['elu', 'relu'\]"),
    ],
)
def test_bad_fields_are_config_errors(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RSSMConfig(**{field: value})


def test_bad_screen_size_is_a_config_error() -> None:
    spec = SimpleNamespace(frame_shape=(4, 72, 72))
    with pytest.raises(ConfigError, match=r"multiple of 16 and >= 64 .* got 72"):
        RSSMWorldModel(RSSMWorldModel.presets["tiny"], spec, ACTIONS)


@pytest.mark.parametrize("shape", [(4, 64, 64), (4, 96, 96), (1, 80, 80)])
def test_encoder_and_decoder_fit_every_screen(shape: tuple[int, int, int]) -> None:
    spec = SimpleNamespace(frame_shape=shape)
    model = RSSMWorldModel(RSSMWorldModel.presets["tiny"], spec, ACTIONS).eval()
    frames = torch.randint(0, 256, (2, *shape), dtype=torch.uint8)
    with torch.no_grad():
        latent, _ = model.initial_state(model.encode(frames)[:, None], torch.zeros(2, 0).long())
        decoded = model.decode(latent)
    assert decoded.shape == (2, *shape) and decoded.dtype == torch.uint8


def test_tiny_is_small_and_paper_is_planet_sized() -> None:
    assert _model("gaussian").parameter_counts()["total"] < 40_000
    paper = build_model("rssm", "paper", SPEC, ACTIONS)
    assert paper.cell.gru.hidden_size == 200
    assert paper.features == 230


# --- the contract ----------------------------------------------------------------------
def test_encode_is_memoryless(model: RSSMWorldModel) -> None:
    frames = _frames(3)
    with torch.no_grad():
        together = model.encode(frames)
        alone = model.encode(frames[1:2])
    assert together.shape == (3, model.encoder.out_size) and together.dtype == torch.float32
    torch.testing.assert_close(together[1:2], alone)


def test_initial_state_shapes_and_determinism(model: RSSMWorldModel) -> None:
    for k in (1, 3):
        latent, state = _start(model, b=2, k=k)
        assert latent.shape == (2, model.features)
        assert [s.shape for s in state] == [
            (2, model.config.deter_size),
            (2, model.config.stoch_features),
        ]
        torch.testing.assert_close(latent, torch.cat(state, -1))
    torch.manual_seed(1)
    again, _ = _start(model, b=2, k=3)
    torch.manual_seed(2)
    torch.testing.assert_close(_start(model, b=2, k=3)[0], again, rtol=0, atol=0)


def test_initial_state_is_filtering_from_a_zero_state(model: RSSMWorldModel) -> None:
    emb = model.encode(_frames(2 * 3)).view(2, 3, -1).detach()
    actions = torch.tensor([[1, 2], [3, 4]])
    with torch.no_grad():
        latent, state = model.initial_state(emb, actions)
        first, st = model.initial_state(emb[:, :1], actions[:, :0])
        for k in (1, 2):
            first, st = model.filter(st, first, actions[:, k - 1], emb[:, k])
    torch.testing.assert_close(latent, first)


def test_step_shapes(model: RSSMWorldModel) -> None:
    latent, state = _start(model)
    with torch.no_grad():
        pred = model.step(state, latent, torch.tensor([0, 5]), _rng(2))
    assert pred.next_latent.shape == (2, model.features)
    assert pred.reward_logits.shape == (2, 3)
    assert pred.termination_logits.shape == (2,)
    torch.testing.assert_close(pred.next_latent, torch.cat(pred.state, -1))


def test_step_samples_only_from_the_given_streams(model: RSSMWorldModel) -> None:
    latent, state = _start(model)
    action = torch.tensor([1, 2])
    with torch.no_grad():
        a = model.step(state, latent, action, _rng(2, seed=5)).next_latent
        torch.manual_seed(123)  # the global generator must not matter
        b = model.step(state, latent, action, _rng(2, seed=5)).next_latent
        c = model.step(state, latent, action, _rng(2, seed=9)).next_latent
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_temperature_zero_is_deterministic(model: RSSMWorldModel) -> None:
    latent, state = _start(model)
    action = torch.tensor([3, 4])
    with torch.no_grad():
        a = model.step(state, latent, action, _rng(2, seed=1), temperature=0.0)
        b = model.step(state, latent, action, _rng(2, seed=2), temperature=0.0)
        h = model.cell.deterministic(*state, model.cell.action_input(action, 2, latent.device))
        mode = model.dist.mode(model.cell.prior(h))
    torch.testing.assert_close(a.next_latent, b.next_latent, rtol=0, atol=0)
    torch.testing.assert_close(a.next_latent, torch.cat([h, mode], -1))


def test_temperature_scales_the_gaussian_noise() -> None:
    model = _model("gaussian").eval()
    latent, state = _start(model)
    action = torch.tensor([3, 4])
    with torch.no_grad():
        mean = model.step(state, latent, action, _rng(2), temperature=0.0).state[1]
        one = model.step(state, latent, action, _rng(2), temperature=1.0).state[1]
        half = model.step(state, latent, action, _rng(2), temperature=0.5).state[1]
    torch.testing.assert_close(half - mean, 0.5 * (one - mean))


def test_negative_temperature_is_a_config_error(model: RSSMWorldModel) -> None:
    latent, state = _start(model)
    with pytest.raises(ConfigError, match=r"temperature must be >= 0"):
        model.step(state, latent, torch.tensor([0, 0]), _rng(2), temperature=-1.0)


def test_categorical_latents_are_one_hot() -> None:
    model = _model("categorical").eval()
    latent, state = _start(model)
    with torch.no_grad():
        pred = model.step(state, latent, torch.tensor([0, 1]), _rng(2))
    for s in (state[1], pred.state[1]):
        groups = s.view(2, model.config.categoricals, model.config.classes)
        assert torch.equal(groups.sum(-1), torch.ones(2, model.config.categoricals))
        assert set(groups.unique().tolist()) <= {0.0, 1.0}


def test_filter_follows_real_observations(model: RSSMWorldModel) -> None:
    if model.config.stochastic == "categorical":
        # an untrained tiny posterior's mode hardly moves with the observation; sharpen it
        model = _model("categorical").eval()
        with torch.no_grad():
            model.cell.posterior[-1].weight.mul_(100.0)
    latent, state = _start(model)
    action = torch.tensor([1, 1])
    with torch.no_grad():
        emb_a = model.encode(torch.zeros(2, *SPEC.frame_shape, dtype=torch.uint8))
        emb_b = model.encode(torch.full((2, *SPEC.frame_shape), 255, dtype=torch.uint8))
        a, state_a = model.filter(state, latent, action, emb_a)
        again, _ = model.filter(state, latent, action, emb_a)
        b, _ = model.filter(state, latent, action, emb_b)
        other_action, _ = model.filter(state, latent, torch.tensor([2, 2]), emb_a)
    torch.testing.assert_close(a, again, rtol=0, atol=0)  # deterministic
    assert not torch.allclose(a, b)  # the observation matters
    assert not torch.allclose(a, other_action)  # and so does the action
    torch.testing.assert_close(a, torch.cat(state_a, -1))


def test_observations_lie_in_their_spaces(model: RSSMWorldModel) -> None:
    latent, state = _start(model)
    with torch.no_grad():
        stepped = model.step(state, latent, torch.tensor([0, 1]), _rng(2)).next_latent
        for lat in (latent, stepped):
            for obs_type in model.obs_types:
                space = model.observation_space(obs_type)
                obs = model.observation(lat, obs_type)
                assert obs.shape == (2, *space.shape)
                assert obs.numpy().dtype == space.dtype
                for row in obs.numpy():
                    assert space.contains(row), obs_type
    assert model.observation_space("pixels").dtype == np.uint8
    state_space = model.observation_space("state")
    deter = model.config.deter_size
    assert (state_space.low[:deter] == -1).all() and (state_space.high[:deter] == 1).all()
    if model.config.stochastic == "categorical":
        assert (state_space.low[deter:] == 0).all() and (state_space.high[deter:] == 1).all()
    with pytest.raises(
        ConfigError, match=r"obs_type of the 'rssm' family must be one of \[.*\], got 'indices'"
    ):
        model.observation_space("indices")


# --- the KL and the losses --------------------------------------------------------------
def test_kl_is_non_negative_and_zero_for_equal_distributions(model: RSSMWorldModel) -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(64, model.dist.params, generator=gen) * 3
    p = torch.randn(64, model.dist.params, generator=gen) * 3
    kl = model.dist.kl(q, p)
    assert kl.shape == (64,)
    assert (kl >= 0).all() and (kl > 0).any()
    torch.testing.assert_close(model.dist.kl(q, q), torch.zeros(64), atol=1e-5, rtol=0)


def test_gaussian_kl_matches_torch_distributions() -> None:
    model = _model("gaussian")
    gen = torch.Generator().manual_seed(0)
    q, p = torch.randn(2, 8, model.dist.params, generator=gen)
    (mq, sq), (mp, sp) = model.dist._gaussian(q), model.dist._gaussian(p)
    assert (sq >= model.config.min_std).all()
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mq, sq), torch.distributions.Normal(mp, sp)
    ).sum(-1)
    torch.testing.assert_close(model.dist.kl(q, p), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_free_nats_clamp_the_kl(kind: str) -> None:
    model = _model(kind, free_nats=1e4)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, model.dist.params, generator=gen).requires_grad_()
    p = torch.randn(3, model.dist.params, generator=gen).requires_grad_()
    weights = torch.full((3,), 1 / 3)
    kl, loss = model.kl_loss(q, p, weights)
    assert 0 < float(kl.detach()) < 1e4
    assert float(loss.detach()) == pytest.approx(1e4)
    loss.backward()
    assert q.grad is None or not q.grad.any()  # below the free nats: no gradient
    assert p.grad is None or not p.grad.any()
    free = _model(kind, free_nats=0.0)
    kl0, loss0 = free.kl_loss(q, p, weights)
    torch.testing.assert_close(loss0, kl0)


def test_kl_balancing_splits_the_gradient() -> None:
    model = _model("categorical", free_nats=0.0, kl_balance=0.8)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, model.dist.params, generator=gen).requires_grad_()
    p = torch.randn(3, model.dist.params, generator=gen).requires_grad_()
    weights = torch.full((3,), 1 / 3)
    kl, balanced = model.kl_loss(q, p, weights)
    gq, gp = torch.autograd.grad(balanced, (q, p))
    fq, fp = torch.autograd.grad(kl, (q, p))
    torch.testing.assert_close(gq, 0.2 * fq)  # the posterior gets 1 - alpha
    torch.testing.assert_close(gp, 0.8 * fp)  # the prior gets alpha


@pytest.mark.parametrize("kind", KINDS)
def test_loss_parts_and_gradients(kind: str) -> None:
    model = _model(kind).train()
    out = model.loss(_batch(), "joint", 0)
    for key in ("recon_loss", "kl", "kl_loss", "reward_loss", "termination_loss"):
        assert torch.isfinite(out[key]) and out[key] >= 0, key
        assert not out[key].requires_grad, key
    assert float(out["kl_loss"]) >= model.config.free_nats
    for key in ("reward_acc", "termination_acc"):
        assert 0.0 <= float(out[key]) <= 1.0
    out["loss"].backward()
    for name, module in model.named_children():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
    warm = model.loss(_batch(), "warmup", 0)  # no warm-up: the same objective
    assert set(warm) == set(out)


@pytest.mark.parametrize("kind", KINDS)
def test_loss_decreases_on_a_fixed_batch(kind: str) -> None:
    model = _model(kind).train()
    batch = dict(_batch(b=2, steps=3), frames=_moving_square(2, 4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = {k: float(v.detach()) for k, v in model.loss(batch, "joint", 0).items()}
    for step in range(40):
        out = model.loss(batch, "joint", step)
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the trainer does
        opt.step()
    last = {k: float(v.detach()) for k, v in model.loss(batch, "joint", 40).items()}
    assert last["loss"] < 0.9 * first["loss"]
    assert last["recon_loss"] < first["recon_loss"]
    assert last["reward_loss"] < first["reward_loss"]
    assert last["termination_loss"] < first["termination_loss"]


def test_metrics_keys_and_ranges(model: RSSMWorldModel) -> None:
    metrics = model.metrics(_batch())
    assert {"recon_loss", "prior_recon_loss", "kl", "reward_acc", "termination_acc"} <= set(metrics)
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    for key in ("reward_acc", "termination_acc"):
        assert 0.0 <= metrics[key] <= 1.0


def test_test_nll_is_a_deterministic_per_pixel_bound(model: RSSMWorldModel) -> None:
    batch = _batch(steps=NLL_CONTEXT + 2)
    torch.manual_seed(3)
    nll = model.test_nll(batch)
    torch.manual_seed(4)
    assert model.test_nll(batch) == nll
    assert np.isfinite(nll) and nll > 0
    # the scored observations matter, the first context observations only through the state
    changed = dict(batch, frames=batch["frames"].clone())
    changed["frames"][:, -1] = 0
    assert model.test_nll(changed) != nll
    with pytest.raises(ConfigError, match=r"test_nll needs more than 3 observations"):
        model.test_nll(_batch(steps=NLL_CONTEXT - 1))


def test_forced_step_heads_read_the_posterior_after_the_real_observation(
    model: RSSMWorldModel,
) -> None:
    latent, state = _start(model)
    action = torch.tensor([1, 2])
    with torch.no_grad():
        real = model.encode(_frames(2, seed=3))
        forced = model.forced_step(state, latent, action, real, _rng(2, seed=5))
        again = model.forced_step(state, latent, action, real, _rng(2, seed=9))
        drawn = model.step(state, latent, action, _rng(2, seed=5))
        posterior, _ = model.filter(state, latent, action, real)
    torch.testing.assert_close(forced.reward_logits, model.reward_head(posterior))
    torch.testing.assert_close(forced.reward_logits, again.reward_logits)  # whatever is drawn
    torch.testing.assert_close(forced.next_latent, drawn.next_latent)
    assert not torch.equal(forced.reward_logits, drawn.reward_logits)
