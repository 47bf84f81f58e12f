"""The real game emitting a checkpoint's latent observations: ``Real-v0`` and its vector env.

The real env runs the checkpoint's own env spec through its real vector env (ale-py's
native one for an Atari game, gymnasium's for any other env:
:func:`~dreamenv.envs.sources.make_source_vector`), stacks frames exactly as training
did, and encodes them with the checkpoint's encoder. Its observation and action spaces are those of the dream env
of the same checkpoint and ``obs_type``, so an agent trained in the dream plays here
unchanged. Rewards are the game's real, unclipped rewards; episodes are whole games.
With ``obs_type="pixels"`` the observations are the real stacked frames.

Example:
    >>> real = gym.make("dreamenv/Real-v0", checkpoint="runs/pong/model")
    >>> obs, info = real.reset(seed=0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.atari import FrameStacker, merge_stack
from dreamenv.envs.autoreset import (
    AutoresetVectorEnv,
    StepResult,
)
from dreamenv.envs.core import (
    check_num_envs,
    check_render_mode,
    resolve_checkpoint,
    single_action,
    validate_actions,
)
from dreamenv.envs.sources import frames_to_rgb, make_source_vector
from dreamenv.envs.spec import EnvSpec
from dreamenv.errors import ConfigError


class LatentFilter:
    """Follows ``num_envs`` real games with a checkpoint's model and emits its observations.

    Every family updates its state with every real observation and action through
    :meth:`~dreamenv.models.base.WorldModel.filter`, so the real env emits the same kind of
    observation as the dream (the discrete model's is the encoding of each stacked frame;
    state-space models, RSSM and MDN-RNN observe their state) and a planner starting from
    the real game (:meth:`~dreamenv.imagine.Imagination.from_real_env`) gets the state the
    game led to. ``"pixels"`` are the real frames.
    """

    def __init__(
        self, checkpoint: Checkpoint, obs_type: str | None, num_envs: int, device: str = "cpu"
    ) -> None:
        obs_type = obs_type or checkpoint.model.obs_types[0]
        checkpoint.model.check_obs_type(obs_type)
        self.model = checkpoint.model
        self.obs_type = obs_type
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.space = self.model.observation_space(obs_type)
        self.frame_ndim = len(self.model.spec.single_frame_shape)
        self.action_dtype = torch.int64 if self.model.actions.kind == "discrete" else torch.float32
        self.latent: torch.Tensor | None = None
        self.state: tuple[torch.Tensor, ...] = ()
        self.follows_state = self.model.observes_state
        """Whether :meth:`step` updates ``state`` (always where the observations need it;
        for the discrete family from :meth:`follow_state` on: stepping its ConvLSTM costs
        about a third of ``Real-v0``'s steps per second, for a state an SB3 agent never reads)."""
        self.fresh = np.ones(num_envs, dtype=bool)
        """Envs not stepped since their game began (their state is the reset's)."""

    @torch.inference_mode()
    def reset(self, frames: np.ndarray, index: np.ndarray | None = None) -> None:
        """Start following new games in envs ``index`` (all if None) from their first
        stacked frames ``frames`` ``(len(index), stack, S, S)``."""
        if self.obs_type == "pixels":
            return
        frames = merge_stack(frames, self.frame_ndim)
        embedding = self.model.encode(torch.as_tensor(frames, device=self.device))
        no_actions = torch.zeros(
            len(frames), 0, *self.model.actions.shape, dtype=self.action_dtype, device=self.device
        )
        latent, state = self.model.initial_state(embedding[:, None], no_actions)
        self.fresh[slice(None) if index is None else index] = True
        if index is None or self.latent is None:
            self.latent, self.state = latent, tuple(state)
            return
        idx = torch.as_tensor(index, device=self.device)
        self.latent[idx] = latent
        for old, new in zip(self.state, state, strict=True):
            old[idx] = new

    @torch.inference_mode()
    def step(self, frames: np.ndarray, actions: np.ndarray) -> None:
        """Every env took ``actions`` and now shows the stacked ``frames``."""
        if self.obs_type == "pixels":
            return
        frames = merge_stack(frames, self.frame_ndim)
        embedding = self.model.encode(torch.as_tensor(frames, device=self.device))
        action = torch.as_tensor(actions, dtype=self.action_dtype, device=self.device)
        assert self.latent is not None, "reset() starts the games before step()"
        self.fresh[:] = False
        if self.follows_state:
            self.latent, self.state = self.model.filter(self.state, self.latent, action, embedding)
        else:
            self.latent = embedding

    def follow_state(self) -> None:
        """Update ``state`` with every real step from now on (a planner starts from it).

        Raises:
            ConfigError: a game has been stepped without it (its state is not the one the
                game led to): start planning right after ``reset()``.
        """
        if self.follows_state or self.obs_type == "pixels":
            return
        if not self.fresh.all():
            raise ConfigError(
                f"this Real-v0 env has followed only the {self.model.family!r} model's "
                f"observations, not its state, in envs {np.flatnonzero(~self.fresh).tolist()} "
                "since their games began; start planning from it (from_real_env()) right "
                "after reset(), and it follows the state from then on."
            )
        self.follows_state = True

    @torch.inference_mode()
    def observe(self, frames: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """Observations of every env (or of ``index``) as a fresh array that nothing here
        writes to later; ``frames`` are the current stacks (for ``"pixels"``)."""
        if self.obs_type == "pixels":
            frames = merge_stack(frames, self.frame_ndim)
            return np.array(frames if index is None else frames[index], copy=True)
        assert self.latent is not None, "reset() starts the games before observe()"
        latent = self.latent if index is None else self.latent[torch.as_tensor(index)]
        obs = self.model.observation(latent, self.obs_type)
        return np.array(obs.cpu().numpy(), dtype=self.space.dtype, copy=True)


class RealObservations:
    """Turns the real frames of ``num_envs`` games into agent observations: stacks them as
    training did and follows each game with the checkpoint's model (:class:`LatentFilter`).

    The one path from real frames to what an agent sees, used by ``Real-v0`` and by
    collection with an agent (:class:`~dreamenv.sb3.agent_policy.AgentPolicy`). Without a
    checkpoint the observations are the stacked frames.

    Example:
        >>> obs = RealObservations(8, spec, checkpoint)
        >>> obs.start(first_frames)             # every game begins
        >>> obs.advance(frames, actions)        # every game took ``actions``
        >>> obs.start(new_frames, done)         # the games of ``done`` begin anew
        >>> agent_obs = obs.observe()
    """

    def __init__(
        self,
        num_envs: int,
        spec: EnvSpec,
        checkpoint: Checkpoint | None = None,
        obs_type: str | None = None,
        device: str = "cpu",
    ) -> None:
        self.num_envs = num_envs
        self.stacker = FrameStacker(
            num_envs, spec.frame_stack, spec.single_frame_shape, spec.frame_dtype
        )
        self.filter = (
            None if checkpoint is None else LatentFilter(checkpoint, obs_type, num_envs, device)
        )

    @property
    def stacks(self) -> np.ndarray:
        """The current stacked frames ``(num_envs, stack, *frame)`` (the live buffer)."""
        return self.stacker.buffer

    def start(self, frames: np.ndarray, mask: np.ndarray | None = None) -> None:
        """The games of ``mask`` (all if None) begin, showing ``frames[mask]`` ``(S, S)``."""
        self.stacker.reset(frames, mask)
        if self.filter is not None:
            index = None if mask is None else np.flatnonzero(mask)
            stacks = self.stacker.buffer if index is None else self.stacker.buffer[index]
            self.filter.reset(stacks, index)

    def advance(self, frames: np.ndarray, actions: np.ndarray) -> None:
        """Every game took ``actions`` and now shows ``frames`` ``(num_envs, S, S)``."""
        self.stacker.push(frames)
        if self.filter is not None:
            self.filter.step(self.stacker.buffer, actions)

    def observe(self, index: np.ndarray | None = None) -> np.ndarray:
        """The agent observations of every game (or of ``index``), a fresh array."""
        if self.filter is None:
            stacks = self.stacker.view()
            return np.array(stacks if index is None else stacks[index], copy=True)
        return self.filter.observe(self.stacker.buffer, index)


def observations_for(policy: Any, num_envs: int, spec: EnvSpec) -> RealObservations:
    """The observation path a collection policy acts on: its own (``policy.observations``,
    as :class:`~dreamenv.sb3.agent_policy.AgentPolicy` has) or the stacked frames."""
    make = getattr(policy, "observations", None)
    return make(num_envs, spec) if make is not None else RealObservations(num_envs, spec)


def _ale_seed(seed: int | None, generator: np.random.Generator | None = None) -> int:
    gen = generator if generator is not None else seeding.np_random(seed)[0]
    return int(gen.integers(0, 2**31 - 1))


class RealVectorEnv(AutoresetVectorEnv):
    """``num_envs`` real games with the checkpoint's preprocessing and model.

    For a jumpy model (``jump = c > 1``) one step applies a chunk of ``c`` actions, sums
    their rewards and observes the frame after the last; a game that ends inside a chunk
    reports its terminal observation, and its next game starts with no-ops for the rest of
    that chunk (and, in ``NextStep`` mode, of the next one: the no-ops that start a game).

    Args:
        checkpoint: the checkpoint directory (or a loaded checkpoint).
        num_envs: games run together (ale-py's threaded vector env).
        obs_type: as the dream env's (None: the family's default).
        device: where the model runs.
        autoreset_mode: ``NextStep`` (default), ``SameStep`` or ``Disabled``.
        render_mode: ``"rgb_array"`` (the newest preprocessed frame) or None.
        game: if given, the game the checkpoint must model.
    """

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": 15,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | None = None,
        num_envs: int = 1,
        *,
        obs_type: str | None = None,
        device: str = "cpu",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        game: str | None = None,
    ) -> None:
        check_num_envs(num_envs)
        check_render_mode(render_mode)
        self.checkpoint = resolve_checkpoint(checkpoint, device, game)
        self.num_envs = int(num_envs)
        spec = self.checkpoint.spec
        self.observations = RealObservations(self.num_envs, spec, self.checkpoint, obs_type, device)
        self.jump = self.checkpoint.model.jump
        self.render_mode = render_mode
        self._init_autoreset(autoreset_mode)
        # ale-py restarts an ended game itself: in the same step (its SameStep, which a
        # jumpy model's chunks always use) or in the next (its NextStep)
        self._ale_same_step = self.autoreset_mode == AutoresetMode.SAME_STEP or self.jump > 1
        self.ale = make_source_vector(
            spec, self.num_envs, autoreset_mode="SameStep" if self._ale_same_step else "NextStep"
        )
        assert self.observations.filter is not None
        self.single_observation_space = self.observations.filter.space
        self.single_action_space = self.checkpoint.model.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._next_frames: np.ndarray | None = None  # first frames of games ale restarted
        self._chunk_stacks: np.ndarray | None = None  # a chunk's observed stacks (jumpy)

    def reset_with_ale_seeds(
        self, ale_seeds: list[int], mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset with explicit ale-py seeds (one per env reset)."""
        options = None if mask is None else {"reset_mask": mask}
        self._ale_seeds = list(ale_seeds)
        try:
            return super().reset(options=options)
        finally:
            self._ale_seeds = None

    # --- the engine (the rules are AutoresetVectorEnv's) ---------------------------------
    _ale_seeds: list[int] | None = None

    def _reset_envs(self, index: np.ndarray, seeds: list[int | None]) -> dict[str, Any]:
        ale_seeds = self._ale_seeds or [
            _ale_seed(s) if s is not None else _ale_seed(None, self.np_random) for s in seeds
        ]
        mask = None
        if len(index) < self.num_envs:
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[index] = True
        ale_options = None if mask is None else {"reset_mask": mask}
        obs, info = self.ale.reset(seed=np.asarray(ale_seeds, dtype=np.int64), options=ale_options)
        self.observations.start(obs[:, 0], mask)
        if self._chunk_stacks is not None and mask is not None:
            self._chunk_stacks[mask] = self.observations.stacks[mask]
        else:
            self._chunk_stacks = None
        return {"lives": info["lives"]}

    def _check_actions(self, actions: Any) -> np.ndarray:
        return validate_actions(
            actions,
            self.num_envs,
            self.checkpoint.action_meanings,
            self.jump,
            self.checkpoint.model.actions,
        )

    def _advance(self, actions: np.ndarray, restarting: np.ndarray) -> StepResult:
        if self.jump > 1:
            return self._advance_chunks(actions, restarting)
        obs, reward, terminated, truncated, info = self.ale.step(actions)
        frames = obs[:, 0]
        if self._ale_same_step:
            done = terminated | truncated
            last = frames.copy()
            if done.any():
                last[done] = info["final_obs"][done, 0]
            self.observations.advance(last, actions)
            self._next_frames = frames
        else:
            self.observations.advance(frames, actions)
            if restarting.any():  # ale-py restarted these games in this step
                self.observations.start(frames, restarting)
        return reward, terminated, truncated, {"lives": info["lives"]}

    def _autorestart(self, index: np.ndarray) -> None:
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[index] = True
        if self.jump > 1:  # the stacker already shows the new games (no-ops after the end)
            self._chunk_stacks = self._chunk_stacks_after_restart(mask)
        else:
            assert self._next_frames is not None
            self.observations.start(self._next_frames, mask)

    def _observe(self, index: np.ndarray | None = None) -> np.ndarray:
        stacks = self._chunk_stacks if self._chunk_stacks is not None else self.observations.stacks
        assert self.observations.filter is not None
        return self.observations.filter.observe(stacks, index)

    def _advance_chunks(self, chunks: np.ndarray, pending: np.ndarray) -> StepResult:
        """``jump`` real steps of every game (ale-py autoresets in the same step here); the
        games of ``pending`` (NextStep) play no-ops and start anew after the chunk."""
        stacker, filt = self.observations.stacker, self.observations.filter
        assert filt is not None
        n = self.num_envs
        done = np.zeros(n, dtype=bool)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        reward = np.zeros(n, dtype=np.float64)
        last_stacks = stacker.buffer.copy()
        lives = None
        for k in range(self.jump):
            live = ~(done | pending)
            chunk = chunks[:, k]  # (N,) discrete or (N, n) continuous actions
            mask = live if chunk.ndim == 1 else live[:, None]
            action = np.where(mask, chunk, 0).astype(chunk.dtype)  # ended games: no-ops
            obs, r, te, tr, info = self.ale.step(action)
            lives = info["lives"]
            frames = obs[:, 0]
            reward[live] += r[live]
            ended_now = te | tr
            new = ended_now & live
            if ended_now.any():
                last = frames.copy()
                last[ended_now] = info["final_obs"][ended_now, 0]
                last_stacks[new] = stacker.peek(last)[new]
            stacker.push(frames)
            if ended_now.any():
                stacker.reset(frames, ended_now)
            terminated[new], truncated[new] = te[new], tr[new]
            done |= new
        stacks = stacker.buffer.copy()
        stacks[done] = last_stacks[done]
        filt.step(stacks, chunks)
        self._chunk_stacks = stacks
        if pending.any():
            self._chunk_stacks = self._chunk_stacks_after_restart(pending)
        return reward, terminated, truncated, {"lives": lives}

    def _chunk_stacks_after_restart(self, mask: np.ndarray) -> np.ndarray:
        """The chunk's stacks with the games of ``mask`` restarted from the stacker's."""
        filt = self.observations.filter
        assert filt is not None and self._chunk_stacks is not None
        buffer = self.observations.stacker.buffer
        filt.reset(buffer[mask], np.flatnonzero(mask))
        stacks = self._chunk_stacks.copy()
        stacks[mask] = buffer[mask]
        return stacks

    def render(self) -> np.ndarray | None:  # type: ignore[override]  # one batch array
        """The newest preprocessed frame of every game, ``(num_envs, S, S, 3)`` uint8 (for a
        state spec, the decoded frame of the model: see ``Dream-v0``'s render)."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'.")
            return None
        return frames_to_rgb(self.observations.stacks[:, -1])

    def close_extras(self, **kwargs: Any) -> None:
        self.ale.close()


class RealEnv(gym.Env):
    """One real game emitting the checkpoint's observations (the single-env ``Real-v0``).

    Takes the arguments of :class:`RealVectorEnv` except ``num_envs`` and ``autoreset_mode``.
    ``reset(seed=s)`` plays the same game as env 0 of a :class:`RealVectorEnv` reset with
    ``seed=s``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | None = None,
        *,
        obs_type: str | None = None,
        device: str = "cpu",
        render_mode: str | None = None,
        game: str | None = None,
    ) -> None:
        self.vec = RealVectorEnv(
            checkpoint, 1, obs_type=obs_type, device=device, render_mode=render_mode, game=game
        )
        self.render_mode = render_mode
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new game."""
        super().reset(seed=seed)
        obs, info = self.vec.reset_with_ale_seeds([_ale_seed(None, self.np_random)])
        return obs[0], {"lives": int(info["lives"][0])}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One real step."""
        arr = single_action(action, self.action_space)
        obs, reward, terminated, truncated, info = self.vec.step(arr[None])
        return (
            obs[0],
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            {"lives": int(info["lives"][0])},
        )

    def render(self) -> np.ndarray | None:
        """The newest preprocessed frame, ``(S, S, 3)`` uint8."""
        frames = self.vec.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        self.vec.close()
