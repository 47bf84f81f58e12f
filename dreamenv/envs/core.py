"""The batched dream engine shared by :class:`DreamEnv` (a batch of one) and
:class:`DreamVectorEnv`: model state, seeding, horizon, start bank, validation.

One call of :meth:`DreamCore.step` advances every env in one forward pass of the world
model. The engine holds no Python loop over envs: per-env randomness comes from
:class:`~dreamenv.random_streams.BatchRandom`, per-env resets are index operations.

Example:
    >>> core = DreamCore("runs/pong/model", num_envs=16)
    >>> core.seed(np.arange(16), [key_from_seed(s) for s in range(16)])
    >>> core.reset_envs(np.arange(16))
    >>> reward, terminated, truncated = core.step(torch.zeros(16, dtype=torch.long))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dreamenv.checkpoint import Checkpoint, load_checkpoint
from dreamenv.envs.options import DreamOptions, check_device
from dreamenv.envs.sources import frames_to_rgb, newest_frames
from dreamenv.envs.spec import ActionSpec
from dreamenv.errors import ConfigError, InvalidActionError, StateError
from dreamenv.precision import autocast
from dreamenv.random_streams import BatchRandom


def check_render_mode(render_mode: str | None) -> str | None:
    """``render_mode`` if the envs support it (None or ``"rgb_array"``), else a ConfigError."""
    if render_mode not in (None, "rgb_array"):
        raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
    return render_mode


def check_num_envs(num_envs: int) -> int:
    """``num_envs`` as an int if it is positive, else a ConfigError."""
    if not (isinstance(num_envs, (int, np.integer)) and num_envs >= 1):
        raise ConfigError(f"num_envs must be a positive int, got {num_envs!r}.")
    return int(num_envs)


def resolve_checkpoint(
    checkpoint: str | Path | Checkpoint | None, device: str, game: str | None
) -> Checkpoint:
    """A loaded checkpoint from a path (or one already loaded, moved to ``device``)."""
    check_device(device)
    if checkpoint is None:
        raise ConfigError(
            "checkpoint is required: gym.make('dreamenv/Dream-v0', checkpoint='runs/pong/model')."
        )
    if isinstance(checkpoint, Checkpoint):
        checkpoint.model.to(device)
        return checkpoint
    return load_checkpoint(checkpoint, device, game=game)


class DreamCore:
    """The batched engine: ``num_envs`` imagined episodes advanced together."""

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | None,
        num_envs: int = 1,
        options: DreamOptions | None = None,
        game: str | None = None,
    ) -> None:
        options = options or DreamOptions()
        check_num_envs(num_envs)
        ckpt = resolve_checkpoint(checkpoint, options.device, game)
        options = options.resolved(ckpt.start_bank.context, ckpt.model.obs_types)
        ckpt.start_bank.require_resets(options.reset_share)
        self.checkpoint = ckpt
        self.model = ckpt.model
        self.options = options
        self.num_envs = int(num_envs)
        self.device = torch.device(options.device)
        assert options.obs_type is not None  # resolved() chose the family's default
        self.obs_type: str = options.obs_type
        self.observation_space = self.model.observation_space(self.obs_type)
        self.action_space = self.model.action_space
        self.rewards = self.model.reward_values()
        self.rng = BatchRandom(self.num_envs, self.device)
        self.bank_size = ckpt.start_bank.size
        self._bank_embeddings: torch.Tensor | None = None  # encoded lazily, start by start
        self._bank_encoded = torch.zeros(self.bank_size, dtype=torch.bool, device=self.device)
        self.bank_actions = torch.as_tensor(
            ckpt.start_bank.actions[:, ckpt.start_bank.context - options.burn_in :],
            device=self.device,
        )
        self._latent: torch.Tensor | None = None
        self._state: tuple[torch.Tensor, ...] | None = None
        self.steps = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    @property
    def started(self) -> bool:
        """Whether the first reset happened (the latents and model state exist)."""
        return self._state is not None

    @property
    def latent(self) -> torch.Tensor:
        """The latents of every env (after the first reset)."""
        if self._latent is None:
            raise StateError("The dream env has no state yet; call reset() first.")
        return self._latent

    @property
    def state(self) -> tuple[torch.Tensor, ...]:
        """The model state of every env (after the first reset)."""
        if self._state is None:
            raise StateError("The dream env has no state yet; call reset() first.")
        return self._state

    def bank_embeddings(self, starts: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(len(starts), burn_in, ...)`` of start-bank entries; each entry is
        encoded once, on first use, and cached."""
        todo = torch.unique(starts[~self._bank_encoded[starts]])
        if len(todo):
            obs = self.checkpoint.start_bank.observations(self.options.burn_in, todo.cpu().numpy())
            flat = torch.as_tensor(obs.reshape(-1, *obs.shape[2:]), device=self.device)
            embeddings = self.model.encode(flat)
            embeddings = embeddings.view(len(todo), self.options.burn_in, *embeddings.shape[1:])
            if self._bank_embeddings is None:
                shape = (self.bank_size, *embeddings.shape[1:])
                self._bank_embeddings = torch.zeros(
                    shape, dtype=embeddings.dtype, device=self.device
                )
            self._bank_embeddings[todo] = embeddings
            self._bank_encoded[todo] = True
        assert self._bank_embeddings is not None  # every start of ``starts`` is encoded
        return self._bank_embeddings[starts]

    # --- episodes ----------------------------------------------------------------------
    def seed(self, index: np.ndarray, keys: list[int]) -> None:
        """Restart the random streams of envs ``index`` from ``keys``."""
        self.rng.set_keys(torch.as_tensor(index, device=self.device), keys)

    @torch.inference_mode()
    def reset_envs(self, index: np.ndarray) -> None:
        """Start new episodes in envs ``index`` from random real contexts of the start bank."""
        idx = torch.as_tensor(index, dtype=torch.int64, device=self.device)
        u = self.rng.uniform((), idx)
        starts = self.checkpoint.start_bank.pick(u, self.options.reset_share)
        latent, state = self.model.initial_state(
            self.bank_embeddings(starts), self.bank_actions[starts]
        )
        if not self.started:
            if len(idx) != self.num_envs:
                raise StateError(
                    "The first reset must reset every env; call reset() without a mask."
                )
            self._latent = latent.clone()
            self._state = tuple(s.clone() for s in state)
        else:
            self.latent[idx] = latent
            for old, new in zip(self.state, state, strict=True):
                old[idx] = new
        self.steps[idx] = 0

    def check_actions(self, actions: Any) -> torch.Tensor:
        """``actions`` as a validated tensor: int64 ``(num_envs,)``, or float32 ``(num_envs, n)``
        of a continuous action space."""
        if not self.started:
            raise StateError("Cannot call step() before reset(); call reset() first.")
        arr = validate_actions(
            actions,
            self.num_envs,
            self.checkpoint.action_meanings,
            self.model.jump,
            self.model.actions,
        )
        return torch.as_tensor(arr, device=self.device)

    @torch.inference_mode()
    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance every env one imagined step: returns reward, terminated, truncated."""
        with autocast(self.options.precision, self.device):
            pred = self.model.step(
                self.state, self.latent, actions, self.rng, self.options.temperature
            )
        u = self.rng.uniform((2,))
        probs = torch.softmax(pred.reward_logits.float(), -1)
        mode = self.options.reward_mode
        if mode == "sample":
            which = (probs.cumsum(-1) < u[:, :1]).sum(-1).clamp_(max=len(self.rewards) - 1)
            reward = self.rewards[which]
        elif mode == "mean":
            reward = probs @ self.rewards
        else:
            reward = self.rewards[probs.argmax(-1)]
        if self.options.use_termination:
            terminated = u[:, 1] < torch.sigmoid(pred.termination_logits.float())
        else:
            terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self._latent = pred.next_latent
        self._state = tuple(s.float() if s.is_floating_point() else s for s in pred.state)
        self.steps += 1
        truncated = self.steps >= self.options.horizon
        return reward, terminated, truncated

    # --- observations --------------------------------------------------------------------
    @torch.inference_mode()
    def observe(self, index: np.ndarray | None = None) -> np.ndarray:
        """Observations of all envs (or of ``index``) as numpy of the space's dtype."""
        latent = (
            self.latent
            if index is None
            else self.latent[torch.as_tensor(index, device=self.device)]
        )
        obs = self.model.observation(latent, self.obs_type)
        return np.array(obs.cpu().numpy(), dtype=self.observation_space.dtype, copy=True)

    @torch.inference_mode()
    def render_frames(self) -> np.ndarray:
        """The newest decoded frame of every env as RGB ``(num_envs, S, S, 3)`` uint8 (a
        state model's state drawn as bars, see :func:`~dreamenv.envs.sources.frames_to_rgb`)."""
        decoded = self.model.decode(self.latent).float().cpu().numpy()
        frames = newest_frames(decoded, self.model.spec)
        return frames_to_rgb(frames if frames.ndim == 2 else frames.astype(np.uint8))

    # --- branching -----------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """A copy of everything that determines the future: latents, model state, step
        counters and random streams. Restore it with :meth:`set_state`."""
        if not self.started:
            raise StateError("get_state() needs a reset env; call reset() first.")
        return {
            "latent": self.latent.clone(),
            "model_state": tuple(s.clone() for s in self.state),
            "steps": self.steps.clone(),
            "rng": self.rng.state_dict(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`get_state` of an env of the same batch size."""
        keys = {"latent", "model_state", "steps", "rng"}
        if not isinstance(state, dict) or set(state) != keys:
            raise StateError(
                f"set_state() takes the dict returned by get_state() (keys {sorted(keys)}), "
                f"got {type(state).__name__}."
            )
        if state["latent"].shape[0] != self.num_envs:
            raise StateError(
                f"set_state() got a state of {state['latent'].shape[0]} envs; this env has "
                f"{self.num_envs}. Use get_state() of an env with the same num_envs."
            )
        self._latent = state["latent"].clone().to(self.device)
        self._state = tuple(s.clone().to(self.device) for s in state["model_state"])
        self.steps = state["steps"].clone().to(self.device)
        self.rng.load_state_dict(state["rng"])


