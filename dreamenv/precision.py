"""Arithmetic precision of the heavy computations: float32, or bfloat16 autocast.

Under ``"bfloat16"`` convolutions and matrix products run in bfloat16 (``torch.autocast``)
while parameters, optimiser state, losses and normalisations stay float32. On CPUs with
AVX-512 BF16 or AMX this is the main speed lever (the ``small`` world model's joint update
1.5x, the policy trunk's update 1.6x on an AMD EPYC with AVX-512 BF16; see the README).

Example:
    >>> with autocast("bfloat16", torch.device("cpu")):
    ...     y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    >>> y.dtype
    torch.bfloat16
"""

from __future__ import annotations

from typing import Literal

import torch

from dreamenv.errors import ConfigError

Precision = Literal["float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")


def check_precision(value: object, name: str = "precision") -> Precision:
    """``value`` if it is one of :data:`PRECISIONS`, else a :class:`ConfigError`."""
    if value not in PRECISIONS:
        raise ConfigError(
            f"{name} must be one of {list(PRECISIONS)} (bfloat16: autocast, faster on CPUs "
            f"with AVX-512 BF16 or AMX), got {value!r}."
        )
    return value  # type: ignore[return-value]


def autocast(precision: Precision, device: torch.device | str) -> torch.autocast:
    """The autocast context of ``precision`` on ``device`` (a no-op for ``"float32"``)."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bfloat16")
