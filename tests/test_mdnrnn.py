"""The World Models family (Ha & Schmidhuber 2018): VAE (V) + MDN-RNN (M)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import gymnasium as gym
import pytest
import torch

from dreamenv.envs.atari import AtariSpec
from dreamenv.errors import ConfigError
from dreamenv.models import FAMILIES, build_model
from dreamenv.models.mdnrnn import (
    PRESETS,
    MDNRNNConfig,
    MDNRNNWorldModel,
    Mixture,
)
from dreamenv.random_streams import BatchRandom, key_from_seed

SPEC = AtariSpec("pong")
ACTIONS = 6


def _model(preset: str = "tiny", spec=SPEC, seed: int = 0, **overrides) -> MDNRNNWorldModel:
    torch.manual_seed(seed)
    return build_model("mdnrnn", preset, spec, ACTIONS, overrides or None)


@pytest.fixture(scope="module")
def model() -> MDNRNNWorldModel:
    return _model().eval()


def _frames(*shape: int, frame_shape=SPEC.frame_shape, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, *frame_shape), generator=gen, dtype=torch.uint8)


def _smooth_frames(b: int, steps1: int) -> torch.Tensor:
    """A bright square moving right: an easy, learnable sequence."""
    frames = torch.zeros(b, steps1, *SPEC.frame_shape, dtype=torch.uint8)
    for i in range(b):
        for t in range(steps1):
            x = 10 + 6 * t + 3 * i
            frames[i, t, :, 40:56, x : x + 16] = 255
    return frames


def _rng(batch: int, seed: int = 0) -> BatchRandom:
    rng = BatchRandom(batch, "cpu")
    rng.set_keys(torch.arange(batch), [key_from_seed(seed + i) for i in range(batch)])
    return rng


def _batch(b: int = 2, steps: int = 4, smooth: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    rewards = torch.zeros(b, steps)
    rewards[0, 1], rewards[-1, steps - 1] = 1.0, -3.0
    terminated = torch.zeros(b, steps, dtype=torch.bool)
    terminated[0, -1] = True
    mask = torch.ones(b, steps, dtype=torch.bool)
    mask[-1, -1] = False
    return {
        "frames": _smooth_frames(b, steps + 1) if smooth else _frames(b, steps + 1),
        "actions": torch.randint(0, ACTIONS, (b, steps), generator=gen),
        "rewards": rewards,
        "terminated": terminated,
        "mask": mask,
    }


def _start(model: MDNRNNWorldModel, b: int = 3, k: int = 3):
    frames = _frames(b, k)
    with torch.no_grad():
        emb = model.encode(frames.flatten(0, 1)).view(b, k, -1)
        return model.initial_state(emb, torch.randint(0, ACTIONS, (b, k - 1)))


# --- configuration -------------------------------------------------------------------------
def test_registered_with_paper_sizes() -> None:
    assert FAMILIES["mdnrnn"] is MDNRNNWorldModel
    assert MDNRNNWorldModel.has_warmup
    assert set(PRESETS) >= {"paper", "small", "tiny"}
    paper = PRESETS["paper"]
    assert paper == MDNRNNConfig()
    assert (paper.z_dim, paper.lstm_hidden, paper.num_mixtures) == (32, 256, 5)
    assert paper.encoder_channels == (32, 64, 128, 256)
    counts = _model("tiny").parameter_counts()
    assert 5_000 < counts["total"] < 30_000
    assert set(counts) == {"encoder", "decoder", "memory", "total"}


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("z_dim", 0, "z_dim must be a positive int"),
        ("num_mixtures", 2.5, "num_mixtures must be a positive int"),
        ("encoder_channels", (), "encoder_channels must be a non-empty tuple"),
        ("kl_tolerance", -1.0, "kl_tolerance must be a finite number >= 0"),
        ("recon_frames", -2, "recon_frames must be an int >= 0"),
    ],
)
def test_bad_config_values_are_named(field: str, value, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(MDNRNNConfig(), **{field: value})


def test_too_many_convolutions_for_the_screen() -> None:
    config = dataclasses.replace(PRESETS["tiny"], encoder_channels=(4, 4, 4, 4, 4, 4))
    with pytest.raises(ConfigError, match="screen_size=64 is too small for 6 stride-2"):
        MDNRNNWorldModel(config, AtariSpec("pong", screen_size=64), ACTIONS)


def test_unknown_phase_and_obs_type(model: MDNRNNWorldModel) -> None:
    with pytest.raises(ConfigError, match="phase must be 'warmup' or 'joint', got 'train'"):
        model.loss(_batch(), "train", 0)
    with pytest.raises(
        ConfigError, match=r"obs_type of the 'mdnrnn' family must be one of \[.*\], got 'indices'"
    ):
        model.observation_space("indices")


# --- V -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("stack", "size"), [(4, 64), (1, 80), (4, 96)])
def test_every_screen_size(stack: int, size: int) -> None:
    spec = SimpleNamespace(frame_shape=(stack, size, size))  # the model only reads frame_shape
    model = _model(spec=spec)
    frames = _frames(2, 3, frame_shape=spec.frame_shape)
    batch = {**_batch(2, 2), "frames": frames}
    with torch.no_grad():
        z = model.encode(frames[:, 0])
        decoded = model.decode(z)
    assert z.shape == (2, model.config.z_dim) and z.dtype == torch.float32
    assert decoded.shape == (2, stack, size, size) and decoded.dtype == torch.uint8
    for phase in ("warmup", "joint"):
        assert torch.isfinite(model.loss(batch, phase, 0)["loss"])


def test_encode_is_the_posterior_mean_per_observation(model: MDNRNNWorldModel) -> None:
    frames = _frames(3)
    with torch.no_grad():
        together = model.encode(frames)
        alone = model.encode(frames[1:2])
        mean, _ = model.posterior(frames)
    torch.testing.assert_close(together[1:2], alone)
    torch.testing.assert_close(together, mean)


# --- M -------------------------------------------------------------------------------------
def test_mixture_density_peaks_at_a_component_mean() -> None:
    z_dim, k = 4, 5
    gen = torch.Generator().manual_seed(0)
    mixture = Mixture(
        torch.randn(2, z_dim, k, generator=gen),
        torch.randn(2, z_dim, k, generator=gen),
        torch.full((2, z_dim, k), -1.0),
    )
    at_mean = mixture.means[..., 0]
    far = at_mean + 10.0
    assert (mixture.log_prob(at_mean) > mixture.log_prob(far) + 10).all()
    # each dimension is its own mixture: log_prob sums the dimensions
    torch.testing.assert_close(mixture.log_prob(at_mean), mixture.log_prob_dims(at_mean).sum(-1))


def test_model_mdn_density_is_highest_near_its_mode(model: MDNRNNWorldModel) -> None:
    latent, state = _start(model)
    with torch.no_grad():
        out, _ = model.memory.run(latent[:, None, : model.z_dim], torch.tensor([[1], [2], [3]]))
        mixture, _, _ = model.memory.heads(out[:, 0])
    best = mixture.logits.argmax(-1, keepdim=True)
    mode = mixture.means.gather(-1, best).squeeze(-1)
    assert (mixture.log_prob(mode) > mixture.log_prob(mode + 5.0)).all()


def test_initial_state_and_step_shapes(model: MDNRNNWorldModel) -> None:
    b, z_dim, hidden = 3, model.config.z_dim, model.config.lstm_hidden
    frames = _frames(b, 3)
    latent, state = _start(model, b, 3)
    assert latent.shape == (b, z_dim + hidden) and latent.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(latent[:, :z_dim], model.encode(frames[:, -1]))
    torch.testing.assert_close(latent[:, z_dim:], state[0])
    with torch.no_grad():
        pred = model.step(state, latent, torch.tensor([0, 3, 5]), _rng(b))
    assert pred.next_latent.shape == (b, z_dim + hidden)
    assert pred.reward_logits.shape == (b, 3)
    assert pred.termination_logits.shape == (b,)
    assert [s.shape for s in pred.state] == [(b, hidden), (b, hidden)]
    torch.testing.assert_close(pred.next_latent[:, z_dim:], pred.state[0])


@pytest.mark.parametrize("native", [True, False])
def test_m_runs_in_float32_under_autocast_where_bfloat16_is_emulated(
    model: MDNRNNWorldModel, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """oneDNN has no bfloat16 LSTM where bfloat16 is emulated: there M's LSTM leaves autocast."""
    import dreamenv.precision

    monkeypatch.setattr(dreamenv.precision, "native_bfloat16", lambda kind: native)
    autocast_on: list[bool] = []
    lstm_forward = model.memory.lstm.forward

    def spy(x, hc=None):
        autocast_on.append(torch.is_autocast_enabled("cpu"))
        with torch.autocast("cpu", enabled=False):  # runs on any CPU
            return lstm_forward(x.float(), hc)

    latent, state = _start(model)
    monkeypatch.setattr(model.memory.lstm, "forward", spy)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model.step(state, latent, torch.tensor([0, 3, 5]), _rng(3))
    assert all(t.dtype == torch.float32 for t in pred.state)
    assert autocast_on == [native]


