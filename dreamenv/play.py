"""A person plays inside the dream (``dreamenv play``): arrow keys move, space fires, TAB
switches between the dream and the real game (the same checkpoint's Real-v0), R restarts,
Esc quits. Needs pygame (``pip install -e ".[play]"``) and a display; without either it
records a side-by-side video of real and imagined frames instead.

Example:
    >>> play("runs/pong/model")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dreamenv.errors import ConfigError

SCALE = 5
"""Window pixels per frame pixel."""


def action_for_keys(
    up: bool, down: bool, left: bool, right: bool, fire: bool, meanings: tuple[str, ...]
) -> int:
    """The game's action for the pressed keys (ALE names such as ``"UPRIGHTFIRE"``); keys
    the game has no action for are dropped (fire last), ending at ``NOOP``."""
    vertical = "UP" if up and not down else "DOWN" if down and not up else ""
    horizontal = "RIGHT" if right and not left else "LEFT" if left and not right else ""
    for v, h, f in (
        (vertical, horizontal, fire),
        ("", horizontal, fire),
        (vertical, "", fire),
        ("", "", fire),
        (vertical, horizontal, False),
        ("", horizontal, False),
        (vertical, "", False),
    ):
        name = v + h + ("FIRE" if f else "")
        if name and name in meanings:
            return meanings.index(name)
    return meanings.index("NOOP") if "NOOP" in meanings else 0


def has_display() -> bool:
    """Whether a window can be opened (pygame importable and a display to show it on)."""
    try:
        import pygame  # noqa: F401
    except ImportError:
        return False
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def play(
    checkpoint: str | Path, *, fps: int = 15, seed: int = 0, video: str | Path = "play.gif"
) -> Path | None:
    """Play the checkpoint's dream in a window; without a display, write ``video`` instead
    (real | imagined | latent indices, random actions) and return its path."""
    if not has_display():
        from dreamenv.video import record_video

        return record_video(checkpoint, video, steps=100, seed=seed, fps=fps)
    _play_window(checkpoint, fps, seed)
    return None


def _play_window(checkpoint: str | Path, fps: int, seed: int) -> None:  # pragma: no cover
    import pygame

    from dreamenv.checkpoint import load_checkpoint
    from dreamenv.envs.dream import DreamEnv
    from dreamenv.envs.real import RealEnv

    ckpt = load_checkpoint(checkpoint)
    envs: dict[str, Any] = {
        "dream": DreamEnv(ckpt, render_mode="rgb_array", horizon=10**9, use_termination=False),
        "real": RealEnv(ckpt, render_mode="rgb_array"),
    }
    meanings = ckpt.action_meanings
    mode = "dream"
    size = ckpt.spec.screen_size * SCALE
    pygame.init()
    screen = pygame.display.set_mode((size, size + 30))
    pygame.display.set_caption(f"dreamenv play: {ckpt.spec.game}")
    font = pygame.font.SysFont(None, 24)
    clock = pygame.time.Clock()
    for env in envs.values():
        env.reset(seed=seed)
    total = 0.0
    running = True
    while running:
        for event in pygame.event.get():
            if event.type == pygame.QUIT or (
                event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE
            ):
                running = False
            elif event.type == pygame.KEYDOWN and event.key == pygame.K_TAB:
                mode = "real" if mode == "dream" else "dream"
            elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                envs[mode].reset()
                total = 0.0
        keys = pygame.key.get_pressed()
        action = action_for_keys(
            keys[pygame.K_UP],
            keys[pygame.K_DOWN],
            keys[pygame.K_LEFT],
            keys[pygame.K_RIGHT],
            keys[pygame.K_SPACE],
            meanings,
        )
        _, reward, terminated, truncated, _ = envs[mode].step(action)
        total += reward
        if terminated or truncated:
            envs[mode].reset()
        frame = envs[mode].render()
        surface = pygame.surfarray.make_surface(np.transpose(frame, (1, 0, 2)))
        screen.fill((0, 0, 0))
        screen.blit(pygame.transform.scale(surface, (size, size)), (0, 30))
        label = f"{mode.upper()}  (TAB: switch, R: restart)  return {total:.0f}  {meanings[action]}"
        screen.blit(font.render(label, True, (255, 255, 255)), (6, 6))
        pygame.display.flip()
        clock.tick(fps)
    pygame.quit()


def check_fps(fps: int) -> int:
    """``fps``, or a :class:`ConfigError` if it is not positive."""
    if fps < 1:
        raise ConfigError(f"fps must be a positive int, got {fps!r}.")
    return fps
