"""Per-env random streams that a whole batch draws from in one call.

A dream vector env must give env ``i`` the same rollout as a single env seeded with
``seed + i`` (gymnasium's convention), whatever the batch around it. One
``torch.Generator`` per env would need a Python loop over the envs on every step, so each
env instead owns a counter-based stream: a 62-bit key drawn at reset from the env's
seeded ``numpy`` generator (the one ``gymnasium.Env.reset(seed=...)`` creates) and a
64-bit draw counter. Each draw first hashes its counter with the key into two 32-bit draw
words (the low word a bijection of the counter's low 32 bits), then hashes each element
index with those words, through rounds of a 32-bit integer finaliser (``lowbias32``), in
int32 tensor ops (which CPUs vectorise, unlike 64-bit multiplies), on any device, for
every env at once.

Period: a stream repeats after 2**64 draws; within any 2**32 consecutive draws no two
draws share their first word, so no draw is a copy (or an element-shifted copy) of another.
A run of a billion dream steps draws well under 2**32 times per env.

Example:
    >>> rng = BatchRandom(2, "cpu")
    >>> rng.set_keys(torch.tensor([0, 1]), [key_from_seed(7), key_from_seed(8)])
    >>> rng.uniform((3,)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import numpy as np
import torch

_MUL1 = 0x7FEB352D
_MUL2 = -2073254261  # 0x846CA68B as int32
_MASK = {k: (1 << (32 - k)) - 1 for k in (9, 15, 16)}
_HALF = (1 << 31) - 1


_CHUNK = 1 << 16
"""Elements hashed per pass of :meth:`BatchRandom.uniform` (256 KiB of int32: the working set
stays in cache; 2-6x faster than one pass over a large batch)."""


def _mix_(x: torch.Tensor, scratch: torch.Tensor) -> None:
    """The ``lowbias32`` finaliser, in place on int32 ``x``: a bijection of 32-bit words that
    mixes every bit. ``scratch`` is a tensor of ``x``'s shape; shifts are logical (torch's
    ``>>`` is arithmetic, so the sign bits are masked off)."""
    for shift, multiplier in ((16, _MUL1), (15, _MUL2), (16, None)):
        torch.bitwise_right_shift(x, shift, out=scratch)
        scratch &= _MASK[shift]
        x ^= scratch
        if multiplier is not None:
            x *= multiplier


def _int32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) as the int32 of the same 32 bits."""
    return torch.where(x >= 1 << 31, x - (1 << 32), x).to(torch.int32)


def draw_words(keys: torch.Tensor, counters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two int32 words of each stream's draw number ``counters`` (int64): the first
    is a bijection of the counter's low 32 bits for a fixed key, the second mixes in its
    high 32 bits."""
    low_key = (keys & _HALF).to(torch.int32)
    high_key = ((keys >> 31) & _HALF).to(torch.int32)
    first = _int32(counters & 0xFFFFFFFF) ^ low_key
    scratch = torch.empty_like(first)
    _mix_(first, scratch)
    first ^= high_key
    _mix_(first, scratch)
    second = _int32((counters >> 32) & 0xFFFFFFFF) ^ high_key
    _mix_(second, scratch)
    second ^= first
    _mix_(second, scratch)
    return first, second


def key_from_generator(generator: np.random.Generator) -> int:
    """A stream key drawn from a numpy generator (such as ``env.np_random``)."""
    return int(generator.integers(0, 2**62))


def key_from_seed(seed: int | None) -> int:
    """The stream key that ``reset(seed=seed)`` gives an env (``None``: fresh entropy)."""
    from gymnasium.utils import seeding

    generator, _ = seeding.np_random(seed)
    return key_from_generator(generator)


class BatchRandom:
    """``num_envs`` independent uniform streams; one call draws for all (or some) envs."""

    def __init__(self, num_envs: int, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.keys = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self.counters = torch.zeros(num_envs, dtype=torch.int64, device=self.device)

    def set_keys(self, index: torch.Tensor, keys: list[int]) -> None:
        """Restart the streams of envs ``index`` with new ``keys`` (counters back to 0)."""
        self.keys[index] = torch.tensor(keys, dtype=torch.int64, device=self.device)
        self.counters[index] = 0

    def uniform(self, shape: tuple[int, ...], index: torch.Tensor | None = None) -> torch.Tensor:
        """Uniform floats in (0, 1) of shape ``(len(index), *shape)``; advances those streams.

        Args:
            shape: per-env shape of the draw.
            index: envs that draw (all if None); the others' streams do not move.
        """
        keys = self.keys if index is None else self.keys[index]
        counters = self.counters if index is None else self.counters[index]
        n = int(np.prod(shape)) if shape else 1
        first, second = draw_words(keys, counters)
        first, second = first[:, None], second[:, None]
        element = torch.arange(n, dtype=torch.int32, device=self.device)
        u = torch.empty(len(keys), n, dtype=torch.float32, device=self.device)
        rows = max(1, _CHUNK // n)
        for i in range(0, len(keys), rows):
            x = element ^ first[i : i + rows]
            scratch = torch.empty_like(x)
            _mix_(x, scratch)
            x ^= second[i : i + rows]
            _mix_(x, scratch)
            torch.bitwise_right_shift(x, 9, out=scratch)
            scratch &= _MASK[9]  # the top 23 bits: exact in float32
            part = u[i : i + rows]
            part.copy_(scratch)
            part.add_(0.5).mul_(1.0 / (1 << 23))
        if index is None:
            self.counters += 1
        else:
            self.counters[index] += 1
        return u.reshape(len(keys), *shape)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of keys and counters (for ``get_state``)."""
        return {"keys": self.keys.clone(), "counters": self.counters.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.keys.copy_(state["keys"])
        self.counters.copy_(state["counters"])
