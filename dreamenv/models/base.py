"""The world-model contract every family implements, and the registry of families by name.

A world model is a ``torch.nn.Module`` with one batched, explicit-state interface. The
envs use only this interface; the trainer uses only :meth:`WorldModel.loss` and
:meth:`WorldModel.metrics`.

Three kinds of tensors flow through it, all batch first:

- an *embedding*: what :meth:`~WorldModel.encode` makes of one real observation, without
  memory (a VQ-VAE's code indices, a convolutional encoding, a VAE's mean);
- a *latent*: what the env observes (:meth:`~WorldModel.observe`) and decodes at the
  current step (for the discrete model the code indices, for a state-space model its
  state features, for an auto-regressive model the rendered frame);
- a *state*: a tuple of tensors carried from step to step (:data:`State`).

Dream envs start with :meth:`~WorldModel.initial_state` over real embeddings and advance
with :meth:`~WorldModel.step`; real envs follow the real game with
:meth:`~WorldModel.filter`, so both emit the same kind of observation.

A *jumpy* model (``jump = c > 1``) advances ``c`` real steps per step: its actions are
chunks ``(B, c)`` and its action space is ``MultiDiscrete([num_actions] * c)``; trained on
windows of ``c * seq_len`` real steps that it sub-samples itself.

Example:
    >>> from dreamenv.models import build_model
    >>> from dreamenv.envs.atari import AtariSpec
    >>> model = build_model("discrete", "small", AtariSpec("pong"), num_actions=6)
    >>> embedding = model.encode(torch.zeros(2, 4, 96, 96, dtype=torch.uint8))
    >>> latent, state = model.initial_state(embedding[:, None], torch.zeros(2, 0).long())
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from dreamenv.envs.options import check_obs_type
from dreamenv.envs.spec import ActionSpec, EnvSpec
from dreamenv.errors import ConfigError
from dreamenv.models.common import RewardCoder, action_features, symlog
from dreamenv.random_streams import BatchRandom

State = tuple[torch.Tensor, ...]
"""A model's recurrent state: tensors whose first dimension is the batch."""

OBS_TYPES = ("indices", "embeddings", "pixels")


class Prediction(NamedTuple):
    """One imagined transition for a batch."""

    next_latent: torch.Tensor
    """The sampled next latent, batch first."""
    reward_logits: torch.Tensor
    """``(B, len(reward_support))`` unnormalised scores over the reward support."""
    termination_logits: torch.Tensor
    """``(B,)`` logit that the episode ends with this transition."""
    state: State
    """The recurrent state after the transition."""


