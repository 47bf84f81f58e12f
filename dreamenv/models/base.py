"""The world-model contract every family implements, and the registry of families by name.

A world model is a ``torch.nn.Module`` with one batched, explicit-state interface. The
envs use only this interface; the trainer uses only :meth:`WorldModel.loss` and
:meth:`WorldModel.metrics`.

Example:
    >>> from dreamenv.models import build_model
    >>> from dreamenv.envs.atari import AtariSpec
    >>> model = build_model("discrete", "small", AtariSpec("pong"), num_actions=6)
    >>> latent = model.encode(torch.zeros(2, 4, 96, 96, dtype=torch.uint8))
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import torch
from torch import nn

from dreamenv.envs.atari import AtariSpec
from dreamenv.errors import ConfigError
from dreamenv.random import BatchRandom

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
    config_class: ClassVar[type]
    """Frozen dataclass of the family's hyperparameters."""
    presets: ClassVar[dict[str, Any]]
    """Named configs (``"paper"``, ``"small"``)."""
    reward_support: ClassVar[tuple[float, ...]] = (-1.0, 0.0, 1.0)
    """Reward values the reward head scores."""
    obs_types: ClassVar[tuple[str, ...]] = OBS_TYPES
    """Observation types this family can emit."""

    def __init__(self, config: Any, spec: AtariSpec, num_actions: int) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self.num_actions = int(num_actions)

    # --- the contract -------------------------------------------------------------------
    @abstractmethod
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Latents of real uint8 frames ``(B, *spec.frame_shape)``."""

    @abstractmethod
    def initial_state(self, latents: torch.Tensor, actions: torch.Tensor) -> State:
        """Burn in over a real context: ``latents`` ``(B, K, ...)``, ``actions`` ``(B, K-1)``.

        The returned state is the one in which ``latents[:, -1]`` is the current latent.
        """

    @abstractmethod
    def step(
        self, state: State, latent: torch.Tensor, action: torch.Tensor, rng: BatchRandom
    ) -> Prediction:
        """One imagined transition for the whole batch; samples only from ``rng``."""

    @abstractmethod
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(B, *spec.frame_shape)`` of latents (for pixels and rendering)."""

    @abstractmethod
    def observe(self, latent: torch.Tensor, obs_type: str) -> torch.Tensor:
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
            phase: ``"warmup"`` (representation only) or ``"joint"``.
            step: the optimiser step, for schedules such as slower representation updates.
        """

    @abstractmethod
    def metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Held-out metrics: ``recon_loss``, ``latent_acc``, ``reward_acc``, ``termination_acc``."""

    # --- shared helpers -----------------------------------------------------------------
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
        if obs_type not in self.obs_types:
            raise ConfigError(
                f"obs_type={obs_type!r} is not supported by the {self.family!r} family; "
                f"choose one of {list(self.obs_types)}."
            )


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
    spec: AtariSpec,
    num_actions: int,
    overrides: dict[str, Any] | None = None,
) -> WorldModel:
    """A new, untrained world model of ``family``."""
    cls = get_family(family)
    return cls(resolve_config(family, preset, overrides), spec, num_actions)
