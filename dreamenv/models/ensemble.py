"""A probabilistic ensemble of state-transition models (PETS, Chua et al. 2018; mbrl-lib).

For envs observed through a low-dimensional state vector (CartPole, Pendulum, MuJoCo:
``GymSpec(observation="state")``), as the strongest model-based methods on them model it.

- ``E`` members, each an MLP with SiLU activations (``layers`` hidden layers of ``hidden``
  units; all members run as one batched matrix product). Input: the last ``frame_stack``
  states, normalised, and the action features
  (:meth:`~dreamenv.models.base.WorldModel.action_features`). Output: a diagonal Gaussian
  over the normalised delta of the newest state, ``s_{t+1} - s_t``; its log-variance is
  bounded softly between learnt limits as PETS does
  (``max - softplus(max - v)``, then ``min + softplus(v - min)``), and the limits are
  pulled together by ``logvar_bound_weight * (sum(max) - sum(min))``.
- Each member also has an outcome MLP of the same size from the transition (the inputs
  and the normalised next state): a categorical reward head over
  :attr:`~dreamenv.models.base.WorldModel.reward_support` (trained with the reward coder's
  cross-entropy: a two-hot symlog grid for real rewards) and a termination logit (binary
  cross-entropy). Conditioning on the next state makes an imagined ending agree with the
  imagined state (CartPole ends when the sampled pole angle passes the limit).
- Training (:meth:`EnsembleWorldModel.loss`): every member sees every masked transition of
  the batch (or a Poisson(1) bootstrap weight of it with ``bootstrap=True``); the loss is
  the members' mean Gaussian NLL per state dimension (beta-NLL weighted, Seitzer et al.
  2022, so that the trainer's gradient clipping does not starve the heads; ``nll_beta=0``
  is PETS' plain NLL) plus the heads' losses, the bound term and an L2 weight decay
  (PETS'). No warm-up phase.
- Normalisation: running means and variances of the newest states and of the deltas,
  merged from the masked transitions of every training batch (:meth:`loss` in train
  mode; Chan's parallel update, float64). They are buffers: they save and load with the
  weights, so a loaded model reproduces its outputs exactly. Before any data: mean 0,
  std 1; a dimension that never varied keeps std 1.
- Latent and observation: the newest state vector ``(B, D)`` in the env's own units, as the
  real env gives it. The state is ``(frames, member)``: the last ``frame_stack`` states
  ``(B, frame_stack, D)`` and the member each env follows, int64 ``(B,)``, ``-1`` until its
  first :meth:`~EnsembleWorldModel.step` draws one. ``member_per="episode"`` keeps that
  member for the episode (PETS' TS-inf); ``"step"`` draws a new one every step (TS-1).
- A dream step draws ``D + 1`` uniforms per env from the env's stream (one picks a
  member, the rest become the normal noise), every step in both modes, so a rollout
  depends only on the env's seed and actions. ``temperature`` scales the noise's std (0:
  the member's mean; the member is still drawn).
- There are no pixels: :meth:`~EnsembleWorldModel.decode` gives the state as float32 frames
  ``(B, frame_stack, D)`` (every slot the latent's state), which the envs' ``render()``
  draws as bars, as the real env's render draws its real state.

Example:
    >>> spec = GymSpec("CartPole-v1", observation="state", state_size=4,
    ...                actions=ActionSpec.discrete(2))
    >>> model = build_model("ensemble", "tiny", spec, spec.actions)
    >>> emb = model.encode(torch.zeros(2, 1, 4))                     # (2, 1, 4)
    >>> latent, state = model.initial_state(emb[:, None], torch.zeros(2, 0).long())
    >>> rng = BatchRandom(2, "cpu")
    >>> pred = model.step(state, latent, torch.tensor([0, 1]), rng)
    >>> pred.next_latent.shape, pred.reward_logits.shape             # (2, 4), (2, 41)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dreamenv.errors import ConfigError
from dreamenv.models.base import Prediction, State, WorldModel, register_family
from dreamenv.models.common import masked_mean, normal_from_uniform
from dreamenv.random_streams import BatchRandom

LOG_2PI = math.log(2.0 * math.pi)
MIN_VARIANCE = 1e-12
"""A normalising variance below this (a dimension that never varied) is replaced by 1."""


@dataclass(frozen=True)
class EnsembleConfig:
    """Hyperparameters of the probabilistic ensemble (defaults: PETS' sizes)."""

    members: int = 5
    """Members of the ensemble (PETS: 5)."""
    hidden: int = 200
    """Units of every hidden layer (PETS: 200)."""
    layers: int = 4
    """Hidden layers of each member's dynamics MLP and of its outcome MLP (mbrl-lib: 4)."""
    member_per: Literal["episode", "step"] = "episode"
    """How often a dream env draws the member it follows: once per episode (PETS' TS-inf)
    or every step (TS-1)."""
    max_logvar_init: float = 0.5
    """Initial soft upper bound of the normalised deltas' log-variance (learnt)."""
    min_logvar_init: float = -10.0
    """Initial soft lower bound of the normalised deltas' log-variance (learnt)."""
    logvar_bound_weight: float = 0.01
    """Weight of ``sum(max_logvar) - sum(min_logvar)`` in the loss (PETS: 0.01)."""
    nll_beta: float = 0.5
    """beta-NLL (Seitzer et al. 2022): each dimension's Gaussian NLL is weighted by its
    detached variance ``** nll_beta`` (0: PETS' plain NLL). Plain NLL's gradients grow as
    1/std while the model sharpens; under the trainer's global gradient clipping
    (``FitConfig.grad_clip``) they then starve the reward and termination heads (CartPole:
    the termination head never learnt). 0.5 keeps the mean's gradients O(1)."""
    weight_decay: float = 5e-5
    """L2 penalty ``weight_decay * sum(W**2) / 2`` on the weight matrices, per member."""
    reward_weight: float = 1.0
    """Weight of the reward head's cross-entropy."""
    termination_weight: float = 1.0
    """Weight of the termination head's binary cross-entropy."""
    bootstrap: bool = False
    """Weight each transition by a Poisson(1) draw per member (a bootstrap of the batch),
    instead of every member seeing every transition."""

    def __post_init__(self) -> None:
        for name in ("members", "hidden", "layers"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"EnsembleConfig.{name} must be a positive int, got {value!r}.")
        if self.member_per not in ("episode", "step"):
            raise ConfigError(
                f"EnsembleConfig.member_per must be 'episode' (one member per dream episode, "
                f"PETS' TS-inf) or 'step' (TS-1), got {self.member_per!r}."
            )
        for name in ("max_logvar_init", "min_logvar_init"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ConfigError(f"EnsembleConfig.{name} must be a finite number, got {value!r}.")
        if not self.min_logvar_init < self.max_logvar_init:
            raise ConfigError(
                f"EnsembleConfig.min_logvar_init={self.min_logvar_init} must be below "
                f"max_logvar_init={self.max_logvar_init}."
            )
        if not (isinstance(self.nll_beta, (int, float)) and 0 <= self.nll_beta <= 1):
            raise ConfigError(
                f"EnsembleConfig.nll_beta must be a number in [0, 1] (0: plain NLL), got "
                f"{self.nll_beta!r}."
            )
        for name in ("logvar_bound_weight", "weight_decay", "reward_weight", "termination_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(
                    f"EnsembleConfig.{name} must be a finite number >= 0, got {value!r}."
                )
        if not isinstance(self.bootstrap, bool):
            raise ConfigError(f"EnsembleConfig.bootstrap must be a bool, got {self.bootstrap!r}.")


PRESETS = {
    "paper": EnsembleConfig(),
    "small": EnsembleConfig(hidden=64, layers=3),
    "tiny": EnsembleConfig(members=3, hidden=16, layers=2),
}


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied at once: ``(E, N, in) -> (E, N, out)``."""

    def __init__(self, members: int, d_in: int, d_out: int) -> None:
        super().__init__()
        std = 1.0 / (2.0 * math.sqrt(d_in))  # PETS' truncated-normal initialisation
        weight = torch.empty(members, d_in, d_out)
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(members, 1, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """``E`` MLPs with SiLU activations, ``(E, N, d_in) -> (E, N, d_out)``."""

    def __init__(self, members: int, d_in: int, hidden: int, layers: int, d_out: int) -> None:
        super().__init__()
        sizes = [d_in] + [hidden] * layers
        self.hidden = nn.ModuleList(
            EnsembleLinear(members, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out = EnsembleLinear(members, sizes[-1], d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = F.silu(layer(x))
        return self.out(x)

    def l2(self) -> torch.Tensor:
        """Sum of squares of the weight matrices (biases excluded), over all members."""
        layers = [*self.hidden, self.out]
        return torch.stack([layer.weight.float().square().sum() for layer in layers]).sum()


@register_family
class EnsembleWorldModel(WorldModel):
    """PETS' probabilistic ensemble; latents are state vectors float32 ``(B, D)``."""

    family = "ensemble"
    config_class = EnsembleConfig
    stats_count: torch.Tensor
    state_mean: torch.Tensor
    state_m2: torch.Tensor
    delta_mean: torch.Tensor
    delta_m2: torch.Tensor
    presets = PRESETS
    obs_types = ("state",)
    frame_kind = "state"
    has_warmup = False

    def __init__(self, config: EnsembleConfig, spec: Any, num_actions: Any) -> None:
        if getattr(spec, "observation", "image") != "state":
            raise ConfigError(
                f"the ensemble family models state vectors (GymSpec(observation='state')), got "
                f"a spec of {getattr(spec, 'game', spec)!r} with image frames; for images use "
                "'discrete', 'rssm', 'mdnrnn' or another pixel family."
            )
        super().__init__(config, spec, num_actions)
        self.stack, self.state_size = spec.frame_shape
        d, e = self.state_size, config.members
        d_in = self.stack * d + self.num_actions
        self.dynamics = EnsembleMLP(e, d_in, config.hidden, config.layers, 2 * d)
        self.outcome = EnsembleMLP(
            e, d_in + d, config.hidden, config.layers, self.reward_coder.size + 1
        )
        self.max_logvar = nn.Parameter(torch.full((d,), float(config.max_logvar_init)))
        self.min_logvar = nn.Parameter(torch.full((d,), float(config.min_logvar_init)))
        f64 = torch.float64
        self.register_buffer("stats_count", torch.zeros((), dtype=f64))
        self.register_buffer("state_mean", torch.zeros(d, dtype=f64))
        self.register_buffer("state_m2", torch.zeros(d, dtype=f64))
        self.register_buffer("delta_mean", torch.zeros(d, dtype=f64))
        self.register_buffer("delta_m2", torch.zeros(d, dtype=f64))

    # --- normalisation --------------------------------------------------------------------
    def normalizer(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """float32 ``(state_mean, state_std, delta_mean, delta_std)``, each ``(D,)``."""
        count = self.stats_count.clamp(min=1.0)

        def std(m2: torch.Tensor) -> torch.Tensor:
            var = m2 / count
            return torch.where(var < MIN_VARIANCE, torch.ones_like(var), var.sqrt()).float()

        return (
            self.state_mean.float(),
            std(self.state_m2),
            self.delta_mean.float(),
            std(self.delta_m2),
        )

    @torch.no_grad()
    def update_statistics(self, states: torch.Tensor, deltas: torch.Tensor) -> None:
        """Merge the newest states and deltas ``(N, D)`` of ``N`` transitions into the
        running statistics (Chan et al.'s parallel update, in float64)."""
        n_b = float(states.shape[0])
        if n_b == 0:
            return
        n_a = self.stats_count.clone()
        n = n_a + n_b
        for mean, m2, x in (
            (self.state_mean, self.state_m2, states),
            (self.delta_mean, self.delta_m2, deltas),
        ):
            x = x.to(torch.float64)
            mean_b = x.mean(0)
            m2_b = (x - mean_b).square().sum(0)
            diff = mean_b - mean
            mean += diff * (n_b / n)
            m2 += m2_b + diff.square() * (n_a * n_b / n)
        self.stats_count.copy_(n)

    def _inputs(self, frames: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Network inputs ``(..., stack * D + n)`` of state stacks ``(..., stack, D)``."""
        mean, std = self.normalizer()[:2]
        norm = ((frames.float() - mean) / std).flatten(-2)
        return torch.cat([norm, features.to(norm.dtype)], -1)

    def _init_termination_head(self, logit: float) -> None:
        last = self.outcome.out  # every member's last output is its termination logit
        with torch.no_grad():
            last.weight[..., -1].zero_()
            last.bias[..., -1] = logit

    def _gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's mean and bounded log-variance of the normalised delta,
        ``(E, N, D)`` each, for inputs ``(N, d_in)`` (shared) or ``(E, N, d_in)``."""
        if x.dim() == 2:
            x = x.expand(self.config.members, *x.shape)
        mean, raw = self.dynamics(x).float().chunk(2, -1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def _outcome(self, x: torch.Tensor, next_states: torch.Tensor) -> torch.Tensor:
        """Every member's reward logits and termination logit ``(E, N, size + 1)`` for inputs
        ``(N, d_in)`` or ``(E, N, d_in)`` and next states ``(N, D)`` or ``(E, N, D)``."""
        mean, std = self.normalizer()[:2]
        y = (next_states.float() - mean) / std
        e = self.config.members
        if x.dim() == 2:
            x = x.expand(e, *x.shape)
        if y.dim() == 2:
            y = y.expand(e, *y.shape)
        return self.outcome(torch.cat([x, y], -1)).float()

    # --- the contract -----------------------------------------------------------------------
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """The real observations ``(B, frame_stack, D)`` themselves, as float32 (the
        embedding of a state is the state)."""
        shape = (self.stack, self.state_size)
        if not frames.is_floating_point():
            raise ConfigError(
                f"the ensemble family encodes float state vectors, got dtype {frames.dtype}; "
                "pass the env's float32 observations (GymSpec(observation='state'))."
            )
        if frames.dim() != 3 or tuple(frames.shape[1:]) != shape:
            raise ConfigError(
                f"frames must have shape (B, {shape[0]}, {shape[1]}) (B observations of "
                f"frame_stack={shape[0]} states of size {shape[1]}), got {tuple(frames.shape)}."
            )
        return frames.float()

    def initial_state(
        self, embeddings: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """The newest observation's state (the latent) and ``(its stack, member -1)``; the
        earlier observations of the context add nothing (the stack is the memory)."""
        shape = (self.stack, self.state_size)
        if embeddings.dim() != 4 or tuple(embeddings.shape[2:]) != shape:
            raise ConfigError(
                f"embeddings must have shape (B, K, {shape[0]}, {shape[1]}) (K >= 1 encoded "
                f"observations per env), got {tuple(embeddings.shape)}."
            )
        frames = embeddings[:, -1].float()
        member = torch.full((frames.shape[0],), -1, dtype=torch.int64, device=frames.device)
        return frames[:, -1].clone(), (frames.clone(), member)

    def step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float = 1.0,
    ) -> Prediction:
        """Sample ``s_{t+1} = s_t + delta`` from the member each env follows, with ``delta ~
        N(mean, var * temperature**2)``; rewards and ends from that member's heads."""
        return self._transition(state, latent, action, rng, temperature, None)

    def forced_step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        next_embedding: torch.Tensor,
        rng: BatchRandom,
    ) -> Prediction:
        """:meth:`step` whose heads read the real next state (the newest of
        ``next_embedding``'s stack), as in training."""
        real = next_embedding.reshape(-1, self.stack, self.state_size)[:, -1].float()
        return self._transition(state, latent, action, rng, 1.0, real)

    def _transition(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float,
        heads_read: torch.Tensor | None,
    ) -> Prediction:
        """:meth:`step`, whose heads read ``heads_read`` instead of the drawn next state
        where it is given."""
        frames, member = state
        frames = torch.cat([frames[:, :-1], latent[:, None].to(frames.dtype)], 1)
        b, d, e = latent.shape[0], self.state_size, self.config.members
        u = rng.uniform((d + 1,)).to(latent.device)
        drawn = (u[:, 0] * e).long().clamp_(max=e - 1)
        if self.config.member_per == "step":
            member = drawn
        else:
            member = torch.where(member < 0, drawn, member)
        x = self._inputs(frames, self.action_features(action))
        mean, logvar = self._gaussian(x)
        rows = torch.arange(b, device=latent.device)
        mean, logvar = mean[member, rows], logvar[member, rows]  # (B, D)
        noise = normal_from_uniform(u[:, 1:]) * float(temperature)
        delta = mean + (0.5 * logvar).exp() * noise
        _, _, delta_mean, delta_std = self.normalizer()
        next_latent = latent.float() + delta * delta_std + delta_mean
        read = next_latent if heads_read is None else heads_read
        out = self._outcome(x, read)[member, rows]
        reward_logits, term_logits = out[:, :-1], out[:, -1]
        next_frames = torch.cat([frames[:, 1:], next_latent[:, None]], 1)
        return Prediction(next_latent, reward_logits, term_logits, (next_frames, member))

    def filter(
        self, state: State, latent: torch.Tensor, action: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """The real newest state and stack (the model adds nothing to a fully observed
        state); the member is kept."""
        frames = embedding.reshape(-1, self.stack, self.state_size).float()
        return frames[:, -1].clone(), (frames.clone(), state[1])

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """The states as float32 frames ``(B, frame_stack, D)`` for rendering: there are no
        pixels, and a latent holds only the newest state, so every slot of the stack is it
        (renders draw the newest frame, as bars: ``dreamenv.envs.sources.frames_to_rgb``)."""
        b = latent.shape[0]
        return latent.float()[:, None].expand(b, self.stack, self.state_size).clone()

    def observation(self, latent: torch.Tensor, obs_type: str) -> torch.Tensor:
        self.check_obs_type(obs_type)
        return latent.float()

    def observation_space(self, obs_type: str) -> gym.Space:
        self.check_obs_type(obs_type)
        return gym.spaces.Box(-np.inf, np.inf, (self.state_size,), np.float32)

    # --- training -----------------------------------------------------------------------------
    def _transitions(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's transitions flattened to ``N = B * L``: inputs, stacks, targets."""
        frames = batch["frames"].float()
        shape = (self.stack, self.state_size)
        if frames.dim() != 4 or tuple(frames.shape[2:]) != shape:
            raise ConfigError(
                f"batch['frames'] must have shape (B, L+1, {shape[0]}, {shape[1]}), got "
                f"{tuple(frames.shape)}."
            )
        stacks = frames[:, :-1].flatten(0, 1)  # (N, stack, D)
        states = stacks[:, -1]
        next_states = frames[:, 1:, -1].flatten(0, 1)
        actions = batch["actions"].flatten(0, 1)
        return {
            "stacks": stacks,
            "states": states,
            "next_states": next_states,
            "features": self.action_features(actions),
            "rewards": batch["rewards"].flatten(0, 1).float(),
            "terminated": batch["terminated"].flatten(0, 1).float(),
            "mask": batch["mask"].flatten(0, 1).float(),
        }

    def loss(
        self, batch: dict[str, torch.Tensor], phase: str, step: int
    ) -> dict[str, torch.Tensor]:
        """Members' mean Gaussian NLL of the normalised deltas (nats per dimension, beta-NLL
        weighted: ``dynamics_loss``; unweighted: ``state_nll``) plus the reward and
        termination losses, PETS' log-variance bound term and weight decay.

        In train mode, the batch's masked transitions first update the normalisation."""
        if phase not in ("warmup", "joint"):
            raise ConfigError(f"phase must be 'warmup' or 'joint', got {phase!r}.")
        c = self.config
        t = self._transitions(batch)
        mask = t["mask"]
        if self.training:
            keep = mask > 0
            self.update_statistics(t["states"][keep], (t["next_states"] - t["states"])[keep])
        _, _, delta_mean, delta_std = self.normalizer()
        target = (t["next_states"] - t["states"] - delta_mean) / delta_std
        x = self._inputs(t["stacks"], t["features"])
        mean, logvar = self._gaussian(x)  # (E, N, D)
        nll = 0.5 * ((mean - target).square() * torch.exp(-logvar) + logvar + LOG_2PI)
        weighted = nll
        if c.nll_beta > 0:
            weighted = nll * torch.exp(c.nll_beta * logvar.detach())
        nll, weighted = nll.mean(-1), weighted.mean(-1)  # (E, N)
        out = self._outcome(x, t["next_states"])
        reward_ce = self.reward_coder.loss(out[..., :-1], t["rewards"].expand_as(nll))
        term = t["terminated"].expand_as(nll)
        term_bce = F.binary_cross_entropy_with_logits(out[..., -1], term, reduction="none")
        weights = mask.expand_as(nll)
        if self.config.bootstrap:
            weights = weights * torch.poisson(torch.ones_like(weights))
        state_nll = masked_mean(nll, weights)
        dynamics_loss = masked_mean(weighted, weights)
        reward_loss = masked_mean(reward_ce, weights)
        termination_loss = masked_mean(term_bce, weights)
        bound = c.logvar_bound_weight * (self.max_logvar.sum() - self.min_logvar.sum())
        l2 = c.weight_decay * 0.5 * (self.dynamics.l2() + self.outcome.l2()) / c.members
        total = (
            dynamics_loss
            + c.reward_weight * reward_loss
            + c.termination_weight * termination_loss
            + bound
            + l2
        )
        with torch.no_grad():
            mse = masked_mean((mean - target).square().mean(-1), weights)
        return {
            "loss": total,
            "dynamics_loss": dynamics_loss.detach(),
            "state_nll": state_nll.detach(),
            "delta_mse": mse,
            "reward_loss": reward_loss.detach(),
            "termination_loss": termination_loss.detach(),
            "logvar_bound": bound.detach(),
            "weight_decay": l2.detach(),
        }

    @torch.no_grad()
    def metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Held-out figures, teacher-forced on real states unless ``open_loop``:

        - ``state_mse``: one-step MSE of the next state predicted by the members' mean
          delta, in normalised state units (each dimension divided by its std);
          ``nochange_mse``: the same for predicting ``s_{t+1} = s_t`` (the baseline);
        - ``delta_mse``: the members' MSE of the normalised delta (1 = no better than its
          mean); ``state_nll``: their Gaussian NLL of it, nats per dimension;
        - ``open_loop_mse``: each member rolls the window out from its first observation
          on the real actions with its mean deltas; MSE in normalised state units over
          every step and member;
        - ``reward_acc`` (the members' averaged reward distribution's mode is the real
          reward's nearest class), ``reward_mae`` (its expectation against the real
          reward), ``termination_acc`` and ``termination_recall`` (share of real ends
          predicted at p > 0.5; NaN when the batch has none).
        """
        t = self._transitions(batch)
        mask = t["mask"]
        state_mean, state_std, delta_mean, delta_std = self.normalizer()
        target = (t["next_states"] - t["states"] - delta_mean) / delta_std
        x = self._inputs(t["stacks"], t["features"])
        mean, logvar = self._gaussian(x)
        nll = 0.5 * ((mean - target).square() * torch.exp(-logvar) + logvar + LOG_2PI)
        delta = mean.mean(0) * delta_std + delta_mean
        pred_next = t["states"] + delta
        state_err = ((pred_next - t["next_states"]) / state_std).square().mean(-1)
        still_err = ((t["states"] - t["next_states"]) / state_std).square().mean(-1)
        out = self._outcome(x, t["next_states"])
        probs = torch.softmax(out[..., :-1], -1).mean(0)
        logits = probs.clamp(min=1e-12).log()
        term_p = torch.sigmoid(out[..., -1]).mean(0)
        ends, real_ends = (term_p > 0.5).float(), t["terminated"]
        masked_ends = real_ends * mask
        recall = (
            float((ends * masked_ends).sum() / masked_ends.sum())
            if masked_ends.sum() > 0
            else math.nan
        )
        reward_err = (self.reward_coder.mean(logits) - t["rewards"]).abs()
        return {
            "state_mse": float(masked_mean(state_err, mask)),
            "nochange_mse": float(masked_mean(still_err, mask)),
            "delta_mse": float(masked_mean((mean - target).square().mean(-1).mean(0), mask)),
            "state_nll": float(masked_mean(nll.mean(-1).mean(0), mask)),
            "open_loop_mse": self._open_loop_mse(batch),
            "reward_acc": float(
                masked_mean(self.reward_coder.accuracy(logits, t["rewards"]), mask)
            ),
            "reward_mae": float(masked_mean(reward_err, mask)),
            "termination_acc": float(masked_mean((ends == real_ends).float(), mask)),
            "termination_recall": recall,
        }

    def _open_loop_mse(self, batch: dict[str, torch.Tensor]) -> float:
        """Every member's open-loop MSE over the window (see :meth:`metrics`)."""
        frames = batch["frames"].float()
        b, steps = batch["actions"].shape[:2]
        e = self.config.members
        state_mean, state_std, delta_mean, delta_std = self.normalizer()
        stack = frames[:, 0].expand(e, *frames.shape[:1], *frames.shape[2:])  # (E, B, s, D)
        features = self.action_features(batch["actions"])  # (B, L, n)
        mask = batch["mask"].float()
        total = torch.zeros((), device=frames.device)
        for k in range(steps):
            x = self._inputs(stack, features[:, k].expand(e, -1, -1))
            mean, _ = self._gaussian(x)
            nxt = stack[..., -1, :] + mean * delta_std + delta_mean  # (E, B, D)
            err = ((nxt - frames[:, k + 1, -1]) / state_std).square().mean(-1).mean(0)
            total = total + (err * mask[:, k]).sum()
            stack = torch.cat([stack[..., 1:, :], nxt[..., None, :]], -2)
        return float(total / mask.sum().clamp(min=1.0))