def validate_actions(
    actions: Any,
    num_envs: int,
    meanings: tuple[str, ...],
    jump: int = 1,
    spec: ActionSpec | None = None,
) -> np.ndarray:
    """``actions`` as int64 ``(num_envs,)`` (or ``(num_envs, jump)`` chunks of a jumpy
    model), or an :class:`InvalidActionError` saying why not.

    With a continuous ``spec`` the actions are float32 ``(num_envs, n)`` (chunks ``(num_envs,
    jump, n)``), clipped to the bounds as Stable-Baselines3 clips them (dream and real env
    alike); NaN or infinite values are an error."""
    if spec is not None and spec.kind == "continuous":
        return _validate_box_actions(actions, num_envs, jump, spec)
    arr = np.asarray(actions)
    n = len(meanings)
    shape = (num_envs,) if jump == 1 else (num_envs, jump)
    if arr.shape != shape:
        what = "one per env" if jump == 1 else f"a chunk of {jump} actions per env (jumpy model)"
        raise InvalidActionError(
            f"actions must have shape {shape} ({what}), got shape {arr.shape}."
        )
    if not np.issubdtype(arr.dtype, np.integer):
        integral = np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
        if not (integral and np.all(arr == np.round(arr))):
            raise InvalidActionError(
                f"actions must be integers in [0, {n - 1}], got dtype {arr.dtype} "
                f"(values {arr[:4].tolist()})."
            )
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)]
        raise InvalidActionError(
            f"actions must lie in [0, {n - 1}] (the game has {n} actions: "
            f"{', '.join(meanings)}), got {bad[:4].tolist()}."
        )
    return arr.astype(np.int64)


