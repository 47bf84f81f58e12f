"""Arithmetic precision of the heavy computations: float32, bfloat16 autocast, or ``"auto"``.

Under ``"bfloat16"`` convolutions and matrix products run in bfloat16 (``torch.autocast``)
while parameters, optimiser state, losses and normalisations stay float32. On CPUs with
AVX-512 BF16 or AMX this is the main speed lever (the ``small`` world model's joint update
1.5x, the policy trunk's update 1.6x on an AMD EPYC with AVX-512 BF16; see the README). On
a CPU without them autocast emulates bfloat16, and the same computations run 11-30x *slower*
than in float32 (an AMD EPYC with AVX2 only, ``benchmarks/precision.py``). ``"auto"`` (the
presets') is bfloat16 where the device computes it natively and float32 elsewhere, so one
recipe is fast on both; :func:`resolve_precision` says which.

Example:
    >>> with autocast("bfloat16", torch.device("cpu")):
    ...     y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    >>> y.dtype
    torch.bfloat16
    >>> resolve_precision("auto", "cpu") == ("bfloat16" if native_bfloat16("cpu") else "float32")
    True
"""

from __future__ import annotations

import functools
import platform
import warnings
from typing import Literal

import torch

from dreamenv.errors import ConfigError

Precision = Literal["auto", "float32", "bfloat16"]
"""A precision setting: ``"auto"`` resolves to one of :data:`ARITHMETICS` per device."""
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
Arithmetic = Literal["float32", "bfloat16"]
"""What a computation runs in once ``"auto"`` is resolved."""
ARITHMETICS: tuple[Arithmetic, ...] = ("float32", "bfloat16")

_warned_emulated: set[str] = set()


def check_precision(value: object, name: str = "precision") -> Precision:
    """``value`` if it is one of :data:`PRECISIONS`, else a :class:`ConfigError`."""
    if value not in PRECISIONS:
        raise ConfigError(
            f"{name} must be one of {list(PRECISIONS)} (auto: bfloat16 where the device "
            f"computes it natively, e.g. CPUs with AVX-512 BF16 or AMX, else float32), "
            f"got {value!r}."
        )
    return value  # type: ignore[return-value]


@functools.cache
def native_bfloat16(device_type: str) -> bool:
    """Whether devices of ``device_type`` (``"cpu"``, ``"cuda"``, ...) compute bfloat16
    natively: a CPU with AVX-512 BF16 or AMX (x86) or with oneDNN's bfloat16 (ARM), a CUDA
    GPU of compute capability 8.0 or more. Other devices: False (float32 is the safe side).
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(getattr(torch.cpu, probe, lambda: False)() for probe in probes):
        return True
    if platform.machine().lower() in ("arm64", "aarch64"):
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: Precision, device: torch.device | str) -> Arithmetic:
    """What ``precision`` computes in on ``device``: ``"auto"`` is ``"bfloat16"`` where
    :func:`native_bfloat16` holds, else ``"float32"``. An explicit ``"bfloat16"`` on a device
    that only emulates it stays bfloat16 and warns once per device type (it is many times
    slower there than float32)."""
    kind = torch.device(device).type
    if precision == "auto":
        return "bfloat16" if native_bfloat16(kind) else "float32"
    if precision == "bfloat16" and kind not in _warned_emulated and not native_bfloat16(kind):
        _warned_emulated.add(kind)
        warnings.warn(
            f"precision 'bfloat16' on a {kind} device without native bfloat16 (on a CPU: no "
            "AVX-512 BF16 or AMX): autocast emulates it, 11-30x slower than float32 on an "
            "AVX2 CPU. Use precision 'auto' (bfloat16 only where it is native) or 'float32'.",
            UserWarning,
            stacklevel=2,
        )
    return precision


def autocast(precision: Precision, device: torch.device | str) -> torch.autocast:
    """The autocast context of ``precision`` on ``device`` (a no-op where it resolves to
    ``"float32"``, see :func:`resolve_precision`)."""
    kind = torch.device(device).type
    enabled = resolve_precision(precision, kind) == "bfloat16"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled)
