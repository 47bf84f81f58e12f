"""Toy environments with image observations: the bouncing ball of Buesing et al. (2018,
appendix A.6), used by the tests and the model comparison.

``BouncingBall``: a ball on an 80x80 grayscale screen moving with a constant drift
(velocity) plus a small random diffusion of its position, reflected by the walls. Its future
is not entirely predictable from past frames, so a deterministic model must blur where a
stochastic one can sample sharp trajectories. It has one action (``NOOP``, as the paper's
data has none) and a reward of +1 for each bounce off a wall; episodes never terminate and
are truncated after ``max_episode_frames`` steps.

:class:`BouncingBallVector` has the interface of ale-py's vector env, so an
:class:`~dreamenv.envs.atari.AtariSpec` whose ``game`` is ``"bouncing_ball"`` collects,
trains and plays through exactly the same code as an Atari game.
``gymnasium.make("dreamenv/BouncingBall-v0")`` gives the single env.

Example:
    >>> spec = AtariSpec("bouncing_ball", screen_size=80, frame_stack=1, frame_skip=1)
    >>> dreamenv.collect("runs/ball/data", spec, 20_000)
    >>> env = gym.make("dreamenv/BouncingBall-v0")
    >>> obs, info = env.reset(seed=0)   # (80, 80) uint8
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from dreamenv.errors import ConfigError

TOY_GAMES = {"bouncing_ball": ("NOOP",)}
"""Toy game ids and their action meanings."""


@dataclass(frozen=True)
class BallPhysics:
    """Parameters of the bouncing ball (sizes in pixels of an 80x80 screen; scaled with it)."""

    radius: float = 4.0
    """Radius of the ball."""
    speed: float = 2.0
    """Length of the drift (the constant velocity), per step."""
    diffusion: float = 1.0
    """Standard deviation of the random displacement added to the position every step."""


class BouncingBallVector:
    """``num_envs`` bouncing balls behind ale-py's vector-env interface.

    Observations ``(num_envs, 1, S, S)`` uint8; ``reset(seed=array, options={"reset_mask":
    mask})``; ``step(actions)`` returns observations, rewards, terminated, truncated and
    info (``lives``, and ``final_obs`` in ``SameStep`` mode), like
    :func:`dreamenv.envs.atari.make_ale_vector`.
    """

    def __init__(
        self,
        num_envs: int,
        *,
        screen_size: int = 80,
        frame_skip: int = 1,
        max_episode_frames: int = 1000,
        noop_max: int = 0,
        autoreset_mode: str = "NextStep",
        physics: BallPhysics | None = None,
    ) -> None:
        if autoreset_mode not in ("NextStep", "SameStep"):
            raise ConfigError(
                f"autoreset_mode must be 'NextStep' or 'SameStep', got {autoreset_mode!r}."
            )
        self.num_envs = num_envs
        self.size = screen_size
        self.frame_skip = frame_skip
        self.max_frames = max_episode_frames
        self.noop_max = noop_max
        self.same_step = autoreset_mode == "SameStep"
        self.physics = physics or BallPhysics()
        scale = screen_size / 80.0
        self.radius = self.physics.radius * scale
        self.speed = self.physics.speed * scale
        self.diffusion = self.physics.diffusion * scale
        self.single_action_space = gym.spaces.Discrete(len(TOY_GAMES["bouncing_ball"]))
        self.pos = np.zeros((num_envs, 2))
        self.vel = np.zeros((num_envs, 2))
        self.frames = np.zeros(num_envs, dtype=np.int64)
        self.rngs = [np.random.default_rng(i) for i in range(num_envs)]
        self.ended = np.zeros(num_envs, dtype=bool)
        grid = np.arange(screen_size) + 0.5
        self._ys, self._xs = np.meshgrid(grid, grid, indexing="ij")

    # --- the interface of ale-py's vector env ------------------------------------------
    def reset(
        self, *, seed: Any = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        mask = None if not options else options.get("reset_mask")
        index = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        seeds = None if seed is None else np.asarray(seed).reshape(-1)
        for j, i in enumerate(index):
            if seeds is not None:
                self.rngs[i] = np.random.default_rng(int(seeds[j if len(seeds) > 1 else 0]))
            self._start(int(i))
        return self.render()[:, None], {"lives": np.zeros(self.num_envs, np.int64)}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or actions.min() < 0 or actions.max() > 0:
            raise ConfigError(
                f"BouncingBall takes one action (0, NOOP) per env, got {actions.tolist()}."
            )
        restart = self.ended.copy()
        reward = np.zeros(self.num_envs)
        for _ in range(self.frame_skip):
            reward += self._move(~restart)
        self.frames += 1
        truncated = (self.frames >= self.max_frames) & ~restart
        terminated = np.zeros(self.num_envs, dtype=bool)
        info: dict[str, Any] = {"lives": np.zeros(self.num_envs, np.int64)}
        for i in np.flatnonzero(restart):
            self._start(int(i))
        reward[restart] = 0.0
        obs = self.render()[:, None]
        if self.same_step:
            info["final_obs"] = obs.copy()
            for i in np.flatnonzero(truncated):
                self._start(int(i))
            obs = self.render()[:, None]
            self.ended[:] = False
        else:
            self.ended = truncated
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Nothing to release (for the interface)."""

    # --- the ball ---------------------------------------------------------------------
    def _start(self, i: int) -> None:
        rng = self.rngs[i]
        r = self.radius
        self.pos[i] = rng.uniform(r, self.size - r, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        self.vel[i] = self.speed * np.array([np.cos(angle), np.sin(angle)])
        self.frames[i] = 0
        self.ended[i] = False
        for _ in range(int(rng.integers(0, self.noop_max + 1)) if self.noop_max else 0):
            self._move(np.arange(self.num_envs) == i)

    def _move(self, which: np.ndarray) -> np.ndarray:
        """One physics step of the envs ``which``; returns each env's bounces (0 or 1)."""
        noise = np.zeros((self.num_envs, 2))
        for i in np.flatnonzero(which):
            noise[i] = self.rngs[i].normal(size=2)
        pos = self.pos + self.vel + self.diffusion * noise
        lo, hi = self.radius, self.size - self.radius
        below, above = pos < lo, pos > hi
        pos = np.where(below, 2 * lo - pos, np.where(above, 2 * hi - pos, pos))
        bounced = below | above
        vel = np.where(bounced, -self.vel, self.vel)
        self.pos[which] = np.clip(pos, lo, hi)[which]
        self.vel[which] = vel[which]
        return (bounced.any(1) & which).astype(np.float64)

    def render(self) -> np.ndarray:
        """``(num_envs, S, S)`` uint8 frames: an anti-aliased disc on black."""
        dy = self._ys[None] - self.pos[:, 0, None, None]
        dx = self._xs[None] - self.pos[:, 1, None, None]
        dist = np.sqrt(dx * dx + dy * dy)
        return (np.clip(self.radius + 0.5 - dist, 0.0, 1.0) * 255).astype(np.uint8)


class BouncingBallEnv(gym.Env):
    """The bouncing ball as a single gymnasium env (``dreamenv/BouncingBall-v0``): observations
    ``(S, S)`` uint8, one action, +1 per bounce, truncated after ``max_episode_steps``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        screen_size: int = 80,
        max_episode_steps: int = 1000,
        physics: BallPhysics | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.vec = BouncingBallVector(
            1, screen_size=screen_size, max_episode_frames=max_episode_steps, physics=physics
        )
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (screen_size, screen_size), np.uint8)
        self.action_space = self.vec.single_action_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, _ = self.vec.reset(seed=np.array([int(self.np_random.integers(2**31 - 1))]))
        return obs[0, 0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(np.int64(np.asarray(action).reshape(()))):
            raise ConfigError(f"BouncingBall takes the action 0 (NOOP), got {action!r}.")
        obs, reward, terminated, truncated, _ = self.vec.step(np.zeros(1, dtype=np.int64))
        return obs[0, 0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        return np.repeat(self.vec.render()[0, :, :, None], 3, axis=-1)