class WorldModel(nn.Module, ABC):
    """Base class of world-model families; see the module docstring."""

    family: ClassVar[str]
    """Registry name (``"discrete"``)."""
    reward_limit: torch.Tensor
    """The real reward support's span in symlog units (a buffer; real rewards only)."""
    config_class: ClassVar[type]
    """Frozen dataclass of the family's hyperparameters."""
    presets: ClassVar[dict[str, Any]]
    """Named configs (``"paper"``, ``"small"``)."""
    obs_types: ClassVar[tuple[str, ...]] = OBS_TYPES
    """Observation types this family can emit; the first is the default of the envs."""
    frame_kind: ClassVar[str] = "image"
    """What the family models: ``"image"`` frames or ``"state"`` vectors (``GymSpec``'s
    ``observation="state"``)."""
    has_warmup: ClassVar[bool] = True
    """Whether :meth:`loss` has a representation-only ``"warmup"`` phase (others train
    everything in both phases)."""
    holds_representation: ClassVar[bool] = False
    """Whether :meth:`loss` has a ``"dynamics"`` phase: the representation held as it is
    (every observation the envs serve stays the same), only what predicts it trains
    (``FitConfig.representation``)."""
    observes_state: ClassVar[bool] = True
    """Whether following the real game needs :meth:`filter`'s state for the observations.
    False: the latent after a real step is the new observation's :meth:`encode` alone (the
    discrete family's codes) and the state matters only to imagining from there, so
    ``Real-v0`` follows the state only once a planner starts from it
    (:meth:`dreamenv.envs.real.LatentFilter.follow_state`)."""

    def __init__(self, config: Any, spec: EnvSpec, num_actions: int | ActionSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self.actions = (
            num_actions if isinstance(num_actions, ActionSpec) else ActionSpec.discrete(num_actions)
        )
        """The real env's actions: ``Discrete(n)`` or a ``Box`` of ``n`` floats."""
        self.num_actions = self.actions.n
        self._action_bounds: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        """Number of discrete actions, or of continuous action dimensions: the width of
        :meth:`action_features`."""
        self.reward_coder = RewardCoder(getattr(spec, "reward_kind", "ternary"))
        """How rewards become the reward head's targets (its support: :attr:`reward_support`)."""
        if self.reward_coder.kind == "real":
            # the span of the real support, fitted to the data (set_reward_scale), saved
            self.register_buffer("reward_limit", torch.tensor(self.reward_coder.limit))
            self.register_load_state_dict_post_hook(_sync_reward_limit)

    # --- the contract -------------------------------------------------------------------
    @abstractmethod
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Embeddings of real uint8 observations ``(B, *spec.frame_shape)`` (no memory)."""

    @abstractmethod
    def initial_state(
        self, embeddings: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """Burn in over a real context of consecutive real observations.

        Args:
            embeddings: ``(B, K, ...)`` embeddings of ``K >= 1`` consecutive observations.
            actions: ``(B, K-1)`` the real actions between them.

        Returns:
            The latent of the newest observation and the state to step from.
        """

    @abstractmethod
    def step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float = 1.0,
    ) -> Prediction:
        """One imagined transition for the whole batch; samples only from ``rng``.

        Args:
            action: ``(B,)`` int64, or ``(B, jump)`` action chunks of a jumpy model.
            temperature: scales the randomness of the sampled transition (1: the model's
                own distribution; smaller: closer to its mode).
        """

    def forced_step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        next_embedding: torch.Tensor,
        rng: BatchRandom,
    ) -> Prediction:
        """:meth:`step` teacher forced where the heads read what the step leads to: the
        reward and termination logits from the real observation's ``next_embedding``, as in
        training; the reality gap's ``*_forced`` scores. The default is :meth:`step` itself,
        right for heads that read nothing of the step's outcome; families whose heads read
        it (the next codes, state or posterior) override it."""
        return self.step(state, latent, action, rng)

    def filter(
        self, state: State, latent: torch.Tensor, action: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """Follow the real game: the latent and state after ``action`` (``(B,)``, or ``(B,
        jump)``) led to the real observation of ``embedding``. Deterministic.

        The default suits families whose latent is the embedding itself (no memory).
        """
        return embedding, state

    @abstractmethod
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(B, *spec.frame_shape)`` of latents (for pixels and rendering)."""

    @abstractmethod
    def observation(self, latent: torch.Tensor, obs_type: str) -> torch.Tensor:
        """The observation of ``obs_type`` for a batch of latents."""

    @abstractmethod
    def observation_space(self, obs_type: str) -> gym.Space:
        """The single-env observation space of ``obs_type``."""

    @abstractmethod
    def loss(
        self, batch: dict[str, torch.Tensor], phase: str, step: int
    ) -> dict[str, torch.Tensor]:
        """Training losses; ``"loss"`` is the total to minimise.

        Args:
            batch: ``frames`` uint8 ``(B, L+1, *frame_shape)``, ``actions`` ``(B, L)``,
                ``rewards`` ``(B, L)``, ``terminated`` ``(B, L)``, ``mask`` ``(B, L)``.
            phase: ``"warmup"`` (representation only), ``"joint"``, or ``"dynamics"``
                (all but the representation; families with ``holds_representation``,
                whose batch may hold ``latents`` from :meth:`served_latents` instead of
                ``frames``).
            step: the optimiser step, for schedules such as slower representation updates.
        """

    def served_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """The latents the envs serve for real observations ``frames`` ``(B, *frame_shape)``,
        as the ``"dynamics"`` phase takes them in ``batch["latents"]`` ``(B, L+1, ...)``
        instead of ``frames``: a held representation's are fixed, so a fit encodes its data
        once (families with ``holds_representation``)."""
        raise NotImplementedError(f"the {self.family!r} family cannot hold its representation")

    @abstractmethod
    def metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Held-out metrics: ``recon_loss``, ``latent_acc``, ``reward_acc``, ``termination_acc``."""

    def test_nll(self, batch: dict[str, torch.Tensor]) -> float:
        """Negative log-likelihood (or its variational bound) of the frames of ``batch``
        after its first ``context`` observations, in nats per pixel (lower is better).

        ``batch`` is as in :meth:`loss`; families without a pixel likelihood raise
        ``NotImplementedError``.
        """
        raise NotImplementedError(f"the {self.family!r} family has no pixel likelihood")

    # --- shared helpers -----------------------------------------------------------------
    def window_steps(self, seq_len: int) -> int:
        """Real transitions per training window for ``seq_len`` (families with a context
        or jumps ask for more; see :func:`dreamenv.models.common.window_steps`)."""
        return seq_len

    @property
    def jump(self) -> int:
        """Real steps per model step (``config.jump`` where the family has it, else 1)."""
        return int(getattr(self.config, "jump", 1))

    @property
    def action_space(self) -> gym.Space:
        """The single-env action space: the real env's (``Discrete(A)`` or ``Box``), or
        ``MultiDiscrete([A] * jump)`` (a ``Box`` of ``(jump, n)``) for a jumpy model."""
        if self.jump == 1:
            return self.actions.space()
        if self.actions.kind == "continuous":
            low = np.tile(np.array(self.actions.low, np.float32), (self.jump, 1))
            high = np.tile(np.array(self.actions.high, np.float32), (self.jump, 1))
            return gym.spaces.Box(low, high, low.shape, np.float32)
        return gym.spaces.MultiDiscrete(np.full(self.jump, self.num_actions, dtype=np.int64))

    @property
    def reward_support(self) -> tuple[float, ...]:
        """Reward values the reward head scores: (-1, 0, +1) for sign-clipped rewards, a
        symlog-spaced grid for real rewards (see :class:`~dreamenv.models.common.RewardCoder`)."""
        return self.reward_coder.support

    def set_reward_scale(self, max_abs_reward: float) -> None:
        """Span a real reward head's support over the rewards of the data: the largest
        magnitude ``max_abs_reward`` is its last bin (a head over a far wider span leaks
        probability onto huge rewards, which the dream's expected reward then adds up).
        The trainer calls it once, before training; no effect on a ternary head."""
        if self.reward_coder.kind != "real":
            return
        limit = max(float(symlog(torch.tensor(float(max_abs_reward)))), 0.1)
        self.reward_coder.set_limit(limit)
        self.reward_limit.fill_(limit)

    def set_termination_rate(self, rate: float, steps: int) -> None:
        """Start the termination head at the data's per-step termination rate: its logit's
        bias is ``logit(rate)`` and its weights zero, so an untrained head neither ends
        dream episodes at random nor needs epochs to drift down from p = 0.5 (a head that
        says p = 0.03 on data that never ends cuts a dream of 100 steps to about 30).
        ``steps`` is the data's size: data without a termination gets the rate
        ``1 / (10 * steps)``. The trainer calls it once, before training."""
        rate = min(max(float(rate), 1.0 / (10.0 * max(int(steps), 1))), 0.5)
        self._init_termination_head(math.log(rate / (1.0 - rate)))

    def _init_termination_head(self, logit: float) -> None:
        """Zero the weights of the layer that outputs the termination logit and set its bias
        so the logit is ``logit`` (families with a termination head override it)."""

    def action_features(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions as the float vectors the networks take, ``(..., num_actions)``: one-hots
        of discrete actions (int64 ``(...)``), continuous actions (``(..., n)``) rescaled
        from their bounds to [-1, 1]. A jumpy model's chunks ``(B, c[, n])`` give
        ``(B, c * num_actions)`` (training windows ``(B, L, c[, n])``: ``(B, L, c * n)``)."""
        bounds = None
        if self.actions.kind == "continuous":  # made once per device, not per step
            bounds = self._action_bounds.get(actions.device)
            if bounds is None:
                bounds = self._action_bounds[actions.device] = (
                    torch.tensor(self.actions.low, device=actions.device),
                    torch.tensor(self.actions.high, device=actions.device),
                )
        features = action_features(actions, self.actions, bounds)
        return features.flatten(-2) if self.jump > 1 else features

    def upgrade_weights(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weights saved by an earlier version of the family, as this version loads them
        (``load_checkpoint`` calls it before checking the names). Default: unchanged."""
        return tensors

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups (families override to give heads their own rate)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per named child module, and ``"total"``."""
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in self.named_children()}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts

    def reward_values(self) -> torch.Tensor:
        """The reward support as a float tensor on the model's device."""
        return torch.tensor(self.reward_support, device=self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_obs_type(self, obs_type: str) -> None:
        """A :class:`ConfigError` unless this family observes ``obs_type``."""
        check_obs_type(obs_type, self.obs_types, f"obs_type of the {self.family!r} family")


def _sync_reward_limit(module: nn.Module, incompatible: Any) -> None:
    """After loading weights, span the reward coder as the saved ``reward_limit`` says."""
    limit = getattr(module, "reward_limit", None)
    if limit is not None and float(limit) != module.reward_coder.limit:  # type: ignore[union-attr]
        module.reward_coder.set_limit(float(limit))  # type: ignore[union-attr, operator]


FAMILIES: dict[str, type[WorldModel]] = {}


def register_family(cls: type[WorldModel]) -> type[WorldModel]:
    """Class decorator adding a family to :data:`FAMILIES` under ``cls.family``."""
    FAMILIES[cls.family] = cls
    return cls


def get_family(name: str) -> type[WorldModel]:
    """The family class registered as ``name``."""
    import dreamenv.models  # noqa: F401  (registers the built-in families)

    if name not in FAMILIES:
        raise ConfigError(f"Unknown world-model family {name!r}; known: {sorted(FAMILIES)}.")
    return FAMILIES[name]


def check_holds_representation(family: str, setting: str, fix: str) -> None:
    """A :class:`ConfigError` for ``setting`` unless ``family`` can hold its representation
    (``holds_representation``); ``fix`` ends the message."""
    if not get_family(family).holds_representation:
        raise ConfigError(
            f"{setting}: the {family!r} family trains its representation with its dynamics "
            f"and cannot hold it; {fix}"
        )


def holding_families() -> list[str]:
    """The families that can hold their representation."""
    import dreamenv.models  # noqa: F401  (registers the built-in families)

    return [name for name, cls in FAMILIES.items() if cls.holds_representation]


def resolve_config(family: str, preset: str | Any, overrides: dict[str, Any] | None = None) -> Any:
    """The family's config from a preset name (or a config object) and field overrides."""
    cls = get_family(family)
    if isinstance(preset, str):
        if preset not in cls.presets:
            raise ConfigError(
                f"Unknown preset {preset!r} for family {family!r}; choose one of {sorted(cls.presets)}."
            )
        config = cls.presets[preset]
    else:
        config = preset
    if overrides:
        names = {f.name for f in dataclasses.fields(config)}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigError(
                f"Unknown {family!r} model settings {sorted(unknown)}; known: {sorted(names)}."
            )
        config = dataclasses.replace(config, **overrides)
    return config


def build_model(
    family: str,
    preset: str | Any,
    spec: EnvSpec,
    num_actions: int | ActionSpec,
    overrides: dict[str, Any] | None = None,
) -> WorldModel:
    """A new, untrained world model of ``family``."""
    cls = get_family(family)
    return cls(resolve_config(family, preset, overrides), spec, num_actions)
