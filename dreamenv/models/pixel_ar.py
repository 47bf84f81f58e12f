"""The auto-regressive pixel-space baselines of Buesing et al. (2018): AR and RAR.

Both render every imagined observation: each step decodes Bernoulli log-odds of the pixels
of ``o_{t+1}`` and samples them, and the rendered frame is what the model conditions on
next. Both are built from the blocks of :mod:`dreamenv.models.blocks` at the sizes of the
state-space families, so rollout speeds compare fairly (the paper's Table 1: SSMs > 5x
faster than the AR; ours, by the same blocks, 2.9-3x fewer multiply-accumulates per step
than this AR: see ``benchmarks/models.py`` and the README).

- ``ar`` (:class:`ARWorldModel`): ``p(o_{t+1} | o_{t-K+1:t}, a_{t-K+1:t})`` of order ``K``
  (``config.order``, the paper's 3). The state is a FIFO of the last ``K`` observations'
  *encodings* ``e(o)`` (:class:`~dreamenv.models.blocks.Encoder`) and actions: every step
  encodes only the newly rendered observation and reuses the others' encodings (the
  paper's efficient AR that "reuses costly vision pre-processing"). The FIFO, with the
  ``K`` actions tiled, goes through the initial-state stack of Fig. 14 (fusing ``K``
  embeddings), then ``relu -> pool & inject -> res conv`` (the global context of Fig. 9's
  transition) into features at ``S/8``, decoded by
  :class:`~dreamenv.models.blocks.PixelRewardDecoder` (Fig. 10). The latent is the rendered
  observation (uint8 ``(frame_stack * C, S, S)``); ``obs_types = ("pixels",)``.
- ``rar`` (:class:`RARWorldModel`): the recurrent AR, "based on the dSSM-DET by modifying
  the transition model to ``s_{t+1} = g(s_t, mu_{t+1}, a_t, e(o_t))``" (section 2.3):
  ``s_0`` from the initial-state module over ``e(o_{-2:0})``; each step the prior module
  gives ``mu_{t+1}`` from ``(s_t, a_t)``, the transition module takes ``e(o_t)`` of the
  last observation (rendered in the dream, real in :meth:`~RARWorldModel.filter`) beside
  the tiled action at its first res conv, and the decoder of ``(s_{t+1}, mu_{t+1})``
  renders ``o_{t+1}``. The latent packs ``concat(s_{t+1}, mu_{t+1})`` (the dSSM-DET's
  latent, observed as ``"state"``) and the rendered observation in one float vector;
  ``obs_types = ("state", "pixels")``. As the SSMs', its latents are always states after
  a transition: :meth:`~RARWorldModel.initial_state` initialises from three observations
  and filters in the fourth (and any later ones).

Choices where the paper is silent:

- *Frame stacks.* An observation is a stack of ``frame_stack`` frames of ``C`` channels
  (1 grey, 3 RGB); its older frames are the previous observation's newest ones, known
  exactly. Both models predict only the newest frame (its ``C`` channels) and shift the
  stack. :meth:`test_nll` scores whole observations per pixel:
  the shifted frames are certain (KL 0), so it is the newest frame's KL divided by
  ``frame_stack``; ``metrics()["frame_nll"]`` gives the newest frame's own figure.
- *Temperature.* A pixel with probability ``p`` renders as ``p + T (b - p)`` with
  ``b ~ Bernoulli(p)`` from the env's uniforms: ``T = 1`` is the model's Bernoulli sample
  (a pixel is 0 or 255), ``T = 0`` the mean ``p`` (no randomness drawn), in between the
  deviation from the mean scaled by ``T`` (the mean is ``p`` at every temperature);
  ``T > 1`` exaggerates and is clipped to [0, 255].
- *Embeddings.* The encoding of an observation is part of these models' state, and their
  latent is the observation itself, so the contract's memoryless embedding
  (:meth:`encode`) is the uint8 observation; :meth:`initial_state` and :meth:`filter` run
  the encoder, once per observation.
- *Short contexts.* With fewer real observations than the model needs (the AR:
  ``order``; the RAR: 4), the first is repeated, as frame stacking repeats the reset
  frame, with NOOP (action 0) between the copies.
- *Actions and rewards.* Actions enter as their features tiled over the grid (one-hots, or
  continuous actions rescaled to [-1, 1]); the reward head gives Buesing's reward bits
  (``RewardBits``) for sign-clipped rewards and the reward coder's two-hot symlog grid for
  real ones (:class:`~dreamenv.models.common.BitsOrCoder`), as the state-space families.
- *Training.* Maximum likelihood with teacher forcing on windows of a 3-observation
  context and ``seq_len`` steps: the newest frame's per-pixel KL (``common.pixel_kl``),
  plus the NLLs per step of the reward (bits or categorical) and of the termination (both
  from the decoder's head), weighted as the state-space families weigh them. The AR's
  steps are independent given the real frames, so a whole window is one batched forward
  pass; the RAR recurs over its states and decodes all steps at once.

Example:
    >>> model = ARWorldModel(ARConfig(), AtariSpec("pong"), num_actions=6)
    >>> frames = torch.zeros(2, 3, 4, 96, 96, dtype=torch.uint8)
    >>> emb = model.encode(frames.flatten(0, 1)).view(2, 3, 4, 96, 96)
    >>> latent, state = model.initial_state(emb, torch.zeros(2, 2, dtype=torch.long))
    >>> rng = BatchRandom(2, "cpu")
    >>> pred = model.step(state, latent, torch.zeros(2, dtype=torch.long), rng)
    >>> pred.next_latent.shape, pred.next_latent.dtype
    (torch.Size([2, 4, 96, 96]), torch.uint8)
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dreamenv.envs.atari import AtariSpec
from dreamenv.envs.spec import ActionSpec
from dreamenv.errors import ConfigError
from dreamenv.models.base import Prediction, State, WorldModel, register_family
from dreamenv.models.blocks import (
    BuesingSizes,
    Encoder,
    InitialStateModule,
    PixelRewardDecoder,
    PoolAndInject,
    PriorModule,
    ResConv,
    TransitionModule,
    sized_presets,
    tile_action,
)
from dreamenv.models.common import (
    NLL_CONTEXT,
    BitsOrCoder,
    image_frames,
    pixel_kl,
    split_context,
    to_unit,
    window_steps,
)
from dreamenv.random_streams import BatchRandom

# --- configs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ARConfig(BuesingSizes):
    """Hyperparameters of the AR (defaults: the paper's module sizes): ``order`` and the
    sizes it shares with the state-space models; ``state_channels`` sizes the fused
    features the decoder reads, ``init_hidden`` the fusing conv stack (Fig. 14's), and
    ``transition_hidden`` its one res conv."""

    order: int = 3
    """Observations ``K`` in the FIFO: ``p(o_{t+1} | o_{t-K+1:t}, a_{t-K+1:t})``."""


@dataclass(frozen=True)
class RARConfig(BuesingSizes):
    """Hyperparameters of the RAR (defaults: the paper's module sizes, as the dSSM-DET's)."""

    z_channels: int = 32
    """Channels of the prior mean ``mu`` fed to the transition and the decoder (Fig. 12)."""
    prior_hidden: int = 32
    """First two layers' channels of the prior module (Fig. 12)."""


AR_PRESETS = sized_presets(ARConfig)

RAR_PRESETS = sized_presets(RARConfig)


# --- rendering ------------------------------------------------------------------------------


def render_pixels(
    logits: torch.Tensor, rng: BatchRandom | None, temperature: float
) -> torch.Tensor:
    """Sample uint8 pixels from Bernoulli log-odds ``(B, ...)`` at ``temperature``.

    A pixel of probability ``p`` becomes ``255 * (p + T (b - p))`` with ``b ~ Bernoulli(p)``
    drawn from ``rng`` (one uniform per pixel): ``T = 1`` gives the Bernoulli sample itself,
    ``T = 0`` the mean ``p`` (and draws nothing), and values in between shrink the sample
    towards the mean; ``T > 1`` is clipped to [0, 255].

    Example:
        >>> render_pixels(torch.zeros(2, 1, 4, 4), None, 0.0).unique()
        tensor([128], dtype=torch.uint8)
    """
    if not temperature >= 0:
        raise ConfigError(f"temperature must be >= 0 (0: the mean frame), got {temperature!r}.")
    p = torch.sigmoid(logits)
    if temperature > 0:
        if rng is None:
            raise ConfigError("render_pixels needs an rng for temperature > 0.")
        u = rng.uniform(tuple(logits.shape[1:])).to(p.device)
        p = torch.lerp(p, (u < p).to(p.dtype), float(temperature))
    return (p * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def _shift_in(stack: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """The next stacked observation: ``stack`` ``(B, F C, S, S)`` without its oldest frame,
    then ``frame`` ``(B, C, S, S)``."""
    channels = frame.shape[1]
    if stack.shape[1] == channels:
        return frame
    return torch.cat([stack[:, channels:], frame], 1)


# --- shared base ----------------------------------------------------------------------------


class _PixelAutoRegressive(WorldModel):
    """What AR and RAR share: the observation encoder, the decoder, rendering, likelihoods."""

    has_warmup = False
    context = NLL_CONTEXT
    decoder: PixelRewardDecoder  # built by each subclass for its own input channels

    def __init__(
        self, config: BuesingSizes, spec: AtariSpec, num_actions: int | ActionSpec
    ) -> None:
        super().__init__(config, spec, num_actions)
        self.channels, stack, size = image_frames(spec, self.family)
        if size % 8:
            raise ConfigError(
                f"the {self.family!r} family needs a screen size divisible by 8 (32, 48, 64, "
                f"80, 96), got {size}."
            )
        self.grid = size // 8
        self.readout = BitsOrCoder(self.reward_coder, config.reward_bits)
        """The reward head's outputs: Buesing's bits (sign-clipped rewards) or the coder's."""
        self.bits = self.readout.bits
        self.encoder = Encoder(stack, config.embed_channels, config.encoder_hidden)

    # --- helpers --------------------------------------------------------------------------
    def _decoder(self, in_channels: int) -> PixelRewardDecoder:
        c = self.config
        return PixelRewardDecoder(
            in_channels,
            self.channels,  # the newest frame; the older ones of a stack are shifted in
            self.grid,
            reward_bits=self.readout.size,
            extra_outputs=1,
            hidden=c.decoder_hidden,
            channels=c.decoder_channels,
            reward_channels=c.reward_channels,
        )

    def _init_termination_head(self, logit: float) -> None:
        last = self.decoder.reward_linear  # output readout.size is the termination logit
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight[self.readout.size].zero_()
            last.bias[self.readout.size] = logit

    def _split_head(self, head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder head ``(..., R + 1)`` -> reward logits (bits or the coder's), termination
        logits."""
        return head[..., : self.readout.size], head[..., self.readout.size]

    def _tile(self, actions: torch.Tensor) -> torch.Tensor:
        """Features of actions ``(B[, K])`` (continuous ``(B[, K], n)``) tiled over the
        grid: ``(B, K * num_actions, G, G)``."""
        features = self.action_features(actions).reshape(actions.shape[0], -1)
        return tile_action(features, self.num_actions, self.grid)

    def _check_frames(self, frames: torch.Tensor, what: str) -> None:
        if frames.dtype != torch.uint8 or tuple(frames.shape[-3:]) != self.spec.frame_shape:
            raise ConfigError(
                f"{what} must be uint8 observations (..., {', '.join(map(str, self.spec.frame_shape))})"
                f" (the spec's frame_shape), got {frames.dtype} {tuple(frames.shape)}."
            )

    def _pad_context(
        self, frames: torch.Tensor, actions: torch.Tensor, need: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Repeat the first of ``frames`` ``(B, K, ...)`` (NOOPs between the copies) until
        there are ``need`` observations."""
        k = frames.shape[1]
        if k >= need:
            return frames, actions
        pad = need - k
        first = frames[:, :1].expand(-1, pad, *frames.shape[2:])
        noop = actions.new_zeros((actions.shape[0], pad, *actions.shape[2:]))  # 0 / zeros
        return torch.cat([first, frames], 1), torch.cat([noop, actions], 1)

    def _check_context(self, embeddings: torch.Tensor, actions: torch.Tensor) -> None:
        self._check_frames(embeddings, "initial_state embeddings")
        if embeddings.dim() != 5 or embeddings.shape[1] < 1:
            raise ConfigError(
                f"initial_state takes embeddings (B, K >= 1, *frame_shape), got "
                f"{tuple(embeddings.shape)}."
            )
        expected = (embeddings.shape[0], embeddings.shape[1] - 1, *self.actions.shape)
        if tuple(actions.shape) != expected:
            dims = "" if self.actions.kind == "discrete" else f" of {self.num_actions} dims"
            raise ConfigError(
                f"initial_state takes actions (B, K - 1) = ({embeddings.shape[0]}, "
                f"{embeddings.shape[1] - 1}){dims} for {embeddings.shape[1]} observations, got "
                f"{tuple(actions.shape)}."
            )

    # --- the contract: embeddings and frames ---------------------------------------------
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """The observations themselves: their encodings live in the state (see the module
        docstring), so :meth:`initial_state` and :meth:`filter` encode them."""
        self._check_frames(frames, "frames")
        return frames

    def window_steps(self, seq_len: int) -> int:
        return window_steps(seq_len, 1, self.context)

    # --- training -------------------------------------------------------------------------
    def _teacher_forced(
        self, frames: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Newest-frame log-odds ``(B, L, C, S, S)`` and head logits ``(B, L, R + 1)`` of
        observations ``context..T`` of a window, given the real ones before each."""
        raise NotImplementedError

    def _terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        split = split_context(batch, 1, self.context)
        b, n = split["mask"].shape
        frames = batch["frames"][:, : self.context + n]
        logits, head = self._teacher_forced(frames, batch["actions"][:, : self.context - 1 + n])
        target = split["frames"][:, :, -self.channels :]
        bit_logits, term_logits = self._split_head(head)
        mask = split["mask"].float()
        denom = mask.sum().clamp(min=1.0)
        frame_kl = pixel_kl(logits.flatten(0, 1), target.flatten(0, 1)).view(b, n)
        rewards = split["rewards"]
        reward_nll = self.readout.loss(bit_logits, rewards)
        term = split["terminated"].float()
        term_bce = F.binary_cross_entropy_with_logits(term_logits, term, reduction="none")
        reward_hit = self.readout.accuracy(bit_logits, rewards)
        term_hit = (term_logits > 0).float() == term
        error = (torch.sigmoid(logits) - to_unit(target)).abs()

        def avg(x: torch.Tensor) -> torch.Tensor:
            return (x * mask).sum() / denom

        return {
            "recon_loss": avg(frame_kl),
            "reward_loss": avg(reward_nll),
            "termination_loss": avg(term_bce),
            "reward_acc": avg(reward_hit),
            "termination_acc": avg(term_hit.float()),
            "pixel_acc": avg((error < 0.1).float().flatten(2).mean(-1)),
            "recon_mae": avg(error.flatten(2).mean(-1)),
        }

    def loss(
        self, batch: dict[str, torch.Tensor], phase: str, step: int
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced negative log-likelihood: the newest frame's per-pixel KL plus the
        reward bits' and the termination's NLL per step, weighted as the state-space
        families weigh them; the same in both phases."""
        terms = self._terms(batch)
        c = self.config
        total = (
            terms["recon_loss"]
            + c.reward_loss_scale * terms["reward_loss"]
            + c.termination_loss_scale * terms["termination_loss"]
        )
        out = {k: v.detach() for k, v in terms.items()}
        out["loss"] = total
        return out

    @torch.no_grad()
    def metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Teacher-forced held-out figures: ``recon_loss`` (= ``frame_nll``, the newest
        frame's per-pixel KL), ``recon_mae``, ``pixel_acc`` (share of its pixels predicted
        within 0.1), ``reward_loss``, ``reward_acc``, ``termination_loss``,
        ``termination_acc``, and ``test_nll`` (per pixel of whole observations)."""
        terms = self._terms(batch)
        out = {k: float(v) for k, v in terms.items()}
        out["frame_nll"] = out["recon_loss"]
        out["test_nll"] = out["recon_loss"] / self.spec.frame_stack
        return out

    @torch.no_grad()
    def test_nll(self, batch: dict[str, torch.Tensor]) -> float:
        """Teacher-forced pixel KL per pixel of the observations after the first
        ``NLL_CONTEXT``: the newest frame's KL over ``frame_stack`` (the shifted frames of a
        stack are known exactly); steps past an episode's end are left out."""
        return float(self._terms(batch)["recon_loss"]) / self.spec.frame_stack


# --- AR -------------------------------------------------------------------------------------


class ARCore(nn.Module):
    """``f`` of the AR: ``K`` encodings and ``K`` tiled actions to decoder features.

    ``conv stack (1,h),(3,h),(3,C)`` over the concatenation (the initial-state module of
    Fig. 14, fusing ``K`` observations) ``-> relu -> pool & inject -> res conv`` (the
    global context of Fig. 9).

    Example:
        >>> core = ARCore(3, 8, 6, 8, 8, 4, 4, grid=12)
        >>> core(torch.zeros(2, 24, 12, 12), torch.zeros(2, 18, 12, 12)).shape
        torch.Size([2, 8, 12, 12])
    """

    def __init__(
        self,
        order: int,
        embed_channels: int,
        num_actions: int,
        channels: int,
        hidden: int,
        transition_hidden: int,
        pool_channels: int,
        grid: int,
    ) -> None:
        super().__init__()
        self.fuse = InitialStateModule(embed_channels + num_actions, channels, hidden, order)
        self.pool = PoolAndInject(channels, grid, pool_channels)
        self.res = ResConv(self.pool.out_channels, channels, transition_hidden)

    def forward(self, encodings: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``encodings`` ``(B, K E, G, G)`` oldest first, tiled ``actions`` ``(B, K A, G, G)``
        (the action taken at each of the ``K`` observations)."""
        k = self.fuse.num_obs
        pairs = torch.cat([encodings.unflatten(1, (k, -1)), actions.unflatten(1, (k, -1))], 2)
        return self.res(self.pool(F.relu(self.fuse(pairs))))


@register_family
class ARWorldModel(_PixelAutoRegressive):
    """Temporally auto-regressive model of order ``K`` over rendered observations.

    State: ``(encodings (B, K E, G, G), past actions (B, K - 1[, n]))``, the FIFO of the
    last ``K`` observations' encodings (oldest first) and the actions between them. Latent:
    the newest (rendered or real) observation, uint8 ``(frame_stack * C, S, S)``.
    """

    family = "ar"
    config_class = ARConfig
    presets = AR_PRESETS
    obs_types = ("pixels",)

    def __init__(self, config: ARConfig, spec: AtariSpec, num_actions: int | ActionSpec) -> None:
        super().__init__(config, spec, num_actions)
        self.core = ARCore(
            config.order,
            config.embed_channels,
            self.num_actions,
            config.state_channels,
            config.init_hidden,
            config.transition_hidden,
            config.pool_channels,
            self.grid,
        )
        self.decoder = self._decoder(config.state_channels)

    def _predict(
        self, encodings: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, K E, G, G)`` encodings and ``(B, K)`` actions (continuous ``(B, K, n)``) ->
        newest-frame log-odds ``(B, C, S, S)`` and head logits ``(B, R + 1)``."""
        return self.decoder(self.core(encodings, self._tile(actions)))

    def initial_state(
        self, embeddings: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """The FIFO of the last ``order`` real observations (the first repeated if fewer)."""
        self._check_context(embeddings, actions)
        k = self.config.order
        frames, actions = self._pad_context(embeddings, actions, k)
        frames, actions = frames[:, -k:], actions[:, actions.shape[1] - (k - 1) :]
        b = frames.shape[0]
        enc = self.encoder(frames.flatten(0, 1))
        return frames[:, -1], (enc.view(b, -1, self.grid, self.grid), actions.contiguous())

    def _advance(self, state: State, action: torch.Tensor, frames: torch.Tensor) -> State:
        """The FIFO after ``action`` led to the observation ``frames``: one encoding."""
        encodings, past = state
        e = self.encoder(frames)
        encodings = torch.cat([encodings[:, e.shape[1] :], e], 1)
        if past.shape[1]:
            past = torch.cat([past[:, 1:], action[:, None]], 1)
        return encodings, past

    def step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float = 1.0,
    ) -> Prediction:
        encodings, past = state
        logits, head = self._predict(encodings, torch.cat([past, action[:, None]], 1))
        frames = _shift_in(latent, render_pixels(logits, rng, temperature))
        bit_logits, term_logits = self._split_head(head)
        state = self._advance(state, action, frames)
        return Prediction(frames, self.readout.scores(bit_logits), term_logits, state)

    def filter(
        self, state: State, latent: torch.Tensor, action: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """The real observation ``embedding`` enters the FIFO (nothing is decoded)."""
        return embedding, self._advance(state, action, embedding)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def observation(self, latent: torch.Tensor, obs_type: str) -> torch.Tensor:
        self.check_obs_type(obs_type)
        return latent

    def observation_space(self, obs_type: str) -> gym.Space:
        self.check_obs_type(obs_type)
        return gym.spaces.Box(0, 255, self.spec.frame_shape, np.uint8)

    def _teacher_forced(
        self, frames: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k, c = self.config.order, self.context
        frames, actions = self._pad_context(frames, actions, frames.shape[1] + max(0, k - c))
        b, t1 = frames.shape[:2]
        n = t1 - max(k, c)  # predicted observations
        enc = self.encoder(frames.flatten(0, 1)).view(b, t1, -1, self.grid, self.grid)
        first = t1 - n - k  # the oldest FIFO entry of the first prediction
        windows = torch.stack([enc[:, first + j : first + j + n] for j in range(k)], 2)
        acts = torch.stack([actions[:, first + j : first + j + n] for j in range(k)], 2)
        logits, head = self._predict(windows.flatten(0, 1).flatten(1, 2), acts.flatten(0, 1))
        return logits.view(b, n, *logits.shape[1:]), head.view(b, n, -1)


# --- RAR ------------------------------------------------------------------------------------


@register_family
class RARWorldModel(_PixelAutoRegressive):
    """Recurrent AR: a dSSM-DET whose transition also reads ``e(o_t)`` of the last
    (rendered or real) observation, ``s_{t+1} = g(s_t, mu_{t+1}, a_t, e(o_t))``.

    State: ``(s_t (B, C, G, G), e(o_t) (B, E, G, G))``. Latent: float32
    ``(B, (C + Z) G G + prod(frame_shape))``: the decoder's input ``concat(s_t, mu_t)``
    flattened (what the dSSM-DET's latent is), then the observation's pixels (0..255).
    """

    family = "rar"
    config_class = RARConfig
    presets = RAR_PRESETS
    obs_types = ("state", "pixels")

    def __init__(self, config: RARConfig, spec: AtariSpec, num_actions: int | ActionSpec) -> None:
        super().__init__(config, spec, num_actions)
        c = config
        a = self.num_actions
        self.init = InitialStateModule(c.embed_channels, c.state_channels, c.init_hidden)
        self.prior = PriorModule(c.state_channels, a, c.z_channels, c.prior_hidden)
        self.transition = TransitionModule(
            c.state_channels,
            a + c.embed_channels,
            c.z_channels,
            self.grid,
            c.transition_hidden,
            c.pool_channels,
        )
        self.decoder = self._decoder(c.state_channels + c.z_channels)
        self.feature_shape = (c.state_channels + c.z_channels, self.grid, self.grid)
        self.feature_size = int(np.prod(self.feature_shape))

    # --- latents --------------------------------------------------------------------------
    def _pack(self, features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        return torch.cat([features.flatten(1), frames.flatten(1).to(features.dtype)], 1)

    def features(self, latent: torch.Tensor) -> torch.Tensor:
        """``concat(s_t, mu_t)`` ``(B, C + Z, G, G)`` of latents."""
        return latent[:, : self.feature_size].view(-1, *self.feature_shape)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        pixels = latent[:, self.feature_size :].round().clamp(0, 255).to(torch.uint8)
        return pixels.view(-1, *self.spec.frame_shape)

    def observation(self, latent: torch.Tensor, obs_type: str) -> torch.Tensor:
        self.check_obs_type(obs_type)
        if obs_type == "pixels":
            return self.decode(latent)
        return self.features(latent)

    def observation_space(self, obs_type: str) -> gym.Space:
        self.check_obs_type(obs_type)
        if obs_type == "pixels":
            return gym.spaces.Box(0, 255, self.spec.frame_shape, np.uint8)
        return gym.spaces.Box(-np.inf, np.inf, self.feature_shape, np.float32)

    # --- dynamics -------------------------------------------------------------------------
    def _transition(
        self, s: torch.Tensor, action: torch.Tensor, e: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``s_{t+1} = g(s_t, mu_{t+1}, a_t, e(o_t))`` and the decoder's input
        ``concat(s_{t+1}, mu_{t+1})``."""
        a = self._tile(action)
        mu, _ = self.prior(s, a)
        s = self.transition(s, mu, torch.cat([a, e], 1))
        return s, torch.cat([s, mu], 1)

    def initial_state(
        self, embeddings: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """``s`` from the first three observations, then one transition per later one.

        At least four observations are used (the first repeated if fewer), so that the
        latent, as every latent of training and of :meth:`step`, is a state after a
        transition (the decoder never sees ``s_0``).
        """
        self._check_context(embeddings, actions)
        frames, actions = self._pad_context(embeddings, actions, self.context + 1)
        b, k = frames.shape[:2]
        enc = self.encoder(frames.flatten(0, 1)).view(b, k, -1, self.grid, self.grid)
        s = self.init(enc[:, : self.context])
        for j in range(self.context - 1, k - 1):
            s, features = self._transition(s, actions[:, j], enc[:, j])
        return self._pack(features, frames[:, -1]), (s, enc[:, -1])

    def step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float = 1.0,
    ) -> Prediction:
        s, e = state
        s, features = self._transition(s, action, e)
        logits, head = self.decoder(features)
        frame = render_pixels(logits, rng, temperature).flatten(1).to(features.dtype)
        older = latent[:, self.feature_size + frame.shape[1] :]  # the stack's shifted frames
        pixels = torch.cat([older, frame], 1)  # 0..255 floats: what the encoder reads too
        bit_logits, term_logits = self._split_head(head)
        state = (s, self.encoder(pixels.view(-1, *self.spec.frame_shape)))
        next_latent = torch.cat([features.flatten(1), pixels], 1)
        return Prediction(next_latent, self.readout.scores(bit_logits), term_logits, state)

    def filter(
        self, state: State, latent: torch.Tensor, action: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """One transition with ``e`` of the last real observation; the new real observation
        ``embedding`` is encoded for the next (nothing is decoded)."""
        s, e = state
        s, features = self._transition(s, action, e)
        return self._pack(features, embedding), (s, self.encoder(embedding))

    def _teacher_forced(
        self, frames: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t1 = frames.shape[:2]
        c = self.context
        enc = self.encoder(frames.flatten(0, 1)).view(b, t1, -1, self.grid, self.grid)
        s = self.init(enc[:, :c])
        steps = []
        for j in range(c - 1, t1 - 1):
            s, features = self._transition(s, actions[:, j], enc[:, j])
            steps.append(features)
        logits, head = self.decoder(torch.stack(steps, 1).flatten(0, 1))
        n = len(steps)
        return logits.view(b, n, *logits.shape[1:]), head.view(b, n, -1)
