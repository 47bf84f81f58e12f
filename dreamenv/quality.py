"""Open-loop quality of a checkpoint against the horizon, on held-out real episodes
(``dreamenv inspect``): latent accuracy, reward accuracy and decoded-frame error at each
imagined step 1..H, written as CSV and PNG. The error of decoding the real latents (the
VQ-VAE's own reconstruction) is given as the floor the imagined frames can reach.

Example:
    >>> rows = inspect_checkpoint("runs/pong/model", "runs/pong/data", out="runs/pong/inspect")
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamenv.checkpoint import load_checkpoint
from dreamenv.data.sequences import split_episodes
from dreamenv.data.store import EpisodeStore
from dreamenv.models.common import reward_classes
from dreamenv.openloop import open_loop, real_segments


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
