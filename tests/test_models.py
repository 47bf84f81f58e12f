"""The world-model contract and the discrete (VQ-VAE + ConvLSTM) family."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dreamenv.envs.atari import AtariSpec
from dreamenv.errors import ConfigError
from dreamenv.models import (
    FAMILIES,
    DiscreteConfig,
    DiscreteWorldModel,
    build_model,
    get_family,
    resolve_config,
)
from dreamenv.models.discrete import (
    KEEP_LOGIT_INIT,
    continuous_bernoulli_mean,
    continuous_bernoulli_nll,
)
from dreamenv.precision import autocast
from dreamenv.random_streams import BatchRandom, key_from_seed

SPEC = AtariSpec("pong")
ACTIONS = 6


@pytest.fixture(scope="module")
def model() -> DiscreteWorldModel:
    torch.manual_seed(0)
    return build_model("discrete", "tiny", SPEC, ACTIONS).eval()


def _frames(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, *SPEC.frame_shape), generator=gen, dtype=torch.uint8)


def _rng(batch: int, seed: int = 0) -> BatchRandom:
    rng = BatchRandom(batch, "cpu")
    rng.set_keys(torch.arange(batch), [key_from_seed(seed + i) for i in range(batch)])
    return rng


def _batch(b: int = 2, steps: int = 3) -> dict[str, torch.Tensor]:
    return {
        "frames": _frames(b, steps + 1),
        "actions": torch.randint(0, ACTIONS, (b, steps)),
        "rewards": torch.tensor([[0.0, 1.0, -1.0], [0.0, 0.0, 0.0]])[:b, :steps],
        "terminated": torch.tensor([[False, False, True], [False, False, False]])[:b, :steps],
        "mask": torch.tensor([[True, True, True], [True, True, False]])[:b, :steps],
    }


def test_discrete_is_registered() -> None:
    assert FAMILIES["discrete"] is DiscreteWorldModel
    assert get_family("discrete") is DiscreteWorldModel


def test_encode_gives_code_indices(model: DiscreteWorldModel) -> None:
    with torch.no_grad():
        latent = model.encode(_frames(3))
    assert latent.shape == (3, 6, 6)
    assert latent.dtype == torch.int64
    assert int(latent.min()) >= 0 and int(latent.max()) < model.config.num_codes


def test_encode_is_deterministic_per_frame(model: DiscreteWorldModel) -> None:
    frames = _frames(3)
    with torch.no_grad():
        together = model.encode(frames)
        alone = model.encode(frames[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=0, atol=0)


def test_grid_follows_the_screen_size() -> None:
    small = build_model("discrete", "tiny", AtariSpec("pong", screen_size=64), ACTIONS).eval()
    with torch.no_grad():
        latent = small.encode(torch.zeros(1, 4, 64, 64, dtype=torch.uint8))
    assert latent.shape == (1, 4, 4)


def test_step_returns_valid_predictions(model: DiscreteWorldModel) -> None:
    b, k = 3, 4
    with torch.no_grad():
        latents = model.encode(_frames(b * k).view(b * k, *SPEC.frame_shape)).view(b, k, 6, 6)
        latent, state = model.initial_state(latents, torch.randint(0, ACTIONS, (b, k - 1)))
        pred = model.step(state, latent, torch.tensor([0, 3, 5]), _rng(b))
    torch.testing.assert_close(latent, latents[:, -1], rtol=0, atol=0)
    assert pred.next_latent.shape == (b, 6, 6)
    assert pred.next_latent.dtype == torch.int64
    assert int(pred.next_latent.min()) >= 0
    assert int(pred.next_latent.max()) < model.config.num_codes
    assert pred.reward_logits.shape == (b, len(model.reward_support))
    assert pred.termination_logits.shape == (b,)
    assert len(pred.state) == 4
    assert all(s.shape == (b, model.config.lstm_channels, 6, 6) for s in pred.state)
    assert all(torch.isfinite(s).all() for s in pred.state)


def test_step_samples_only_from_the_given_streams(model: DiscreteWorldModel) -> None:
    latent = torch.zeros(2, 6, 6, dtype=torch.int64)
    action = torch.tensor([1, 2])
    with torch.no_grad():
        state = model.zero_state(2)
        a = model.step(state, latent, action, _rng(2, seed=5)).next_latent
        torch.manual_seed(123)  # the global generator must not matter
        b = model.step(state, latent, action, _rng(2, seed=5)).next_latent
        c = model.step(state, latent, action, _rng(2, seed=9)).next_latent
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_keep_logit_raises_the_current_codes_logits(model: DiscreteWorldModel) -> None:
    current = torch.randint(0, model.config.num_codes, (2, 6, 6))
    embedded, action = model.embed(current), torch.tensor([1, 4])
    state = model.zero_state(2)
    with torch.no_grad():
        model.dynamics.keep_logit.fill_(0.0)
        plain = model.dynamics(embedded, action, state, current)[0]
        model.dynamics.keep_logit.fill_(3.0)
        kept = model.dynamics(embedded, action, state, current)[0]
    model.dynamics.keep_logit.data.fill_(KEEP_LOGIT_INIT)
    raised = F.one_hot(current, model.config.num_codes).permute(0, 3, 1, 2).bool()
    torch.testing.assert_close(kept[raised], plain[raised] + 3.0)
    torch.testing.assert_close(kept[~raised], plain[~raised])


def test_decode_and_observations(model: DiscreteWorldModel) -> None:
    latent = torch.randint(0, model.config.num_codes, (2, 6, 6))
    with torch.no_grad():
        frames = model.decode(latent)
        obs = {t: model.observation(latent, t) for t in model.obs_types}
    assert frames.shape == (2, *SPEC.frame_shape) and frames.dtype == torch.uint8
    for obs_type, value in obs.items():
        space = model.observation_space(obs_type)
        assert value.shape == (2, *space.shape)
        for row in value.numpy().astype(space.dtype):
            assert space.contains(row), obs_type
    assert isinstance(model.observation_space("indices"), gym.spaces.MultiDiscrete)
    assert model.observation_space("embeddings").dtype == np.float32
    assert model.observation_space("pixels").dtype == np.uint8


def test_a_refit_codebook_keeps_the_embeddings_space() -> None:
    """An agent that sees codebook vectors continues in the next iteration's dream: SB3
    refuses an env whose space differs from the agent's, bounds included."""
    model = build_model("discrete", "tiny", SPEC, ACTIONS)
    before = model.observation_space("embeddings")
    with torch.no_grad():
        model.quantizer.codebook.mul_(3.0).add_(1.0)
    assert model.observation_space("embeddings") == before