def test_one_observation_context_starts_from_a_zero_state(model: MDNRNNWorldModel) -> None:
    with torch.no_grad():
        emb = model.encode(_frames(2))
        latent, state = model.initial_state(emb[:, None], torch.zeros(2, 0, dtype=torch.long))
    torch.testing.assert_close(latent[:, : model.z_dim], emb)
    assert all(torch.equal(s, torch.zeros_like(s)) for s in state)


def test_step_samples_only_from_the_given_streams(model: MDNRNNWorldModel) -> None:
    latent, state = _start(model, 2)
    action = torch.tensor([1, 2])
    with torch.no_grad():
        a = model.step(state, latent, action, _rng(2, seed=5)).next_latent
        torch.manual_seed(123)  # the global generator must not matter
        b = model.step(state, latent, action, _rng(2, seed=5)).next_latent
        c = model.step(state, latent, action, _rng(2, seed=9)).next_latent
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a[:, : model.z_dim], c[:, : model.z_dim])


def test_temperature_zero_is_the_most_likely_components_mean(model: MDNRNNWorldModel) -> None:
    latent, state = _start(model, 3)
    action = torch.tensor([0, 1, 2])
    with torch.no_grad():
        a = model.step(state, latent, action, _rng(3, seed=0), temperature=0.0)
        b = model.step(state, latent, action, _rng(3, seed=77), temperature=0.0)
        h, _ = model._advance(latent[:, : model.z_dim], action, state)
        mixture, _, _ = model.memory.heads(h)
    torch.testing.assert_close(a.next_latent, b.next_latent, rtol=0, atol=0)
    best = mixture.logits.argmax(-1, keepdim=True)
    expected = mixture.means.gather(-1, best).squeeze(-1)
    torch.testing.assert_close(a.next_latent[:, : model.z_dim], expected)


