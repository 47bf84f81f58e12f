"""The state-space models of Buesing et al. (2018) and their building blocks."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from dreamenv.checkpoint import config_from_dict
from dreamenv.envs.atari import AtariSpec
from dreamenv.errors import ConfigError
from dreamenv.models import build_model, get_family
from dreamenv.models.blocks import (
    ConvStack,
    Encoder,
    InitialStateModule,
    PixelRewardDecoder,
    PoolAndInject,
    PosteriorModule,
    PriorModule,
    ResConv,
    TransitionModule,
    depth_to_space,
    space_to_depth,
    tile_action,
)
from dreamenv.models.common import window_steps
from dreamenv.models.ssm import (
    DSSMVAE,
    SSSM,
    DSSMDet,
    SSMConfig,
    SSSMJumpy,
    StateSpaceModel,
    gaussian_kl,
)
from dreamenv.random_streams import BatchRandom, key_from_seed

SPEC = AtariSpec("pong")
ACTIONS = 6
FAMILIES = ("dssm_det", "dssm_vae", "sssm", "sssm_jumpy")


def _model(family: str, spec: AtariSpec = SPEC, **overrides: object) -> StateSpaceModel:
    torch.manual_seed(0)
    return build_model(family, "tiny", spec, ACTIONS, overrides or None).eval()


def _frames(*shape: int, spec: AtariSpec = SPEC, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, *spec.frame_shape), generator=gen, dtype=torch.uint8)


def _rng(batch: int, seed: int = 0) -> BatchRandom:
    rng = BatchRandom(batch, "cpu")
    rng.set_keys(torch.arange(batch), [key_from_seed(seed + i) for i in range(batch)])
    return rng


def _actions(model: StateSpaceModel, batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch,) if model.jump == 1 else (batch, model.jump)
    return torch.randint(0, ACTIONS, shape, generator=gen)


def _batch(
    model: StateSpaceModel, b: int = 2, steps: int = 2, spec: AtariSpec = SPEC, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A window of ``steps`` model steps after the three-observation context."""
    n = model.window_steps(steps)
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(-1, 2, (b, n), generator=gen).float()
    rewards[0, 0] = 3.0
    terminated = torch.zeros(b, n, dtype=torch.bool)
    terminated[0, -1] = True
    return {
        "frames": _frames(b, n + 1, spec=spec, seed=seed),
        "actions": torch.randint(0, ACTIONS, (b, n), generator=gen),
        "rewards": rewards,
        "terminated": terminated,
        "mask": torch.ones(b, n, dtype=torch.bool),
    }


