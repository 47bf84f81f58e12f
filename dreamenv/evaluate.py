"""Any policy in the real game, against random: needs no Stable-Baselines3.

A policy is a function from a batch of observations to actions, or an object with SB3's
``predict(obs, deterministic=...) -> (actions, state)`` (an SB3 agent is one).

Example:
    >>> returns = evaluate(agent, "runs/pong/model", episodes=32)
    >>> random = evaluate(random_policy(6), "runs/pong/model", episodes=32)
    >>> stats = play_episodes(agent, "runs/pong/model")  # returns, clipped returns, lengths
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.real import RealVectorEnv
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.stats import AgainstRandom


@runtime_checkable
class Predictor(Protocol):
    """A policy object as SB3's: ``predict(obs, deterministic=...) -> (actions, state)``."""

    def predict(self, observation: np.ndarray, *args: Any, **kwargs: Any) -> tuple[Any, Any]: ...


PolicyLike = Callable[[np.ndarray], np.ndarray] | Predictor
"""What :func:`evaluate` plays: a function from observations to actions, or a predictor."""


def infer_obs_type(space: gym.Space, checkpoint: Checkpoint) -> str:
    """The ``obs_type`` of ``checkpoint`` whose observation space is ``space``."""
    for obs_type in checkpoint.model.obs_types:
        candidate = checkpoint.model.observation_space(obs_type)
        if (
            type(candidate) is type(space)
            and candidate.shape == space.shape
            and candidate.dtype == space.dtype
        ):
            return obs_type
    raise CheckpointError(
        f"The agent observes {space}, which matches no observation of the checkpoint "
        f"{str(checkpoint.path)!r} (game {checkpoint.spec.game!r}). Use the checkpoint the agent "
        "was trained with."
    )


@dataclass(frozen=True)
class EpisodeStats:
    """Per-episode results of :func:`play_episodes`, in the order the episodes ended.

    Example:
        >>> stats = play_episodes(agent, "runs/pong/model", episodes=32)
        >>> rate = stats.clipped_returns.sum() / stats.lengths.sum()  # clipped reward per step
    """

    returns: np.ndarray
    """``(episodes,)`` float64: the sum of each episode's rewards (the real, unclipped game
    rewards in the real env; the dream's own rewards in a dream env)."""
    clipped_returns: np.ndarray
    """``(episodes,)`` float64: the sum of the signs of each step's reward (the Atari
    protocol's clipped units, those the dream's rewards are in)."""
    lengths: np.ndarray
    """``(episodes,)`` int64: agent steps of each episode."""


def as_actor(
    policy: PolicyLike, checkpoint: Checkpoint, obs_type: str | None, deterministic: bool
) -> tuple[Callable[[np.ndarray], np.ndarray], str | None]:
    """The action function of ``policy`` and the ``obs_type`` it observes (inferred from a
    predictor's ``observation_space`` when ``obs_type`` is None and it has one).

    Example:
        >>> act, obs_type = as_actor(agent, checkpoint, None, deterministic=False)
    """
    if not isinstance(policy, Predictor):
        return policy, obs_type
    space = getattr(policy, "observation_space", None)
    if obs_type is None and space is not None:
        obs_type = infer_obs_type(space, checkpoint)
    predictor = policy

    def act(obs: np.ndarray) -> np.ndarray:
        return np.asarray(predictor.predict(obs, deterministic=deterministic)[0])

    return act, obs_type


def play(
    env: gym.vector.VectorEnv,
    act: Callable[[np.ndarray], np.ndarray],
    episodes: int,
    *,
    seed: int | None = 0,
    max_steps: int | None = None,
    progress: bool = False,
    desc: str = "evaluate",
) -> EpisodeStats:
    """Play ``episodes`` episodes of ``env`` (a ``NextStep`` autoreset vector env, real or
    dream) with ``act``; env ``i`` plays its fixed share, so short episodes are not favoured.

    Example:
        >>> stats = play(DreamVectorEnv("runs/pong/model", 16), random_policy(6), 16)
    """
    num_envs = env.num_envs
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    returns: list[float] = []
    clipped: list[float] = []
    lengths: list[int] = []
    running = np.zeros(num_envs)
    running_clipped = np.zeros(num_envs)
    steps = np.zeros(num_envs, dtype=np.int64)
    done_count = np.zeros(num_envs, dtype=np.int64)
    restarting = np.zeros(num_envs, dtype=bool)  # NextStep: this step only starts a new game
    cap = max_steps or np.iinfo(np.int64).max
    obs, _ = env.reset(seed=seed)
    bar = tqdm(total=episodes, desc=desc, unit="episode", disable=not progress)
    while (done_count < quota).any():
        obs, reward, terminated, truncated, _ = env.step(np.asarray(act(obs)))
        running += reward
        running_clipped += np.sign(reward)
        steps += ~restarting
        restarting = terminated | truncated
        ended = restarting | (steps >= cap)
        capped = ended & ~restarting
        for i in np.flatnonzero(ended):
            if done_count[i] < quota[i]:
                returns.append(float(running[i]))
                clipped.append(float(running_clipped[i]))
                lengths.append(int(steps[i]))
                done_count[i] += 1
                bar.update(1)
        running[ended] = 0.0
        running_clipped[ended] = 0.0
        steps[ended] = 0
        if capped.any() and (done_count < quota).any():
            obs, _ = env.reset(options={"reset_mask": capped})
    bar.close()
    return EpisodeStats(
        returns=np.array(returns, dtype=np.float64),
        clipped_returns=np.array(clipped, dtype=np.float64),
        lengths=np.array(lengths, dtype=np.int64),
    )


