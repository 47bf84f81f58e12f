"""Model-predictive control with the cross-entropy method (CEM), as in PlaNet (Hafner et
al. 2019) and PETS (Chua et al. 2018).

Every real step, for every real env at once, :class:`CEMPlanner` scores ``candidates``
action sequences of ``horizon`` steps in ONE batched imagined rollout of the world model
(:class:`~dreamenv.imagine.Imagination`, on the model's device, no host sync), keeps the
``elites`` best by imagined return and refits its sampling distribution to them, for
``iterations`` rounds: a diagonal Gaussian per step and action dimension for ``Box``
actions (samples clipped to the bounds), a categorical per step for ``Discrete`` ones. It
executes the first action of the final distribution (the Gaussian's mean, the categorical's
mode) and replans at the next step, warm-started from the plan shifted by one step.

The model state to plan from: for the ``ensemble`` family with ``frame_stack=1`` the
observation is the real state vector, which is all the model needs, so :meth:`predict`
rebuilds the state from the observation (``encode`` + ``initial_state``). Other families
(a recurrent state, stacked frames) cannot be rebuilt from one observation: give the
planner the ``Real-v0`` env it plays in (``real_env=``), whose
:class:`~dreamenv.envs.real.LatentFilter` follows the real game, and play it there with
:func:`dreamenv.evaluate.play`.

Example:
    >>> planner = CEMPlanner("runs/pendulum/model", horizon=25, candidates=300, iterations=4,
    ...                      elites=30)
    >>> returns = evaluate(planner, "runs/pendulum/model", episodes=8, deterministic=True)
    >>> actions, _ = planner.predict(np.zeros((4, 3), np.float32))   # 4 envs at once
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dreamenv.agents.overrides import with_overrides
from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.errors import ConfigError
from dreamenv.imagine import (
    Imagination,
    ImagineConfig,
    Start,
    branch_keys,
    check_count,
    repeat_rows,
    seeded_rng,
)
from dreamenv.models.common import normal_from_uniform, sample_categorical
from dreamenv.precision import Precision, check_precision
from dreamenv.random_streams import BatchRandom


@dataclass(frozen=True)
class CEMConfig:
    """Settings of :class:`CEMPlanner` (defaults: PlaNet's, which are costly on a CPU)."""

    horizon: int = 12
    """Imagined steps of each candidate action sequence (PlaNet: 12, PETS: 30)."""
    candidates: int = 1000
    """Action sequences scored per env and iteration, in one batched rollout (PlaNet: 1000)."""
    iterations: int = 10
    """Refits of the sampling distribution per real step (PlaNet: 10, PETS: 5)."""
    elites: int = 100
    """Best candidates the distribution is refitted to (PlaNet: 100); at most ``candidates``."""
    particles: int = 1
    """Imagined rollouts per candidate (independent model noise and ensemble member); its
    score is their mean return (PETS: 20)."""
    discount: float = 1.0
    """Discount of the imagined rewards within the horizon."""
    init_std: float = 1.0
    """Initial standard deviation of Box actions, in half-ranges of the bounds."""
    min_std: float = 0.0
    """Lower bound of a refitted standard deviation, in half-ranges (0: none)."""
    momentum: float = 0.0
    """Share of the previous distribution kept at each refit (PETS: 0.1; 0: a plain refit)."""
    warm_start: bool = True
    """Start each real step's search from the previous plan shifted by one step (the last
    step from the initial distribution); False: always from the initial distribution."""
    temperature: float = 1.0
    """Sampling temperature of the imagined transitions (0: the model's mode)."""
    use_termination: bool = True
    """Weight imagined rewards by the chance the episode is still running."""
    precision: Precision = "float32"
    """``"bfloat16"``: imagined steps under bfloat16 autocast (faster on CPUs with AMX)."""

    def __post_init__(self) -> None:
        for name in ("horizon", "candidates", "iterations", "elites", "particles"):
            check_count(getattr(self, name), f"CEMConfig.{name}")
        if self.elites > self.candidates:
            raise ConfigError(
                f"CEMConfig.elites={self.elites} exceeds candidates={self.candidates}; use "
                "elites <= candidates (PlaNet: 100 of 1000)."
            )
        for name, low, high in (
            ("discount", 0.0, 1.0),
            ("momentum", 0.0, 1.0 - 1e-9),
            ("init_std", 1e-9, np.inf),
            ("min_std", 0.0, np.inf),
        ):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (ok and np.isfinite(value) and low <= value <= high):
                raise ConfigError(
                    f"CEMConfig.{name} must be a finite number in [{low}, {high}], got {value!r}."
                )
        for name in ("warm_start", "use_termination"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"CEMConfig.{name} must be True or False, got {getattr(self, name)!r}."
                )
        check_precision(self.precision)
        ImagineConfig(temperature=self.temperature)  # validates it


class CEMPlanner:
    """A CEM planner with Stable-Baselines3's ``predict``, for ``Real-v0`` (any number of
    real envs at once); see the module docstring.

    Args:
        checkpoint: the world model's checkpoint (a directory or a loaded one).
        config: the planner's settings; keyword ``overrides`` replace its fields
            (``CEMPlanner(path, horizon=25, candidates=300)``).
        seed: seeds the planner's random streams (row ``i`` as an env of ``seed + i``).
        device: where a checkpoint directory is loaded.
        real_env: a ``Real-v0`` env (``RealVectorEnv``) whose model state to plan from,
            instead of rebuilding it from the observation (required by families whose
            observation does not determine the state).

    Example:
        >>> planner = CEMPlanner("runs/pendulum/model", horizon=20, candidates=200)
        >>> actions, _ = planner.predict(obs, deterministic=True)
    """

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint,
        config: CEMConfig | None = None,
        *,
        seed: int = 0,
        device: str = "cpu",
        real_env: Any = None,
        **overrides: Any,
    ) -> None:
        config = with_overrides(config or CEMConfig(), overrides, "CEMPlanner")
        self.config = config
        self.checkpoint = resolve_checkpoint(checkpoint, device, None)
        self.model = self.checkpoint.model
        self.imagination = Imagination(
            self.checkpoint,
            ImagineConfig(
                temperature=config.temperature,
                reward_mode="mean",
                use_termination=config.use_termination,
                precision=config.precision,
                grad=False,
            ),
        )
        self.device = self.model.device
        self.seed = seed
        self.real_env = real_env
        stack = tuple(self.model.spec.frame_shape)[0]
        if real_env is None and not self.rebuilds_state(self.model):
            raise ConfigError(
                f"CEMPlanner rebuilds the model state from the observation only for the "
                f"'ensemble' family with frame_stack=1; this checkpoint is {self.model.family!r} "
                f"(frame_stack={stack}). Pass real_env=RealVectorEnv(checkpoint, num_envs) and "
                "play in that env (dreamenv.evaluate.play(env, planner.act, episodes))."
            )
        self.obs_type = self.model.obs_types[0]
        self.observation_space = self.model.observation_space(self.obs_type)
        """What :func:`dreamenv.evaluate.evaluate` reads to pick the observation type."""
        self.action_space = self.model.action_space
        self.action_shape = self.imagination.action_shape
        self.continuous = self.imagination.continuous
        if self.continuous:
            low = torch.tensor(self.model.actions.low, device=self.device)
            high = torch.tensor(self.model.actions.high, device=self.device)
            self.low, self.high = low, high
            self.mid, self.half = (low + high) / 2, (high - low) / 2
        self.num_actions = self.model.num_actions
        self.rng: BatchRandom | None = None
        self.plan_params: tuple[torch.Tensor, torch.Tensor] | None = None
        """The warm start: the Gaussian's ``(mean, std)`` ``(B, H, *action_shape)`` or the
        categorical's ``(probs (B, H, *action_shape, A), unused)``."""

    @staticmethod
    def rebuilds_state(model: Any) -> bool:
        """Whether the planner rebuilds ``model``'s state from one ``Real-v0`` observation
        (the ``ensemble`` family with ``frame_stack=1``); otherwise it needs ``real_env``."""
        return bool(model.family == "ensemble" and tuple(model.spec.frame_shape)[0] == 1)

    # --- the SB3 face ---------------------------------------------------------------------
    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions for a batch of observations ``(num_envs, *obs_shape)`` (or one
        observation): a plan per env, its first action executed.

        Args:
            observation: the ``Real-v0`` observations (ignored with ``real_env``, whose
                model state is used; their batch size must match its ``num_envs``).
            state: unused (the planner keeps its warm start itself); SB3's signature.
            episode_start: ``(num_envs,)`` bools: forget the warm start of these envs.
            deterministic: execute the final distribution's mean (Box) or mode (Discrete);
                False: a sample of it.

        Returns:
            ``(actions, None)``: float32 ``(num_envs, *action_shape)`` or int64.
        """
        obs = np.asarray(observation)
        space_shape = tuple(self.observation_space.shape or ())
        single = obs.shape == space_shape
        if single:
            obs = obs[None]
        if tuple(obs.shape[1:]) != space_shape:
            raise ConfigError(
                f"observation must have shape (num_envs, {', '.join(map(str, space_shape))}) "
                f"or {space_shape}, got {obs.shape}."
            )
        start = self.start_from(obs)
        if episode_start is not None and self.plan_params is not None:
            self.reset(np.flatnonzero(np.asarray(episode_start, dtype=bool)))
        actions = self.plan(start, deterministic).cpu().numpy()
        return (actions[0] if single else actions), None

    def act(self, observation: np.ndarray) -> np.ndarray:
        """``predict(observation, deterministic=True)[0]``: the planner as a function of the
        observations, for :func:`dreamenv.evaluate.play`."""
        return self.predict(observation, deterministic=True)[0]

    def reset(self, index: Any = None) -> None:
        """Forget the warm start of the envs ``index`` (all if None)."""
        if self.plan_params is None or index is None:
            self.plan_params = None
            return
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64), device=self.device)
        init = self._initial(len(idx))
        for param, new in zip(self.plan_params, init, strict=True):
            param[idx] = new

    # --- planning -------------------------------------------------------------------------
    def start_from(self, obs: np.ndarray) -> Start:
        """The model state of each real env: its observation's (ensemble) or the
        ``real_env``'s filter's; with the planner's own random streams."""
        b = len(obs)
        if self.rng is None or len(self.rng.keys) != b:
            self.rng = seeded_rng(b, self.seed, self.device)
            self.plan_params = None
        if self.real_env is not None:
            start = self.imagination.from_real_env(self.real_env)
            if start.batch != b:
                raise ConfigError(
                    f"real_env follows {start.batch} games but the observation has {b} rows; "
                    "plan in the env the observations come from."
                )
            return Start(start.latent, start.state, self.rng)
        frames = torch.as_tensor(obs, dtype=torch.float32).reshape(b, *self.model.spec.frame_shape)
        return self.imagination.from_observations(frames, rng=self.rng)

    def _initial(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The initial distribution of ``b`` envs' plans: mid-range Gaussians of
        ``init_std`` half-ranges, or uniform categoricals."""
        shape = (b, self.config.horizon, *self.action_shape)
        if self.continuous:
            mean = self.mid.expand(shape).clone()
            return mean, (self.half * self.config.init_std).expand(shape).clone()
        probs = torch.full((*shape, self.num_actions), 1.0 / self.num_actions, device=self.device)
        return probs, probs

    @torch.inference_mode()
    def plan(self, start: Start, deterministic: bool = True) -> torch.Tensor:
        """The first action of each env's plan, ``(B, *action_shape)``, from ``start`` (one
        row per env; its random streams advance). Updates the warm start."""
        c = self.config
        b, n, p, h = start.batch, c.candidates, c.particles, c.horizon
        init = self._initial(b)
        if c.warm_start and self.plan_params is not None:
            # the previous plan shifted by one step; the new last step from the initial one
            (mean, spread), (mean0, spread0) = self.plan_params, init
            params = (
                torch.cat([mean[:, 1:], mean0[:, -1:]], 1),
                torch.cat([spread[:, 1:], spread0[:, -1:]], 1),
            )
        else:
            params = init
        # every candidate of every env gets its own stream, drawn from the env's
        cand_rng = BatchRandom(b * n, self.device)
        cand_rng.keys.copy_(branch_keys(start.rng, n))
        rows = repeat_rows((start.latent, *start.state), n * p)
        begin = Start(rows[0], rows[1:], BatchRandom(b * n * p, self.device))
        k = c.elites
        for _ in range(c.iterations):
            samples = self._sample(params, cand_rng, b, n)  # (B, N, H, *S)
            begin.rng.keys.copy_(branch_keys(cand_rng, p))
            flat = samples.flatten(0, 1).repeat_interleave(p, 0)
            rollout = self.imagination.rollout(begin, h, actions=flat)
            scores = rollout.returns(c.discount).view(b, n, p).mean(-1)
            top = scores.topk(k, dim=1).indices  # (B, K)
            index = top.view(b, k, *([1] * (samples.dim() - 2))).expand(b, k, *samples.shape[2:])
            elites = samples.gather(1, index)  # (B, K, H, *S)
            params = self._refit(params, elites)
        self.plan_params = params
        return self._first_action(params, start.rng, deterministic)

    def _sample(
        self, params: tuple[torch.Tensor, torch.Tensor], rng: BatchRandom, b: int, n: int
    ) -> torch.Tensor:
        """``n`` candidate sequences per env ``(B, N, H, *S)``; candidate 0 is the current
        mean (Box) or mode (Discrete) plan."""
        h, shape = self.config.horizon, self.action_shape
        u = rng.uniform((h, *shape)).view(b, n, h, *shape)
        if self.continuous:
            mean, std = params
            samples = mean[:, None] + std[:, None] * normal_from_uniform(u)
            samples[:, 0] = mean
            return torch.maximum(torch.minimum(samples, self.high), self.low)
        probs = params[0][:, None].expand(b, n, *params[0].shape[1:])
        samples = sample_categorical(probs, u)
        samples[:, 0] = params[0].argmax(-1)
        return samples

    def _refit(
        self, params: tuple[torch.Tensor, torch.Tensor], elites: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        keep = c.momentum
        if self.continuous:
            mean = elites.mean(1)
            std = elites.std(1, correction=0)
            if c.min_std > 0:
                std = torch.maximum(std, self.half * c.min_std)
            return keep * params[0] + (1 - keep) * mean, keep * params[1] + (1 - keep) * std
        probs = F.one_hot(elites, self.num_actions).float().mean(1)
        probs = keep * params[0] + (1 - keep) * probs
        return probs, probs

    def _first_action(
        self, params: tuple[torch.Tensor, torch.Tensor], rng: BatchRandom, deterministic: bool
    ) -> torch.Tensor:
        shape = self.action_shape
        if self.continuous:
            mean, std = params[0][:, 0], params[1][:, 0]
            if deterministic:
                return mean.clone()
            noise = normal_from_uniform(rng.uniform(shape))
            return torch.maximum(torch.minimum(mean + std * noise, self.high), self.low)
        probs = params[0][:, 0]
        if deterministic:
            return probs.argmax(-1)
        return sample_categorical(probs, rng.uniform(shape))
