"""The recurrent state-space model (RSSM) of PlaNet (Hafner et al. 2019) and Dreamer.

The model state is a deterministic part ``h_t`` and a stochastic part ``s_t``:

- deterministic path: ``h_t = GRU(h_{t-1}, ELU(Linear([s_{t-1}, a_{t-1}])))``, ``a`` the
  action's features (a one-hot, or a continuous action rescaled to [-1, 1], as PlaNet's);
- prior ``p(s_t | h_t)`` and posterior ``q(s_t | h_t, e(o_t))``, each an ELU hidden layer
  and a linear layer of distribution parameters. ``stochastic="gaussian"`` (PlaNet,
  DreamerV1): a diagonal Gaussian with ``std = softplus(.) + min_std``;
  ``stochastic="categorical"`` (DreamerV2): ``categoricals`` one-hot variables of
  ``classes`` classes each, sampled with straight-through gradients;
- encoder ``e``: Dreamer's four stride-2 4x4 convolutions (depth ``d, 2d, 4d, 8d``, no
  padding) on the stacked frames ``(frame_stack * C, S, S)`` (grey or RGB), flattened;
  screen sizes 64, 80 and 96;
- decoder: a linear layer from ``[h_t, s_t]`` to an ``(8d, S/16, S/16)`` grid, then four
  stride-2 transposed convolutions (``4d, 2d, d, frame_stack * C``) to pixel log-odds. Pixels
  are Bernoulli with the frames' pixels as pseudo-probabilities (:func:`pixel_kl`), so the
  likelihood compares across families (Dreamer's decoder starts from 1x1 with 5x5/6x6
  kernels made for 64x64; the grid start serves 64, 80 and 96 alike);
- heads on ``[h_t, s_t]``: reward scores over the reward coder's support ((-1, 0, +1) for
  sign-clipped rewards; DreamerV3's two-hot symlog grid for real ones) and a continue
  logit (Dreamer's discount head); the contract's termination logit is minus the continue
  logit.

Training maximises the ELBO over whole windows, every observation filtered by the
posterior from a zero state (the first observation too, after one GRU step from zeros):
summed pixel KL + reward cross-entropy + continue BCE + ``kl_scale`` x the KL
``KL(q || p)`` with free nats (Dreamer: the KL averaged over the batch's steps is clamped
from below at ``free_nats``); categorical latents use DreamerV2's KL balancing
``alpha KL(sg(q) || p) + (1 - alpha) KL(q || sg(p))``, free nats applied to each term.
The training window is the trainer's (``window_steps(L) = L``).

The env observes the model state: the latent is ``[h_t, s_t]`` (the one-hot sample for
categorical latents). Dream steps sample the prior from the env's random streams; the real
env follows the game with the posterior mean/mode, as a Dreamer agent observes it.

Example:
    >>> model = RSSMWorldModel(RSSMConfig(), AtariSpec("pong"), num_actions=6)
    >>> embedding = model.encode(torch.zeros(2, 4, 96, 96, dtype=torch.uint8))
    >>> latent, state = model.initial_state(embedding[:, None], torch.zeros(2, 0).long())
    >>> latent.shape
    torch.Size([2, 230])
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
from dreamenv.models.common import (
    NLL_CONTEXT,
    action_features,
    image_frames,
    normal_from_uniform,
    pixel_kl,
    pixel_mean,
    sample_categorical,
    to_unit,
)
from dreamenv.random_streams import BatchRandom

STOCHASTIC = ("gaussian", "categorical")
SCREEN_SIZES = (64, 80, 96)
"""Screen sizes the encoder and decoder take (multiples of 16; 4 unpadded convolutions)."""
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU}


@dataclass(frozen=True)
class RSSMConfig:
    """Hyperparameters of the RSSM (defaults: PlaNet's sizes, Dreamer's losses)."""

    stochastic: str = "gaussian"
    """``"gaussian"`` (PlaNet/DreamerV1 diagonal Gaussian) or ``"categorical"`` (DreamerV2)."""
    deter_size: int = 200
    """Size of the deterministic state ``h`` (the GRU's hidden state)."""
    stoch_size: int = 30
    """Dimensions of the Gaussian stochastic state ``s``."""
    categoricals: int = 32
    """Categorical variables of the categorical stochastic state."""
    classes: int = 32
    """Classes of each categorical variable."""
    hidden_size: int = 200
    """Width of the layer before the GRU and of the prior's and posterior's hidden layers."""
    min_std: float = 0.1
    """Lower bound of the Gaussian standard deviations (``softplus(.) + min_std``)."""
    encoder_depth: int = 32
    """Channels ``d`` of the first convolution (``d, 2d, 4d, 8d``; mirrored by the decoder)."""
    conv_activation: str = "relu"
    """Activation of the convolutions: ``"relu"`` (PlaNet, DreamerV1) or ``"elu"`` (V2)."""
    head_hidden: int = 400
    """Width of the reward and continue heads' hidden layers (DreamerV1: 400)."""
    head_layers: int = 2
    """Hidden layers of the reward and continue heads (DreamerV1: 2)."""
    free_nats: float = 3.0
    """Free nats: the KL term is clamped from below at this value (PlaNet, Dreamer: 3)."""
    kl_scale: float = 1.0
    """Weight of the KL term (PlaNet, DreamerV1: 1)."""
    kl_balance: float = 0.8
    """Categorical latents only: the prior's share alpha of the balanced KL (V2: 0.8)."""
    reward_scale: float = 1.0
    """Weight of the reward cross-entropy."""
    continue_scale: float = 1.0
    """Weight of the continue head's binary cross-entropy."""

    def __post_init__(self) -> None:
        if self.stochastic not in STOCHASTIC:
            raise ConfigError(
                f"RSSMConfig.stochastic must be one of {list(STOCHASTIC)}, got "
                f"{self.stochastic!r}; e.g. overrides={{'stochastic': 'categorical'}}."
            )
        if self.conv_activation not in ACTIVATIONS:
            raise ConfigError(
                f"RSSMConfig.conv_activation must be one of {sorted(ACTIVATIONS)}, got "
                f"{self.conv_activation!r}."
            )
        for name in (
            "deter_size",
            "stoch_size",
            "categoricals",
            "classes",
            "hidden_size",
            "encoder_depth",
            "head_hidden",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"RSSMConfig.{name} must be a positive int, got {value!r}.")
        if not (isinstance(self.head_layers, int) and self.head_layers >= 0):
            raise ConfigError(
                f"RSSMConfig.head_layers must be a non-negative int, got {self.head_layers!r}."
            )
        for name in ("min_std", "free_nats", "kl_scale", "reward_scale", "continue_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ConfigError(f"RSSMConfig.{name} must be a number >= 0, got {value!r}.")
        if not (isinstance(self.kl_balance, (int, float)) and 0.0 <= self.kl_balance <= 1.0):
            raise ConfigError(
                f"RSSMConfig.kl_balance must lie in [0, 1] (DreamerV2: 0.8), got "
                f"{self.kl_balance!r}."
            )

    @property
    def stoch_features(self) -> int:
        """Size of ``s`` in the features: Gaussian dims, or the flattened one-hots."""
        if self.stochastic == "gaussian":
            return self.stoch_size
        return self.categoricals * self.classes


PRESETS = {
    "paper": RSSMConfig(),
    "small": RSSMConfig(
        deter_size=128,
        stoch_size=16,
        categoricals=16,
        classes=16,
        hidden_size=128,
        encoder_depth=8,
        head_hidden=128,
    ),
    "tiny": RSSMConfig(
        deter_size=16,
        stoch_size=4,
        categoricals=4,
        classes=4,
        hidden_size=16,
        encoder_depth=2,
        conv_activation="elu",  # ReLUs of 2 channels die too easily
        head_hidden=16,
        head_layers=1,
    ),
}


# --- distributions over the stochastic state ----------------------------------------------
class _Stochastic:
    """Parameters, samples and KLs of the stochastic state, as flat tensors ``(..., P)``.

    Gaussian parameters are ``[mean, raw_std]``; categorical ones are the logits of
    ``categoricals x classes``. Samples are flat features ``(..., stoch_features)``.
    """

    def __init__(self, config: RSSMConfig) -> None:
        self.kind = config.stochastic
        self.min_std = config.min_std
        self.size = config.stoch_size
        self.groups = config.categoricals
        self.classes = config.classes
        self.params = 2 * self.size if self.kind == "gaussian" else self.groups * self.classes

    def _gaussian(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = params.chunk(2, -1)
        return mean, F.softplus(raw) + self.min_std

    def _logits(self, params: torch.Tensor) -> torch.Tensor:
        return params.unflatten(-1, (self.groups, self.classes))

    def _onehot(self, index: torch.Tensor) -> torch.Tensor:
        return F.one_hot(index, self.classes).float().flatten(-2)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The mean (Gaussian) or the one-hot mode (categorical): deterministic."""
        if self.kind == "gaussian":
            return self._gaussian(params)[0]
        return self._onehot(self._logits(params).argmax(-1))

    def rsample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A reparameterised (Gaussian) or straight-through (categorical) sample."""
        if self.kind == "gaussian":
            mean, std = self._gaussian(params)
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            return mean + std * noise
        probs = torch.softmax(self._logits(params), -1)
        flat = probs.reshape(-1, self.classes)
        index = torch.multinomial(flat.detach(), 1, generator=generator).view(probs.shape[:-1])
        onehot = F.one_hot(index, self.classes).to(probs.dtype)
        return (onehot + probs - probs.detach()).flatten(-2)

    def uniform_shape(self) -> tuple[int, ...]:
        """Uniforms one :meth:`sample_from_uniform` draws per env."""
        return (self.size,) if self.kind == "gaussian" else (self.groups,)

    def sample_from_uniform(
        self, params: torch.Tensor, u: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """A sample at ``temperature`` from uniforms ``u`` (0: the mean or mode)."""
        if temperature == 0:
            return self.mode(params)
        if self.kind == "gaussian":
            mean, std = self._gaussian(params)
            return mean + temperature * std * normal_from_uniform(u)
        probs = torch.softmax(self._logits(params) / temperature, -1)
        return self._onehot(sample_categorical(probs, u))

    def kl(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``KL(q || p)`` in nats, summed over the state: ``(..., P)`` -> ``(...)``."""
        if self.kind == "gaussian":
            mq, sq = self._gaussian(q)
            mp, sp = self._gaussian(p)
            var_ratio = (sq / sp).square()
            kl = 0.5 * (var_ratio + ((mq - mp) / sp).square() - 1.0 - var_ratio.log())
            return kl.sum(-1)
        log_q = torch.log_softmax(self._logits(q), -1)
        log_p = torch.log_softmax(self._logits(p), -1)
        return (log_q.exp() * (log_q - log_p)).sum((-2, -1))


# --- networks --------------------------------------------------------------------------
class ConvEncoder(nn.Module):
    """Dreamer's encoder: four 4x4 stride-2 convolutions without padding, flattened."""

    def __init__(self, channels: int, size: int, depth: int, activation: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = channels
        for mult in (1, 2, 4, 8):
            layers += [nn.Conv2d(prev, depth * mult, 4, 2), ACTIVATIONS[activation]()]
            prev = depth * mult
            size = (size - 4) // 2 + 1
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_size = prev * size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """Features -> linear ``(8d, S/16, S/16)`` -> four 4x4 stride-2 transposed convolutions
    (the activation after each but the last; pixel log-odds out)."""

    def __init__(self, features: int, channels: int, size: int, depth: int, activation: str):
        super().__init__()
        self.grid = size // 16
        self.start = 8 * depth
        self.linear = nn.Linear(features, self.start * self.grid * self.grid)
        act = ACTIVATIONS[activation]
        self.net = nn.Sequential(
            nn.ConvTranspose2d(8 * depth, 4 * depth, 4, 2, 1),
            act(),
            nn.ConvTranspose2d(4 * depth, 2 * depth, 4, 2, 1),
            act(),
            nn.ConvTranspose2d(2 * depth, depth, 4, 2, 1),
            act(),
            nn.ConvTranspose2d(depth, channels, 4, 2, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.linear(features).view(-1, self.start, self.grid, self.grid)
        return self.net(x)


def _mlp(inputs: int, hidden: int, layers: int, out: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    for _ in range(layers):
        modules += [nn.Linear(inputs, hidden), nn.ELU()]
        inputs = hidden
    modules.append(nn.Linear(inputs, out))
    return nn.Sequential(*modules)


class RSSMCell(nn.Module):
    """The transition: ``h' = GRU(h, ELU(Linear([s, a])))``, the prior ``p(s' | h')`` and
    the posterior ``q(s' | h', e)``."""

    def __init__(self, config: RSSMConfig, num_actions: int | ActionSpec, embed_size: int) -> None:
        super().__init__()
        self.dist = _Stochastic(config)
        self.actions = (
            num_actions if isinstance(num_actions, ActionSpec) else ActionSpec.discrete(num_actions)
        )
        self.num_actions = self.actions.n
        self.deter_size = config.deter_size
        self.stoch_features = config.stoch_features
        hidden = config.hidden_size
        self.inputs = nn.Sequential(
            nn.Linear(config.stoch_features + self.num_actions, hidden), nn.ELU()
        )
        self.gru = nn.GRUCell(hidden, config.deter_size)
        self.prior = nn.Sequential(
            nn.Linear(config.deter_size, hidden), nn.ELU(), nn.Linear(hidden, self.dist.params)
        )
        self.posterior = nn.Sequential(
            nn.Linear(config.deter_size + embed_size, hidden),
            nn.ELU(),
            nn.Linear(hidden, self.dist.params),
        )

    def zero_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.zeros(batch, self.deter_size, device=device),
            torch.zeros(batch, self.stoch_features, device=device),
        )

    def action_input(self, action: torch.Tensor | None, batch: int, device: torch.device):
        """Action features ``(B, A)`` (one-hots; continuous actions ``(B, n)`` rescaled to
        [-1, 1]) of actions ``(B,)``, or of ``(B, 1)`` chunks of a non-jumpy model; ``None``
        (before the first observation): zeros. (The model passes its own
        :meth:`~dreamenv.models.base.WorldModel.action_features`, the same.)"""
        if action is None:
            return torch.zeros(batch, self.num_actions, device=device)
        return action_features(action, self.actions).reshape(batch, self.num_actions)

    def deterministic(self, h: torch.Tensor, s: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The next deterministic state from ``h``, ``s`` and ``action`` features.

        The GRU's state is a convex combination of tanh values, so in [-1, 1]; the clamp
        (a no-op but for float rounding) makes the observation space's bounds exact.
        """
        return self.gru(self.inputs(torch.cat([s, action], -1)), h).clamp(-1.0, 1.0)

    def posterior_step(
        self, h: torch.Tensor, s: torch.Tensor, action: torch.Tensor, embed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h'``, the prior's and the posterior's parameters after ``action`` and ``embed``."""
        h = self.deterministic(h, s, action)
        return h, self.prior(h), self.posterior(torch.cat([h, embed], -1))


@register_family
class RSSMWorldModel(WorldModel):
    """PlaNet/Dreamer RSSM; latents are the features ``[h, s]`` ``(B, deter + stoch)``."""

    family = "rssm"
    config_class = RSSMConfig
    presets = PRESETS
    obs_types = ("state", "pixels")
    has_warmup = False

    def __init__(self, config: RSSMConfig, spec: AtariSpec, num_actions: int | ActionSpec) -> None:
        super().__init__(config, spec, num_actions)
        _, stack, size = image_frames(spec, "rssm")
        if size not in SCREEN_SIZES:
            raise ConfigError(
                f"the rssm family needs a screen size that is a multiple of 16 and >= 64 "
                f"(one of {list(SCREEN_SIZES)}), got {size}; set the spec's screen_size."
            )
        self.pixels = int(np.prod(spec.frame_shape))
        self.features = config.deter_size + config.stoch_features
        self.encoder = ConvEncoder(stack, size, config.encoder_depth, config.conv_activation)
        self.decoder = ConvDecoder(
            self.features, stack, size, config.encoder_depth, config.conv_activation
        )
        self.cell = RSSMCell(config, self.actions, self.encoder.out_size)
        self.reward_head = _mlp(
            self.features, config.head_hidden, config.head_layers, self.reward_coder.size
        )
        self.continue_head = _mlp(self.features, config.head_hidden, config.head_layers, 1)

    def _init_termination_head(self, logit: float) -> None:
        last = self.continue_head[-1]  # the continue logit is minus the termination logit
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(-logit)

    @property
    def dist(self) -> _Stochastic:
        return self.cell.dist

    # --- representation -------------------------------------------------------------------
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Flat embeddings ``(B, E)`` of uint8 observations (no memory)."""
        return self.encoder(to_unit(frames))

    def decode_logits(self, latent: torch.Tensor) -> torch.Tensor:
        """Pixel log-odds ``(B, *frame_shape)`` of features ``[h, s]``."""
        return self.decoder(latent)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return pixel_mean(self.decode_logits(latent))

    def _split(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return latent[:, : self.config.deter_size], latent[:, self.config.deter_size :]

    # --- dynamics -------------------------------------------------------------------------
    def _action_input(
        self, action: torch.Tensor | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        """:meth:`action_features` ``(B, A)`` of actions ``(B,)`` / ``(B, n)`` (or ``(B, 1)``
        chunks of a non-jumpy model); ``None`` (before the first observation): zeros."""
        if action is None:
            return torch.zeros(batch, self.num_actions, device=device)
        return self.action_features(action).reshape(batch, self.num_actions)

    def _filter_step(
        self, state: State, action: torch.Tensor | None, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        h, s = state
        a = self._action_input(action, h.shape[0], h.device)
        h, _, post = self.cell.posterior_step(h, s, a, embedding)
        s = self.dist.mode(post)
        return torch.cat([h, s], -1), (h, s)

    def initial_state(
        self, embeddings: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """Filter the context with the posterior mean/mode from a zero state."""
        state: State = self.cell.zero_state(embeddings.shape[0], embeddings.device)
        latent, state = self._filter_step(state, None, embeddings[:, 0])
        for k in range(1, embeddings.shape[1]):
            latent, state = self._filter_step(state, actions[:, k - 1], embeddings[:, k])
        return latent, state

    def filter(
        self, state: State, latent: torch.Tensor, action: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """One posterior step with the real observation (its mean/mode: deterministic)."""
        return self._filter_step(state, action, embedding)

    def step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float = 1.0,
    ) -> Prediction:
        """``h' = GRU(h, [s, a])``, ``s' ~ p(s' | h')`` at ``temperature``; heads on ``[h', s']``."""
        if not temperature >= 0:
            raise ConfigError(f"temperature must be >= 0 (1: the model's own), got {temperature}.")
        h, s = state
        a = self._action_input(action, h.shape[0], h.device)
        h = self.cell.deterministic(h, s, a)
        prior = self.cell.prior(h)
        u = rng.uniform(self.dist.uniform_shape()).to(h.device)
        s = self.dist.sample_from_uniform(prior, u, float(temperature))
        features = torch.cat([h, s], -1)
        reward_logits, termination_logits = self._heads(features)
        return Prediction(features, reward_logits, termination_logits, (h, s))

    def forced_step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        next_embedding: torch.Tensor,
        rng: BatchRandom,
    ) -> Prediction:
        """:meth:`step` whose heads read the posterior state after the real observation of
        ``next_embedding`` (its mean/mode, as :meth:`filter`), as in training."""
        pred = self.step(state, latent, action, rng)
        features, _ = self._filter_step(state, action, next_embedding)
        reward_logits, termination_logits = self._heads(features)
        return pred._replace(reward_logits=reward_logits, termination_logits=termination_logits)

    def _heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward logits and the termination logit (minus the continue head's)."""
        return self.reward_head(features), -self.continue_head(features).squeeze(-1)

    # --- observations -----------------------------------------------------------------------
    def observation(self, latent: torch.Tensor, obs_type: str) -> torch.Tensor:
        self.check_obs_type(obs_type)
        if obs_type == "pixels":
            return self.decode(latent)
        return latent.float()

    def observation_space(self, obs_type: str) -> gym.Space:
        self.check_obs_type(obs_type)
        if obs_type == "pixels":
            return gym.spaces.Box(0, 255, self.spec.frame_shape, np.uint8)
        deter = self.config.deter_size
        low = np.full(self.features, -1.0, dtype=np.float32)  # h: GRU state in [-1, 1]
        high = np.full(self.features, 1.0, dtype=np.float32)
        if self.config.stochastic == "categorical":  # s: one-hot samples
            low[deter:] = 0.0
        else:  # s: Gaussian, unbounded
            low[deter:], high[deter:] = -np.inf, np.inf
        return gym.spaces.Box(low, high, (self.features,), np.float32)

    # --- training ---------------------------------------------------------------------------
    def _posterior_rollout(
        self,
        embeds: torch.Tensor,
        actions: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
        state: State | None = None,
        first_action: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Filter ``embeds`` ``(B, T+1, E)`` with actions ``(B, T[, n])`` between them.

        From ``state`` (zeros if None) after ``first_action`` (none if None). Returns
        ``h``, ``s`` (``(B, T+1, .)``), ``prior`` and ``post`` parameters.
        """
        b, n = embeds.shape[:2]
        h, s = state if state is not None else self.cell.zero_state(b, embeds.device)
        hs, ss, priors, posts = [], [], [], []
        for t in range(n):
            action = first_action if t == 0 else actions[:, t - 1]
            a = self._action_input(action, b, embeds.device)
            h, prior, post = self.cell.posterior_step(h, s, a, embeds[:, t])
            s = self.dist.rsample(post, generator) if sample else self.dist.mode(post)
            hs.append(h)
            ss.append(s)
            priors.append(prior)
            posts.append(post)
        return {
            "h": torch.stack(hs, 1),
            "s": torch.stack(ss, 1),
            "prior": torch.stack(priors, 1),
            "post": torch.stack(posts, 1),
        }

    def kl_loss(
        self, post: torch.Tensor, prior: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw mean KL and the KL loss with free nats (and balancing, if categorical).

        ``weights`` ``(...)`` average the per-step KLs (the mask over valid observations,
        normalised to sum to 1).
        """
        free = self.config.free_nats
        kl = (self.dist.kl(post, prior) * weights).sum()
        if self.config.stochastic == "gaussian":
            return kl, kl.clamp(min=free)
        alpha = self.config.kl_balance
        lhs = (self.dist.kl(post, prior.detach()) * weights).sum()  # trains the posterior
        rhs = (self.dist.kl(post.detach(), prior) * weights).sum()  # trains the prior
        return kl, (1.0 - alpha) * lhs.clamp(min=free) + alpha * rhs.clamp(min=free)

    def _terms(self, batch: dict[str, torch.Tensor], sample: bool) -> dict[str, torch.Tensor]:
        frames = batch["frames"]
        b, n = frames.shape[:2]
        embeds = self.encode(frames.flatten(0, 1)).view(b, n, -1)
        roll = self._posterior_rollout(embeds, batch["actions"], sample=sample)
        features = torch.cat([roll["h"], roll["s"]], -1)
        mask = batch["mask"].float()
        obs_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        obs_w = obs_mask / obs_mask.sum()
        step_w = mask / mask.sum().clamp(min=1.0)

        logits = self.decode_logits(features.flatten(0, 1))
        recon = pixel_kl(logits, frames.flatten(0, 1)).view(b, n)  # nats per pixel
        kl, kl_loss = self.kl_loss(roll["post"], roll["prior"], obs_w)

        after = features[:, 1:]
        reward_logits = self.reward_head(after)
        reward_ce = self.reward_coder.loss(reward_logits, batch["rewards"])
        reward_hit = self.reward_coder.accuracy(reward_logits, batch["rewards"])
        continue_logits = self.continue_head(after).squeeze(-1)
        terminated = batch["terminated"].float()
        continue_bce = F.binary_cross_entropy_with_logits(
            continue_logits, 1.0 - terminated, reduction="none"
        )
        return {
            "recon_loss": (recon * obs_w).sum(),
            "kl": kl,
            "kl_loss": kl_loss,
            "reward_loss": (reward_ce * step_w).sum(),
            "termination_loss": (continue_bce * step_w).sum(),
            "reward_acc": (reward_hit * step_w).sum(),
            "termination_acc": (
                ((continue_logits < 0).float() == terminated).float() * step_w
            ).sum(),
            "_roll_h": roll["h"],
            "_prior": roll["prior"],
        }

    def loss(
        self, batch: dict[str, torch.Tensor], phase: str, step: int
    ) -> dict[str, torch.Tensor]:
        """The negative ELBO per observation (pixels summed) plus the reward and continue
        losses; the same in both phases (``has_warmup = False``)."""
        terms = self._terms(batch, sample=True)
        c = self.config
        total = (
            terms["recon_loss"] * self.pixels
            + c.kl_scale * terms["kl_loss"]
            + c.reward_scale * terms["reward_loss"]
            + c.continue_scale * terms["termination_loss"]
        )
        out = {k: v.detach() for k, v in terms.items() if not k.startswith("_")}
        out["loss"] = total
        return out

    @torch.no_grad()
    def metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Posterior-mean filtering of held-out windows: ``recon_loss`` (pixel KL per pixel
        of the posterior reconstruction), ``prior_recon_loss`` (of the prior's mean/mode
        one step ahead: the dynamics' quality), ``kl``, reward and termination figures."""
        terms = self._terms(batch, sample=False)
        h, prior = terms["_roll_h"][:, 1:], terms["_prior"][:, 1:]
        features = torch.cat([h, self.dist.mode(prior)], -1).flatten(0, 1)
        frames = batch["frames"][:, 1:].flatten(0, 1)
        mask = batch["mask"].float().flatten()
        prior_recon = pixel_kl(self.decode_logits(features), frames)
        out = {k: float(v) for k, v in terms.items() if not k.startswith("_")}
        out["prior_recon_loss"] = float((prior_recon * mask).sum() / mask.sum().clamp(min=1.0))
        return out

    @torch.no_grad()
    def test_nll(self, batch: dict[str, torch.Tensor]) -> float:
        """Negative ELBO per pixel of the observations after the first ``NLL_CONTEXT``.

        The context is filtered with the posterior mean/mode from a zero state; each later
        observation adds its pixel KL (one posterior sample, from a fixed seed) and
        ``KL(q || p)`` without free nats; the sum is divided by the scored pixels.
        """
        frames, actions = batch["frames"], batch["actions"]
        b, n = frames.shape[:2]
        if n <= NLL_CONTEXT:
            raise ConfigError(
                f"test_nll needs more than {NLL_CONTEXT} observations per window (the "
                f"context), got {n}; raise seq_len."
            )
        embeds = self.encode(frames.flatten(0, 1)).view(b, n, -1)
        context = NLL_CONTEXT
        _, state = self.initial_state(embeds[:, :context], actions[:, : context - 1])
        generator = torch.Generator(device=frames.device).manual_seed(0)
        roll = self._posterior_rollout(
            embeds[:, context:],
            actions[:, context:],
            sample=True,
            generator=generator,
            state=state,
            first_action=actions[:, context - 1],
        )
        features = torch.cat([roll["h"], roll["s"]], -1).flatten(0, 1)
        recon = pixel_kl(self.decode_logits(features), frames[:, context:].flatten(0, 1))
        kl = self.dist.kl(roll["post"], roll["prior"]).flatten()
        mask = batch["mask"][:, context - 1 :].float().flatten()
        nats = (recon * self.pixels + kl) * mask
        return float(nats.sum() / (mask.sum().clamp(min=1.0) * self.pixels))