def play_episodes(
    policy: PolicyLike,
    checkpoint: str | Path | Checkpoint,
    *,
    episodes: int = 32,
    num_envs: int = 16,
    obs_type: str | None = None,
    seed: int = 0,
    deterministic: bool = False,
    max_steps: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> EpisodeStats:
    """Returns, clipped returns and lengths of ``episodes`` whole real episodes played by
    ``policy``; the arguments are :func:`evaluate`'s.

    Example:
        >>> stats = play_episodes(agent, "runs/pong/model", episodes=32)
        >>> stats.returns.mean(), stats.lengths.mean()
    """
    ckpt = resolve_checkpoint(checkpoint, device, None)
    act, obs_type = as_actor(policy, ckpt, obs_type, deterministic)
    num_envs = max(1, min(num_envs, episodes))
    env = RealVectorEnv(ckpt, num_envs, obs_type=obs_type, device=device)
    try:
        return play(env, act, episodes, seed=seed, max_steps=max_steps, progress=progress)
    finally:
        env.close()


def evaluate(
    policy: PolicyLike,
    checkpoint: str | Path | Checkpoint,
    *,
    episodes: int = 32,
    num_envs: int = 16,
    obs_type: str | None = None,
    seed: int = 0,
    deterministic: bool = False,
    max_steps: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Returns of ``episodes`` whole real episodes played by ``policy`` (the ``returns`` of
    :func:`play_episodes`, which also gives clipped returns and lengths).

    Args:
        policy: an object with SB3's ``predict`` (sampled unless ``deterministic``), such as
            an SB3 agent, or a function from a batch of observations to actions.
        checkpoint: whose preprocessing and encoder make the observations.
        episodes: episodes to play; each env plays its fixed share, so short episodes are not
            favoured.
        obs_type: inferred from the agent's observation space when None.
        max_steps: cap on an episode's agent steps (the game's own limit when None).
    """
    return play_episodes(
        policy,
        checkpoint,
        episodes=episodes,
        num_envs=num_envs,
        obs_type=obs_type,
        seed=seed,
        deterministic=deterministic,
        max_steps=max_steps,
        device=device,
        progress=progress,
    ).returns


def against_random(
    policy: PolicyLike,
    checkpoint: str | Path | Checkpoint,
    *,
    episodes: int = 32,
    seed: int = 0,
    deterministic: bool = False,
    device: str = "cpu",
    **kwargs: Any,
) -> AgainstRandom:
    """:func:`evaluate` ``policy`` and a random policy (seeded with ``seed``) on the same
    ``episodes`` seeds, and compare them by Welch's t-test; other keyword arguments are
    :func:`evaluate`'s (``num_envs``, ``max_steps``, ``progress``).

    Example:
        >>> result = against_random(agent, "runs/pong/model", episodes=32)
        >>> result.agent.mean(), result.random.mean(), result.p_value
    """
    ckpt = resolve_checkpoint(checkpoint, device, None)
    common = dict(episodes=episodes, seed=seed, device=device, **kwargs)
    agent_returns = evaluate(policy, ckpt, deterministic=deterministic, **common)
    random_returns = evaluate(random_policy(ckpt.model.action_space, seed), ckpt, **common)
    return AgainstRandom.of(agent_returns, random_returns)


def random_policy(actions: int | gym.Space, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Uniformly random actions for a batch of observations: ``actions`` is the number of
    actions, or a single env's action space (such as a jumpy model's ``MultiDiscrete``, or a
    bounded ``Box`` of continuous actions: uniform within its bounds)."""
    space = gym.spaces.Discrete(int(actions)) if isinstance(actions, (int, np.integer)) else actions
    if isinstance(space, gym.spaces.Box):
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ConfigError(f"random_policy needs a Box with finite bounds, got {space}.")
        box_rng = np.random.default_rng(seed)
        low, high_ = space.low, space.high
        return lambda obs: box_rng.uniform(low, high_, size=(len(obs), *space.shape)).astype(
            space.dtype
        )
    if isinstance(space, gym.spaces.Discrete):
        high: Any = int(space.n)
    elif isinstance(space, gym.spaces.MultiDiscrete):
        high = space.nvec
    else:
        raise ConfigError(
            f"random_policy takes a number of actions or a Discrete/MultiDiscrete/Box space, got "
            f"{space}."
        )
    shape = tuple(space.shape or ())
    rng = np.random.default_rng(seed)
    return lambda obs: rng.integers(0, high, size=(len(obs), *shape))
