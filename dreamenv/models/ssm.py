"""The state-space models of Buesing et al. (2018): dSSM-DET, dSSM-VAE, sSSM, jumpy sSSM.

A state ``s_t`` (a ``G x G`` feature map, ``G = S / 8``) is rolled out without rendering
pixels: ``z_t ~ p(z_t | s_{t-1}, a_{t-1})`` (:class:`~dreamenv.models.blocks.PriorModule`),
``s_t = g(s_{t-1}, z_t, a_{t-1})`` (:class:`~dreamenv.models.blocks.TransitionModule`); the
decoder gives the pixels of ``o_t`` and the reward bits (appendix A.2) and a termination
logit from ``(s_t, z_t)``. ``s_0`` comes from the embeddings of three consecutive real
observations (:class:`~dreamenv.models.blocks.InitialStateModule`). The building blocks and
our reading of the paper's figures are in :mod:`dreamenv.models.blocks`.

The three families share parameters and computation (section 2.3):

- ``sssm``: ``z_t`` samples enter ``g`` and the decoder; trained by the ELBO with the
  filtering posterior ``q(z_t | s_{t-1}, a_{t-1}, o_t)`` and one reparameterised sample.
- ``dssm_vae``: the prior MEAN ``mu_t`` enters ``g`` (deterministic states), samples of
  ``z_t`` only the decoder; trained by the ELBO.
- ``dssm_det``: ``mu_t`` enters ``g`` and the decoder; trained by maximum likelihood (its
  posterior module exists, unused, so that all three have the same parameters).
- ``sssm_jumpy``: the sSSM with ``jump = 4`` (section 2.2): one step applies a chunk of 4
  actions, predicts the observation 4 real steps later and the sum of the 4 rewards. Any
  family takes ``jump`` as an override.

Training windows (:func:`~dreamenv.models.common.split_context`): a context of three real
observations ``o_{-2:0}``, then ``T`` model steps (the paper: ``T = 10``) scored by the
pixel KL (frames as pseudo-probabilities, A.2), the reward bits and the termination.

The latent the env observes is ``concat(s_t, z_t)`` (``"state"``, a ``(S + Z, G, G)``
float Box) or its decoded frame (``"pixels"``); the dSSMs put the prior mean in the ``z``
part, the sSSM its sample. Since the loss decodes (and scores rewards at) states that are
at least one step past ``s_0``, and never ``s_0`` itself, every latent the model emits is
such a state:

- :meth:`StateSpaceModel.initial_state` takes ``s_{-1}`` from the three observations before
  the newest and makes one filtering step into the newest (``jump`` real steps back for a
  jumpy model), repeating the first observation (and NOOP actions) where the context is
  shorter. Burn-in beyond ``3 + jump`` observations is ignored: the paper's initial state
  sees three observations.
- :meth:`StateSpaceModel.filter` (the real env) keeps the last three real embeddings in the
  state and, for every real step, re-initialises from the three before the newest and makes
  the same filtering step: ``z_t`` is the posterior mean given the newest observation for
  the sSSM, the prior mean for the dSSMs (whose states never see an observation after their
  start, so theirs is the one-step prediction from the three previous real observations).
  The dream step carries the three embeddings along unchanged. For a jumpy model the real
  env's kept embeddings are ``jump`` steps apart while training's context is consecutive.

Choices where the paper is silent:

- *Loss weights.* The image terms (pixel KL and KL(q||p)) are in nats per pixel, the
  reward bits' and the termination's NLLs in nats per step (``reward_loss_scale``,
  ``termination_loss_scale``): the exact likelihood would weigh a reward like one pixel,
  too little for a dream whose rewards train agents.
- *Termination.* One more logit of the decoder's reward head (the paper's games have none).
- *Rewards.* Sign-clipped rewards (Atari): ``reward_bits = 8`` bits of ``floor(|r|)``
  (larger rewards are clamped); the env samples from the sign and zero bits
  (:meth:`RewardBits.sign_logits`). Real rewards: the head scores the reward coder's
  two-hot symlog grid instead (:class:`~dreamenv.models.common.BitsOrCoder`), since the
  bits of ``floor(|r|)`` lose fractions.
- *Actions and frames.* Actions enter as their features, tiled over the grid: one-hots, or
  continuous actions rescaled to [-1, 1] (a jumpy model's chunk: ``jump * n`` channels).
  Frames are ``(frame_stack * C, S, S)``, grey or RGB, ``S`` in 32, 48, 64, 80 or 96.
- *Standard deviations.* ``softplus + 1e-4`` (:data:`~dreamenv.models.blocks.STD_FLOOR`).
- *Evaluation.* :meth:`~StateSpaceModel.test_nll` and :meth:`~StateSpaceModel.metrics` draw
  their posterior sample from a fixed seed, so a batch always gets the same figure.

Example:
    >>> model = build_model("sssm", "tiny", AtariSpec("pong"), num_actions=6)
    >>> emb = model.encode(torch.zeros(2, 4, 96, 96, dtype=torch.uint8))
    >>> latent, state = model.initial_state(emb[:, None], torch.zeros(2, 0).long())
    >>> pred = model.step(state, latent, torch.zeros(2).long(), BatchRandom(2, "cpu"))
    >>> pred.next_latent.shape, pred.reward_logits.shape
    (torch.Size([2, 12, 12, 12]), torch.Size([2, 3]))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from dreamenv.envs.atari import AtariSpec
from dreamenv.envs.spec import ActionSpec
from dreamenv.errors import ConfigError
from dreamenv.models.base import Prediction, State, WorldModel, register_family
from dreamenv.models.blocks import (
    BuesingSizes,
    Encoder,
    InitialStateModule,
    PixelRewardDecoder,
    PosteriorModule,
    PriorModule,
    TransitionModule,
    sized_presets,
    tile_action,
)
from dreamenv.models.common import (
    NLL_CONTEXT,
    BitsOrCoder,
    image_frames,
    normal_from_uniform,
    pixel_kl,
    pixel_mean,
    split_context,
    to_unit,
    window_steps,
)
from dreamenv.random_streams import BatchRandom

CONTEXT = NLL_CONTEXT
"""Observations of the initial state's context (the paper's ``o_{-2:0}``)."""


@dataclass(frozen=True)
class SSMConfig(BuesingSizes):
    """Hyperparameters of the state-space models (defaults: the paper's sizes): the sizes
    shared with the AR baselines (:class:`~dreamenv.models.blocks.BuesingSizes`), those of
    the prior and posterior, and ``jump``."""

    z_channels: int = 32
    """Channels of the latent variable ``z_t`` (half the prior's 64 outputs)."""
    prior_hidden: int = 32
    """First two layers' channels of the prior's and the posterior's conv stacks."""
    jump: int = 1
    """Real steps per model step (section 2.2; the jumpy sSSM: 4)."""

    def __post_init__(self) -> None:
        """The state-space models' own checks, not :class:`BuesingSizes`': they need
        ``reward_bits >= 1`` where the shared check allows 0, and word their errors (which
        the tests pin) without the class name and the default."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values = value if isinstance(value, tuple) else (value,)
            if field.name.endswith("scale"):
                if not all(isinstance(v, (int, float)) and v >= 0 for v in values):
                    raise ConfigError(f"{field.name} must be a number >= 0, got {value!r}.")
            elif not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                raise ConfigError(f"{field.name} must be a positive int, got {value!r}.")
        if len(self.encoder_hidden) != 2:
            raise ConfigError(
                f"encoder_hidden must be 2 channel sizes (one per conv stack), got "
                f"{self.encoder_hidden!r}."
            )
        if self.decoder_channels % 4:
            raise ConfigError(
                f"decoder_channels must be divisible by 4 (depth to space), got "
                f"{self.decoder_channels}."
            )
        if self.reward_bits > 30:
            raise ConfigError(f"reward_bits must be at most 30, got {self.reward_bits}.")


PRESETS = sized_presets(SSMConfig)

JUMPY_PRESETS = {name: dataclasses.replace(c, jump=4) for name, c in PRESETS.items()}


def gaussian_kl(
    mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor, std_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)) per sample, summed over all but dim 0."""
    var_ratio = (std_q / std_p).square()
    kl = 0.5 * (var_ratio + ((mean_q - mean_p) / std_p).square() - 1.0 - var_ratio.log())
    return kl.flatten(1).sum(1)


class StateSpaceModel(WorldModel):
    """The shared model of the SSM families; subclasses set how ``z`` is used.

    Latents are ``(B, S + Z, G, G)`` float: ``concat(s_t, z_t)``. The state is ``(s_t,
    embeddings)`` with the last three real embeddings ``(B, 3, E, G, G)``, oldest first.
    """

    config_class = SSMConfig
    presets = PRESETS
    obs_types = ("state", "pixels")
    has_warmup = False
    sample_transition: ClassVar[bool]
    """Whether ``z`` samples (not the prior mean) enter the transition ``g``."""
    sample_decoder: ClassVar[bool]
    """Whether ``z`` samples enter the decoder in training (and the loss is an ELBO)."""

    def __init__(self, config: SSMConfig, spec: AtariSpec, num_actions: int | ActionSpec) -> None:
        super().__init__(config, spec, num_actions)
        _, stack, size = image_frames(spec, self.family)
        if size % 8:
            raise ConfigError(
                f"state-space models need frames whose size is divisible by 8 (the state is "
                f"at 1/8 resolution), got {size}; use screen_size 32, 48, 64, 80 or 96."
            )
        c = config
        self.grid = size // 8
        self.readout = BitsOrCoder(self.reward_coder, c.reward_bits)
        """The reward head's outputs: Buesing's bits (sign-clipped rewards) or the coder's."""
        self.bits = self.readout.bits
        actions = c.jump * self.num_actions
        self.encoder = Encoder(stack, c.embed_channels, c.encoder_hidden)
        self.initial = InitialStateModule(c.embed_channels, c.state_channels, c.init_hidden)
        self.prior = PriorModule(c.state_channels, actions, c.z_channels, c.prior_hidden)
        self.posterior = PosteriorModule(
            c.state_channels, actions, c.embed_channels, c.z_channels, c.prior_hidden
        )
        self.transition = TransitionModule(
            c.state_channels,
            actions,
            c.z_channels,
            self.grid,
            c.transition_hidden,
            c.pool_channels,
        )
        self.decoder = PixelRewardDecoder(
            c.state_channels + c.z_channels,
            stack,
            self.grid,
            self.readout.size,
            extra_outputs=1,
            hidden=c.decoder_hidden,
            channels=c.decoder_channels,
            reward_channels=c.reward_channels,
        )

    # --- representation -------------------------------------------------------------------
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Embeddings ``e(o)`` ``(B, E, G, G)`` of uint8 frames."""
        return self.encoder(frames)

    def decode_logits(self, latent: torch.Tensor) -> torch.Tensor:
        """Pixel log-odds ``(B, *frame_shape)`` of latents ``concat(s, z)``."""
        return self.decoder.pixels(self.decoder.features(latent))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """The Bernoulli means of the decoded pixels as uint8 frames."""
        return pixel_mean(self.decode_logits(latent))

    # --- dynamics -----------------------------------------------------------------------
    def _init_termination_head(self, logit: float) -> None:
        last = self.decoder.reward_linear  # its last output is the termination logit
        with torch.no_grad():
            last.weight[-1].zero_()
            last.bias[-1] = logit

    def _head(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward scores over the reward support and the termination logit of latents."""
        head = self.decoder.head(latent)
        return self.readout.scores(head[:, :-1]), head[:, -1]

    def _tile(self, action: torch.Tensor) -> torch.Tensor:
        """Features of an action (chunk) ``(B,)``, ``(B, jump)`` (continuous: ``(B, n)``,
        ``(B, jump, n)``) tiled over the grid: ``(B, jump * num_actions, G, G)``."""
        features = self.action_features(action).reshape(action.shape[0], -1)
        return tile_action(features, self.num_actions, self.grid)

    def _filter_step(
        self, context: torch.Tensor, action: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        """The latent of the newest observation: one step from the state of ``context``
        ``(B, 3, E, G, G)``, with the posterior mean (sSSM) or the prior mean (dSSMs)."""
        s = self.initial(context)
        a = self._tile(action)
        mean, std = self.prior(s, a)
        z = self.posterior(s, a, embedding, mean, std)[0] if self.sample_transition else mean
        return torch.cat([self.transition(s, z, a), z], 1)

    def initial_state(
        self, embeddings: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """Latent and state of the newest of ``K`` real observations (see the module doc).

        Args:
            embeddings: ``(B, K, E, G, G)``, oldest first.
            actions: ``(B, K-1)`` the real actions between them (continuous: ``(B, K-1, n)``).
        """
        b, k = embeddings.shape[:2]
        expected = (b, k - 1, *self.actions.shape)
        if tuple(actions.shape) != expected:
            dims = "" if self.actions.kind == "discrete" else f" of {self.num_actions} dims"
            raise ConfigError(
                f"initial_state needs (B, K-1) = {(b, k - 1)} actions{dims} for {k} "
                f"observations, got shape {tuple(actions.shape)}."
            )
        need = CONTEXT + self.jump
        if k < need:
            embeddings = torch.cat(
                [embeddings[:, :1].expand(-1, need - k, -1, -1, -1), embeddings], 1
            )
            noop = actions.new_zeros((b, need - k, *actions.shape[2:]))  # action 0 / zeros
            actions = torch.cat([noop, actions], 1)
        embeddings, actions = embeddings[:, -need:], actions[:, -(need - 1) :]
        chunk = actions[:, CONTEXT - 1 :]
        latent = self._filter_step(embeddings[:, :CONTEXT], chunk, embeddings[:, -1])
        context = embeddings[:, -CONTEXT:].contiguous()
        return latent, (latent[:, : self.config.state_channels], context)

    def step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float = 1.0,
    ) -> Prediction:
        """One imagined step: prior, ``z`` (sSSM: sampled from ``rng``), ``g``, heads.

        No pixels are decoded. The dSSMs' transitions are deterministic: they draw nothing.
        """
        s, context = state
        a = self._tile(action)
        mean, std = self.prior(s, a)
        if self.sample_transition:
            u = rng.uniform(tuple(mean.shape[1:])).to(mean.device)
            z = mean + (temperature * std) * normal_from_uniform(u)
        else:
            z = mean
        s = self.transition(s, z, a)
        latent = torch.cat([s, z], 1)
        reward_logits, termination_logits = self._head(latent)
        return Prediction(latent, reward_logits, termination_logits, (s, context))

    def filter(
        self, state: State, latent: torch.Tensor, action: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """Follow the real game: re-initialise from the kept real embeddings and step into
        the new one (see the module docstring). Deterministic."""
        context = state[1]
        latent = self._filter_step(context, action, embedding)
        context = torch.cat([context[:, 1:], embedding[:, None]], 1)
        return latent, (latent[:, : self.config.state_channels], context)

    # --- observations -------------------------------------------------------------------
    def observation(self, latent: torch.Tensor, obs_type: str) -> torch.Tensor:
        if obs_type == "state":
            return latent.float()
        if obs_type == "pixels":
            return self.decode(latent)
        self.check_obs_type(obs_type)
        raise AssertionError("unreachable")

    def observation_space(self, obs_type: str) -> gym.Space:
        self.check_obs_type(obs_type)
        if obs_type == "state":
            shape = (self.config.state_channels + self.config.z_channels, self.grid, self.grid)
            return gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
        return gym.spaces.Box(0, 255, self.spec.frame_shape, np.uint8)

    # --- training -----------------------------------------------------------------------
    def window_steps(self, seq_len: int) -> int:
        """The context of three observations, then ``seq_len`` steps of ``jump``."""
        return window_steps(seq_len, self.jump)

    def _unroll(
        self, batch: dict[str, torch.Tensor], mode: str, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-step terms over a window: ``mode`` ``"train"`` (the family's objective, one
        posterior sample) or ``"open_loop"`` (a rollout as the dream's, no observation after
        the context: prior samples for the sSSM, prior means for the dSSMs).

        Returns ``(B, L)`` tensors: ``pixel`` (per-pixel KL), ``kl`` (KL(q||p) per pixel),
        ``reward`` and ``termination`` NLLs, their accuracies, ``mse``, and ``mask``.
        """
        parts = split_context(batch, self.jump)
        frames, actions, mask = parts["frames"], parts["actions"], parts["mask"]
        b, steps = mask.shape
        context = self.encode(parts["context"].flatten(0, 1)).unflatten(0, (b, CONTEXT))
        elbo = mode == "train" and self.sample_decoder
        if elbo:
            embeddings = self.encode(frames.flatten(0, 1)).unflatten(0, (b, steps))
        s = self.initial(context)
        latents, kls = [], []
        for t in range(steps):
            a = self._tile(actions[:, t])
            mean, std = self.prior(s, a)
            if elbo:
                q_mean, q_std = self.posterior(s, a, embeddings[:, t], mean, std)
                eps = torch.randn(q_mean.shape, generator=generator, device=q_mean.device)
                z = q_mean + q_std * eps
                kls.append(gaussian_kl(q_mean, q_std, mean, std))
            elif self.sample_transition:  # open loop, as the dream samples
                eps = torch.randn(mean.shape, generator=generator, device=mean.device)
                z = mean + std * eps
            else:
                z = mean
            s = self.transition(s, z if self.sample_transition else mean, a)
            latents.append(torch.cat([s, z], 1))
        logits, head = self.decoder(torch.stack(latents, 1).flatten(0, 1))
        head = head.unflatten(0, (b, steps))
        target = frames.flatten(0, 1)
        pixels = frames[0, 0].numel()
        rewards, terminated = parts["rewards"], parts["terminated"].float()
        zero = torch.zeros_like(mask, dtype=torch.float32)
        return {
            "pixel": pixel_kl(logits, target).view(b, steps),
            "kl": torch.stack(kls, 1) / pixels if kls else zero,
            "reward": self.readout.loss(head[..., :-1], rewards),
            "termination": F.binary_cross_entropy_with_logits(
                head[..., -1], terminated, reduction="none"
            ),
            "reward_acc": self.readout.accuracy(head[..., :-1], rewards),
            "termination_acc": ((head[..., -1] > 0).float() == terminated).float(),
            "mse": (torch.sigmoid(logits) - to_unit(target))
            .square()
            .flatten(1)
            .mean(1)
            .view(b, steps),
            "mask": mask.float(),
        }

    @staticmethod
    def _masked_means(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = terms["mask"]
        denom = mask.sum().clamp(min=1.0)
        return {k: (v * mask).sum() / denom for k, v in terms.items() if k != "mask"}

    def loss(
        self, batch: dict[str, torch.Tensor], phase: str, step: int
    ) -> dict[str, torch.Tensor]:
        """The negative ELBO (sSSM, dSSM-VAE) or negative log-likelihood (dSSM-DET) of the
        window's frames per pixel, plus the reward bits' and termination's NLL per step.
        Both phases train everything."""
        m = self._masked_means(self._unroll(batch, "train"))
        c = self.config
        total = (
            m["pixel"]
            + m["kl"]
            + c.reward_loss_scale * m["reward"]
            + c.termination_loss_scale * m["termination"]
        )
        out = {
            "recon_loss": m["pixel"],
            "kl_loss": m["kl"],
            "reward_loss": m["reward"],
            "termination_loss": m["termination"],
            "reward_acc": m["reward_acc"],
            "termination_acc": m["termination_acc"],
        }
        out = {k: v.detach() for k, v in out.items()}
        out["loss"] = total
        return out

    @torch.no_grad()
    def metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Held-out figures: the training terms (``recon_loss``: per-pixel KL, ``kl_loss``,
        ``nll``: their sum), reward and termination accuracies, ``recon_mse``, and those of
        an open-loop rollout from the context (``open_loop_recon_loss``, ``open_loop_mse``:
        a prior sample per step for the sSSM, the prior mean for the dSSMs)."""
        generator = torch.Generator(self.device).manual_seed(0)
        m = self._masked_means(self._unroll(batch, "train", generator))
        o = self._masked_means(self._unroll(batch, "open_loop", generator))
        return {
            "recon_loss": float(m["pixel"]),
            "kl_loss": float(m["kl"]),
            "nll": float(m["pixel"] + m["kl"]),
            "recon_mse": float(m["mse"]),
            "reward_loss": float(m["reward"]),
            "reward_acc": float(m["reward_acc"]),
            "termination_loss": float(m["termination"]),
            "termination_acc": float(m["termination_acc"]),
            "open_loop_recon_loss": float(o["pixel"]),
            "open_loop_mse": float(o["mse"]),
        }

    @torch.no_grad()
    def test_nll(self, batch: dict[str, torch.Tensor]) -> float:
        """Nats per pixel of the frames after the three context observations (a jumpy
        model's: every ``jump``-th): the negative ELBO with one posterior sample (a fixed
        seed) for the sSSM and dSSM-VAE, the pixel KL for the dSSM-DET."""
        generator = torch.Generator(self.device).manual_seed(0)
        m = self._masked_means(self._unroll(batch, "train", generator))
        return float(m["pixel"] + m["kl"])


@register_family
class DSSMDet(StateSpaceModel):
    """dSSM-DET: deterministic states and decoder (the prior mean everywhere); MLE."""

    family = "dssm_det"
    sample_transition = False
    sample_decoder = False


@register_family
class DSSMVAE(StateSpaceModel):
    """dSSM-VAE: deterministic states (prior mean into ``g``), a stochastic decoder; ELBO."""

    family = "dssm_vae"
    sample_transition = False
    sample_decoder = True


@register_family
class SSSM(StateSpaceModel):
    """sSSM: stochastic states (``z`` samples into ``g`` and the decoder); ELBO."""

    family = "sssm"
    sample_transition = True
    sample_decoder = True


@register_family
class SSSMJumpy(SSSM):
    """The jumpy sSSM: ``jump = 4`` real steps per model step in every preset."""

    family = "sssm_jumpy"
    presets = JUMPY_PRESETS