def test_unknown_obs_type(model: DiscreteWorldModel) -> None:
    with pytest.raises(
        ConfigError, match=r"obs_type of the 'discrete' family must be one of \[.*\], got 'rgb'"
    ):
        model.observation_space("rgb")
    with pytest.raises(ConfigError, match=r"must be one of .*, got 'rgb'"):
        model.observation(torch.zeros(1, 6, 6, dtype=torch.int64), "rgb")


def _grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def test_warmup_loss_trains_the_representation_only() -> None:
    torch.manual_seed(0)
    model = build_model("discrete", "tiny", SPEC, ACTIONS).train()
    out = model.loss(_batch(), "warmup", 0)
    assert out["loss"].shape == ()
    assert torch.isfinite(out["loss"])
    assert {"recon_loss", "commitment_loss"} <= set(out)
    out["loss"].backward()
    assert all(g is not None and torch.isfinite(g).all() for g in _grads(model.encoder))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(model.decoder))
    assert all(g is None for g in _grads(model.dynamics))


def test_joint_loss_trains_everything() -> None:
    torch.manual_seed(0)
    model = build_model("discrete", "tiny", SPEC, ACTIONS).train()
    out = model.loss(_batch(), "joint", 0)
    for key in ("latent_loss", "reward_loss", "termination_loss", "recon_loss"):
        assert torch.isfinite(out[key]), key
    assert 0.0 <= float(out["latent_acc"]) <= 1.0
    out["loss"].backward()
    assert all(g is not None for g in _grads(model.dynamics))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(model.encoder))
    reward_grads = _grads(model.dynamics.reward_head)
    assert all(g is not None and torch.isfinite(g).all() for g in reward_grads)