def test_lower_temperature_narrows_the_samples(model: MDNRNNWorldModel) -> None:
    n = 512
    latent, state = _start(model, 1)
    latent = latent.expand(n, -1).contiguous()
    state = tuple(s.expand(n, -1).contiguous() for s in state)
    action = torch.full((n,), 2)
    spread = {}
    with torch.no_grad():
        for tau in (1.5, 1.0, 0.3):
            z = model.step(state, latent, action, _rng(n, seed=1), temperature=tau).next_latent
            spread[tau] = float(z[:, : model.z_dim].std(0).mean())
    assert spread[1.5] > spread[1.0] > spread[0.3] > 0


# --- the real game ---------------------------------------------------------------------------
def test_filter_follows_real_observations(model: MDNRNNWorldModel) -> None:
    b, k = 2, 4
    frames = _frames(b, k, seed=3)
    actions = torch.randint(0, ACTIONS, (b, k - 1))
    with torch.no_grad():
        emb = model.encode(frames.flatten(0, 1)).view(b, k, -1)
        latent, state = model.initial_state(emb[:, :1], actions[:, :0])
        for t in range(1, k):
            latent, state = model.filter(state, latent, actions[:, t - 1], emb[:, t])
            # the latent shows the real observation's code, and the LSTM has read the
            # real observations and actions so far: the same as a burn-in over them
            torch.testing.assert_close(latent[:, : model.z_dim], emb[:, t])
            burned, burned_state = model.initial_state(emb[:, : t + 1], actions[:, :t])
            torch.testing.assert_close(latent, burned)
            torch.testing.assert_close(state[1], burned_state[1])
        again, _ = model.filter(
            *reversed(model.initial_state(emb[:, :3], actions[:, :2])), actions[:, 2], emb[:, 3]
        )
    torch.testing.assert_close(again, latent, rtol=0, atol=0)  # deterministic


# --- observations ------------------------------------------------------------------------------
def test_observations_lie_in_their_spaces(model: MDNRNNWorldModel) -> None:
    latent, state = _start(model, 2)
    with torch.no_grad():
        latent = model.step(state, latent, torch.tensor([0, 1]), _rng(2)).next_latent
    assert model.obs_types[0] == "latent"
    for obs_type in model.obs_types:
        space = model.observation_space(obs_type)
        assert isinstance(space, gym.spaces.Box)
        with torch.no_grad():
            obs = model.observation(latent, obs_type).numpy()
        assert obs.dtype == space.dtype
        for row in obs:
            assert space.contains(row), obs_type
    latent_space = model.observation_space("latent")
    assert latent_space.shape == (model.config.z_dim + model.config.lstm_hidden,)


