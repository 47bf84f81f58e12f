"""The real game emitting a checkpoint's latent observations: ``Real-v0`` and its vector env.

The real env runs the checkpoint's own :class:`~dreamenv.envs.atari.AtariSpec` through
ale-py's native vector env, stacks frames exactly as training did, and encodes them with
the checkpoint's encoder. Its observation and action spaces are those of the dream env
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
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.atari import FrameStacker, make_ale_vector
from dreamenv.envs.core import (
    check_num_envs,
    check_render_mode,
    resolve_checkpoint,
    single_action,
    validate_actions,
)
from dreamenv.envs.vector import parse_autoreset_mode, parse_reset_mask, seed_list
from dreamenv.errors import StateError


class LatentFilter:
    """Follows ``num_envs`` real games with a checkpoint's model and emits its observations.

    Stateless families (the discrete model) observe the encoding of each stacked frame;
    families with memory (state-space models, RSSM, MDN-RNN) update their state with every
    real observation through :meth:`~dreamenv.models.base.WorldModel.filter`, so the real
    env emits the same kind of observation as the dream. ``"pixels"`` are the real frames.
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
        self.latent: torch.Tensor | None = None
        self.state: tuple[torch.Tensor, ...] = ()

    @torch.inference_mode()
    def reset(self, frames: np.ndarray, index: np.ndarray | None = None) -> None:
        """Start following new games in envs ``index`` (all if None) from their first
        stacked frames ``frames`` ``(len(index), stack, S, S)``."""
        if self.obs_type == "pixels":
            return
        embedding = self.model.encode(torch.as_tensor(frames, device=self.device))
        no_actions = torch.zeros(len(frames), 0, dtype=torch.int64, device=self.device)
        latent, state = self.model.initial_state(embedding[:, None], no_actions)
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
        embedding = self.model.encode(torch.as_tensor(frames, device=self.device))
        action = torch.as_tensor(actions, dtype=torch.int64, device=self.device)
        self.latent, self.state = self.model.filter(self.state, self.latent, action, embedding)

    @torch.inference_mode()
    def observe(self, frames: np.ndarray) -> np.ndarray:
        """Observations of every env; ``frames`` are the current stacks (for ``"pixels"``)."""
        if self.obs_type == "pixels":
            return frames.copy()
        obs = self.model.observe(self.latent, self.obs_type)
        return obs.cpu().numpy().astype(self.space.dtype, copy=False)


def _ale_seed(seed: int | None, generator: np.random.Generator | None = None) -> int:
    gen = generator if generator is not None else seeding.np_random(seed)[0]
    return int(gen.integers(0, 2**31 - 1))


