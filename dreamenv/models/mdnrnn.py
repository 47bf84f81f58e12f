"""The World Models of Ha & Schmidhuber (2018): a VAE (V) and an MDN-RNN (M).

- V, the vision model: a convolutional VAE on one observation ``(frame_stack * C, S, S)``
  (grey or RGB frames; the original's CarRacing frames are RGB 64x64). Four
  stride-2 4x4 convolutions without padding (32-64-128-256 channels, ReLU), flattened, and
  a linear layer to the mean and log-variance of ``z`` in R^32. The decoder mirrors it: a
  linear layer to the last convolution's grid, then stride-2 4x4 transposed convolutions
  back to pixel logits. Pixels are Bernoulli with the frames' pixels as pseudo-probabilities
  (:func:`~dreamenv.models.common.pixel_kl`), so its likelihood compares with the other
  families'. (The original decoder grows a 1x1 map with 5-5-6-6 kernels and only makes 64x64
  frames; here the decoder inverts the encoder's own sizes, so S = 48, 64, 80 and 96 all
  work with four convolutions.)
- M, the memory model: an LSTM over ``[z_t, a_t]`` (``a_t``: a one-hot, or a continuous
  action rescaled to [-1, 1] as the original's CarRacing actions); from its output ``h_{t+1}`` a
  mixture density network gives, for every dimension of ``z`` separately (the original's
  factorisation), a mixture of ``K`` Gaussians (logits, means, log-stds) over ``z_{t+1}``;
  linear heads score the reward over the reward coder's support ((-1, 0, +1) for clipped
  rewards, a two-hot symlog grid for real ones) and termination (the original's Doom model
  predicts the agent's death the same way).
- The latent is ``[z_t, h_t]``, the original controller's input: ``h_t`` is the LSTM output
  that summarises the past and predicted ``z_t``. A dream step samples ``z_{t+1}`` from the
  MDN at temperature ``tau`` as the original does: mixture logits divided by ``tau``, the
  Gaussians' std multiplied by ``sqrt(tau)``; ``tau = 0`` gives the mean of the most likely
  component. The real env encodes each real observation to its posterior mean and advances
  the LSTM with the real action (:meth:`MDNRNNWorldModel.filter`).
- Training: the ``"warmup"`` phase trains V alone on its ELBO with the original's KL
  tolerance (free bits); the ``"joint"`` phase trains M on V's codes (posterior samples or
  means, detached: M's losses never reach V, as the original trains V and then M) and keeps
  V's loss with weight ``vae_weight`` (0 freezes V).

Example:
    >>> model = build_model("mdnrnn", "tiny", AtariSpec("pong"), num_actions=6)
    >>> z = model.encode(torch.zeros(2, 4, 96, 96, dtype=torch.uint8))  # (2, z_dim)
    >>> latent, state = model.initial_state(z[:, None], torch.zeros(2, 0, dtype=torch.long))
    >>> rng = BatchRandom(2, "cpu")
    >>> pred = model.step(state, latent, torch.tensor([0, 3]), rng, temperature=1.15)
    >>> pred.next_latent.shape  # [z, h]: (2, z_dim + lstm_hidden)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dreamenv import precision
from dreamenv.envs.atari import AtariSpec
from dreamenv.envs.spec import GYM_SCREEN_SIZES, ActionSpec
from dreamenv.errors import ConfigError
from dreamenv.models.base import Prediction, State, WorldModel, register_family
from dreamenv.models.common import (
    NLL_CONTEXT,
    feature_input,
    image_frames,
    masked_mean,
    normal_from_uniform,
    pixel_kl,
    pixel_mean,
    sample_categorical,
    to_unit,
)
from dreamenv.random_streams import BatchRandom

KERNEL = 4
"""Kernel size of every (transposed) convolution of V (stride 2, no padding)."""
LOG_STD_MIN, LOG_STD_MAX = -7.0, 3.0
"""Range the MDN's log-stds are clamped to, so that a near-deterministic latent dimension
cannot drive its likelihood to infinity."""
LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class MDNRNNConfig:
    """Hyperparameters of the World Models VAE + MDN-RNN (defaults: the paper's sizes)."""

    encoder_channels: tuple[int, ...] = (32, 64, 128, 256)
    """Channels of V's stride-2 4x4 encoder convolutions (mirrored by the decoder)."""
    z_dim: int = 32
    """Dimension of V's latent code z."""
    lstm_hidden: int = 256
    """Hidden units of M's LSTM (256 for CarRacing in the paper, 512 for Doom)."""
    num_mixtures: int = 5
    """Gaussians in the MDN's mixture for every dimension of z."""
    kl_tolerance: float = 0.5
    """Free bits per dimension of z: V's KL term is max(KL, kl_tolerance * z_dim) (0 disables)."""
    sample_z: bool = True
    """Train M on samples of V's posterior (the original) instead of its means."""
    vae_weight: float = 1.0
    """Weight of V's loss in the joint phase (0 freezes V after the warm-up, as the original)."""
    reward_weight: float = 1.0
    """Weight of the reward head's cross-entropy in the joint phase."""
    termination_weight: float = 1.0
    """Weight of the termination head's binary cross-entropy in the joint phase."""
    recon_frames: int = 0
    """Observations of a batch V's loss is computed on (a random subset; 0 = all)."""

    def __post_init__(self) -> None:
        channels = self.encoder_channels
        if not (
            isinstance(channels, tuple)
            and channels
            and all(isinstance(c, int) and c >= 1 for c in channels)
        ):
            raise ConfigError(
                "encoder_channels must be a non-empty tuple of positive ints such as "
                f"(32, 64, 128, 256), got {channels!r}."
            )
        for name in ("z_dim", "lstm_hidden", "num_mixtures"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{name} must be a positive int, got {value!r}.")
        for name in ("kl_tolerance", "vae_weight", "reward_weight", "termination_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}.")
        if not (isinstance(self.recon_frames, int) and self.recon_frames >= 0):
            raise ConfigError(
                f"recon_frames must be an int >= 0 (0 = all), got {self.recon_frames!r}."
            )


PRESETS = {
    "paper": MDNRNNConfig(),
    "small": MDNRNNConfig(encoder_channels=(16, 32, 64, 64), lstm_hidden=128, recon_frames=64),
    "tiny": MDNRNNConfig(
        encoder_channels=(4, 8, 8, 16), z_dim=8, lstm_hidden=16, num_mixtures=3, recon_frames=8
    ),
}


def conv_sizes(size: int, layers: int) -> list[int]:
    """Spatial sizes through ``layers`` stride-2 4x4 convolutions without padding."""
    sizes = [size]
    for _ in range(layers):
        sizes.append((sizes[-1] - KERNEL) // 2 + 1)
    return sizes


class VAEEncoder(nn.Module):
    """Observation -> mean and log-variance of q(z | o)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], grid: int, z_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for c in channels:
            layers += [nn.Conv2d(prev, c, KERNEL, 2), nn.ReLU()]
            prev = c
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.posterior = nn.Linear(prev * grid * grid, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.posterior(self.convs(x)).chunk(2, -1)
        return mean, log_var


class VAEDecoder(nn.Module):
    """z -> pixel logits, inverting the encoder's sizes exactly (``sizes`` from the input)."""

    def __init__(self, out_channels: int, channels: tuple[int, ...], sizes: list[int], z_dim: int):
        super().__init__()
        rev = list(reversed(channels))
        self.first = (rev[0], sizes[-1], sizes[-1])
        self.linear = nn.Linear(z_dim, rev[0] * sizes[-1] * sizes[-1])
        outs = [*rev[1:], out_channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(rev, outs, strict=True)):
            small, big = sizes[-1 - i], sizes[-2 - i]
            pad = big - (2 * small + KERNEL - 2)  # 0 or 1: the row a strided conv dropped
            layers.append(nn.ConvTranspose2d(c_in, c_out, KERNEL, 2, output_padding=pad))
            if i < len(rev) - 1:  # the last layer gives logits
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.linear(z).view(-1, *self.first))


class Mixture(NamedTuple):
    """Per-dimension Gaussian mixtures over z: tensors ``(..., z_dim, K)``."""

    logits: torch.Tensor
    """Unnormalised log-weights of the components."""
    means: torch.Tensor
    """Component means."""
    log_stds: torch.Tensor
    """Component log standard deviations."""

    def log_prob_dims(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of ``z`` ``(..., z_dim)`` in every dimension: ``(..., z_dim)``."""
        x = (z[..., None] - self.means) * torch.exp(-self.log_stds)
        log_normal = -0.5 * (x.square() + LOG_2PI) - self.log_stds
        return torch.logsumexp(F.log_softmax(self.logits, -1) + log_normal, -1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of ``z`` ``(..., z_dim)`` (summed over dimensions): ``(...)``."""
        return self.log_prob_dims(z).sum(-1)

    def mean(self) -> torch.Tensor:
        """The mixtures' means ``(..., z_dim)``."""
        return (torch.softmax(self.logits, -1) * self.means).sum(-1)

    def sample(self, u: torch.Tensor, temperature: float) -> torch.Tensor:
        """Samples ``(B, z_dim)`` at ``temperature`` from uniforms ``u`` ``(B, 2, z_dim)``.

        As in the original: logits divided by ``tau``, stds multiplied by ``sqrt(tau)``, a
        component drawn per dimension; ``tau = 0`` gives the most likely component's mean.
        """
        if temperature <= 0:
            best = self.logits.argmax(-1, keepdim=True)
            return self.means.gather(-1, best).squeeze(-1)
        probs = torch.softmax(self.logits / temperature, -1)
        k = sample_categorical(probs, u[:, 0])[..., None]
        mean = self.means.gather(-1, k).squeeze(-1)
        std = self.log_stds.gather(-1, k).squeeze(-1).exp() * math.sqrt(temperature)
        return mean + std * normal_from_uniform(u[:, 1])


class Memory(nn.Module):
    """M: the LSTM over ``[z_t, a_t]`` (action features) and its MDN, reward and
    termination heads."""

    def __init__(self, config: MDNRNNConfig, num_actions: int, reward_size: int = 3) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.z_dim, self.k = config.z_dim, config.num_mixtures
        self.lstm = nn.LSTM(config.z_dim + num_actions, config.lstm_hidden, batch_first=True)
        self.mdn = nn.Linear(config.lstm_hidden, 3 * config.z_dim * config.num_mixtures)
        self.reward = nn.Linear(config.lstm_hidden, reward_size)
        self.termination = nn.Linear(config.lstm_hidden, 1)

    def run(
        self, z: torch.Tensor, actions: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """LSTM outputs ``(B, T, H)`` over ``z`` ``(B, T, z_dim)`` and action features
        ``(B, T, A)`` (or int64 actions ``(B, T)``) from ``state`` ``(h, c)`` (zeros if
        None), and the final ``(h, c)``, each ``(B, H)``."""
        features = feature_input(actions, self.num_actions).to(z.dtype)
        hc = None if state is None else (state[0][None].contiguous(), state[1][None].contiguous())
        x, kind = torch.cat([z, features], -1), z.device.type
        if torch.is_autocast_enabled(kind) and not precision.native_bfloat16(kind):
            # oneDNN has no bfloat16 LSTM where bfloat16 is emulated (an AVX2 CPU refused
            # one): there M's LSTM runs in float32, as it would outside autocast
            with torch.autocast(kind, enabled=False):
                hc = None if hc is None else (hc[0].float(), hc[1].float())
                out, (h, c) = self.lstm(x.float(), hc)
        else:
            out, (h, c) = self.lstm(x, hc)
        return out, (h[0], c[0])

    def heads(self, h: torch.Tensor) -> tuple[Mixture, torch.Tensor, torch.Tensor]:
        """From LSTM outputs ``(..., H)``: the mixture over the next z, reward logits
        ``(..., reward_size)`` and termination logits ``(...)``."""
        params = self.mdn(h).view(*h.shape[:-1], self.z_dim, 3, self.k)
        logits, means, log_stds = params.unbind(-2)
        mixture = Mixture(logits, means, log_stds.clamp(LOG_STD_MIN, LOG_STD_MAX))
        return mixture, self.reward(h), self.termination(h).squeeze(-1)


def gaussian_kl_to_standard(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, 1)) summed over the last dim."""
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)


@register_family
class MDNRNNWorldModel(WorldModel):
    """VAE + MDN-RNN world model; latents are ``[z_t, h_t]`` float ``(B, z_dim + lstm_hidden)``."""

    family = "mdnrnn"
    config_class = MDNRNNConfig
    presets = PRESETS
    obs_types = ("latent", "pixels")
    has_warmup = True

    def __init__(
        self, config: MDNRNNConfig, spec: AtariSpec, num_actions: int | ActionSpec
    ) -> None:
        super().__init__(config, spec, num_actions)
        _, stack, size = image_frames(spec, "mdnrnn")
        layers = len(config.encoder_channels)
        sizes = conv_sizes(size, layers)
        if sizes[-1] < 1:
            fits = [s for s in GYM_SCREEN_SIZES if conv_sizes(s, layers)[-1] >= 1]
            raise ConfigError(
                f"screen_size={size} is too small for {layers} stride-2 "
                f"4x4 convolutions (sizes {sizes}); use fewer encoder_channels or larger frames "
                f"(screen sizes {fits} fit {layers})."
            )
        self.z_dim = config.z_dim
        self.pixels = stack * size * size
        self.encoder = VAEEncoder(stack, config.encoder_channels, sizes[-1], config.z_dim)
        self.decoder = VAEDecoder(stack, config.encoder_channels, sizes, config.z_dim)
        self.memory = Memory(config, self.num_actions, self.reward_coder.size)

    # --- V ------------------------------------------------------------------------------
    def _init_termination_head(self, logit: float) -> None:
        with torch.no_grad():
            self.memory.termination.weight.zero_()
            self.memory.termination.bias.fill_(logit)

    def posterior(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | o) for uint8 observations ``(N, *frame_shape)``."""
        return self.encoder(to_unit(frames))

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """The posterior means ``(B, z_dim)`` of real observations (the embeddings)."""
        return self.posterior(frames)[0]

    def decode_logits(self, latent: torch.Tensor) -> torch.Tensor:
        """Pixel logits of the z part of latents ``(B, z_dim + H)`` (or of codes ``(B, z_dim)``)."""
        return self.decoder(latent[..., : self.z_dim])

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return pixel_mean(self.decode_logits(latent))

    # --- M ------------------------------------------------------------------------------
    def zero_state(self, batch: int) -> State:
        """The LSTM's initial ``(h, c)``, each ``(batch, lstm_hidden)`` zeros."""
        shape = (batch, self.config.lstm_hidden)
        return (torch.zeros(shape, device=self.device), torch.zeros(shape, device=self.device))

    def _advance(self, z: torch.Tensor, action: torch.Tensor, state: State) -> State:
        """One LSTM step after ``action`` (``(B,)`` or ``(B, 1)``; continuous ``(B, n)``)."""
        features = self.action_features(action).reshape(action.shape[0], 1, self.num_actions)
        _, state = self.memory.run(z[:, None], features, state)
        return state

    def initial_state(
        self, embeddings: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        b = embeddings.shape[0]
        embeddings = embeddings.reshape(b, -1, self.z_dim)
        if actions.shape[1] == 0:
            state = self.zero_state(b)
        else:
            _, state = self.memory.run(embeddings[:, :-1], self.action_features(actions))
        return torch.cat([embeddings[:, -1], state[0]], -1), state

    def step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float = 1.0,
    ) -> Prediction:
        state = self._advance(latent[:, : self.z_dim], action, state)
        mixture, reward_logits, term_logits = self.memory.heads(state[0])
        u = rng.uniform((2, self.z_dim)).to(state[0].device)
        z = mixture.sample(u, float(temperature))
        return Prediction(torch.cat([z, state[0]], -1), reward_logits, term_logits, state)

    def filter(
        self, state: State, latent: torch.Tensor, action: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        state = self._advance(latent[:, : self.z_dim], action, state)
        return torch.cat([embedding.reshape(-1, self.z_dim), state[0]], -1), state

    # --- observations -------------------------------------------------------------------
    def observation(self, latent: torch.Tensor, obs_type: str) -> torch.Tensor:
        self.check_obs_type(obs_type)
        if obs_type == "latent":
            return latent.float()
        return self.decode(latent)

    def observation_space(self, obs_type: str) -> gym.Space:
        self.check_obs_type(obs_type)
        if obs_type == "latent":
            hidden = self.config.lstm_hidden
            # z is a Gaussian mixture sample (unbounded); h = o * tanh(c) lies in [-1, 1].
            low = np.concatenate([np.full(self.z_dim, -np.inf), np.full(hidden, -1.0)])
            high = np.concatenate([np.full(self.z_dim, np.inf), np.full(hidden, 1.0)])
            return gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        return gym.spaces.Box(0, 255, self.spec.frame_shape, np.uint8)

    # --- training -----------------------------------------------------------------------
    def vae_terms(
        self, frames: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """V's ELBO terms for ``frames`` ``(N, ...)`` and their posterior, one sample each.

        ``loss`` is the negative ELBO per pixel with the KL term floored at
        ``kl_tolerance * z_dim`` nats (the original's free bits).
        """
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        recon = pixel_kl(self.decoder(z), frames).mean()
        kl = gaussian_kl_to_standard(mean, log_var).mean()
        free = self.config.kl_tolerance * self.z_dim
        loss = recon + torch.clamp(kl, min=free) / self.pixels
        return {"loss": loss, "recon_loss": recon, "kl_loss": kl}

    def sequence_terms(
        self, batch: dict[str, torch.Tensor], z: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """M's teacher-forced losses and accuracies over codes ``z`` ``(B, T+1, z_dim)``."""
        out, _ = self.memory.run(z[:, :-1], self.action_features(batch["actions"]))
        mixture, reward_logits, term_logits = self.memory.heads(out)
        target = z[:, 1:]
        mask = batch["mask"].float()
        latent_nll = -mixture.log_prob_dims(target).mean(-1)
        reward_ce = self.reward_coder.loss(reward_logits, batch["rewards"])
        term = batch["terminated"].float()
        term_bce = F.binary_cross_entropy_with_logits(term_logits, term, reduction="none")
        return {
            "latent_loss": masked_mean(latent_nll, mask),
            "reward_loss": masked_mean(reward_ce, mask),
            "termination_loss": masked_mean(term_bce, mask),
            "latent_mse": masked_mean((mixture.mean() - target).square().mean(-1), mask),
            "reward_acc": masked_mean(
                self.reward_coder.accuracy(reward_logits, batch["rewards"]), mask
            ),
            "termination_acc": masked_mean(((term_logits > 0).float() == term).float(), mask),
        }

    def _recon_index(self, n: int, device: torch.device) -> torch.Tensor | None:
        k = self.config.recon_frames
        if not k or k >= n:
            return None
        return torch.randperm(n, device=device)[:k]

    def loss(
        self, batch: dict[str, torch.Tensor], phase: str, step: int
    ) -> dict[str, torch.Tensor]:
        if phase not in ("warmup", "joint"):
            raise ConfigError(f"phase must be 'warmup' or 'joint', got {phase!r}.")
        frames = batch["frames"]
        b, steps1 = frames.shape[:2]
        flat = frames.flatten(0, 1)
        index = self._recon_index(len(flat), flat.device)
        train_vae = phase == "warmup" or self.config.vae_weight > 0
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=flat.device)
        posterior = None
        if train_vae:
            sub = flat if index is None else flat[index]
            mean, log_var = self.posterior(sub)
            vae = self.vae_terms(sub, mean, log_var)
            out.update(recon_loss=vae["recon_loss"].detach(), kl_loss=vae["kl_loss"].detach())
            if phase == "warmup":
                out["loss"] = vae["loss"]
                return out
            total = total + self.config.vae_weight * vae["loss"]
            if index is None:
                posterior = (mean.detach(), log_var.detach())
        if posterior is None:
            with torch.no_grad():
                posterior = self.posterior(flat)
        mean, log_var = posterior
        z = mean
        if self.config.sample_z:
            z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        terms = self.sequence_terms(batch, z.view(b, steps1, self.z_dim))
        out.update({k: v.detach() for k, v in terms.items()})
        out["loss"] = (
            total
            + terms["latent_loss"]
            + self.config.reward_weight * terms["reward_loss"]
            + self.config.termination_weight * terms["termination_loss"]
        )
        return out

    @torch.no_grad()
    def metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Held-out figures: V's ``recon_loss`` (pixel KL of the posterior mean's decoding)
        and ``kl_loss``; M's ``latent_loss`` (MDN negative log-likelihood per dimension of
        the next posterior mean), ``latent_mse`` (of the mixture mean), ``reward_acc`` and
        ``termination_acc``, teacher-forced on posterior means."""
        frames = batch["frames"]
        b, steps1 = frames.shape[:2]
        flat = frames.flatten(0, 1)
        mean, log_var = self.posterior(flat)
        terms = self.sequence_terms(batch, mean.view(b, steps1, self.z_dim))
        return {
            "recon_loss": float(pixel_kl(self.decoder(mean), flat).mean()),
            "kl_loss": float(gaussian_kl_to_standard(mean, log_var).mean()),
            **{k: float(v) for k, v in terms.items()},
        }

    @torch.no_grad()
    def test_nll(self, batch: dict[str, torch.Tensor]) -> float:
        """Negative ELBO per pixel of the observations after the first ``NLL_CONTEXT``.

        The prior of ``z_{t+1}`` is M's mixture after the LSTM has read the posterior means
        of the real observations up to ``o_t`` and the real actions (teacher forcing, as
        :meth:`filter`). For every scored observation, one sample ``z ~ q(z | o)`` (from a
        generator seeded 0, so the figure is reproducible) estimates
        ``-ELBO = E_q[-log p(o | z)] + KL(q(z | o) || p_M(z))`` as
        ``pixel_kl(o | z) * pixels + log q(z | o) - log p_M(z)``; divided by the pixels and
        averaged over the scored observations (masked past an episode's end). The pixel
        term is the Bernoulli KL of :func:`~dreamenv.models.common.pixel_kl`, shared by
        every family.
        """
        frames = batch["frames"]
        b, steps1 = frames.shape[:2]
        if steps1 <= NLL_CONTEXT:
            raise ConfigError(
                f"test_nll needs more than {NLL_CONTEXT} observations per sequence (the "
                f"context), got {steps1}; raise seq_len."
            )
        mean, log_var = self.posterior(frames.flatten(0, 1))
        mean, log_var = mean.view(b, steps1, -1), log_var.view(b, steps1, -1)
        out, _ = self.memory.run(mean[:, :-1], self.action_features(batch["actions"]))
        prior, _, _ = self.memory.heads(out[:, NLL_CONTEXT - 1 :])
        mean, log_var = mean[:, NLL_CONTEXT:], log_var[:, NLL_CONTEXT:]
        generator = torch.Generator(device=mean.device).manual_seed(0)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        z = mean + eps * (0.5 * log_var).exp()
        log_q = (-0.5 * (eps.square() + LOG_2PI) - 0.5 * log_var).sum(-1)
        log_p = prior.log_prob(z)
        target = frames[:, NLL_CONTEXT:]
        recon = pixel_kl(self.decoder(z.flatten(0, 1)), target.flatten(0, 1)).view(log_q.shape)
        nll = recon + (log_q - log_p) / self.pixels
        mask = batch["mask"][:, NLL_CONTEXT - 1 :].float()
        return float(masked_mean(nll, mask))