# --- training ------------------------------------------------------------------------------
def test_warmup_trains_v_and_leaves_m_unchanged() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = _batch()
    for i in range(3):
        opt.zero_grad()
        out = model.loss(batch, "warmup", i)
        out["loss"].backward()
        opt.step()
    assert set(out) == {"loss", "recon_loss", "kl_loss"}
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("memory."))
    assert not torch.equal(before["encoder.posterior.weight"], after["encoder.posterior.weight"])


def test_m_losses_do_not_reach_v() -> None:
    model = _model(vae_weight=0.0)
    out = model.loss(_batch(), "joint", 0)
    out["loss"].backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())
    assert model.memory.mdn.weight.grad is not None
    assert model.memory.mdn.weight.grad.abs().sum() > 0


def _train(model: MDNRNNWorldModel, batch, phase: str, updates: int) -> list[dict]:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    outs = []
    for i in range(updates):
        opt.zero_grad()
        out = model.loss(batch, phase, i)
        out["loss"].backward()
        opt.step()
        outs.append({k: float(v.detach()) for k, v in out.items()})
    return outs


def _early_late(outs: list[dict], key: str) -> tuple[float, float]:
    return sum(o[key] for o in outs[:5]) / 5, sum(o[key] for o in outs[-5:]) / 5


def test_warmup_loss_decreases_on_a_fixed_batch() -> None:
    outs = _train(_model(recon_frames=0), _batch(2, 4, smooth=True), "warmup", 40)
    early, late = _early_late(outs, "loss")
    assert late < 0.7 * early


def test_joint_loss_decreases_on_a_fixed_batch() -> None:
    # V frozen (vae_weight=0) and M fitted to its means: M's targets stay put
    model = _model(recon_frames=0, vae_weight=0.0, sample_z=False)
    outs = _train(model, _batch(2, 4, smooth=True), "joint", 40)
    assert {"latent_loss", "reward_loss", "termination_loss", "latent_mse"} <= set(outs[-1])
    for key in ("loss", "latent_loss", "reward_loss", "termination_loss"):
        early, late = _early_late(outs, key)
        assert late < early, key
    early, late = _early_late(outs, "loss")
    assert late < 0.7 * early


def test_joint_phase_keeps_training_v() -> None:
    model = _model(recon_frames=0)
    outs = _train(model, _batch(2, 4, smooth=True), "joint", 40)
    assert {"recon_loss", "kl_loss"} <= set(outs[-1])
    early, late = _early_late(outs, "recon_loss")
    assert late < 0.7 * early


def test_metrics_and_test_nll(model: MDNRNNWorldModel) -> None:
    batch = _batch(2, 5)
    metrics = model.metrics(batch)
    assert {"recon_loss", "latent_loss", "latent_mse", "reward_acc", "termination_acc"} <= set(
        metrics
    )
    assert all(isinstance(v, float) for v in metrics.values())
    nll = model.test_nll(batch)
    assert nll == model.test_nll(batch)  # one seeded sample: reproducible
    assert 0 < nll < 10
    with pytest.raises(ConfigError, match="more than 3 observations"):
        model.test_nll(_batch(2, 2))


def test_test_nll_improves_with_training() -> None:
    model = _model(recon_frames=0, kl_tolerance=0.0)
    batch = _batch(2, 5, smooth=True)
    before = model.test_nll(batch)
    _train(model, batch, "joint", 30)
    assert model.test_nll(batch) < before


def test_state_dict_and_json_config_round_trip(model: MDNRNNWorldModel) -> None:
    from dreamenv.checkpoint import config_from_dict

    data = json.loads(json.dumps(dataclasses.asdict(model.config)))
    config = config_from_dict(MDNRNNConfig, data)
    assert config == model.config
    copy = MDNRNNWorldModel(config, SPEC, ACTIONS).eval()
    copy.load_state_dict(model.state_dict())
    latent, state = _start(model, 2)
    with torch.no_grad():
        a = model.step(state, latent, torch.tensor([1, 4]), _rng(2)).next_latent
        b = copy.step(state, latent, torch.tensor([1, 4]), _rng(2)).next_latent
    torch.testing.assert_close(a, b, rtol=0, atol=0)
