"""Side-by-side videos (``dreamenv video``): the real game, the world model's imagination
from the same start with the same actions, and the latent index map (as Figure 5 of
Robine et al.: one colour per codebook index).

Example:
    >>> record_video("runs/pong/model", "runs/pong/video.gif", steps=100)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from dreamenv.checkpoint import Checkpoint, load_checkpoint
from dreamenv.envs.sources import make_source_vector
from dreamenv.inspection import open_loop

PANEL = 192
"""Side of each panel in the video, in pixels."""


def play_real(
    checkpoint: Checkpoint, steps: int, seed: int = 0, policy=None
) -> tuple[np.ndarray, np.ndarray]:
    """Real stacked observations ``(T+1, stack, S, S)`` and actions ``(T,)`` of one episode
    (shorter than ``steps`` if the game ends); random actions unless ``policy`` is given (a
    collection :data:`~dreamenv.data.collect.Policy`, fed what ``Real-v0`` shows it)."""
    from dreamenv.envs.real import observations_for

    spec = checkpoint.spec
    env = make_source_vector(spec, 1, autoreset_mode="NextStep")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    observations = observations_for(policy, 1, spec)
    observations.start(obs[:, 0])
    stacks = [observations.stacks.copy()]
    actions = []
    for _ in range(steps):
        if policy is None:
            action = rng.integers(0, checkpoint.model.num_actions, size=1)
        else:
            action = policy(observations.observe(), rng)
        obs, _, terminated, truncated, _ = env.step(action.astype(np.int64))
        if terminated[0] or truncated[0]:
            break
        observations.advance(obs[:, 0], action)
        stacks.append(observations.stacks.copy())
        actions.append(int(action[0]))
    env.close()
    return np.concatenate(stacks), np.array(actions, dtype=np.int64)


def index_palette(num_codes: int) -> np.ndarray:
    """A fixed colour per code index, ``(num_codes, 3)`` uint8 (golden-ratio hues)."""
    hues = (np.arange(num_codes) * 0.618033988749895 % 1.0 * 179).astype(np.uint8)
    hsv = np.stack([hues, np.full(num_codes, 200, np.uint8), np.full(num_codes, 230, np.uint8)], 1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def _panel(image: np.ndarray, label: str) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = cv2.resize(image, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
    canvas = np.zeros((PANEL + 18, PANEL, 3), np.uint8)
    canvas[18:] = image
    cv2.putText(canvas, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return canvas


@torch.inference_mode()
def record_video(
    checkpoint: str | Path | Checkpoint,
    out: str | Path,
    *,
    steps: int = 100,
    burn_in: int = 4,
    seed: int = 0,
    policy=None,
    fps: int = 15,
) -> Path:
    """Write a GIF of real | imagined | latent-index frames from one real start."""
    from PIL import Image

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    model = ckpt.model
    stacks, actions = play_real(ckpt, burn_in - 1 + steps, seed, policy)
    frames = torch.as_tensor(stacks)[None]
    pred = open_loop(model, frames, torch.as_tensor(actions)[None], burn_in, seed)
    imagined = model.decode(pred.latents[0])[:, -1].cpu().numpy()
    latents = pred.latents[0].cpu().numpy()
    palette = index_palette(int(latents.max()) + 1 if latents.dtype.kind in "iu" else 1)
    images = []
    for k in range(len(imagined)):
        panels = [
            _panel(stacks[burn_in + k, -1], f"real  t={k + 1}"),
            _panel(imagined[k], "imagined"),
        ]
        if latents.ndim == 3 and latents.dtype.kind in "iu":
            panels.append(_panel(palette[latents[k]], "latent indices"))
        images.append(Image.fromarray(np.concatenate(panels, axis=1)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return out
