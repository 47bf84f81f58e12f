"""Collect real experience into an :class:`~dreamenv.data.store.EpisodeStore`.

Runs the spec's real vector env (:func:`~dreamenv.envs.sources.make_source_vector`: ale-py's
native one for Atari, gymnasium's for any other env) with a random policy or any
:data:`Policy` (such as :class:`dreamenv.sb3.AgentPolicy`, a saved SB3 agent sampled at
a temperature). Complete episodes are written in atomic chunks; a collection killed at
any point is continued by calling it again with the same arguments.

Example:
    >>> store = collect("runs/pong/data", AtariSpec("pong"), steps=10_000, num_envs=8)
    >>> store.num_steps
    10000
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dreamenv.data.store import Episode, EpisodeStore
from dreamenv.envs.atari import AtariSpec
from dreamenv.envs.sources import make_source_vector
from dreamenv.envs.spec import ActionSpec
from dreamenv.errors import ConfigError

Policy = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""Maps a batch of observations and a generator to ``(N,)`` int64 actions. The observations
are stacked uint8 frames ``(N, stack, S, S)``, unless the policy has
``observations(num_envs, spec) -> RealObservations``: then they are what that path makes of
the real frames (as :class:`~dreamenv.sb3.agent_policy.AgentPolicy`, whose agent sees
exactly what ``Real-v0`` shows it)."""


class RandomPolicy:
    """Uniformly random actions: ints in ``[0, n)`` for ``num_actions=n`` (or a discrete
    :class:`~dreamenv.envs.spec.ActionSpec`), floats uniform within a continuous spec's bounds."""

    def __init__(self, num_actions: int | ActionSpec) -> None:
        self.spec = (
            num_actions if isinstance(num_actions, ActionSpec) else ActionSpec.discrete(num_actions)
        )
        self.num_actions = self.spec.n

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.spec.kind == "continuous":
            low, high = np.array(self.spec.low), np.array(self.spec.high)
            return rng.uniform(low, high, size=(len(frames), self.spec.n)).astype(np.float32)
        return rng.integers(0, self.num_actions, size=len(frames), dtype=np.int64)