class RealVectorEnv(VectorEnv):
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

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

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
        self.filter = LatentFilter(self.checkpoint, obs_type, self.num_envs, device)
        self.jump = self.checkpoint.model.jump
        spec = self.checkpoint.spec
        self.render_mode = render_mode
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP or self.jump > 1
        self.ale = make_ale_vector(
            spec, self.num_envs, autoreset_mode="SameStep" if same_step else "NextStep"
        )
        self.stacker = FrameStacker(self.num_envs, spec.frame_stack, spec.screen_size)
        self.single_observation_space = self.filter.space
        self.single_action_space = self.checkpoint.model.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._ended = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all games, or those of ``options["reset_mask"]``; ``seed`` seeds them."""
        if seed is not None:
            super().reset(seed=seed if isinstance(seed, int) else None)
        mask = parse_reset_mask(options, self.num_envs)
        index = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        seeds = seed_list(seed, self.num_envs, index)
        ale_seeds = [
            _ale_seed(s) if s is not None else _ale_seed(None, self.np_random) for s in seeds
        ]
        return self.reset_with_ale_seeds(ale_seeds, mask)

    def reset_with_ale_seeds(
        self, ale_seeds: list[int], mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset with explicit ale-py seeds (one per env reset)."""
        if mask is not None and not self._started:
            raise StateError("The first reset must reset every env; call reset() without a mask.")
        ale_options = None if mask is None else {"reset_mask": mask}
        obs, info = self.ale.reset(seed=np.asarray(ale_seeds, dtype=np.int64), options=ale_options)
        self.stacker.reset(obs[:, 0], mask)
        index = None if mask is None else np.flatnonzero(mask)
        buffer = self.stacker.buffer
        self.filter.reset(buffer if index is None else buffer[index], index)
        self._ended[slice(None) if mask is None else mask] = False
        self._started = True
        return self.filter.observe(buffer), {"lives": info["lives"]}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One real step of every game (a chunk of ``jump`` steps for a jumpy model)."""
        if not self._started:
            raise StateError("Cannot call step() before reset(); call reset() first.")
        actions = validate_actions(
            actions, self.num_envs, self.checkpoint.action_meanings, self.jump
        )
        if self._ended.any() and self.autoreset_mode == AutoresetMode.DISABLED:
            raise StateError(
                f"envs {np.flatnonzero(self._ended).tolist()} have ended and autoreset_mode is "
                "Disabled; reset them first with reset(options={'reset_mask': mask})."
            )
        if self.jump > 1:
            return self._step_chunks(actions)
        ended = self._ended.copy()
        obs, reward, terminated, truncated, info = self.ale.step(actions)
        frames = obs[:, 0]
        done = terminated | truncated
        infos: dict[str, Any] = {"lives": info["lives"]}
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            last = frames.copy()
            last[done] = info["final_obs"][done, 0]
            self.filter.step(self.stacker.peek(last), actions)
            infos.update(self._final_obs(self.stacker.peek(last), done))
            self.stacker.push(frames)
            self.stacker.reset(frames, done)
            self.filter.reset(self.stacker.buffer[done], np.flatnonzero(done))
        else:
            self.stacker.push(frames)
            if ended.any():  # NextStep: ale-py restarted these games this step
                self.stacker.reset(frames, ended)
            self.filter.step(self.stacker.buffer, actions)
            if ended.any():
                self.filter.reset(self.stacker.buffer[ended], np.flatnonzero(ended))
            self._ended = done
        return (
            self.filter.observe(self.stacker.buffer),
            reward.astype(np.float64),
            terminated,
            truncated,
            infos,
        )

    def _final_obs(self, stacks: np.ndarray, done: np.ndarray) -> dict[str, Any]:
        """SameStep's info entries for the envs ``done``, whose last stacks are ``stacks``."""
        final_obs = self.filter.observe(stacks)
        final = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(done):
            final[i] = final_obs[i]
        return {
            "final_obs": final,
            "_final_obs": done.copy(),
            "final_info": {},
            "_final_info": done.copy(),
        }

    def _step_chunks(
        self, chunks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """``jump`` real steps of every game (ale-py autoresets in the same step here)."""
        n = self.num_envs
        pending = self._ended.copy()  # NextStep: games that ended last step start anew now
        done = np.zeros(n, dtype=bool)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        reward = np.zeros(n, dtype=np.float64)
        last_stacks = self.stacker.buffer.copy()
        lives = None
        for k in range(self.jump):
            live = ~(done | pending)
            action = np.where(live, chunks[:, k], 0)
            obs, r, te, tr, info = self.ale.step(action.astype(np.int64))
            lives = info["lives"]
            frames = obs[:, 0]
            reward[live] += r[live]
            ended_now = te | tr
            new = ended_now & live
            if ended_now.any():
                last = frames.copy()
                last[ended_now] = info["final_obs"][ended_now, 0]
                last_stacks[new] = self.stacker.peek(last)[new]
            self.stacker.push(frames)
            if ended_now.any():
                self.stacker.reset(frames, ended_now)
            terminated[new], truncated[new] = te[new], tr[new]
            done |= new
        stacks = self.stacker.buffer.copy()
        stacks[done] = last_stacks[done]
        self.filter.step(stacks, chunks)
        infos: dict[str, Any] = {"lives": lives}
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            if done.any():
                infos.update(self._final_obs(stacks, done))
            restart = done
            self._ended[:] = False
        else:
            restart = pending
            self._ended = done
        if restart.any():
            self.filter.reset(self.stacker.buffer[restart], np.flatnonzero(restart))
            stacks[restart] = self.stacker.buffer[restart]
        return self.filter.observe(stacks), reward, terminated, truncated, infos

    def render(self) -> np.ndarray | None:
        """The newest preprocessed frame of every game, ``(num_envs, S, S, 3)`` uint8."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'.")
            return None
        return np.repeat(self.stacker.buffer[:, -1, :, :, None], 3, axis=-1)

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
