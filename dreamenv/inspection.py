"""Inspecting a checkpoint: open-loop rollouts from real starts under the real actions,
beside what really happened (``dreamenv video``), and their quality against the horizon
on held-out episodes (``dreamenv inspect``): latent accuracy (over every cell and over the
cells whose real code changes), reward accuracy and decoded-frame error at each imagined
step 1..H, written as CSV and PNG. The error of decoding the real latents (the VQ-VAE's own
reconstruction) is given as the floor the imagined frames can reach.

Example:
    >>> obs, actions, rewards = real_segments(store, length=50, count=8, burn_in=4)
    >>> pred = open_loop(model, obs, actions, burn_in=4)
    >>> pred.latents.shape  # (8, 50, 6, 6): imagined latents of steps 1..50 (discrete)
    >>> pred.termination_logits.shape  # (8, 50)
    >>> rows = inspect_checkpoint("runs/pong/model", "runs/pong/data", out="runs/pong/inspect")
"""

from __future__ import annotations

import csv
import math
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
    start_latents: torch.Tensor | None = None
    """``(B, ...)`` the real latent the imagining started from (the burn-in's last), which
    the first imagined step changes; None where it was not kept."""
    forced_reward_logits: torch.Tensor | None = None
    """``(B, H, len(reward_support))`` the reward scores of each step predicted from the
    real latent and state instead (teacher forced: the heads alone, without the dream's
    drift); None where not computed."""
    forced_termination_logits: torch.Tensor | None = None
    """``(B, H)`` the termination logits of each step predicted teacher forced."""


def changed_cells(real_latents: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, H, ...)`` whether each entry of the real latents differs from the step before:
    what moved (the ball, the players), against the still background. The first step is
    compared with ``start`` (the latent before it), or counted unchanged without one.

    Example:
        >>> real = torch.tensor([[[0, 0], [1, 0], [1, 0]]])  # entry 0 changes at step 2
        >>> changed_cells(real, start=torch.tensor([[5, 0]]))[0].tolist()
        [[True, False], [True, False], [False, False]]
    """
    before = real_latents[:, :1] if start is None else start.unsqueeze(1)
    return real_latents != torch.cat([before, real_latents[:, :-1]], 1)


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


def changed_accuracy(
    latents: torch.Tensor, real_latents: torch.Tensor, start: torch.Tensor | None = None
) -> float:
    """Accuracy of imagined discrete latents ``(B, H, ...)`` on the entries whose real value
    differs from the step before (:func:`changed_cells`; the first step against ``start``,
    the real latent the imagining began from, where given): the ball and the players, not
    the still background that makes plain accuracy high on any game. NaN for float
    latents, or where nothing changes.

    Example:
        >>> real = torch.tensor([[[0, 0], [1, 0], [2, 0]]])  # entry 0 changes twice
        >>> changed_accuracy(torch.tensor([[[0, 0], [1, 0], [0, 0]]]), real)
        0.5
    """
    if latents.dtype.is_floating_point:
        return math.nan
    changed = changed_cells(real_latents, start)
    if not bool(changed.any()):
        return math.nan
    return float((latents == real_latents)[changed].float().mean())


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
    start = latent.clone()
    real_latent, real_state = latent.clone(), tuple(s.clone() for s in state)
    rng = BatchRandom(b, model.device)
    rng.set_keys(torch.arange(b), [key_from_seed(seed + i) for i in range(b)])
    forced_rng = BatchRandom(b, model.device)  # its own streams: the imagining's stay as they were
    latents, rewards, terminations, real_latents = [], [], [], []
    forced_rewards, forced_terminations = [], []
    for k in range(burn_in - 1, actions.shape[1]):
        pred = model.step(state, latent, actions[:, k], rng)
        latent, state = pred.next_latent, pred.state
        forced = model.forced_step(
            real_state, real_latent, actions[:, k], embeddings[:, k + 1], forced_rng
        )
        real_latent, real_state = model.filter(
            real_state, real_latent, actions[:, k], embeddings[:, k + 1]
        )
        latents.append(latent)
        rewards.append(pred.reward_logits)
        terminations.append(pred.termination_logits)
        real_latents.append(real_latent)
        forced_rewards.append(forced.reward_logits)
        forced_terminations.append(forced.termination_logits)
    return OpenLoop(
        latents=torch.stack(latents, 1),
        reward_logits=torch.stack(rewards, 1),
        real_latents=torch.stack(real_latents, 1),
        termination_logits=torch.stack(terminations, 1),
        start_latents=start,
        forced_reward_logits=torch.stack(forced_rewards, 1),
        forced_termination_logits=torch.stack(forced_terminations, 1),
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
    """Per imagined step ``k`` in 1..``horizon``: ``latent_acc``, ``changed_acc`` (the
    latent accuracy on the entries whose real value changed at that step, NaN where none
    did or for float latents: :func:`changed_accuracy`), ``reward_acc``, ``frame_mae``
    (imagined vs real newest frame, in [0, 1]) and ``recon_mae`` (decoded real latent vs
    real frame). Writes ``OUT/inspect.csv`` and ``OUT/inspect.png`` if ``out``."""
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
                "changed_acc": changed_accuracy(
                    pred.latents[:, k : k + 1],
                    real_next[:, k : k + 1],
                    pred.start_latents if k == 0 else real_next[:, k - 1],
                ),
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
    """Three panels against the horizon: latent accuracy (all cells and those that
    change), reward accuracy, frame error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = np.array([r["horizon"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].plot(h, [r["latent_acc"] for r in rows], label="all cells")
    axes[0].plot(h, [r["changed_acc"] for r in rows], ls="--", label="cells that change")
    axes[0].set_ylabel("latent index accuracy")
    axes[0].legend(fontsize=8)
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
