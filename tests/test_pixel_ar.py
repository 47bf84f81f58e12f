"""The auto-regressive pixel-space families of Buesing et al. (2018): ``ar`` and ``rar``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dreamenv.envs.atari import AtariSpec
from dreamenv.errors import ConfigError
from dreamenv.models.base import FAMILIES, build_model
from dreamenv.models.common import NLL_CONTEXT, pixel_mean
from dreamenv.models.pixel_ar import (
    ARConfig,
    ARWorldModel,
    RARConfig,
    RARWorldModel,
    render_pixels,
)
from dreamenv.random_streams import BatchRandom, key_from_seed

SPEC = AtariSpec("pong")
ACTIONS = 6
FAMILY_NAMES = ("ar", "rar")


def _model(family: str, spec: AtariSpec = SPEC, **overrides: object) -> ARWorldModel:
    torch.manual_seed(0)
    return build_model(family, "tiny", spec, ACTIONS, overrides or None).eval()


def _frames(*shape: int, spec: AtariSpec = SPEC, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, *spec.frame_shape), generator=gen, dtype=torch.uint8)


def _rng(batch: int, seed: int = 0) -> BatchRandom:
    rng = BatchRandom(batch, "cpu")
    rng.set_keys(torch.arange(batch), [key_from_seed(seed + i) for i in range(batch)])
    return rng


def _batch(b: int = 2, steps: int = 5, spec: AtariSpec = SPEC, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.zeros(b, steps)
    rewards[0, -1] = 1.0
    terminated = torch.zeros(b, steps, dtype=torch.bool)
    terminated[0, -1] = True
    return {
        "frames": _frames(b, steps + 1, spec=spec, seed=seed),
        "actions": torch.randint(0, ACTIONS, (b, steps), generator=gen),
        "rewards": rewards,
        "terminated": terminated,
        "mask": torch.ones(b, steps, dtype=torch.bool),
    }


def _start(model: ARWorldModel, b: int = 2, k: int = 3, seed: int = 0):
    frames = _frames(b, k, seed=seed)
    emb = model.encode(frames.flatten(0, 1)).view(b, k, *SPEC.frame_shape)
    actions = torch.randint(0, ACTIONS, (b, k - 1), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return frames, model.initial_state(emb, actions)


# --- registry, configs, presets -------------------------------------------------------------


def test_families_are_registered() -> None:
    assert FAMILIES["ar"] is ARWorldModel
    assert FAMILIES["rar"] is RARWorldModel
    assert ARWorldModel.obs_types == ("pixels",)
    assert RARWorldModel.obs_types == ("state", "pixels")
    assert not ARWorldModel.has_warmup and not RARWorldModel.has_warmup


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_presets_scale(family: str) -> None:
    counts = {
        name: build_model(family, name, SPEC, ACTIONS).parameter_counts()["total"]
        for name in ("tiny", "small", "paper")
    }
    assert counts["tiny"] < 20_000 < counts["small"] < counts["paper"]


def test_configs_are_json_types() -> None:
    for config in (*ARWorldModel.presets.values(), *RARWorldModel.presets.values()):
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            assert isinstance(value, (int, float, str, bool, tuple)), field.name


def test_encoder_and_decoder_sizes_match_the_state_space_models() -> None:
    """Same encoder and decoder as the SSMs: rollout speeds compare fairly."""
    ssm = pytest.importorskip("dreamenv.models.ssm")
    for preset in ("paper", "small", "tiny"):
        dssm = FAMILIES["dssm_det"](ssm.PRESETS[preset], SPEC, ACTIONS).parameter_counts()
        ar = build_model("ar", preset, SPEC, ACTIONS).parameter_counts()
        rar = build_model("rar", preset, SPEC, ACTIONS).parameter_counts()
        assert ar["encoder"] == rar["encoder"] == dssm["encoder"]
        # the AR/RAR decoders render one frame (the newest), the SSMs' the whole stack
        assert rar["decoder"] < dssm["decoder"]


def test_presets_have_the_state_space_models_sizes() -> None:
    ssm = pytest.importorskip("dreamenv.models.ssm")
    for preset, config in ssm.PRESETS.items():
        sizes = dataclasses.asdict(config)
        for own in (ARWorldModel.presets[preset], RARWorldModel.presets[preset]):
            shared = {k: v for k, v in dataclasses.asdict(own).items() if k in sizes}
            assert shared == {k: sizes[k] for k in shared}
            assert set(shared) >= set(sizes) - {"z_channels", "prior_hidden", "jump"}


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (lambda: ARConfig(order=0), r"ARConfig\.order must be a positive int, got 0"),
        (lambda: ARConfig(decoder_channels=6), "decoder_channels must be divisible by 4"),
        (lambda: RARConfig(encoder_hidden=(8,)), "encoder_hidden must be a pair"),
        (lambda: RARConfig(reward_loss_scale=-1.0), "reward_loss_scale must be a number >= 0"),
        (lambda: RARConfig(state_channels=1.5), r"state_channels .* got 1\.5 \(the paper's: 64\)"),
    ],
)
def test_bad_config_is_a_clear_error(config, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config()


def test_bad_override_names_the_field() -> None:
    with pytest.raises(ConfigError, match="order must be a positive int"):
        build_model("ar", "tiny", SPEC, ACTIONS, {"order": -2})


# --- embeddings, initial state ----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_encode_is_the_observation(family: str) -> None:
    model = _model(family)
    frames = _frames(3)
    assert torch.equal(model.encode(frames), frames)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_encode_rejects_other_frames(family: str) -> None:
    model = _model(family)
    with pytest.raises(ConfigError, match=r"uint8 observations \(\.\.\., 4, 96, 96\)"):
        model.encode(torch.zeros(2, 4, 96, 96))
    with pytest.raises(ConfigError, match="got torch.uint8 \\(2, 4, 64, 64\\)"):
        model.encode(torch.zeros(2, 4, 64, 64, dtype=torch.uint8))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_initial_state_checks_its_actions(family: str) -> None:
    model = _model(family)
    frames = _frames(2, 3)
    with pytest.raises(ConfigError, match=r"actions \(B, K - 1\) = \(2, 2\)"):
        model.initial_state(frames, torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_initial_state_takes_any_context(family: str, k: int) -> None:
    model = _model(family)
    frames, (latent, state) = _start(model, 2, k)
    assert torch.equal(model.observation(latent, "pixels"), frames[:, -1])
    pred = model.step(state, latent, torch.zeros(2, dtype=torch.long), _rng(2))
    assert pred.next_latent.shape == latent.shape


def test_ar_initial_state_is_the_fifo_of_the_last_observations() -> None:
    model = _model("ar")
    frames, (latent, (encodings, past)) = _start(model, 2, 5)
    e = model.config.embed_channels
    assert encodings.shape == (2, 3 * e, 12, 12)
    assert past.shape == (2, 2) and past.dtype == torch.int64
    with torch.no_grad():
        expected = model.encoder(frames[:, -3:].flatten(0, 1)).view(2, 3 * e, 12, 12)
    torch.testing.assert_close(encodings, expected)


def test_short_context_repeats_the_first_observation() -> None:
    model = _model("ar")
    frames = _frames(2, 1)
    _, (encodings, past) = model.initial_state(frames, torch.zeros(2, 0, dtype=torch.long))
    e = model.config.embed_channels
    torch.testing.assert_close(encodings[:, :e], encodings[:, -e:])
    assert torch.equal(past, torch.zeros(2, 2, dtype=torch.long))


# --- step: rendering, temperature, rng --------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_step_shapes_and_shifted_stack(family: str) -> None:
    model = _model(family)
    _, (latent, state) = _start(model)
    with torch.no_grad():
        pred = model.step(state, latent, torch.tensor([1, 2]), _rng(2))
    assert pred.next_latent.shape == latent.shape
    assert pred.next_latent.dtype == latent.dtype
    assert pred.reward_logits.shape == (2, 3)
    assert pred.termination_logits.shape == (2,)
    torch.testing.assert_close(pred.reward_logits.logsumexp(-1), torch.zeros(2))
    old, new = model.observation(latent, "pixels"), model.observation(pred.next_latent, "pixels")
    assert torch.equal(new[:, :-1], old[:, 1:])  # the older frames are shifted, not predicted
    assert [s.shape for s in pred.state] == [s.shape for s in state]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_temperature_zero_is_deterministic_mean(family: str) -> None:
    model = _model(family)
    _, (latent, state) = _start(model)
    action = torch.tensor([0, 3])
    rng_a, rng_b = _rng(2, seed=1), _rng(2, seed=99)
    with torch.no_grad():
        a = model.step(state, latent, action, rng_a, temperature=0.0)
        b = model.step(state, latent, action, rng_b, temperature=0.0)
    assert torch.equal(a.next_latent, b.next_latent)
    for x, y in zip(a.state, b.state, strict=True):
        assert torch.equal(x, y)
    assert int(rng_a.counters.sum()) == 0  # nothing drawn
    newest = model.observation(a.next_latent, "pixels")[:, -1]
    assert len(newest.unique()) > 2  # grey levels: the Bernoulli means


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_same_keys_same_samples(family: str) -> None:
    model = _model(family)
    _, (latent, state) = _start(model)
    action = torch.tensor([0, 3])
    with torch.no_grad():
        a = model.step(state, latent, action, _rng(2, seed=5))
        b = model.step(state, latent, action, _rng(2, seed=5))
        c = model.step(state, latent, action, _rng(2, seed=6))
    assert torch.equal(a.next_latent, b.next_latent)
    assert not torch.equal(a.next_latent, c.next_latent)
    newest = model.observation(a.next_latent, "pixels")[:, -1]
    assert set(newest.unique().tolist()) <= {0, 255}  # temperature 1: Bernoulli samples


def test_env_streams_are_independent_of_the_batch() -> None:
    model = _model("ar")
    _, (latent, state) = _start(model)
    rng = _rng(2, seed=3)
    alone = _rng(1, seed=4)
    with torch.no_grad():
        both = model.step(state, latent, torch.tensor([1, 1]), rng)
        one = model.step(tuple(s[1:] for s in state), latent[1:], torch.tensor([1]), alone)
    assert torch.equal(both.next_latent[1:], one.next_latent)


def test_render_pixels_temperature() -> None:
    logits = torch.linspace(-4, 4, 64).view(1, 1, 8, 8).repeat(3, 1, 1, 1)
    mean = render_pixels(logits, None, 0.0)
    assert torch.equal(mean, pixel_mean(logits))
    half = render_pixels(logits, _rng(3), 0.5).float()
    sample = render_pixels(logits, _rng(3), 1.0).float()
    # the same uniforms: half way between the mean and the Bernoulli sample
    assert ((half - (mean.float() + sample) / 2).abs() <= 1.0).all()
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        render_pixels(logits, None, -0.5)
    with pytest.raises(ConfigError, match="needs an rng"):
        render_pixels(logits, None, 1.0)


# --- the AR's FIFO and the efficient encoding ---------------------------------------------------


def test_ar_fifo_shifts_in_the_rendered_frame() -> None:
    model = _model("ar")
    _, (latent, state) = _start(model)
    e = model.config.embed_channels
    action = torch.tensor([4, 5])
    with torch.no_grad():
        pred = model.step(state, latent, action, _rng(2))
        rendered = model.encoder(pred.next_latent)
    encodings, past = pred.state
    torch.testing.assert_close(encodings[:, :-e], state[0][:, e:])
    torch.testing.assert_close(encodings[:, -e:], rendered)
    assert torch.equal(past, torch.cat([state[1][:, 1:], action[:, None]], 1))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_step_encodes_only_the_new_observation(family: str) -> None:
    model = _model(family)
    _, (latent, state) = _start(model, b=3)
    calls: list[int] = []
    handle = model.encoder.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    try:
        with torch.no_grad():
            pred = model.step(state, latent, torch.zeros(3, dtype=torch.long), _rng(3))
            model.step(pred.state, pred.next_latent, torch.zeros(3, dtype=torch.long), _rng(3))
    finally:
        handle.remove()
    assert calls == [3, 3]  # one batched encoding of one new observation per env and step


def test_ar_filter_puts_the_real_observation_in_the_fifo() -> None:
    model = _model("ar")
    _, (latent, state) = _start(model)
    real = _frames(2, seed=7)
    with torch.no_grad():
        new_latent, (encodings, _) = model.filter(state, latent, torch.tensor([1, 2]), real)
        expected = model.encoder(real)
    assert torch.equal(new_latent, real)
    torch.testing.assert_close(encodings[:, -model.config.embed_channels :], expected)


# --- the RAR ------------------------------------------------------------------------------------


def test_rar_filter_follows_the_real_observation() -> None:
    model = _model("rar")
    _, (latent, state) = _start(model)
    action = torch.tensor([1, 2])
    real_a, real_b = _frames(2, seed=7), _frames(2, seed=8)
    with torch.no_grad():
        latent_a, state_a = model.filter(state, latent, action, real_a)
        again, state_again = model.filter(state, latent, action, real_a)
        latent_b, state_b = model.filter(state, latent, action, real_b)
        next_a = model.filter(state_a, latent_a, action, real_a)[1][0]
        next_b = model.filter(state_b, latent_b, action, real_a)[1][0]
    assert torch.equal(latent_a, again) and torch.equal(state_a[1], state_again[1])
    assert torch.equal(model.observation(latent_a, "pixels"), real_a)
    assert torch.equal(model.observation(latent_b, "pixels"), real_b)
    torch.testing.assert_close(state_a[1], model.encoder(real_a))
    assert not torch.equal(state_a[1], state_b[1])  # e(o_t) of the real observation
    assert not torch.allclose(next_a, next_b)  # which moves the next state


def test_rar_step_reads_the_rendered_observation() -> None:
    model = _model("rar")
    _, (latent, state) = _start(model)
    with torch.no_grad():
        pred = model.step(state, latent, torch.tensor([1, 2]), _rng(2))
        expected = model.encoder(model.decode(pred.next_latent))
    torch.testing.assert_close(pred.state[1], expected)
    features = model.observation(pred.next_latent, "state")
    torch.testing.assert_close(features[:, : model.config.state_channels], pred.state[0])


# --- observations -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_observations_lie_in_their_spaces(family: str) -> None:
    model = _model(family)
    _, (latent, state) = _start(model)
    with torch.no_grad():
        pred = model.step(state, latent, torch.tensor([1, 2]), _rng(2))
    for obs_type in model.obs_types:
        space = model.observation_space(obs_type)
        for lat in (latent, pred.next_latent):
            obs = model.observation(lat, obs_type).numpy()
            assert obs.dtype == space.dtype
            assert all(space.contains(o) for o in obs), obs_type
    assert torch.equal(
        model.decode(pred.next_latent), model.observation(pred.next_latent, "pixels")
    )
    with pytest.raises(
        ConfigError, match=r"obs_type of the '\w+' family must be one of \[.*\], got 'indices'"
    ):
        model.observation_space("indices")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_other_screens_and_no_frame_stack(family: str) -> None:
    spec = AtariSpec("pong", screen_size=64, frame_stack=1)
    model = _model(family, spec)
    frames = _frames(2, 3, spec=spec)
    latent, state = model.initial_state(frames, torch.zeros(2, 2, dtype=torch.long))
    with torch.no_grad():
        pred = model.step(state, latent, torch.tensor([1, 2]), _rng(2))
    assert model.decode(pred.next_latent).shape == (2, 1, 64, 64)
    out = model.loss(_batch(2, 4, spec), "joint", 0)
    assert torch.isfinite(out["loss"])


# --- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_window_has_the_three_observation_context(family: str) -> None:
    model = _model(family)
    assert model.window_steps(10) == 10 + NLL_CONTEXT - 1
    short = _batch(2, 1)
    with pytest.raises(ConfigError, match="too short for a context of 3"):
        model.loss(short, "joint", 0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_teacher_forcing_matches_the_rollout(family: str) -> None:
    """The trained predictions are the ones ``step`` renders (at temperature 0)."""
    model = _model(family)
    batch = _batch(2, 5)
    frames, actions = batch["frames"], batch["actions"]
    with torch.no_grad():
        logits, head = model._teacher_forced(frames, actions)
        # AR: the three context observations; RAR: four (its latents follow a transition)
        k = 3 if family == "ar" else 4
        latent, state = model.initial_state(frames[:, :k], actions[:, : k - 1])
        pred = model.step(state, latent, actions[:, k - 1], _rng(2), temperature=0.0)
    rendered = model.decode(pred.next_latent)[:, -1].int()
    assert (rendered - pixel_mean(logits[:, k - 3, 0]).int()).abs().max() <= 1
    bits = model.bits.sign_logits(head[:, k - 3, : model.bits.size])
    torch.testing.assert_close(pred.reward_logits, bits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("order", [1, 2, 4])
def test_ar_of_other_orders(order: int) -> None:
    model = _model("ar", order=order)
    batch = _batch(2, 5)
    frames, actions = batch["frames"], batch["actions"]
    with torch.no_grad():
        logits, _ = model._teacher_forced(frames, actions)
        latent, state = model.initial_state(frames[:, :3], actions[:, :2])
        pred = model.step(state, latent, actions[:, 2], _rng(2), temperature=0.0)
    assert state[0].shape[1] == order * model.config.embed_channels
    assert state[1].shape == (2, order - 1)
    assert logits.shape[:2] == (2, 3)
    rendered = model.decode(pred.next_latent)[:, -1].int()
    assert (rendered - pixel_mean(logits[:, 0, 0]).int()).abs().max() <= 1
    assert torch.isfinite(model.loss(batch, "joint", 0)["loss"])


def _moving_square(b: int, steps: int) -> torch.Tensor:
    """Frames of a bright square moving right on a dark background (learnable pixels)."""
    frames = torch.full((b, steps + 1, *SPEC.frame_shape), 20, dtype=torch.uint8)
    for i in range(b):
        for t in range(steps + 1):
            for k in range(SPEC.frame_stack):
                x = 8 * (t + k) + 16 * i
                frames[i, t, k, 40:52, x : x + 12] = 230
    return frames


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_loss_decreases_on_a_fixed_batch(family: str) -> None:
    model = _model(family).train()
    batch = dict(_batch(2, 4), frames=_moving_square(2, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss(batch, "warmup", 0)
    assert {"loss", "recon_loss", "reward_loss", "termination_loss", "reward_acc"} <= set(first)
    losses, recon = [], []
    for step in range(30):
        out = model.loss(batch, "joint", step)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
        recon.append(float(out["recon_loss"]))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0]
    assert recon[-1] < 0.85 * recon[0]  # the pixels, not only the reward bits


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_metrics_and_test_nll(family: str) -> None:
    model = _model(family)
    batch = _batch(2, 5)
    metrics = model.metrics(batch)
    for key in ("recon_loss", "reward_acc", "termination_acc", "pixel_acc", "frame_nll"):
        assert np.isfinite(metrics[key]), key
    nll = model.test_nll(batch)
    assert nll > 0
    assert nll == pytest.approx(metrics["frame_nll"] / SPEC.frame_stack, rel=1e-5)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_test_nll_leaves_out_steps_past_the_end(family: str) -> None:
    model = _model(family)
    batch = _batch(2, 5)
    batch["mask"][1, 3:] = False
    other = dict(batch, frames=batch["frames"].clone())
    other["frames"][1, 4:] = 255 - other["frames"][1, 4:]
    assert model.test_nll(batch) == pytest.approx(model.test_nll(other), rel=1e-6)
    other["frames"][1, 3] = 255 - other["frames"][1, 3]
    assert model.test_nll(batch) != pytest.approx(model.test_nll(other), rel=1e-6)
