"""Open-loop rollouts: a world model imagines from a real start with the real actions, to
compare with what really happened (``dreamenv video`` and ``dreamenv inspect``).

Example:
    >>> obs, actions, rewards = real_segments(store, length=50, count=8, burn_in=4)
    >>> pred = open_loop(model, obs, actions, burn_in=4)
    >>> pred.latents.shape  # (8, 50, 6, 6): imagined latents of steps 1..50 (discrete)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dreamenv.data.sequences import SequenceSampler
from dreamenv.data.store import Episode
from dreamenv.models.base import WorldModel
from dreamenv.random_streams import BatchRandom, key_from_seed


@dataclass
class OpenLoop:
    """The imagined continuation of a batch of real segments, beside the real one."""

    latents: torch.Tensor
    """``(B, H, ...)`` imagined latents after each of the H actions."""
    reward_logits: torch.Tensor
    """``(B, H, len(reward_support))`` reward scores of each imagined step."""
    real_latents: torch.Tensor
    """``(B, H, ...)`` the latents of the real observations after the same actions (the
    model following the real segment, as the real env does)."""


def real_segments(
    episodes: list[Episode], length: int, count: int, burn_in: int, stack: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """``count`` real windows of ``burn_in - 1 + length`` transitions (within episodes)."""
    steps = burn_in - 1 + length
    usable = [e for e in episodes if len(e) >= steps]
    if not usable:
        from dreamenv.errors import DatasetError

        raise DatasetError(f"No held-out episode has the {steps} steps this inspection needs.")
    sampler = SequenceSampler(usable, stack, steps, seed=seed)
    which = sampler.rng.choice(len(usable), size=count)
    starts = np.array([sampler.rng.integers(0, len(usable[i]) - steps + 1) for i in which])
    return sampler.window(which, starts)


@torch.inference_mode()
def open_loop(
    model: WorldModel,
    frames: torch.Tensor,
    actions: torch.Tensor,
    burn_in: int,
    seed: int = 0,
) -> OpenLoop:
    """Imagine from the first ``burn_in`` real observations of each segment, with its actions.

    Args:
        model: the world model (eval mode).
        frames: ``(B, T+1, stack, S, S)`` uint8 real observations (``T`` transitions).
        actions: ``(B, T)`` the real actions.
        burn_in: real observations given to the model before it imagines.
        seed: seeds the model's sampling.
    """
    if model.jump > 1:
        from dreamenv.errors import ConfigError

        raise ConfigError(
            f"open-loop inspection takes models that advance one real step per step; this one "
            f"jumps {model.jump} (compare it with benchmarks/models.py instead)."
        )
    b, t1 = frames.shape[:2]
    embeddings = model.encode(frames.flatten(0, 1))
    embeddings = embeddings.view(b, t1, *embeddings.shape[1:])
    latent, state = model.initial_state(embeddings[:, :burn_in], actions[:, : burn_in - 1])
    real_latent, real_state = latent.clone(), tuple(s.clone() for s in state)
    rng = BatchRandom(b, model.device)
    rng.set_keys(torch.arange(b), [key_from_seed(seed + i) for i in range(b)])
    latents, rewards, real_latents = [], [], []
    for k in range(burn_in - 1, actions.shape[1]):
        pred = model.step(state, latent, actions[:, k], rng)
        latent, state = pred.next_latent, pred.state
        real_latent, real_state = model.filter(
            real_state, real_latent, actions[:, k], embeddings[:, k + 1]
        )
        latents.append(latent)
        rewards.append(pred.reward_logits)
        real_latents.append(real_latent)
    return OpenLoop(torch.stack(latents, 1), torch.stack(rewards, 1), torch.stack(real_latents, 1))
