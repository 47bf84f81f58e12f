"""The options of a dream env: one keyword-only, frozen object, validated once.

``gym.make("dreamenv/Dream-v0", checkpoint=..., horizon=20)``, ``DreamVectorEnv(...,
options=DreamOptions(horizon=20))``, :func:`dreamenv.sb3.train_in_dream` and the CLI all
build the same :class:`DreamOptions`; its fields are the only place the defaults live.

Example:
    >>> options = DreamOptions(horizon=20, reward_mode="mean")
    >>> DreamOptions.from_kwargs(None, {"horizon": 20}).horizon
    20
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from dreamenv.errors import ConfigError
from dreamenv.precision import Precision, check_precision

RewardMode = Literal["sample", "mean", "mode"]
REWARD_MODES: tuple[str, ...] = ("sample", "mean", "mode")


@dataclass(frozen=True, kw_only=True)
class DreamOptions:
    """Options of a dream env (the keyword arguments of ``gym.make("dreamenv/Dream-v0")``)."""

    horizon: int = 50
    """Steps after which an imagined episode is truncated (never terminated)."""
    obs_type: str | None = None
    """What the env observes, one of the family's ``obs_types`` (None: its first). Discrete:
    ``"indices"`` (codes), ``"embeddings"`` (codebook vectors), ``"pixels"`` (decoded);
    state-space families: ``"state"`` or ``"pixels"``."""
    reward_mode: RewardMode = "sample"
    """``"sample"`` from the reward head, its ``"mean"``, or its ``"mode"``."""
    use_termination: bool = True
    """End episodes when the model's termination head samples True."""
    burn_in: int = 4
    """Real observations each episode starts from (the last is the first observation)."""
    reset_share: float = 0.0
    """Share of episodes that start where a real episode starts (its first observations
    after a reset, from the start bank's episode starts); the others start anywhere in the
    real data. 1.0 starts the dream as the real env's ``reset`` does (for envs whose start
    differs from the rest of an episode, e.g. a car on the track at the start line)."""
    device: str = "cpu"
    """Torch device of the model: ``"cpu"``, ``"cuda"``, ``"cuda:1"``."""
    temperature: float = 1.0
    """Sampling temperature of the model's imagined transitions (1: as trained; 0: its mode)."""
    precision: Precision = "float32"
    """``"bfloat16"`` steps the model under bfloat16 autocast (:mod:`dreamenv.precision`;
    ``"auto"``: only where the device computes bfloat16 natively); sampling, rewards and the
    model state stay float32."""

    def __post_init__(self) -> None:
        if not (
            isinstance(self.horizon, (int, np.integer))
            and not isinstance(self.horizon, bool)
            and self.horizon >= 1
        ):
            raise ConfigError(f"horizon must be a positive int (default 50), got {self.horizon!r}.")
        if not (
            isinstance(self.temperature, (int, float, np.floating))
            and not isinstance(self.temperature, bool)
            and np.isfinite(self.temperature)
            and self.temperature >= 0
        ):
            raise ConfigError(
                f"temperature must be a finite number >= 0 (default 1.0), got {self.temperature!r}."
            )
        if self.reward_mode not in REWARD_MODES:
            raise ConfigError(
                f"reward_mode must be one of {list(REWARD_MODES)}, got {self.reward_mode!r}."
            )
        if not isinstance(self.use_termination, (bool, np.bool_)):
            raise ConfigError(
                f"use_termination must be True or False, got {self.use_termination!r}."
            )
        if not (
            isinstance(self.burn_in, (int, np.integer))
            and not isinstance(self.burn_in, bool)
            and self.burn_in >= 1
        ):
            raise ConfigError(f"burn_in must be a positive int (default 4), got {self.burn_in!r}.")
        check_reset_share(self.reset_share)
        check_device(self.device)
        check_precision(self.precision)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, options: DreamOptions | None, kwargs: dict[str, Any]) -> DreamOptions:
        """``options`` (or the defaults) with the fields of ``kwargs`` replaced; an unknown
        name is a :class:`ConfigError` with a "did you mean"."""
        names = cls.field_names()
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown dream option {name!r}; the options are {list(names)}.{hint}"
            )
        base = options if options is not None else cls()
        return dataclasses.replace(base, **kwargs) if kwargs else base

    def resolved(self, context: int, obs_types: tuple[str, ...]) -> DreamOptions:
        """These options checked against a checkpoint (its start context and observation
        types), with ``obs_type=None`` replaced by the family's default."""
        options = (
            self if self.obs_type is not None else dataclasses.replace(self, obs_type=obs_types[0])
        )
        check_obs_type(options.obs_type, obs_types)
        if options.burn_in > context:
            raise ConfigError(
                f"burn_in must be an int in [1, {context}] (the checkpoint's start context), "
                f"got {options.burn_in!r}."
            )
        return options


def check_obs_type(obs_type: object, obs_types: tuple[str, ...], name: str = "obs_type") -> None:
    """A :class:`ConfigError` naming ``name`` unless ``obs_type`` is one of ``obs_types``.

    Example:
        >>> check_obs_type("embeddings", ("indices", "embeddings", "pixels"))
    """
    if obs_type not in obs_types:
        close = difflib.get_close_matches(str(obs_type), obs_types, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{name} must be one of {list(obs_types)}, got {obs_type!r}.{hint}")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device, or a :class:`ConfigError` if it cannot be used here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(
            f"device={device!r} is not a torch device ('cpu', 'cuda', 'cuda:1')."
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available here; use device='cpu'.")
    return dev


def check_reset_share(value: object, name: str = "reset_share") -> None:
    """A share in [0, 1] of dream starts drawn from real episode starts, or a ConfigError."""
    number = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if not (number and 0.0 <= float(value) <= 1.0):  # type: ignore[arg-type]
        raise ConfigError(
            f"{name} must be a number in [0, 1] (the share of dream episodes that start at a "
            f"real episode's start; default 0.0), got {value!r}."
        )
