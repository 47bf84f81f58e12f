"""Inspecting a checkpoint: open-loop rollouts from real starts under the real actions,
beside what really happened (``dreamenv video``), and their quality against the horizon
on held-out episodes (``dreamenv inspect``): latent accuracy, reward accuracy and
decoded-frame error at each imagined step 1..H, written as CSV and PNG. The error of
decoding the real latents (the VQ-VAE's own reconstruction) is given as the floor the
imagined frames can reach.

Example:
    >>> obs, actions, rewards = real_segments(store, length=50, count=8, burn_in=4)
    >>> pred = open_loop(model, obs, actions, burn_in=4)
    >>> pred.latents.shape  # (8, 50, 6, 6): imagined latents of steps 1..50 (discrete)
    >>> pred.termination_logits.shape  # (8, 50)
    >>> rows = inspect_checkpoint("runs/pong/model", "runs/pong/data", out="runs/pong/inspect")
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamenv.checkpoint import load_checkpoint
from dreamenv.data.sequences import SequenceSampler, split_episodes
from dreamenv.data.store import Episode, EpisodeStore
from dreamenv.models.base import WorldModel
from dreamenv.models.common import reward_classes
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
    termination_logits: torch.Tensor
    """``(B, H)`` logits that each imagined step ends the episode."""


def real_segments(
    episodes: list[Episode],
    length: int,
    count: int,
    burn_in: int,
    stack: int,
    seed: int = 0,
    life_loss: bool = False,
) -> dict[str, np.ndarray]:
    """``count`` real windows of ``burn_in - 1 + length`` transitions (within episodes);
    with ``life_loss``, ``terminated`` marks lost lives too (as a fit with
    ``FitConfig.life_loss`` trains the termination head)."""
    steps = burn_in - 1 + length
    usable = [e for e in episodes if len(e) >= steps]
    if not usable:
        from dreamenv.errors import DatasetError

        raise DatasetError(f"No held-out episode has the {steps} steps this inspection needs.")
    sampler = SequenceSampler(usable, stack, steps, seed=seed, life_loss=life_loss)
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
    latents, rewards, terminations, real_latents = [], [], [], []
    for k in range(burn_in - 1, actions.shape[1]):
        pred = model.step(state, latent, actions[:, k], rng)
        latent, state = pred.next_latent, pred.state
        real_latent, real_state = model.filter(
            real_state, real_latent, actions[:, k], embeddings[:, k + 1]
        )
        latents.append(latent)
        rewards.append(pred.reward_logits)
        terminations.append(pred.termination_logits)
        real_latents.append(real_latent)
    return OpenLoop(
        latents=torch.stack(latents, 1),
        reward_logits=torch.stack(rewards, 1),
        real_latents=torch.stack(real_latents, 1),
        termination_logits=torch.stack(terminations, 1),
    )


@torch.inference_mode()
def inspect_checkpoint(
    checkpoint: str | Path,
    store: str | Path,
    *,
    horizon: int = 50,
    count: int = 32,
    burn_in: int = 4,
    seed: int = 0,
    out: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Per imagined step ``k`` in 1..``horizon``: ``latent_acc``, ``reward_acc``,
    ``frame_mae`` (imagined vs real newest frame, in [0, 1]) and ``recon_mae`` (decoded real
    latent vs real frame). Writes ``OUT/inspect.csv`` and ``OUT/inspect.png`` if ``out``."""
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model
    data = EpisodeStore.open(store)
    _, held_out = split_episodes(data.episodes(), 0.1)
    seg = real_segments(held_out, horizon, count, burn_in, ckpt.spec.frame_stack, seed)
    frames = torch.as_tensor(seg["frames"])
    actions = torch.as_tensor(seg["actions"])
    pred = open_loop(model, frames, actions, burn_in, seed)
    real_next = pred.real_latents
    integer = not pred.latents.dtype.is_floating_point
    reward_class = reward_classes(torch.as_tensor(seg["rewards"][:, burn_in - 1 :]))
    rows = []
    for k in range(horizon):
        real_frame = frames[:, burn_in + k, -1].float() / 255
        imagined = model.decode(pred.latents[:, k])[:, -1].float() / 255
        recon = model.decode(real_next[:, k])[:, -1].float() / 255
        rows.append(
            {
                "horizon": k + 1,
                "latent_acc": float((pred.latents[:, k] == real_next[:, k]).float().mean())
                if integer
                else float("nan"),
                "reward_acc": float(
                    (pred.reward_logits[:, k].argmax(-1) == reward_class[:, k]).float().mean()
                ),
                "frame_mae": float((imagined - real_frame).abs().mean()),
                "recon_mae": float((recon - real_frame).abs().mean()),
            }
        )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "inspect.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot_quality(
            rows,
            out / "inspect.png",
            f"{ckpt.spec.game}: open-loop quality ({count} held-out segments)",
        )
    return rows


def plot_quality(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Three panels against the horizon: latent accuracy, reward accuracy, frame error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = np.array([r["horizon"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].plot(h, [r["latent_acc"] for r in rows])
    axes[0].set_ylabel("latent index accuracy")
    axes[1].plot(h, [r["reward_acc"] for r in rows], color="C1")
    axes[1].set_ylabel("reward accuracy")
    axes[2].plot(h, [r["frame_mae"] for r in rows], color="C2", label="imagined frame")
    axes[2].plot(
        h, [r["recon_mae"] for r in rows], color="C2", ls="--", label="decoded real latent"
    )
    axes[2].set_ylabel("mean absolute pixel error")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("imagined steps (open loop)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
