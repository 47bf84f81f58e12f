"""Training sequences and start contexts cut from stored episodes.

Example:
    >>> sampler = SequenceSampler(store.episodes(), stack=4, seq_len=16, seed=0)
    >>> batch = sampler.sample(32)  # frames (32, 17, 4, 96, 96) uint8, actions (32, 16), ...
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dreamenv.data.store import Episode
from dreamenv.envs.atari import merge_stack, stack_frames
from dreamenv.errors import ConfigError, DatasetError


def split_episodes(
    episodes: list[Episode], val_fraction: float
) -> tuple[list[Episode], list[Episode]]:
    """Every ``1/val_fraction``-th episode held out for validation (at least one when
    there are two or more episodes); the rest for training."""
    if len(episodes) < 2 or val_fraction <= 0:
        return episodes, episodes
    every = max(2, round(1 / val_fraction))
    val = [e for i, e in enumerate(episodes) if i % every == every - 1] or [episodes[-1]]
    ids = {id(e) for e in val}
    return [e for e in episodes if id(e) not in ids], val


class SequenceSampler:
    """Uniformly random windows of ``seq_len`` transitions (masked past an episode's end).

    With ``reward_windows=f``, a share ``f`` of every batch are windows that contain a real
    nonzero reward, so a reward head sees sparse rewards often enough to learn them; with
    ``termination_windows=f`` a share ``f`` are windows that contain an end (the game's, or
    with ``life_loss`` a lost life), so a termination head sees rare ends as often. With
    ``life_loss=True`` the ``terminated`` of a batch also marks the loss of a life (the
    window goes on: the game did), so a termination head learns both ends. With
    ``latents`` (one array per episode: the latents of its observations ``0 .. len``, as
    a model with a held representation serves them), batches hold ``latents`` instead of
    ``frames``.
    """

    def __init__(
        self,
        episodes: list[Episode],
        stack: int,
        seq_len: int,
        seed: int = 0,
        reward_windows: float = 0.0,
        life_loss: bool = False,
        latents: list[np.ndarray] | None = None,
        termination_windows: float = 0.0,
    ) -> None:
        self.life_loss = life_loss
        keep = [i for i, e in enumerate(episodes) if len(e) > 0]
        self.episodes = [episodes[i] for i in keep]
        self.latents = None if latents is None else [latents[i] for i in keep]
        if self.latents is not None:
            for e, z in zip(self.episodes, self.latents, strict=True):
                if len(z) != len(e) + 1:
                    raise DatasetError(
                        f"latents of an episode of {len(e)} steps must hold {len(e) + 1} "
                        f"observations' latents, got {len(z)}."
                    )
        if not self.episodes:
            raise DatasetError("No episode with at least one step to train on; collect more data.")
        self.stack = stack
        self.seq_len = seq_len
        self.lengths = np.array([len(e) for e in self.episodes])
        self.weights = self.lengths / self.lengths.sum()
        self.rng = np.random.default_rng(seed)
        self.reward_windows = reward_windows
        self.reward_events = _events([e.rewards != 0 for e in self.episodes])
        self.termination_windows = termination_windows
        self.ends = [
            e.terminated | e.life_lost if life_loss else e.terminated for e in self.episodes
        ]
        """Per episode, the steps that end it (or, with ``life_loss``, a life)."""
        self.end_events = _events(self.ends)

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    @property
    def termination_rate(self) -> float:
        """Share of the steps that end the episode (or a life, with ``life_loss``): what a
        termination head predicts on average."""
        return sum(int(ends.sum()) for ends in self.ends) / max(self.num_steps, 1)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """A batch: ``frames`` (B, L+1, stack, S, S) (or ``latents`` (B, L+1, ...)),
        ``actions``, ``rewards``, ``terminated``, ``mask`` (B, L)."""
        which = self.rng.choice(len(self.episodes), size=batch_size, p=self.weights)
        starts = (self.rng.random(batch_size) * self.lengths[which]).astype(np.int64)
        n_reward = self._place(which, starts, 0, self.reward_windows, self.reward_events)
        self._place(which, starts, n_reward, self.termination_windows, self.end_events)
        return self.window(which, starts)

    def _place(
        self, which: np.ndarray, starts: np.ndarray, first: int, share: float, events: np.ndarray
    ) -> int:
        """Point ``round(share * batch)`` rows from ``first`` on at windows that hold one of
        ``events`` (``(episode, step)`` pairs) somewhere inside; the rows placed (none, and no
        random draw, without events or share)."""
        n = min(int(round(share * len(which))), len(which) - first) if len(events) else 0
        if n > 0:
            picked = events[self.rng.integers(0, len(events), n)]
            which[first : first + n] = picked[:, 0]
            offsets = self.rng.integers(0, self.seq_len, n)
            starts[first : first + n] = np.maximum(picked[:, 1] - offsets, 0)
        return n

    def window(self, which: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
        """The windows starting at ``starts`` of episodes ``which``."""
        L = self.seq_len
        observations, actions, rewards, terminated, mask = [], [], [], [], []
        for e_idx, s in zip(which, starts, strict=True):
            ep = self.episodes[e_idx]
            T = len(ep)
            pos = np.minimum(np.arange(s, s + L + 1), T)
            step = np.minimum(np.arange(s, s + L), T - 1)
            valid = np.arange(s, s + L) < T
            if self.latents is None:
                observations.append(stack_frames(ep.frames, pos, self.stack))
            else:
                observations.append(self.latents[e_idx][pos])
            actions.append(ep.actions[step])
            rewards.append(np.where(valid, ep.rewards[step], 0.0))
            terminated.append(valid & self.ends[e_idx][step])
            mask.append(valid)
        return {
            "frames" if self.latents is None else "latents": np.stack(observations),
            "actions": np.stack(actions),
            "rewards": np.stack(rewards).astype(np.float32),
            "terminated": np.stack(terminated),
            "mask": np.stack(mask),
        }


def _events(marks: list[np.ndarray]) -> np.ndarray:
    """``(N, 2)`` (episode, step) pairs of the True entries of per-episode ``marks``."""
    pairs = [(i, t) for i, m in enumerate(marks) for t in np.flatnonzero(m)]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@dataclass
class StartBank:
    """Real starts of dream episodes: ``context`` consecutive observations and the actions
    between them, stored as single frames."""

    frames: np.ndarray
    """``(N, context + stack - 1, *frame)`` single frames covering the context's stacks."""
    actions: np.ndarray
    """``(N, context - 1)`` int64 actions (``(N, context - 1, n)`` float32 continuous ones)
    taken between the context observations."""
    stack: int
    """Frames per observation."""
    resets: int = 0
    """How many entries, the last ones, start where a real episode starts (the context is
    the first observations after a real reset); the others start anywhere in the data."""

    @property
    def size(self) -> int:
        return len(self.frames)

    def require_resets(self, reset_share: float) -> None:
        """A :class:`ConfigError` if ``reset_share`` asks for episode starts this bank lacks."""
        if reset_share > 0 and self.resets == 0:
            raise ConfigError(
                f"reset_share={reset_share} draws dream starts from real episode starts, but "
                "this checkpoint's start bank holds none (it was saved before dreamenv kept "
                "them); continue its fit (a larger --epochs: the continued fit saves a new bank), "
                "or use reset_share=0."
            )

    def pick(self, u: torch.Tensor, reset_share: float = 0.0) -> torch.Tensor:
        """Entries for uniforms ``u`` in [0, 1): with ``reset_share`` 0 any entry but the
        reset ones, with 1 only reset ones, in between a ``reset_share`` of draws (the
        smallest ``u``) from the reset entries. One uniform a draw, so a draw with
        ``reset_share`` 0 is the one an older bank without reset entries gives.

        Example:
            >>> bank.pick(torch.rand(16), reset_share=1.0)  # as the real env's reset
        """
        self.require_resets(reset_share)
        anywhere = self.size - self.resets
        if reset_share <= 0:
            return (u * anywhere).long().clamp_(max=anywhere - 1)
        at_reset = anywhere + (u / reset_share * self.resets).long().clamp_(max=self.resets - 1)
        if reset_share >= 1:
            return at_reset
        rest = ((u - reset_share) / (1 - reset_share) * anywhere).long().clamp_(0, anywhere - 1)
        return torch.where(u < reset_share, at_reset, rest)

    @property
    def context(self) -> int:
        return self.actions.shape[1] + 1

    def observations(self, burn_in: int, starts: np.ndarray | None = None) -> np.ndarray:
        """The last ``burn_in`` stacked observations of ``starts`` (all if None):
        ``(len(starts), burn_in, stack, S, S)`` (colour ``(..., stack * C, S, S)``, state
        ``(..., stack, D)``, as :func:`~dreamenv.envs.atari.stack_frames`)."""
        k, s = self.context, self.stack
        idx = np.arange(k - burn_in, k)[:, None] + np.arange(s)[None]
        frames = self.frames if starts is None else self.frames[starts]
        return merge_stack(frames[:, idx], frames.ndim - 2)


def build_start_bank(
    episodes: list[Episode], size: int, context: int, stack: int, seed: int = 0
) -> StartBank:
    """``size`` random starts (with ``context`` observations of history) from ``episodes``,
    then the start of each episode that begins at a reset (not :attr:`Episode.continued`;
    at most ``size`` of them, drawn at random), as the :attr:`StartBank.resets` entries."""
    usable = [e for e in episodes if len(e) >= context]
    if not usable:
        raise DatasetError(
            f"No episode has the {context} steps a start context needs; collect more data "
            "or lower the start context."
        )
    rng = np.random.default_rng(seed)
    lengths = np.array([len(e) - context + 1 for e in usable])
    which = rng.choice(len(usable), size=size, p=lengths / lengths.sum())
    frames, actions = [], []
    for i in which:
        ep = usable[i]
        t = int(rng.integers(context - 1, len(ep)))  # the current observation's position
        first = t - context + 1
        pos = np.clip(np.arange(first - stack + 1, t + 1), 0, None)
        frames.append(ep.frames[pos])
        actions.append(ep.actions[first:t])
    firsts = np.array([i for i, e in enumerate(usable) if not e.continued], dtype=np.int64)
    if len(firsts) > size:
        firsts = np.sort(np.random.default_rng([seed, 1]).choice(firsts, size, replace=False))
    pos = np.clip(np.arange(1 - stack, context), 0, None)  # an episode's first context
    for i in firsts:
        frames.append(usable[i].frames[pos])
        actions.append(usable[i].actions[: context - 1])
    return StartBank(np.stack(frames), np.stack(actions), stack, resets=len(firsts))