def test_joint_loss_skips_the_representation_between_its_updates() -> None:
    torch.manual_seed(0)
    model = build_model("discrete", "tiny", SPEC, ACTIONS).train()
    assert model.config.representation_every == 2
    out = model.loss(_batch(), "joint", 1)
    assert "recon_loss" not in out
    out["loss"].backward()
    assert all(g is None for g in _grads(model.encoder))
    assert all(g is not None for g in _grads(model.dynamics.cell1))


def test_metrics_keys_and_ranges(model: DiscreteWorldModel) -> None:
    metrics = model.metrics(_batch())
    assert {"recon_loss", "latent_acc", "reward_acc", "termination_acc"} <= set(metrics)
    for key in ("latent_acc", "reward_acc", "termination_acc"):
        assert 0.0 <= metrics[key] <= 1.0


def test_param_groups_give_the_reward_head_its_own_rate(model: DiscreteWorldModel) -> None:
    groups = model.param_groups(1e-3)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-3 * model.config.reward_lr_scale])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def _cb_nll_direct(logit: float, x: float) -> float:
    lam = 1.0 / (1.0 + math.exp(-logit))
    if abs(lam - 0.5) < 1e-12:
        log_c = math.log(2.0)
    else:
        log_c = math.log(2.0 * math.atanh(1.0 - 2.0 * lam) / (1.0 - 2.0 * lam))
    return -(x * math.log(lam) + (1.0 - x) * math.log(1.0 - lam) + log_c)


@pytest.mark.parametrize("logit", [-6.0, -1.5, -1e-4, 0.0, 2e-4, 0.3, 2.0, 7.0])
@pytest.mark.parametrize("x", [0.0, 0.25, 0.5, 1.0])
def test_continuous_bernoulli_nll_matches_the_density(logit: float, x: float) -> None:
    got = continuous_bernoulli_nll(
        torch.tensor([logit], dtype=torch.float64), torch.tensor([x], dtype=torch.float64)
    )
    assert float(got[0]) == pytest.approx(_cb_nll_direct(logit, x), rel=1e-6, abs=1e-6)


def test_continuous_bernoulli_nll_is_normalised() -> None:
    logit = torch.tensor([-3.0, -0.2, 0.0, 1.0, 5.0], dtype=torch.float64)[:, None]
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)[None]
    density = torch.exp(-continuous_bernoulli_nll(logit.expand(-1, x.shape[1]), x.expand(5, -1)))
    integral = torch.trapezoid(density, x[0], dim=1)
    torch.testing.assert_close(integral, torch.ones(5, dtype=torch.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("logit", [-4.0, -1e-4, 0.0, 0.5, 3.0])
def test_continuous_bernoulli_mean_matches_the_density(logit: float) -> None:
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)
    density = torch.exp(-continuous_bernoulli_nll(torch.full_like(x, logit), x))
    expected = float(torch.trapezoid(density * x, x))
    got = float(continuous_bernoulli_mean(torch.tensor([logit], dtype=torch.float64))[0])
    assert got == pytest.approx(expected, abs=1e-6)


def test_paper_preset_has_the_paper_size() -> None:
    model = build_model("discrete", "paper", SPEC, ACTIONS)
    counts = model.parameter_counts()
    assert 9_000_000 <= counts["total"] <= 12_000_000
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert model.config == DiscreteConfig()


def test_presets_shrink() -> None:
    totals = [
        build_model("discrete", p, SPEC, ACTIONS).parameter_counts()["total"]
        for p in ("tiny", "small")
    ]
    assert totals[0] < totals[1] < 9_000_000


def test_overrides_replace_fields() -> None:
    config = resolve_config("discrete", "tiny", {"num_codes": 16})
    assert config.num_codes == 16
    assert config.lstm_channels == DiscreteWorldModel.presets["tiny"].lstm_channels
    model = build_model("discrete", "tiny", SPEC, ACTIONS, {"num_codes": 16})
    assert model.observation_space("indices").nvec.tolist() == [16] * 36


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match=r"Unknown preset 'huge' for family 'discrete'"):
        build_model("discrete", "huge", SPEC, ACTIONS)


