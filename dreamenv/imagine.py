"""Imagined rollouts as torch tensors, for agents that are not gymnasium agents.

A planner, an actor-critic that learns through the model (Dreamer) or any torch code rolls a
batch of imagined trajectories out of a world model with :class:`Imagination`: from real
contexts (the checkpoint's start bank as the dream env draws them, given real observations,
or the model state a ``Real-v0`` env holds), under a torch policy ``obs -> action`` or a
given action sequence. Everything stays on the model's device: the loop has no numpy and no
host sync (no ``.item()``, ``.cpu()``, ``float(tensor)``, no Python ``if`` on a tensor), so
it can run under CUDA graphs.

Randomness: each row of a batch draws from its own stream of a
:class:`~dreamenv.random_streams.BatchRandom`, keyed as the dream envs key theirs (row ``i``
of seed ``s`` as an env reset with ``seed=s + i``), and the draws are the dream env's: the
model's :meth:`~dreamenv.models.base.WorldModel.step`, then two uniforms for the reward and
the ending. So with the same seed and actions a rollout from the start bank reproduces
``Dream-v0``'s (``reward_mode``, ``use_termination=False``). A :class:`Start` is never
changed by a rollout: rolling out twice from it gives the same trajectory; the trajectory's
:attr:`Rollout.final` continues the streams. :meth:`Imagination.fan_out` repeats each row K
times with K fresh streams (branches drawn from the row's own stream), so the K branches are
independent and reproducible.

Gradients flow through the dynamics where the family's step is differentiable (unless
``grad=False``):

- ``ensemble``: fully; the next state is ``mean + std * noise`` (reparameterised), the
  rewards and endings are functions of it. The member each row follows is a discrete draw.
- ``rssm``: through the deterministic GRU path and, with Gaussian stochastic states,
  through the reparameterised sample; categorical stochastic states are sampled without a
  straight-through estimator (no gradient through the sample).
- ``discrete``, ``mdnrnn``, ``ssm``, ``pixel_ar``: the sampled latents (code indices,
  mixture draws, pixels) carry no gradient; the recurrent state and the reward and
  termination heads do, so a reward still has a gradient with respect to the actions of
  the same and earlier steps wherever the family feeds them into its state.

Example:
    >>> imagination = Imagination("runs/pendulum/model")
    >>> start = imagination.from_start_bank(batch=64, seed=0)
    >>> policy = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Tanh())
    >>> rollout = imagination.rollout(start, horizon=15, policy=lambda s: 2 * policy(s))
    >>> rollout.returns().mean().backward()          # gradients reach the policy
    >>> branches = imagination.fan_out(start, 8)     # 64 * 8 rows, 8 branches per start
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from dreamenv.checkpoint import Checkpoint, load_checkpoint
from dreamenv.envs.options import check_reset_share
from dreamenv.errors import ConfigError
from dreamenv.models.base import State, WorldModel
from dreamenv.precision import Precision, autocast, check_precision
from dreamenv.random_streams import BatchRandom, key_from_seed

Policy = Callable[[torch.Tensor], torch.Tensor]
"""A torch policy: a batch of observations (or latents) to a batch of actions."""

REWARD_MODES = ("mean", "sample", "mode")
TERMINATION_MODES = ("probability", "sample")


@dataclass(frozen=True)
class ImagineConfig:
    """How :class:`Imagination` rolls out (the dream env's options, as tensors)."""

    temperature: float = 1.0
    """Sampling temperature of the model's transitions (1: as trained; 0: its mode)."""
    reward_mode: Literal["mean", "sample", "mode"] = "mean"
    """Rewards: the reward head's expectation ``softmax(logits) @ reward_values()``
    (differentiable), a sample from it, or its mode."""
    termination_mode: Literal["probability", "sample"] = "probability"
    """``terminations``: the head's probabilities (differentiable), or sampled 0/1 ends."""
    use_termination: bool = True
    """Weight each reward by the chance the episode is still running (``alive``); False:
    ``alive`` is all ones, as a dream env with ``use_termination=False``."""
    obs_type: str | None = None
    """What a policy sees: None the raw latent, else one of the family's ``obs_types``
    (``model.observation(latent, obs_type)``)."""
    precision: Precision = "float32"
    """``"bfloat16"``: the model's steps under bfloat16 autocast (faster on CPUs with AMX or
    AVX-512 BF16); rewards, probabilities and the state stay float32."""
    grad: bool = True
    """Record gradients through the rollout; False runs it under ``torch.inference_mode``."""

    def __post_init__(self) -> None:
        t = self.temperature
        if not (isinstance(t, (int, float)) and not isinstance(t, bool) and np.isfinite(t)):
            raise ConfigError(f"temperature must be a finite number >= 0, got {t!r}.")
        if t < 0:
            raise ConfigError(f"temperature must be a finite number >= 0, got {t!r}.")
        if self.reward_mode not in REWARD_MODES:
            raise ConfigError(
                f"reward_mode must be one of {list(REWARD_MODES)}, got {self.reward_mode!r}."
            )
        if self.termination_mode not in TERMINATION_MODES:
            raise ConfigError(
                f"termination_mode must be one of {list(TERMINATION_MODES)}, got "
                f"{self.termination_mode!r}."
            )
        for name in ("use_termination", "grad"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        check_precision(self.precision)


@dataclass(frozen=True)
class Start:
    """Where a batch of imagined rollouts begins: latents, model states, random streams.

    A rollout copies the streams, so a start can be rolled out again with the same draws.
    """

    latent: torch.Tensor
    """``(B, ...)`` the current latents."""
    state: State
    """The model state, every tensor batch first."""
    rng: BatchRandom
    """One random stream per row."""

    @property
    def batch(self) -> int:
        """Rows ``B``."""
        return int(self.latent.shape[0])


@dataclass(frozen=True)
class Rollout:
    """A batch of imagined trajectories of ``H`` steps (all tensors on the model's device)."""

    latents: torch.Tensor
    """``(B, H+1, ...)``: the start's latent, then the latent after each step."""
    actions: torch.Tensor
    """``(B, H, *action_shape)``: the actions taken (int64 discrete, float32 continuous)."""
    rewards: torch.Tensor
    """``(B, H)`` float32 reward of each transition (as ``reward_mode`` says)."""
    terminations: torch.Tensor
    """``(B, H)`` float32 probability that the episode ends with the transition (or sampled
    0/1 ends with ``termination_mode="sample"``)."""
    alive: torch.Tensor
    """``(B, H)`` float32 probability that the episode is still running when transition
    ``t`` starts: ``prod_{s<t} (1 - terminations[:, s])`` (all ones without
    ``use_termination``)."""
    final: Start
    """The last latent and state with the streams after the rollout, to continue from."""

    @property
    def state(self) -> State:
        """The model state after the last step."""
        return self.final.state

    def returns(self, discount: float = 1.0) -> torch.Tensor:
        """``(B,)``: ``sum_t discount**t * alive_t * reward_t``.

        Example:
            >>> rollout.returns(0.99).mean().backward()
        """
        steps = self.rewards.shape[1]
        weights = discount ** torch.arange(steps, device=self.rewards.device, dtype=torch.float32)
        return (self.rewards * self.alive * weights).sum(-1)


def copy_rng(rng: BatchRandom) -> BatchRandom:
    """A copy of ``rng`` whose streams continue where ``rng``'s are, independently of it."""
    out = BatchRandom(len(rng.keys), rng.device)
    out.load_state_dict(rng.state_dict())
    return out


def seeded_rng(batch: int, seed: int | None, device: torch.device | str) -> BatchRandom:
    """``batch`` streams keyed as the dream envs of ``reset(seed=seed)``: row ``i`` as an
    env reset with ``seed + i`` (``None``: fresh entropy)."""
    rng = BatchRandom(batch, device)
    keys = [key_from_seed(None if seed is None else seed + i) for i in range(batch)]
    rng.set_keys(torch.arange(batch, device=rng.device), keys)
    return rng


def branch_keys(rng: BatchRandom, k: int) -> torch.Tensor:
    """Keys ``(B * k,)`` of ``k`` new streams per stream of ``rng`` (rows ``b * k + j``),
    drawn from it on its device (62 random bits each); advances ``rng`` by one draw."""
    u = rng.uniform((k, 3))  # exact multiples of 2**-23 plus 2**-24: 23 bits each
    bits = (u * float(1 << 23)).long()  # floor recovers the 23-bit integers
    keys = (bits[..., 0] << 39) | (bits[..., 1] << 16) | (bits[..., 2] >> 7)
    return keys.reshape(-1)


def repeat_rows(tensors: State, k: int) -> State:
    """Every tensor's rows repeated ``k`` times each (row ``b`` becomes rows ``b*k..b*k+k-1``)."""
    return tuple(t.repeat_interleave(k, 0) for t in tensors)


def fan_out(state: State, latent: torch.Tensor, k: int) -> tuple[State, torch.Tensor]:
    """``state`` and ``latent`` with each row repeated ``k`` times (``B -> B * k``); give the
    branches their own streams with :func:`branch_keys` (:meth:`Imagination.fan_out` does).

    Example:
        >>> state, latent = fan_out(start.state, start.latent, 8)
    """
    check_count(k, "k")
    return repeat_rows(state, k), latent.repeat_interleave(k, 0)


def check_count(value: Any, name: str) -> int:
    """``value`` if it is a positive int, else a :class:`ConfigError` naming ``name``."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
        raise ConfigError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


class Imagination:
    """Batched imagined rollouts of a checkpoint's world model; see the module docstring.

    Args:
        checkpoint: a checkpoint directory, a loaded :class:`~dreamenv.checkpoint.Checkpoint`
            or a bare :class:`~dreamenv.models.base.WorldModel` (which has no start bank).
        config: how to roll out (:class:`ImagineConfig`).
        device: where a checkpoint directory is loaded (a loaded model stays where it is).

    Example:
        >>> imagination = Imagination("runs/pendulum/model", ImagineConfig(grad=False))
        >>> start = imagination.from_start_bank(16, seed=0)
        >>> rollout = imagination.rollout(start, 20, actions=torch.zeros(16, 20, 1))
        >>> rollout.rewards.shape
        torch.Size([16, 20])
    """

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | WorldModel,
        config: ImagineConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(checkpoint, WorldModel):
            self.checkpoint: Checkpoint | None = None
            self.model = checkpoint
        else:
            ckpt = (
                checkpoint
                if isinstance(checkpoint, Checkpoint)
                else load_checkpoint(checkpoint, device)
            )
            self.checkpoint = ckpt
            self.model = ckpt.model
        self.config = config or ImagineConfig()
        if self.config.obs_type is not None:
            self.model.check_obs_type(self.config.obs_type)
        self.device = self.model.device
        self.rewards = self.model.reward_values()
        space = self.model.action_space
        self.action_shape: tuple[int, ...] = tuple(space.shape or ())
        """One step's action shape: ``()`` discrete, ``(n,)`` continuous, ``(jump[, n])``
        for the chunks of a jumpy model."""
        self.continuous = self.model.actions.kind == "continuous"
        self.action_dtype = torch.float32 if self.continuous else torch.int64

    # --- starts ---------------------------------------------------------------------------
    def from_start_bank(
        self, batch: int, seed: int | None = 0, burn_in: int = 4, reset_share: float = 0.0
    ) -> Start:
        """``batch`` starts drawn from the checkpoint's start bank as ``Dream-v0`` draws
        them (row ``i`` as a dream env reset with ``seed + i``), burnt in over the last
        ``burn_in`` real observations of each start context; ``reset_share`` as
        :attr:`~dreamenv.envs.options.DreamOptions.reset_share`."""
        check_count(batch, "batch")
        if self.checkpoint is None:
            raise ConfigError(
                "from_start_bank() needs a checkpoint's start bank; build Imagination from a "
                "checkpoint (a path or load_checkpoint(...)), or start from_observations()."
            )
        bank = self.checkpoint.start_bank
        check_count(burn_in, "burn_in")
        if burn_in > bank.context:
            raise ConfigError(
                f"burn_in={burn_in} exceeds the start bank's context of {bank.context} real "
                f"observations; use burn_in <= {bank.context}."
            )
        rng = seeded_rng(batch, seed, self.device)
        with torch.inference_mode():
            u = rng.uniform(())
        check_reset_share(reset_share)
        starts = bank.pick(u, reset_share).cpu().numpy()
        obs = bank.observations(burn_in, starts)
        actions = bank.actions[starts, bank.context - burn_in :]
        return self.from_observations(obs, actions, rng=rng)

    def from_observations(
        self,
        observations: Any,
        actions: Any = None,
        *,
        seed: int | None = 0,
        rng: BatchRandom | None = None,
    ) -> Start:
        """Starts burnt in over real observations (the real env's stacked frames, or state
        vectors ``(B, stack, D)``, as the model's ``encode`` takes them).

        Args:
            observations: ``(B, *frame_shape)`` one observation per row, or ``(B, K,
                *frame_shape)`` K consecutive ones.
            actions: ``(B, K-1[, ...])`` the real actions between them (none for K = 1).
            seed: keys the rows' streams as dream envs reset with ``seed + i``.
            rng: streams to use instead of ``seed``'s.
        """
        frame_shape = tuple(self.model.spec.frame_shape)
        obs = torch.as_tensor(observations, device=self.device)
        if tuple(obs.shape[1:]) == frame_shape:
            obs = obs[:, None]
        if obs.dim() != len(frame_shape) + 2 or tuple(obs.shape[2:]) != frame_shape:
            raise ConfigError(
                f"observations must have shape (B, {', '.join(map(str, frame_shape))}) or "
                f"(B, K, {', '.join(map(str, frame_shape))}) (the model's stacked real "
                f"observations), got {tuple(obs.shape)}."
            )
        b, k = obs.shape[:2]
        act_shape = tuple(self.model.actions.shape)
        if actions is None:
            if k != 1:
                raise ConfigError(
                    f"from_observations() got {k} consecutive observations per row but no "
                    f"actions; pass the {k - 1} real actions between them, shape (B, {k - 1})."
                )
            acts = torch.zeros(b, 0, *act_shape, dtype=self.action_dtype, device=self.device)
        else:
            acts = torch.as_tensor(actions, device=self.device).to(self.action_dtype)
            if tuple(acts.shape) != (b, k - 1, *act_shape):
                raise ConfigError(
                    f"actions must have shape {(b, k - 1, *act_shape)} (the real actions "
                    f"between the {k} observations of each row), got {tuple(acts.shape)}."
                )
        if rng is None:
            rng = seeded_rng(b, seed, self.device)
        elif len(rng.keys) != b:
            raise ConfigError(f"rng has {len(rng.keys)} streams; the batch has {b} rows.")
        with torch.inference_mode():
            embeddings = self.model.encode(obs.flatten(0, 1))
            embeddings = embeddings.view(b, k, *embeddings.shape[1:])
            latent, state = self.model.initial_state(embeddings, acts)
        return Start(latent.clone(), tuple(s.clone() for s in state), rng)

    def from_real_env(self, env: Any, seed: int | None = 0) -> Start:
        """Starts from the model state that a ``Real-v0`` env (a
        :class:`~dreamenv.envs.real.RealVectorEnv`, or ``RealEnv``) holds for its games now:
        the latents its :class:`~dreamenv.envs.real.LatentFilter` follows them with (from
        the first call on, the filter also follows the model's state where it followed the
        observations alone: call it first right after ``reset()``)."""
        vec = getattr(env, "vec", env)
        filt = getattr(getattr(vec, "observations", None), "filter", None)
        if filt is None or filt.latent is None:
            raise ConfigError(
                f"from_real_env() needs a reset Real-v0 env whose model follows the games "
                f"(obs_type other than 'pixels'), got {type(env).__name__}; call reset() first."
            )
        other = filt.model
        if other is not self.model and (
            other.family != self.model.family or other.spec != self.model.spec
        ):
            raise ConfigError(
                f"from_real_env() got an env of a {other.family!r} model of "
                f"{other.spec.game!r}, this is a {self.model.family!r} model of "
                f"{self.model.spec.game!r}; build Imagination from the env's checkpoint "
                "(Imagination(env.checkpoint))."
            )
        filt.follow_state()  # the discrete family's Real-v0 follows codes alone until now
        latent = filt.latent.clone()
        state = tuple(s.clone() for s in filt.state)
        return Start(latent, state, seeded_rng(latent.shape[0], seed, self.device))

    def fan_out(self, start: Start, k: int) -> Start:
        """Each row of ``start`` repeated ``k`` times (rows ``b * k + j``), each branch with
        its own stream drawn from its row's (``start`` itself is unchanged), so the branches
        differ from one another and the same start gives the same branches.

        Example:
            >>> branches = imagination.fan_out(imagination.from_start_bank(1, seed=0), 16)
            >>> imagination.rollout(branches, 10, actions=torch.zeros(16, 10, 1)).rewards
        """
        state, latent = fan_out(start.state, start.latent, k)
        with torch.inference_mode():
            keys = branch_keys(copy_rng(start.rng), k)
        rng = BatchRandom(latent.shape[0], self.device)
        rng.keys.copy_(keys)
        return Start(latent, state, rng)

    # --- rollouts ---------------------------------------------------------------------------
    def rollout(
        self,
        start: Start,
        horizon: int,
        *,
        policy: Policy | None = None,
        actions: torch.Tensor | None = None,
    ) -> Rollout:
        """``horizon`` imagined steps from ``start`` under ``policy`` or ``actions``.

        Args:
            start: where to begin (unchanged by the rollout).
            horizon: steps ``H``.
            policy: maps the observations (``config.obs_type``; the latents if None) ``(B,
                ...)`` to actions ``(B, *action_shape)``, used as given (continuous actions
                are clipped to the bounds by the model's action features).
            actions: instead of a policy, the whole sequence ``(B, H, *action_shape)``
                (``(B, H)`` for a one-dimensional Box too).
        """
        check_count(horizon, "horizon")
        if (policy is None) == (actions is None):
            raise ConfigError(
                "rollout() takes exactly one of policy= (a callable obs -> actions) or "
                f"actions= (a tensor (B, H, ...)); got {'both' if policy else 'neither'}."
            )
        b = start.batch
        if actions is not None:
            actions = self.check_actions(actions, b, horizon)
        mode = torch.inference_mode() if not self.config.grad else contextlib.nullcontext()
        with mode:
            return self._rollout(start, horizon, policy, actions)

    def check_actions(self, actions: Any, batch: int, horizon: int) -> torch.Tensor:
        """``actions`` as a tensor ``(batch, horizon, *action_shape)`` of the model's action
        dtype on its device, or a :class:`ConfigError` saying why not."""
        if not isinstance(actions, torch.Tensor):
            raise ConfigError(
                f"actions must be a torch tensor (B, H, *action_shape), got "
                f"{type(actions).__name__}; use torch.as_tensor(actions)."
            )
        shape = (batch, horizon, *self.action_shape)
        if self.continuous and self.action_shape == (1,) and tuple(actions.shape) == shape[:2]:
            actions = actions[..., None]
        if tuple(actions.shape) != shape:
            raise ConfigError(
                f"actions must have shape {shape} (batch, horizon, one step's action "
                f"{self.action_shape}), got {tuple(actions.shape)}."
            )
        if self.continuous:
            if not actions.is_floating_point():
                raise ConfigError(f"continuous actions must be floats, got {actions.dtype}.")
        elif actions.is_floating_point() or actions.dtype == torch.bool:
            raise ConfigError(
                f"discrete actions must be integers in [0, {self.model.num_actions - 1}], got "
                f"dtype {actions.dtype}."
            )
        return actions.to(self.device, self.action_dtype)

    def _rollout(
        self, start: Start, horizon: int, policy: Policy | None, actions: torch.Tensor | None
    ) -> Rollout:
        c, model = self.config, self.model
        rng = copy_rng(start.rng)
        latent, state = start.latent, start.state
        values = self.rewards
        latents, taken, rewards, ends, alive = [latent], [], [], [], []
        running = torch.ones(start.batch, device=self.device)
        for t in range(horizon):
            if actions is not None:
                action = actions[:, t]
            else:
                assert policy is not None
                obs = latent if c.obs_type is None else model.observation(latent, c.obs_type)
                action = policy(obs)
            with autocast(c.precision, self.device):
                pred = model.step(state, latent, action, rng, c.temperature)
            u = rng.uniform((2,))  # as the dream env draws: the reward's, then the ending's
            probs = torch.softmax(pred.reward_logits.float(), -1)
            if c.reward_mode == "mean":
                reward = probs @ values
            elif c.reward_mode == "sample":
                which = (probs.cumsum(-1) < u[:, :1]).sum(-1).clamp(max=len(values) - 1)
                reward = values[which]
            else:
                reward = values[probs.argmax(-1)]
            p_end = torch.sigmoid(pred.termination_logits.float())
            end = p_end if c.termination_mode == "probability" else (u[:, 1] < p_end).float()
            alive.append(running)
            if c.use_termination:
                running = running * (1.0 - end)
            latent = pred.next_latent
            state = tuple(s.float() if s.is_floating_point() else s for s in pred.state)
            latents.append(latent)
            taken.append(action)
            rewards.append(reward)
            ends.append(end)
        return Rollout(
            latents=torch.stack(latents, 1),
            actions=torch.stack(taken, 1),
            rewards=torch.stack(rewards, 1),
            terminations=torch.stack(ends, 1),
            alive=torch.stack(alive, 1),
            final=Start(latent, state, rng),
        )