def check_hold(value: object, name: str = "hold") -> None:
    """A finite number of steps >= 1 (the mean time a random action is held), or a
    :class:`ConfigError` naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (np.isfinite(value) and value >= 1)
    ):
        raise ConfigError(
            f"{name} must be a number of steps >= 1 (the mean length of a held random "
            f"action; 1: a fresh action every step), got {value!r}."
        )


class HeldRandomPolicy(RandomPolicy):
    """Uniformly random actions, each held for a random number of steps (geometric, of mean
    ``hold``): temporally correlated exploration, so that a random driver keeps its foot on
    the gas or a pendulum is pushed the same way for a while (white noise, one fresh draw a
    step, mostly cancels itself out). ``hold=1`` is :class:`RandomPolicy`.

    Example:
        >>> spec = make_spec("CarRacing-v3", action_repeat=4)
        >>> collect("runs/car/data", spec, 30_000, policy=HeldRandomPolicy(spec.action_spec, 8))
    """

    def __init__(self, num_actions: int | ActionSpec, hold: float) -> None:
        super().__init__(num_actions)
        check_hold(hold)
        self.hold = float(hold)
        self.previous: np.ndarray | None = None

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        fresh = super().__call__(frames, rng)
        if self.previous is None or len(self.previous) != len(fresh):
            self.previous = fresh
            return fresh.copy()
        redraw = rng.random(len(fresh)) < 1.0 / self.hold
        self.previous[redraw] = fresh[redraw]
        return self.previous.copy()


class _EpisodeBuilder:
    """The in-progress episode of one env."""

    def __init__(self, first_frame: np.ndarray, continued: bool = False) -> None:
        self.frames = [first_frame.copy()]
        self.actions: list[Any] = []
        self.rewards: list[float] = []
        self.life_lost: list[bool] = []
        self.continued = continued

    def add(self, action: Any, reward: float, frame: np.ndarray, life_lost: bool) -> None:
        self.actions.append(np.array(action, copy=True))
        self.rewards.append(float(reward))
        self.frames.append(frame.copy())
        self.life_lost.append(bool(life_lost))

    def drop_last(self) -> None:
        """Forget the newest step (a collection's budget ended before it)."""
        self.actions.pop()
        self.rewards.pop()
        self.frames.pop()
        self.life_lost.pop()

    def finish(self, terminated: bool, truncated: bool, action_dtype: Any = np.int64) -> Episode:
        n = len(self.actions)
        term = np.zeros(n, bool)
        trunc = np.zeros(n, bool)
        term[-1], trunc[-1] = terminated, truncated
        return Episode(
            np.stack(self.frames),
            np.array(self.actions, action_dtype),
            np.array(self.rewards, np.float32),
            term,
            trunc,
            np.array(self.life_lost, bool),
            continued=self.continued,
        )


def _lives(info: dict, num_envs: int) -> np.ndarray:
    """The lives left in each env (zeros for a game or env that reports none)."""
    lives = info.get("lives")
    return np.zeros(num_envs, np.int64) if lives is None else np.asarray(lives, np.int64)


def _check_positive(**values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive int, got {value!r}.")


class Collector:
    """``num_envs`` real games of ``spec`` that go on from one collection to the next.

    Each :meth:`collect` tops a store up with any policy. The games a collection's budget
    cuts are stored as truncated episodes and go on in the next collection, whose episodes
    of them are :attr:`~dreamenv.data.store.Episode.continued`: so a loop that collects a
    few hundred steps per game at a time still sees whole games (the iterative loop's
    ``LoopConfig.continue_games``). Each call's policy observes the games from their current
    frames on, as it would from a reset (its frame stack and its model's state start there).
    The games live in this object only: a new collector (after a restart, say) starts new
    games. :func:`collect` is one collection with new games.

    Example:
        >>> with Collector(AtariSpec("seaquest"), num_envs=16) as games:
        ...     games.collect("runs/sq/data", 12_800, seed=1)
        ...     games.collect("runs/sq/data", 19_200, policy=agent_policy, seed=2)
    """

    def __init__(self, spec: AtariSpec, num_envs: int = 8) -> None:
        _check_positive(num_envs=num_envs)
        self.spec = spec
        self.num_envs = num_envs
        self._env: Any = None
        self._frames: np.ndarray = np.empty(0)
        self._lives: np.ndarray = np.empty(0)
        self._builders: list[_EpisodeBuilder] = []

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the real envs (the games end)."""
        if self._env is not None:
            self._env.close()
            self._env = None

    def collect(
        self,
        out: str | Path,
        steps: int,
        *,
        policy: Policy | None = None,
        seed: int = 0,
        chunk_steps: int = 4096,
        progress: bool = True,
    ) -> EpisodeStore:
        """Fill the store at ``out`` up to ``steps`` agent steps, going on with the games
        of the previous call (new games, seeded from ``seed``, in the first); the arguments
        as :func:`collect`'s."""
        _check_positive(steps=steps, chunk_steps=chunk_steps)
        spec, num_envs = self.spec, self.num_envs
        store = EpisodeStore.open_or_create(out, spec)
        remaining = steps - store.num_steps
        if remaining <= 0:
            return store
        action_dtype = spec.action_spec.dtype
        policy = policy or RandomPolicy(spec.action_spec)
        rng = np.random.default_rng([seed, len(store.chunk_paths)])
        if self._env is None:
            self._env = make_source_vector(spec, num_envs, autoreset_mode="SameStep")
            obs, info = self._env.reset(seed=int(rng.integers(2**31 - num_envs)))
            self._lives = _lives(info, num_envs)
            self._frames = obs[:, 0]
            self._builders = [_EpisodeBuilder(f) for f in self._frames]
        env, builders = self._env, self._builders
        from dreamenv.envs.real import observations_for  # the envs import the data modules

        observations = observations_for(policy, num_envs, spec)
        observations.start(self._frames)
        pending: list[Episode] = []
        taken = 0
        bar = tqdm(total=remaining, desc=f"collect {spec.game}", unit="step", disable=not progress)
        try:
            while taken < remaining:
                actions = policy(observations.observe(), rng)
                obs, rewards, terminated, truncated, info = env.step(actions)
                done = terminated | truncated
                new_lives = _lives(info, num_envs)
                life_lost = (new_lives < self._lives) & ~done  # at an episode's end, lives restart
                self._lives = new_lives
                self._frames = obs[:, 0]
                last_frames = self._frames.copy()
                if done.any():
                    last_frames[done] = info["final_obs"][done, 0]
                for i in range(num_envs):
                    builders[i].add(actions[i], rewards[i], last_frames[i], life_lost[i])
                    if done[i]:
                        pending.append(
                            builders[i].finish(
                                bool(terminated[i]), bool(truncated[i]), action_dtype
                            )
                        )
                        builders[i] = _EpisodeBuilder(self._frames[i])
                observations.advance(last_frames, actions)
                if done.any():
                    observations.start(self._frames, done)
                taken += num_envs
                bar.update(num_envs)
                if sum(len(e) for e in pending) >= chunk_steps:
                    store.append(pending)
                    pending = []
            # the budget is spent: keep the in-progress episodes, marked as cut; their games
            # go on from the current frame in the next call
            excess = taken - remaining
            for i, b in enumerate(builders):
                if excess > 0 and len(b.actions) > 1:
                    b.drop_last()
                    excess -= 1
                if b.actions:
                    pending.append(b.finish(False, True, action_dtype))
                    builders[i] = _EpisodeBuilder(self._frames[i], continued=True)
            if pending:
                store.append(pending)
        except BaseException:
            self.close()  # the games' state is lost with the episodes in progress
            raise
        finally:
            bar.close()
        return store


def collect(
    out: str | Path,
    spec: AtariSpec,
    steps: int,
    *,
    num_envs: int = 8,
    policy: Policy | None = None,
    seed: int = 0,
    chunk_steps: int = 4096,
    progress: bool = True,
) -> EpisodeStore:
    """Fill the store at ``out`` up to ``steps`` agent steps of ``spec``'s game.

    Args:
        out: the store directory (created if missing; continued if it exists).
        spec: the preprocessing; must match the store's if it exists.
        steps: total agent steps the store should hold when done.
        num_envs: real envs stepped together.
        policy: chooses actions; a uniformly random policy if None.
        seed: seeds the envs and the policy; a continued collection derives fresh seeds.
        chunk_steps: steps of complete episodes buffered before a chunk is written.
        progress: show a progress bar.

    Returns:
        The store, holding at least ``steps`` steps.
    """
    with Collector(spec, num_envs) as games:  # it checks every argument
        return games.collect(
            out, steps, policy=policy, seed=seed, chunk_steps=chunk_steps, progress=progress
        )
