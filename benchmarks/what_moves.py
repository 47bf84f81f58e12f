"""What a discrete world model's codes keep of what moves (docs/results.md).

For each run directory (``RUN/model``, ``RUN/data``: a ``dreamenv train`` or ``fit`` run of
the ``discrete`` family on images), frame stacks evenly spaced over the run's stored
episodes are encoded to codes and decoded back. Printed per run: the error of the decoded
newest frame over all pixels and over the pixels that move within the stack, beside two
references that draw nothing of what moves on those pixels, the median frame of the
store's frames (of about 2,000 evenly spaced ones) and each stack's own median frame
(``still_frame_error``, the ``recon_moving_still_mse`` of ``metrics.csv``). A model near the references keeps the
static screen and little of what moves (a ball, the player). ``--figure`` writes
real | decoded | error x 3 for four of the stacks of the first run; ``--data`` reads the
frames of one store for every run (two models on the same frames).

Example:
    $ python benchmarks/what_moves.py runs/cpu100k/pong-s0 runs/cpu100k/breakout-s0 \\
          --figure pong-decoded.png
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dreamenv.checkpoint import load_checkpoint  # noqa: E402
from dreamenv.data.store import EpisodeStore  # noqa: E402
from dreamenv.models.discrete import (  # noqa: E402
    DiscreteWorldModel,
    moving_pixel_error,
    newest_frame_error,
    still_frame_error,
)

torch.set_num_threads(1)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories holding model/ and data/")
    p.add_argument("--stacks", type=int, default=256, help="frame stacks per run")
    p.add_argument("--figure", help="PNG of four stacks of the first run")
    p.add_argument("--data", help="read the frames of this store instead of each RUN/data")
    return p.parse_args()


@functools.cache
def stacks_of(store: Path, count: int, stack: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` grey frame stacks evenly spaced over the store, and the store's median frame
    (of about 2,000 evenly spaced frames) in [0, 1]; read once per store and stack."""
    episodes = EpisodeStore.open(store).episodes()
    frames = [e.frames for e in episodes if len(e.frames) >= stack]
    if not frames or frames[0].ndim != 3:
        raise SystemExit(f"{store}: needs episodes of grey image frames (S, S)")
    ends = [(i, t) for i, f in enumerate(frames) for t in range(stack - 1, len(f))]
    picks = np.linspace(0, len(ends) - 1, min(count, len(ends))).astype(int)
    chosen = [frames[i][t - stack + 1 : t + 1] for i, t in (ends[k] for k in picks)]
    every = np.concatenate(frames)
    median = np.median(every[:: max(1, len(every) // 2000)], 0)
    return torch.as_tensor(np.stack(chosen)), torch.as_tensor(median).float() / 255


def decoded(model: DiscreteWorldModel, frames: torch.Tensor) -> torch.Tensor:
    """The newest frame of each stack decoded from the codes the envs see, in [0, 1]."""
    with torch.no_grad():
        return model.decode(model.served_indices(frames))[:, -1].float() / 255


def main() -> None:
    args = parse_args()
    for n, run in enumerate(map(Path, args.runs)):
        model = load_checkpoint(run / "model").model
        if not isinstance(model, DiscreteWorldModel):
            raise SystemExit(f"{run}: a {model.family!r} model; this measures the discrete one")
        store = Path(args.data) if args.data else run / "data"
        frames, median = stacks_of(store, args.stacks, model.spec.frame_stack)
        image = decoded(model, frames)
        error = newest_frame_error(frames, image[:, None])
        print(
            f"{run}: {len(frames)} stacks; decoded: mse {error[:, -1].mean():.5f}, "
            f"moving pixels {moving_pixel_error(frames, error):.4f}; drawing nothing that "
            f"moves there: the store's median frame "
            f"{moving_pixel_error(frames, newest_frame_error(frames, median)):.4f}, "
            f"each stack's median frame {moving_pixel_error(frames, still_frame_error(frames)):.4f}"
        )
        if args.figure and n == 0:
            from PIL import Image

            real = frames[:4, -1].float().numpy() / 255
            rows = [
                np.concatenate([r, d, np.abs(r - d) * 3], 1)
                for r, d in zip(real, image[:4].numpy(), strict=True)
            ]
            pixels = (np.clip(np.concatenate(rows, 0), 0, 1) * 255).astype(np.uint8)
            picture = Image.fromarray(pixels)
            picture.resize((picture.width * 3, picture.height * 3), Image.NEAREST).save(args.figure)
            print(f"wrote {args.figure}: real | decoded | error x 3")


if __name__ == "__main__":
    main()