def _validate_box_actions(actions: Any, num_envs: int, jump: int, spec: ActionSpec) -> np.ndarray:
    arr = np.asarray(actions)
    shape = (num_envs, spec.n) if jump == 1 else (num_envs, jump, spec.n)
    if arr.shape == shape[:-1] and spec.n == 1:
        arr = arr[..., None]
    if arr.shape != shape:
        raise InvalidActionError(
            f"actions must have shape {shape} (one {spec.n}-dimensional continuous action per "
            f"env{'' if jump == 1 else f', chunks of {jump}'}), got shape {arr.shape}."
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidActionError(f"actions must be floats, got dtype {arr.dtype}.")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise InvalidActionError(
            f"actions must be finite, got {arr[~np.isfinite(arr)][:4].tolist()} (NaN or inf)."
        )
    return np.clip(arr, np.array(spec.low, np.float32), np.array(spec.high, np.float32))


def single_action(action: Any, space: gym.Space) -> np.ndarray:
    """The action of a single env as an array of the space's shape (``()`` for ``Discrete``,
    ``(jump,)`` for the chunks of a jumpy model); a wrong shape is an InvalidActionError."""
    arr = np.asarray(action)
    if isinstance(space, gym.spaces.Discrete):
        if arr.shape not in ((), (1,)):
            raise InvalidActionError(
                f"action must be a single int in [0, {space.n - 1}], got shape {arr.shape}."
            )
        return arr.reshape(())
    shape = tuple(space.shape or ())
    if isinstance(space, gym.spaces.Box):
        if arr.shape == () and shape == (1,):
            arr = arr.reshape(1)
        if arr.shape != shape:
            raise InvalidActionError(
                f"action must be an array of shape {shape} (the action space is {space}), "
                f"got shape {arr.shape}."
            )
        return arr
    if arr.shape != shape:
        raise InvalidActionError(
            f"action must be a chunk of {shape[0]} ints (this is a jumpy model: one "
            f"step applies {shape[0]} actions), got shape {arr.shape}."
        )
    return arr