def test_unknown_family() -> None:
    with pytest.raises(
        ConfigError, match=r"Unknown world-model family 'rssm2'; known: .*'discrete'"
    ):
        build_model("rssm2", "small", SPEC, ACTIONS)


def test_unknown_override() -> None:
    with pytest.raises(ConfigError, match=r"Unknown 'discrete' model settings \['codes'\]"):
        build_model("discrete", "tiny", SPEC, ACTIONS, {"codes": 16})


def _warmed_up(steps: int = 3) -> tuple[DiscreteWorldModel, dict[str, torch.Tensor]]:
    """A tiny model after a few warm-up updates (BatchNorm running statistics away from
    their initial values), in train mode, and the batch it trained on."""
    torch.manual_seed(0)
    model = build_model("discrete", "tiny", SPEC, ACTIONS).train()
    batch = _batch(2, 3)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(steps):
        out = model.loss(batch, "warmup", step)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    return model, batch


def _batch_norms(model: DiscreteWorldModel) -> list[torch.nn.BatchNorm2d]:
    return [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_dynamics_train_on_the_indices_the_envs_see() -> None:
    model, batch = _warmed_up()
    seen: list[torch.Tensor] = []
    terms = model._sequence_terms
    model._sequence_terms = lambda b, indices, *rest: (
        seen.append(indices) or terms(b, indices, *rest)
    )
    model.loss(batch, "joint", 1)  # no representation update: the codebook stays
    del model._sequence_terms
    assert model.training and model.encoder.training
    model.eval()
    served = model.encode(batch["frames"].flatten(0, 1)).view_as(seen[0])
    assert torch.equal(seen[0], served)
    model.train()
    assert torch.equal(model.served_indices(batch["frames"].flatten(0, 1)).view_as(served), served)
    assert model.encoder.training  # served_indices gives the mode back


def test_a_loss_step_moves_batch_norm_statistics_once_per_representation_update() -> None:
    model, batch = _warmed_up()
    for step, moves in ((0, 1), (1, 0)):  # representation_every = 2
        before = [(int(m.num_batches_tracked), m.running_mean.clone()) for m in _batch_norms(model)]
        model.loss(batch, "joint", step)
        for (count, mean), m in zip(before, _batch_norms(model), strict=True):
            assert int(m.num_batches_tracked) == count + moves
            assert torch.equal(m.running_mean, mean) == (moves == 0)


def test_served_indices_leave_batch_norm_statistics_alone() -> None:
    model, batch = _warmed_up()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.served_indices(batch["frames"].flatten(0, 1))
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_eval_encode_folds_batch_norm_into_the_same_codes() -> None:
    model, batch = _warmed_up()
    model.eval()
    frames = batch["frames"].flatten(0, 1)
    assert all(float(bn.running_mean.abs().max()) > 0 for bn in _batch_norms(model))
    with torch.no_grad():
        reference = model.encoder(frames / 255.0)
    torch.testing.assert_close(
        model.encoder.infer(frames, torch.float32), reference, rtol=1e-4, atol=1e-5
    )
    assert torch.equal(model.encode(frames), model.module_indices(frames))


def test_bfloat16_infer_stays_near_the_float32_module() -> None:
    model, batch = _warmed_up()
    model.eval()
    frames = batch["frames"].flatten(0, 1)
    with torch.no_grad():
        reference = model.encoder(frames / 255.0)
    folded = model.encoder.infer(frames, torch.bfloat16)
    assert folded.dtype == torch.float32
    assert float((folded - reference).abs().max()) < 0.05 * float(reference.abs().max())


def test_encode_keeps_its_own_precision_under_an_outer_autocast() -> None:
    model, batch = _warmed_up()
    model.eval()
    frames = batch["frames"].flatten(0, 1)
    alone = model.encode(frames)
    with autocast("bfloat16", "cpu"):
        inside = model.encode(frames)
    assert torch.equal(alone, inside)


@pytest.mark.parametrize("is_native", [True, False])
def test_auto_encodes_in_the_machines_precision(
    monkeypatch: pytest.MonkeyPatch, is_native: bool
) -> None:
    import dataclasses
    import warnings

    import dreamenv.precision as precision_module

    monkeypatch.setattr(precision_module, "native_bfloat16", lambda kind: is_native)
    model, batch = _warmed_up()
    model.eval()
    frames = batch["frames"].flatten(0, 1)
    infer, dtypes, codes = model.encoder.infer, {}, {}

    def spy(f: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        dtypes[model.config.precision] = dtype
        return infer(f, dtype)

    monkeypatch.setattr(model.encoder, "infer", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # emulated bfloat16 warns
        for precision in ("auto", "float32", "bfloat16"):
            model.config = dataclasses.replace(model.config, precision=precision)
            codes[precision] = model.encode(frames)
    resolved = "bfloat16" if is_native else "float32"
    assert dtypes == {
        "auto": getattr(torch, resolved),
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
    }
    assert torch.equal(codes["auto"], codes[resolved])


def test_encoder_infer_refuses_train_mode() -> None:
    model, batch = _warmed_up()
    with pytest.raises(RuntimeError, match=r"running statistics: call \.eval\(\)"):
        model.encoder.infer(batch["frames"][:, 0], torch.float32)


def _dead_code_model() -> tuple[DiscreteWorldModel, dict[str, torch.Tensor], list]:
    """A warmed-up model with eight dead codes (usage below ``dead_usage``, their vectors
    kept), and the list its quantiser's updates append their encoder outputs to."""
    model, batch = _warmed_up()
    quantizer = model.quantizer
    with torch.no_grad():
        quantizer.cluster_size[:8] = 0.5 * quantizer.dead_usage
        quantizer.embed_sum[:8] = quantizer.codebook[:8] * quantizer.cluster_size[:8, None]
    outputs: list[torch.Tensor] = []
    update = quantizer.update
    quantizer.update = lambda z, idx, **kw: outputs.append(z) or update(z, idx, **kw)
    return model, batch, outputs


def _restarted(model: DiscreteWorldModel, outputs: list[torch.Tensor]) -> int:
    """Codebook entries equal to an encoder output of the update: a restart puts them there,
    an EMA step never does."""
    book = model.quantizer.codebook
    return int((book[:, None] == outputs[-1][None]).all(-1).any(1).sum())


def test_no_code_is_restarted_in_the_joint_phase() -> None:
    model, batch, outputs = _dead_code_model()
    model.loss(batch, "joint", 0)
    assert len(outputs) == 1
    assert _restarted(model, outputs) == 0
    assert int((model.quantizer.cluster_size < model.quantizer.dead_usage).sum()) >= 1


def test_dead_codes_are_restarted_in_the_warmup() -> None:
    model, batch, outputs = _dead_code_model()
    model.loss(batch, "warmup", 0)
    assert _restarted(model, outputs) >= 8


def test_moving_pixel_error_averages_only_what_moved() -> None:
    from dreamenv.models.discrete import moving_pixel_error

    frames = torch.zeros(2, 2, 4, 4, dtype=torch.uint8)
    frames[0, 1, 0, 0] = 255  # one pixel moved in the first stack, none in the second
    error = torch.full((2, 2, 4, 4), 0.01)
    error[0, 1, 0, 0] = 0.5
    assert float(moving_pixel_error(frames, error)) == pytest.approx(0.5)
    assert torch.isnan(moving_pixel_error(frames[:, :1], error[:, :1]))
    assert torch.isnan(moving_pixel_error(torch.zeros_like(frames), error))


def test_still_frame_error_scores_the_stack_median_on_the_newest_frame() -> None:
    from dreamenv.models.discrete import moving_pixel_error, still_frame_error

    frames = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    frames[0, 1, 0, 0] = 255  # lit in the middle frame only: the median is dark there
    frames[0, 2, 1, 1] = 51  # appears in the newest frame: the median does not draw it
    frames[:, :, 0, 1] = 102  # still everywhere: the median draws it exactly
    error = still_frame_error(frames)
    assert error[0, :2].sum().item() == 0  # only the newest frame is scored
    assert error[0, 2].tolist() == [[0.0, 0.0], [0.0, pytest.approx(0.04)]]
    # the two moving pixels: the one that went dark again costs 0, the new one 0.2 ** 2
    assert float(moving_pixel_error(frames, error)) == pytest.approx(0.02)
    assert still_frame_error(frames[:, :1]).sum().item() == 0  # one frame: its own median
    rgb = torch.zeros(1, 6, 1, 1, dtype=torch.uint8)
    rgb[0, 3] = 255  # the red channel of the newest frame (the lower median of 2 is 0)
    assert still_frame_error(rgb, channels=3)[0, :, 0, 0].tolist() == [0, 0, 0, 1, 0, 0]


def test_discrete_metrics_hold_the_still_frame_reference() -> None:
    from dreamenv.models.discrete import moving_pixel_error, still_frame_error

    model, batch = _warmed_up()
    metrics = model.eval().metrics(batch)
    first = batch["frames"][:, 0]
    expected = float(moving_pixel_error(first, still_frame_error(first, model.channels)))
    assert metrics["recon_moving_still_mse"] == pytest.approx(expected) and expected > 0


def test_moving_pixels_marks_what_changed_anywhere_in_the_stack() -> None:
    from dreamenv.models.discrete import moving_pixels

    frames = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    frames[0, 1, 0, 0] = 7  # between the first and second frame of the first stack
    frames[1, 2, 3, 3] = 7  # between the second and third of the second
    moving = moving_pixels(frames)
    assert moving.shape == (2, 1, 4, 4)
    assert moving.sum().item() == 2 and moving[0, 0, 0, 0] == 1 and moving[1, 0, 3, 3] == 1
    assert moving_pixels(frames[:, :1]).sum().item() == 0
    rgb = torch.zeros(1, 6, 2, 2, dtype=torch.uint8)
    rgb[0, 5, 1, 0] = 1  # the blue channel of the second frame
    assert moving_pixels(rgb, channels=3)[0, 0].tolist() == [[0.0, 0.0], [1.0, 0.0]]


@pytest.mark.parametrize("moving", [False, True])
def test_moving_weight_weighs_the_pixels_that_move(moving: bool) -> None:
    frames = _frames(4)
    if not moving:
        frames = frames[:, :1].expand_as(frames).contiguous()  # every stack is still
    losses = []
    for weight in (0.0, 9.0):
        torch.manual_seed(0)
        model = build_model("discrete", "tiny", SPEC, ACTIONS, {"moving_weight": weight})
        with torch.no_grad():
            rep = model.eval()._representation_loss(frames, update=False)
        losses.append(float(rep["recon_loss"]))
    if moving:
        assert losses[1] > 1.5 * losses[0]
    else:
        assert losses[1] == losses[0]


def test_moving_weight_must_not_be_negative() -> None:
    from dreamenv.models.discrete import DiscreteConfig

    with pytest.raises(ConfigError, match="moving_weight must be at least 0, got -1.0"):
        DiscreteConfig(moving_weight=-1.0)


@pytest.mark.parametrize(("moving_fraction", "share"), [(0.003, 0.5), (0.05, 0.5), (0.01, 0.2)])
def test_share_weight_gives_the_moving_pixels_their_share(
    moving_fraction: float, share: float
) -> None:
    from dreamenv.models.discrete import share_weight

    moving = torch.zeros(10_000)
    moving[: round(moving_fraction * 10_000)] = 1
    weight = 1 + share_weight(moving, share) * moving
    assert float((weight * moving).sum() / weight.sum()) == pytest.approx(share)


def test_share_weight_adds_nothing_where_the_share_is_reached_or_nothing_moves() -> None:
    from dreamenv.models.discrete import share_weight

    assert share_weight(torch.zeros(10), 0.5) == 0.0
    assert share_weight(torch.tensor([1.0, 1.0, 0.0]), 0.5) == 0.0


def test_moving_share_weighs_as_the_weight_it_chooses() -> None:
    from dreamenv.models.discrete import moving_pixels, share_weight

    frames = _frames(4)[:, :1].expand(-1, SPEC.frame_shape[0], -1, -1).contiguous()
    frames[:, -1, :3, :3] ^= 0xFF  # a small square moves in the newest frame of each stack
    weight = share_weight(moving_pixels(frames), 0.5)
    assert weight > 1
    losses = []
    for overrides in ({"moving_share": 0.5}, {"moving_weight": weight}, {}):
        torch.manual_seed(0)
        model = build_model("discrete", "tiny", SPEC, ACTIONS, overrides)
        with torch.no_grad():
            rep = model.eval()._representation_loss(frames, update=False)
        losses.append(float(rep["recon_loss"]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert losses[0] != pytest.approx(losses[2], rel=1e-3)  # and it does weigh


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"moving_share": 1.0}, r"moving_share must be in \[0, 1\) .*got 1.0"),
        ({"moving_share": -0.1}, r"moving_share must be in \[0, 1\) .*got -0.1"),
        (
            {"moving_share": 0.5, "moving_weight": 300.0},
            r"moving_share \(0.5\) and moving_weight \(300.0\) cannot both be set",
        ),
    ],
)
def test_moving_share_is_checked(kwargs: dict, message: str) -> None:
    from dreamenv.models.discrete import DiscreteConfig

    with pytest.raises(ConfigError, match=message):
        DiscreteConfig(**kwargs)


@pytest.mark.parametrize("share", [1.0, -0.25, float("nan")])
def test_sampled_inputs_is_checked(share: float) -> None:
    from dreamenv.models.discrete import DiscreteConfig

    with pytest.raises(ConfigError, match=rf"sampled_inputs must be in \[0, 1\) .*got {share}"):
        DiscreteConfig(sampled_inputs=share)


def _dynamics_inputs(share: float, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The codes a tiny model's dynamics read at each step of one training loss (joint phase,
    no representation update), and the real codes of the batch."""
    model, batch = _warmed_up()
    model.config = dataclasses.replace(model.config, sampled_inputs=share)
    seen: list[torch.Tensor] = []
    forward = model.dynamics.forward
    model.dynamics.forward = lambda e, a, s, current: (
        seen.append(current) or forward(e, a, s, current)
    )
    torch.manual_seed(seed)
    model.loss(batch, "joint", 1)
    del model.dynamics.forward
    b, steps1 = batch["frames"].shape[:2]
    real = model.served_indices(batch["frames"].flatten(0, 1)).view(
        b, steps1, model.grid, model.grid
    )
    return seen, real


def test_sampled_inputs_feed_the_dynamics_their_own_draws() -> None:
    seen, real = _dynamics_inputs(0.0)
    assert all(torch.equal(x, real[:, t]) for t, x in enumerate(seen))  # teacher forced
    seen, real = _dynamics_inputs(0.99)
    assert torch.equal(seen[0], real[:, 0])  # a window starts from real codes
    later = torch.stack(seen[1:], 1)
    assert not torch.equal(later, real[:, 1 : len(seen)])
    # a whole grid at a time: each later step of a sequence is the real grid or a draw
    swapped = (later != real[:, 1 : len(seen)]).flatten(2).any(2)
    assert swapped.float().mean() > 0.5


def test_sampled_inputs_leave_the_held_out_metrics_teacher_forced() -> None:
    model, batch = _warmed_up()
    model.eval()
    plain = model.metrics(batch)
    model.config = dataclasses.replace(model.config, sampled_inputs=0.9)
    assert model.metrics(batch) == plain


@pytest.mark.parametrize("reads_next", [False, True])
def test_heads_read_the_codes_the_dream_draws(reads_next: bool) -> None:
    torch.manual_seed(0)
    model = build_model("discrete", "tiny", SPEC, ACTIONS, {"heads_read_next": reads_next})
    model.eval()
    latent = torch.randint(0, model.config.num_codes, (2, 6, 6))
    state, action = model.zero_state(2), torch.tensor([1, 4])
    with torch.no_grad():
        model.dynamics.keep_logit.fill_(-20.0)  # draws that differ with the streams
        a = model.step(state, latent, action, _rng(2, seed=0))
        b = model.step(state, latent, action, _rng(2, seed=7))
    assert not torch.equal(a.next_latent, b.next_latent)
    assert torch.equal(a.reward_logits, b.reward_logits) is not reads_next
    assert torch.equal(a.termination_logits, b.termination_logits) is not reads_next


def test_heads_read_the_real_next_codes_in_training() -> None:
    torch.manual_seed(0)
    model = build_model("discrete", "tiny", SPEC, ACTIONS, {"heads_read_next": True}).eval()
    codes = torch.randint(0, model.config.num_codes, (2, 3, 6, 6))
    actions = torch.randint(0, ACTIONS, (2, 2))
    with torch.no_grad():
        _, rewards, ends = model._dynamics_outputs(codes, actions)
        forced = model.forced_step(
            model.zero_state(2), codes[:, 0], actions[:, 0], codes[:, 1], _rng(2)
        )
        with pytest.raises(ValueError, match="these heads read the next codes"):
            model.dynamics.heads(torch.zeros(2, 8 + ACTIONS, 6, 6), None)
    torch.testing.assert_close(forced.reward_logits, rewards[:, 0])
    torch.testing.assert_close(forced.termination_logits, ends[:, 0])


@pytest.mark.parametrize("kernel", [2, 4])
def test_encoder_kernel_2_codes_see_only_their_own_cell(kernel: int) -> None:
    torch.manual_seed(0)
    model = build_model("discrete", "tiny", SPEC, ACTIONS, {"encoder_kernel": kernel}).eval()
    frames = torch.randint(0, 256, (1, *SPEC.frame_shape), dtype=torch.uint8)
    changed = frames.clone()
    cell = SPEC.screen_size // model.grid
    changed[..., :cell, :cell] = 255 - changed[..., :cell, :cell]  # only the top-left cell
    with torch.no_grad():
        before, after = model._encode_continuous(frames), model._encode_continuous(changed)
    per_cell = (after - before).abs().amax(1).view(model.grid, model.grid)
    assert per_cell[0, 0] > 1e-3
    if kernel == 2:
        assert per_cell.flatten()[1:].max() < 1e-5
        others = model.served_indices(frames) == model.served_indices(changed)
        assert others.flatten()[1:].all()
    else:  # the paper's kernel: neighbours see the change
        assert per_cell[0, 1] > 1e-3 and per_cell[1, 1] > 1e-3


@pytest.mark.parametrize("kernel", [0, 3, True, 4.0])
def test_encoder_kernel_must_be_an_even_int(kernel: object) -> None:
    from dreamenv.models.discrete import DiscreteConfig

    with pytest.raises(ConfigError, match="encoder_kernel must be an even int of at least 2"):
        DiscreteConfig(encoder_kernel=kernel)  # type: ignore[arg-type]