def _start(model: StateSpaceModel, b: int = 3, k: int = 4) -> tuple[torch.Tensor, tuple]:
    with torch.no_grad():
        emb = model.encode(_frames(b * k).view(b * k, *SPEC.frame_shape))
    emb = emb.unflatten(0, (b, k))
    actions = torch.randint(0, ACTIONS, (b, k - 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.initial_state(emb, actions)


# --- blocks ------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 4])
def test_space_to_depth_is_pixel_unshuffle_and_depth_to_space_inverts_it(factor: int) -> None:
    x = torch.randn(3, 2, 8 * factor, 4 * factor)
    packed = space_to_depth(x, factor)
    assert torch.equal(packed, torch.nn.functional.pixel_unshuffle(x, factor))
    assert torch.equal(depth_to_space(packed, factor), x)


def test_conv_stack_is_size_preserving_with_its_skip() -> None:
    stack = ConvStack(5, ((3, 8), (5, 8), (1, 6)))
    assert stack(torch.randn(2, 5, 10, 10)).shape == (2, 6, 10, 10)
    with pytest.raises(ConfigError, match="equal channels"):
        ConvStack(5, ((3, 8), (5, 16), (3, 6)))
    with pytest.raises(ConfigError, match="3 \\(kernel, channels\\) layers"):
        ConvStack(5, ((3, 8), (5, 8)))
    with pytest.raises(ConfigError, match="odd"):
        ConvStack(5, ((2, 8), (5, 8), (3, 6)))


def test_res_conv_adds_its_input() -> None:
    res = ResConv(10, 6, hidden=4)
    x = torch.randn(2, 10, 7, 7)
    with torch.no_grad():
        res.net[-1].weight.zero_()
        res.net[-1].bias.zero_()
    torch.testing.assert_close(res(x), x[:, :6])
    wide = ResConv(3, 6, hidden=4)
    with torch.no_grad():
        wide.net[-1].weight.zero_()
        wide.net[-1].bias.zero_()
    out = wide(x[:, :3])
    torch.testing.assert_close(out[:, :3], x[:, :3])
    assert bool((out[:, 3:] == 0).all())


def test_pool_and_inject_spreads_global_context() -> None:
    layer = PoolAndInject(4, 8, channels=3)
    x = torch.zeros(1, 4, 8, 8)
    y = x.clone()
    y[0, :, 0, 0] = 5.0
    with torch.no_grad():
        ox, oy = layer(x), layer(y)
    assert ox.shape == (1, 7, 8, 8)
    torch.testing.assert_close(oy[:, :4], y)
    injected = oy[:, 4:]
    assert bool((injected == injected[:, :, :1, :1]).all())  # the same everywhere
    assert not torch.equal(injected[:, :, 7, 7], ox[:, 4:, 7, 7])  # the far corner sees it


@pytest.mark.parametrize("size", [64, 80, 96])
def test_encoder_and_decoder_sizes(size: int) -> None:
    enc = Encoder(4, channels=8, hidden=(4, 4))
    emb = enc(torch.zeros(2, 4, size, size, dtype=torch.uint8))
    assert emb.shape == (2, 8, size // 8, size // 8)
    dec = PixelRewardDecoder(12, 4, size // 8, reward_bits=10, hidden=4, channels=8)
    pixels, head = dec(torch.zeros(2, 12, size // 8, size // 8))
    assert pixels.shape == (2, 4, size, size)
    assert head.shape == (2, 11)
    with pytest.raises(ConfigError, match="divisible by 4"):
        PixelRewardDecoder(12, 4, size // 8, reward_bits=10, channels=6)


def test_paper_module_sizes() -> None:
    """Figs. 9-14 with the paper's channels: 64-channel states, prior of 64 outputs."""
    g = 12
    s, e = torch.zeros(2, 64, g, g), torch.zeros(2, 64, g, g)
    a = tile_action(torch.tensor([1, 2]), ACTIONS, g)
    mean, std = PriorModule(64, ACTIONS)(s, a)
    assert mean.shape == std.shape == (2, 32, g, g) and bool((std > 0).all())
    q_mean, q_std = PosteriorModule(64, ACTIONS, 64)(s, a, e, mean, std)
    assert q_mean.shape == (2, 32, g, g) and bool((q_std > 0).all())
    assert TransitionModule(64, ACTIONS, 32, g)(s, mean, a).shape == (2, 64, g, g)
    assert InitialStateModule(64, 64)(torch.stack([e, e, e], 1)).shape == (2, 64, g, g)
    assert Encoder(4).stack2.conv3.out_channels == 64


def test_tile_action_one_hot_chunks() -> None:
    tiled = tile_action(torch.tensor([[1, 0], [2, 2]]), 3, 4)
    assert tiled.shape == (2, 6, 4, 4)
    torch.testing.assert_close(tiled[0, :, 2, 3], torch.tensor([0, 1, 0, 1, 0, 0.0]))
    torch.testing.assert_close(tiled[1, :, 0, 0], torch.tensor([0, 0, 1, 0, 0, 1.0]))
    assert tile_action(torch.tensor([1, 2]), 3, 4).shape == (2, 3, 4, 4)


# --- configs and families ----------------------------------------------------------------
def test_families_are_registered_and_share_the_config() -> None:
    classes = {"dssm_det": DSSMDet, "dssm_vae": DSSMVAE, "sssm": SSSM, "sssm_jumpy": SSSMJumpy}
    for name, cls in classes.items():
        assert get_family(name) is cls
        assert cls.config_class is SSMConfig
        assert cls.has_warmup is False
        assert cls.obs_types == ("state", "pixels")
        assert {"paper", "small", "tiny"} <= set(cls.presets)
    assert all(c.jump == 4 for c in SSSMJumpy.presets.values())
    assert all(c.jump == 1 for c in SSSM.presets.values())


def test_families_have_the_same_parameters() -> None:
    counts = {f: _model(f, jump=1).parameter_counts()["total"] for f in FAMILIES}
    assert len(set(counts.values())) == 1, counts


def test_presets_shrink_and_paper_has_the_paper_sizes() -> None:
    totals = [
        sum(p.numel() for p in build_model("sssm", p, SPEC, ACTIONS).parameters())
        for p in ("paper", "small", "tiny")
    ]
    assert totals[0] > totals[1] > totals[2]
    paper = build_model("sssm", "paper", SPEC, ACTIONS)
    assert paper.prior.stack.conv3.out_channels == 64
    assert paper.initial.stack.conv1.out_channels == 64
    assert paper.decoder.reward_conv.out_channels == 24
    assert paper.decoder.stack2.conv3.out_channels == 16 * SPEC.frame_stack


def test_config_is_json_and_round_trips() -> None:
    config = SSSMJumpy.presets["small"]
    data = json.loads(json.dumps(dataclasses.asdict(config)))
    assert config_from_dict(SSMConfig, data) == config


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("decoder_channels", 30, "divisible by 4"),
        ("jump", 0, "jump must be a positive int"),
        ("state_channels", 2.5, "state_channels must be a positive int"),
        ("encoder_hidden", (4, 4, 4), "encoder_hidden must be 2"),
        ("reward_loss_scale", -1.0, "reward_loss_scale must be a number >= 0"),
        ("reward_bits", 40, "reward_bits must be at most 30"),
    ],
)
def test_bad_config_values(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(SSMConfig(), **{field: value})


def test_frame_size_must_divide_by_8() -> None:
    spec = SimpleNamespace(frame_shape=(4, 84, 84))  # AtariSpec itself allows 64, 80, 96
    with pytest.raises(ConfigError, match="divisible by 8.*got 84"):
        SSSM(SSSM.presets["tiny"], spec, ACTIONS)


# --- the contract ------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_step_shapes_and_no_pixel_decoding(family: str) -> None:
    model = _model(family)
    latent, state = _start(model)
    assert latent.shape == (3, 12, 12, 12)
    assert state[1].shape == (3, 3, 8, 12, 12)

    def forbid(*_: object) -> None:
        raise AssertionError("step decoded pixels")

    hooks = [model.decoder.stack1.register_forward_hook(forbid)]  # the pixel branch
    hooks.append(model.decoder.stack2.register_forward_hook(forbid))
    try:
        with torch.no_grad():
            pred = model.step(state, latent, _actions(model, 3), _rng(3))
    finally:
        for hook in hooks:
            hook.remove()
    assert pred.next_latent.shape == latent.shape and pred.next_latent.dtype == torch.float32
    assert pred.reward_logits.shape == (3, 3)
    torch.testing.assert_close(pred.reward_logits.exp().sum(-1), torch.ones(3))
    assert pred.termination_logits.shape == (3,)
    assert pred.state[1] is state[1]  # the real context rides along unchanged
    torch.testing.assert_close(pred.state[0], pred.next_latent[:, :8])


@pytest.mark.parametrize("family", ["dssm_det", "dssm_vae"])
def test_dssm_steps_are_deterministic(family: str) -> None:
    model = _model(family)
    latent, state = _start(model)
    action = _actions(model, 3)
    rng = _rng(3, seed=0)
    with torch.no_grad():
        a = model.step(state, latent, action, rng, temperature=1.0)
        b = model.step(state, latent, action, _rng(3, seed=99), temperature=0.3)
    torch.testing.assert_close(a.next_latent, b.next_latent, rtol=0, atol=0)
    assert int(rng.counters.sum()) == 0  # draws nothing


@pytest.mark.parametrize("family", ["sssm", "sssm_jumpy"])
def test_sssm_steps_sample_from_the_streams(family: str) -> None:
    model = _model(family)
    latent, state = _start(model)
    action = _actions(model, 3)
    with torch.no_grad():
        a = model.step(state, latent, action, _rng(3, seed=0))
        again = model.step(state, latent, action, _rng(3, seed=0))
        other = model.step(state, latent, action, _rng(3, seed=5))
        cold = model.step(state, latent, action, _rng(3, seed=0), temperature=0.0)
        cold2 = model.step(state, latent, action, _rng(3, seed=5), temperature=0.0)
        mean = model.prior(state[0], tile_action(action, ACTIONS, model.grid))[0]
    torch.testing.assert_close(a.next_latent, again.next_latent, rtol=0, atol=0)
    assert not torch.allclose(a.next_latent, other.next_latent)
    torch.testing.assert_close(cold.next_latent, cold2.next_latent, rtol=0, atol=0)
    torch.testing.assert_close(cold.next_latent[:, 8:], mean)
    # env i's sample does not depend on the batch around it
    one = BatchRandom(1, "cpu")
    one.set_keys(torch.arange(1), [key_from_seed(1)])
    with torch.no_grad():
        single = model.step(tuple(s[1:2] for s in state), latent[1:2], action[1:2], one).next_latent
    torch.testing.assert_close(single, a.next_latent[1:2], rtol=1e-5, atol=1e-5)


def test_jumpy_model_takes_action_chunks() -> None:
    model = _model("sssm_jumpy")
    assert model.jump == 4
    assert model.action_space == gym.spaces.MultiDiscrete([ACTIONS] * 4)
    assert model.window_steps(10) == window_steps(10, 4) == 2 + 40
    latent, state = _start(model, k=8)
    chunk = torch.tensor([[0, 1, 2, 3]] * 3)
    other = torch.tensor([[0, 1, 2, 4]] * 3)
    with torch.no_grad():
        a = model.step(state, latent, chunk, _rng(3), temperature=0.0)
        b = model.step(state, latent, other, _rng(3), temperature=0.0)
    assert not torch.allclose(a.next_latent, b.next_latent)  # every action of a chunk counts
    assert _model("sssm").action_space == gym.spaces.Discrete(ACTIONS)


@pytest.mark.parametrize("family", ["dssm_det", "sssm"])
def test_observations_lie_in_their_spaces(family: str) -> None:
    model = _model(family)
    latent, state = _start(model)
    with torch.no_grad():
        latent = model.step(state, latent, _actions(model, 3), _rng(3)).next_latent
        for obs_type in model.obs_types:
            space = model.observation_space(obs_type)
            obs = model.observation(latent, obs_type).numpy()
            assert obs.dtype == space.dtype
            assert all(space.contains(o) for o in obs)
        assert model.decode(latent).shape == (3, *SPEC.frame_shape)
    assert model.observation_space("state").shape == (12, 12, 12)
    with pytest.raises(
        ConfigError, match=r"obs_type of the '\w+' family must be one of \[.*\], got 'indices'"
    ):
        model.observation_space("indices")


def test_initial_state_repeats_the_first_observation_and_ignores_old_ones() -> None:
    model = _model("sssm")
    with torch.no_grad():
        emb = model.encode(_frames(8)).unsqueeze(0)  # (1, 8, E, G, G)
    actions = torch.randint(0, ACTIONS, (1, 7))
    with torch.no_grad():
        one, _ = model.initial_state(emb[:, :1], actions[:, :0])
        padded, _ = model.initial_state(emb[:, [0, 0, 0, 0]], torch.zeros(1, 3).long())
        full, full_state = model.initial_state(emb, actions)
        changed = emb.clone()
        changed[:, :4] = 0.0  # older than the three context observations and the newest
        ignored, _ = model.initial_state(changed, actions)
    torch.testing.assert_close(one, padded)
    torch.testing.assert_close(full, ignored)
    torch.testing.assert_close(full_state[1], emb[:, -3:])
    with pytest.raises(ConfigError, match="K-1"):
        model.initial_state(emb, actions[:, :2])


@pytest.mark.parametrize("family", FAMILIES)
def test_filter_follows_real_observations(family: str) -> None:
    model = _model(family)
    latent, state = _start(model)
    action = _actions(model, 3)
    with torch.no_grad():
        e1, e2 = model.encode(_frames(3, seed=1)), model.encode(_frames(3, seed=2))
        l1, s1 = model.filter(state, latent, action, e1)
        again, _ = model.filter(state, latent, action, e1)
        l2, s2 = model.filter(state, latent, action, e2)
        # the newest real observation becomes context for the next real step
        n1, _ = model.filter(s1, l1, action, e1)
        n2, _ = model.filter(s2, l2, action, e1)
    torch.testing.assert_close(l1, again, rtol=0, atol=0)  # deterministic
    torch.testing.assert_close(s1[1][:, -1], e1)
    torch.testing.assert_close(s1[1][:, :2], state[1][:, 1:])
    assert not torch.allclose(n1, n2)
    if family.startswith("sssm"):  # its posterior sees the new observation at once
        assert not torch.allclose(l1, l2)


# --- training ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_loss_terms_are_finite(family: str) -> None:
    model = _model(family).train()
    out = model.loss(_batch(model), "joint", 0)
    assert {"loss", "recon_loss", "kl_loss", "reward_loss", "termination_loss"} <= set(out)
    assert all(bool(torch.isfinite(v).all()) for v in out.values())
    out["loss"].backward()
    posterior_grad = model.posterior.stack.conv1.weight.grad
    if family == "dssm_det":
        assert float(out["kl_loss"]) == 0.0
        assert posterior_grad is None  # maximum likelihood: no posterior
    else:
        assert float(out["kl_loss"]) > 0.0
        assert posterior_grad is not None and bool(posterior_grad.abs().sum() > 0)
    assert model.encoder.stack1.conv1.weight.grad is not None


@pytest.mark.parametrize(("family", "samples_into_g"), [("dssm_vae", False), ("sssm", True)])
def test_only_the_sssm_feeds_samples_into_the_transition(family: str, samples_into_g: bool) -> None:
    model = _model(family).train()
    means, zs = [], []
    h1 = model.prior.register_forward_hook(lambda m, i, o: means.append(o[0]))
    h2 = model.transition.register_forward_hook(lambda m, i, o: zs.append(i[1]))
    try:
        model.loss(_batch(model), "joint", 0)
    finally:
        h1.remove()
        h2.remove()
    same = all(torch.equal(m, z) for m, z in zip(means, zs, strict=True))
    assert same is not samples_into_g


def test_gaussian_kl_matches_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)
    sq, sp = (
        torch.rand(3, 2, 4, 4, generator=gen) + 0.1,
        torch.rand(3, 2, 4, 4, generator=gen) + 0.1,
    )
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mq, sq), torch.distributions.Normal(mp, sp)
    )
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), ref.flatten(1).sum(1))


@pytest.mark.parametrize("family", ["sssm", "sssm_jumpy"])
def test_loss_decreases_on_a_fixed_batch(family: str) -> None:
    spec = AtariSpec("pong", screen_size=64)
    model = _model(family, spec).train()
    batch = _batch(model, b=2, steps=2, spec=spec)
    frames = torch.zeros_like(batch["frames"])  # a bright block moving over black
    for t in range(frames.shape[1]):
        frames[:, t, :, 8:24, 2 * t : 2 * t + 16] = 255
    batch["frames"] = frames
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model.loss(batch, "joint", 0)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append((float(out["loss"].detach()), float(out["recon_loss"])))
    first, last = np.mean(losses[:5], 0), np.mean(losses[-5:], 0)
    assert last[0] < 0.8 * first[0]  # the total
    assert last[1] < 0.8 * first[1]  # the image term alone


@pytest.mark.parametrize("family", FAMILIES)
def test_test_nll_and_metrics(family: str) -> None:
    model = _model(family)
    batch = _batch(model)
    nll = model.test_nll(batch)
    assert nll == model.test_nll(batch) and np.isfinite(nll) and nll > 0
    metrics = model.metrics(batch)
    for key in ("recon_loss", "reward_acc", "termination_acc", "open_loop_recon_loss", "nll"):
        assert np.isfinite(metrics[key])
    assert 0 <= metrics["reward_acc"] <= 1 and 0 <= metrics["termination_acc"] <= 1
    assert nll == pytest.approx(metrics["nll"], rel=1e-5)
    if family == "dssm_det":
        assert nll == pytest.approx(metrics["recon_loss"], rel=1e-6)
    else:
        assert nll > metrics["recon_loss"]


def test_jumpy_test_nll_scores_the_sub_sampled_frames() -> None:
    model = _model("sssm_jumpy")
    batch = _batch(model, steps=2)  # real frames: context 0..2, scored 6 and 10
    base = model.test_nll(batch)
    skipped = {**batch, "frames": batch["frames"].clone()}
    skipped["frames"][:, 4] = 0
    scored = {**batch, "frames": batch["frames"].clone()}
    scored["frames"][:, 6] = 0
    assert model.test_nll(skipped) == base
    assert model.test_nll(scored) != base


def test_masked_steps_do_not_count() -> None:
    model = _model("sssm")
    batch = _batch(model, steps=3)
    batch["mask"][1, -1] = False
    base = model.test_nll(batch)
    changed = {**batch, "frames": batch["frames"].clone()}
    changed["frames"][1, -1] = 0
    assert model.test_nll(changed) == pytest.approx(base, rel=1e-6)
