"""A Dreamer actor-critic (Hafner et al. 2020, 2023): an actor and a critic trained only on
imagined trajectories of the world model, then played in ``Real-v0``.

Each update of :class:`DreamerActorCritic` draws ``batch`` starts from the checkpoint's
start bank (:meth:`~dreamenv.imagine.Imagination.from_start_bank`), rolls them out
``horizon`` steps under the actor (:meth:`~dreamenv.imagine.Imagination.rollout`, expected
rewards and termination probabilities), and computes TD(lambda) returns bootstrapped by a
slow critic (an EMA of the critic)::

    R_t = r_t + discount * (1 - p_end_t) * ((1 - lambda) * v_slow(s_{t+1}) + lambda * R_{t+1})
    R_H = v_slow(s_H)

- Returns are normalised as DreamerV3's: divided by ``max(1, P95 - P5)``, the percentiles of
  the batch's returns tracked by an EMA (:class:`ReturnNormalizer`), so one entropy
  coefficient suits rewards of any scale.
- The actor: for ``Box`` actions a tanh-squashed Gaussian scaled to the bounds, for
  ``Discrete`` ones a categorical mixed with 1% uniform. ``gradient="dynamics"``
  maximises ``R_t / scale`` by backpropagating through the model's dynamics
  (reparameterised actions; DreamerV1), ``"reinforce"`` maximises ``log pi(a_t) (R_t -
  v(s_t)) / scale`` (the score function with the critic as baseline; DreamerV3's estimator
  for discrete actions), both plus ``entropy`` times the policy's entropy. ``"auto"``:
  dynamics for Box actions on a family whose next state is reparameterised (``ensemble``,
  Gaussian ``rssm``), else reinforce.
- The critic regresses ``symlog(R_t)`` with a squared error (the critic predicts in symlog
  space; ``v = symexp(output)``), DreamerV3's scale-robust target without its two-hot
  head.
- Every step's losses are weighted by ``alive_t``, the chance the imagined episode still runs
  when step ``t`` begins (:attr:`~dreamenv.imagine.Rollout.alive`).

What the actor reads: the observation :meth:`~dreamenv.imagine.Imagination.rollout` hands a
policy, the model's observation of its latent (``obs_type``; by default the first vector
one: the ensemble's ``"state"``, the rssm's and ssm's ``"state"`` (the deterministic and
stochastic state), the mdnrnn's ``"latent"`` (``z`` and ``h``), the discrete model's
``"embeddings"``), flattened (uint8 pixels scaled to ``[0, 1]``, code indices one-hot). It is
exactly what ``Real-v0`` emits, so :meth:`DreamerActorCritic.predict` acts on real
observations with nothing to rebuild. The recurrent state is not read beside it: the
recurrent families already put it in their observation, and the discrete family's
ConvLSTM state is not followed in ``Real-v0`` (its filter keeps the initial state), so an
actor reading it would see other inputs in the real env than in the dream.

The world model can be improved from real data in the loop (:func:`train_actor_critic_loop`):
collect real steps with the actor (:class:`ActorPolicy`), refit the checkpoint on all of
them, train the actor-critic on, evaluate in ``Real-v0``.

Example:
    >>> agent = DreamerActorCritic("runs/pendulum/model", ActorCriticConfig(batch=128))
    >>> history = agent.train(500)
    >>> returns = agent.evaluate(episodes=32)          # Real-v0, deterministic actions
    >>> actions, _ = agent.predict(np.zeros((4, 3), np.float32))
    >>> agent.save("runs/pendulum/actor-critic")
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from dreamenv.agents.overrides import with_overrides
from dreamenv.atomic_files import read_file_set, set_file, write_file_set, write_json
from dreamenv.checkpoint import Checkpoint, config_from_dict, package_version
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.options import check_device
from dreamenv.envs.real import RealObservations
from dreamenv.envs.spec import ActionSpec
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.imagine import Imagination, ImagineConfig, Rollout, Start, check_count
from dreamenv.models.base import WorldModel
from dreamenv.models.common import sample_categorical, symexp, symlog
from dreamenv.precision import Precision, check_precision

GRADIENTS = ("auto", "dynamics", "reinforce")
FORMAT = "dreamenv-actor-critic"
"""The ``format`` entry of ``actor_critic.json``."""
VERSION = 1
MANIFEST = "actor_critic.json"
WEIGHTS = "weights.safetensors"


@dataclass(frozen=True)
class ActorCriticConfig:
    """Settings of :class:`DreamerActorCritic` (defaults: DreamerV3's where they suit a CPU).

    Example:
        >>> config = ActorCriticConfig(horizon=15, batch=256, gradient="auto")
    """

    horizon: int = 15
    """Imagined steps per update (DreamerV3: 15)."""
    batch: int = 256
    """Imagined trajectories per update, each from a start drawn from the start bank."""
    discount: float = 0.99
    """Discount of the returns (DreamerV3: 0.997)."""
    return_lambda: float = 0.95
    """lambda of the TD(lambda) returns (0: one-step bootstrap, 1: Monte Carlo to the horizon)."""
    actor_hidden: int = 256
    """Units of each hidden layer of the actor."""
    actor_layers: int = 2
    """Hidden layers of the actor (Linear, LayerNorm, SiLU each)."""
    critic_hidden: int = 256
    """Units of each hidden layer of the critic."""
    critic_layers: int = 2
    """Hidden layers of the critic."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor (DreamerV3: 3e-5)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic."""
    entropy: float = 3e-4
    """Weight of the actor's entropy bonus, in units of normalised return (DreamerV3: 3e-4)."""
    return_low: float = 0.05
    """Lower percentile of the return range that normalises returns (DreamerV3: 5th)."""
    return_high: float = 0.95
    """Upper percentile of that range (DreamerV3: 95th); scale = max(1, P_high - P_low)."""
    return_decay: float = 0.99
    """EMA decay of the tracked percentiles per update (DreamerV3: 0.99)."""
    slow_critic: float = 0.02
    """Share of the critic mixed into the slow critic after each update (DreamerV3: 0.02)."""
    gradient: Literal["auto", "dynamics", "reinforce"] = "auto"
    """The actor's gradient: ``"dynamics"`` (backpropagation through the model; Box actions),
    ``"reinforce"`` (score function), ``"auto"`` (dynamics for Box actions on a
    reparameterised family, else reinforce)."""
    grad_clip: float = 100.0
    """Clip of the gradient norm of the actor and of the critic (DreamerV3: 100)."""
    min_std: float = 0.1
    """Smallest standard deviation of the Box actor's Gaussian (before the tanh)."""
    max_std: float = 1.0
    """Largest standard deviation of the Box actor's Gaussian (before the tanh)."""
    unimix: float = 0.01
    """Share of a uniform mixed into the Discrete actor's probabilities (DreamerV3: 0.01)."""
    obs_type: str | None = None
    """What the actor and critic read: one of the family's ``obs_types``; None: the first
    vector observation of the family (see the module docstring)."""
    burn_in: int = 4
    """Real observations of each start-bank context the model is burnt in over."""
    temperature: float = 1.0
    """Sampling temperature of the imagined transitions (0: the model's mode)."""
    precision: Precision = "float32"
    """``"bfloat16"``: the model's imagined steps under bfloat16 autocast."""
    seed: int = 0
    """Seeds the networks' initialisation, the starts and the actor's sampling."""
    device: str = "cpu"
    """Torch device of the model, the actor and the critic."""

    def __post_init__(self) -> None:
        for name in (
            "horizon",
            "batch",
            "actor_hidden",
            "actor_layers",
            "critic_hidden",
            "critic_layers",
            "burn_in",
        ):
            check_count(getattr(self, name), f"ActorCriticConfig.{name}")
        for name, low, high, hint in (
            ("discount", 1e-9, 1.0, "0.99 or DreamerV3's 0.997"),
            ("return_lambda", 0.0, 1.0, "0.95"),
            ("actor_lr", 1e-12, 1.0, "3e-5 to 1e-4"),
            ("critic_lr", 1e-12, 1.0, "3e-4"),
            ("entropy", 0.0, np.inf, "3e-4 with normalised returns"),
            ("return_low", 0.0, 1.0, "0.05"),
            ("return_high", 0.0, 1.0, "0.95"),
            ("return_decay", 0.0, 1.0 - 1e-12, "0.99"),
            ("slow_critic", 1e-12, 1.0, "0.02; 1 copies the critic"),
            ("grad_clip", 1e-12, np.inf, "100"),
            ("min_std", 1e-6, np.inf, "0.1"),
            ("max_std", 1e-6, np.inf, "1.0"),
            ("unimix", 0.0, 1.0 - 1e-9, "0.01"),
        ):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (ok and np.isfinite(value) and low <= value <= high):
                raise ConfigError(
                    f"ActorCriticConfig.{name} must be a finite number in [{low:g}, {high:g}], "
                    f"got {value!r}; e.g. {hint}."
                )
        if not self.return_low < self.return_high:
            raise ConfigError(
                f"ActorCriticConfig.return_low={self.return_low} must be below return_high="
                f"{self.return_high} (DreamerV3: 0.05 and 0.95)."
            )
        if not self.min_std < self.max_std:
            raise ConfigError(
                f"ActorCriticConfig.min_std={self.min_std} must be below max_std={self.max_std} "
                "(e.g. 0.1 and 1.0)."
            )
        if self.gradient not in GRADIENTS:
            close = difflib.get_close_matches(str(self.gradient), GRADIENTS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"ActorCriticConfig.gradient must be one of {list(GRADIENTS)}, got "
                f"{self.gradient!r}.{hint}"
            )
        if self.obs_type is not None and not isinstance(self.obs_type, str):
            raise ConfigError(
                f"ActorCriticConfig.obs_type must be None or a family's obs_type name, got "
                f"{self.obs_type!r}."
            )
        if not (isinstance(self.seed, (int, np.integer)) and not isinstance(self.seed, bool)):
            raise ConfigError(f"ActorCriticConfig.seed must be an int, got {self.seed!r}.")
        if self.seed < 0:
            raise ConfigError(f"ActorCriticConfig.seed must be >= 0, got {self.seed!r}.")
        check_precision(self.precision)
        check_device(self.device)
        ImagineConfig(temperature=self.temperature)  # validates it


# --- pieces ------------------------------------------------------------------------------------
def lambda_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    continues: torch.Tensor,
    discount: float,
    lam: float,
) -> torch.Tensor:
    """TD(lambda) returns ``(B, H)`` of ``H`` imagined steps.

    ``R_t = r_t + discount * c_t * ((1 - lam) * v_{t+1} + lam * R_{t+1})`` with ``R_H = v_H``.

    Args:
        rewards: ``(B, H)`` the reward of each transition.
        values: ``(B, H+1)`` the values of the states before each transition and after the last.
        continues: ``(B, H)`` the chance the episode goes on after each transition.
        discount: the per-step discount.
        lam: lambda.

    Example:
        >>> lambda_returns(torch.ones(1, 2), torch.zeros(1, 3), torch.ones(1, 2), 0.5, 1.0)
        tensor([[1.5000, 1.0000]])
    """
    out = []
    last = values[:, -1]
    for t in reversed(range(rewards.shape[1])):
        bootstrap = (1.0 - lam) * values[:, t + 1] + lam * last
        last = rewards[:, t] + discount * continues[:, t] * bootstrap
        out.append(last)
    return torch.stack(out[::-1], 1)


class ReturnNormalizer(nn.Module):
    """DreamerV3's return scale: ``max(1, P_high - P_low)`` of the returns, each percentile an
    EMA over updates (the first update sets them). Returns are divided by the scale, so
    large returns are brought to about unit range and small ones are not blown up.

    Example:
        >>> norm = ReturnNormalizer(decay=0.99)
        >>> norm.update(torch.linspace(0, 100, 101))
        tensor(90.)
    """

    low: torch.Tensor
    high: torch.Tensor
    count: torch.Tensor

    def __init__(self, decay: float = 0.99, low: float = 0.05, high: float = 0.95) -> None:
        super().__init__()
        self.decay = decay
        self.quantiles = (low, high)
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> torch.Tensor:
        """Track the percentiles of ``returns`` (any shape); the new scale."""
        q = torch.quantile(
            returns.detach().float().flatten(),
            torch.tensor(self.quantiles, device=returns.device),
        )
        decay = torch.where(self.count > 0, self.decay, 0.0)
        self.low.copy_(decay * self.low + (1 - decay) * q[0])
        self.high.copy_(decay * self.high + (1 - decay) * q[1])
        self.count.add_(1)
        return self.scale()

    def scale(self) -> torch.Tensor:
        """``max(1, high - low)``: what returns are divided by."""
        return torch.clamp(self.high - self.low, min=1.0)


def mlp(inputs: int, outputs: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` times (Linear, LayerNorm, SiLU), then a zero-initialised Linear (so the
    critic starts at 0 and the actor at its centred, widest policy, as DreamerV3's)."""
    parts: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        parts += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        width = hidden
    head = nn.Linear(width, outputs)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return nn.Sequential(*parts, head)


def default_obs_type(model: Any) -> str:
    """The first float-vector observation of the family (not pixels, not code indices);
    else code indices (read one-hot); else pixels."""
    kinds = list(model.obs_types)
    for obs_type in kinds:
        space = model.observation_space(obs_type)
        if (
            obs_type != "pixels"
            and isinstance(space, gym.spaces.Box)
            and np.issubdtype(space.dtype, np.floating)
        ):
            return obs_type
    return "indices" if "indices" in kinds else kinds[0]


class Features:
    """Observations of one obs_type as flat float vectors ``(B, size)``: float Boxes
    flattened, uint8 Boxes scaled to ``[0, 1]``, MultiDiscrete code indices one-hot."""

    def __init__(self, space: gym.Space) -> None:
        self.space = space
        self.shape = tuple(space.shape or ())
        if isinstance(space, gym.spaces.MultiDiscrete):
            self.classes = int(np.max(space.nvec))
            self.size = int(np.prod(self.shape)) * self.classes
        elif isinstance(space, gym.spaces.Box):
            self.classes = 0
            self.size = int(np.prod(self.shape))
        else:
            raise ConfigError(
                f"the actor-critic reads Box or MultiDiscrete observations, got {space}; "
                "choose another ActorCriticConfig.obs_type."
            )

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        flat = obs.reshape(obs.shape[0], -1)
        if self.classes:
            return nn.functional.one_hot(flat.long(), self.classes).flatten(1).float()
        if not flat.is_floating_point():
            return flat.float() / 255.0
        return flat.float()


class Actor(nn.Module):
    """The policy: a tanh-squashed Gaussian over Box actions (scaled to the bounds), or a
    categorical with a uniform mix over Discrete ones."""

    action_mid: torch.Tensor
    action_half: torch.Tensor

    def __init__(self, features: int, actions: ActionSpec, config: ActorCriticConfig) -> None:
        super().__init__()
        self.continuous = actions.kind == "continuous"
        self.n = actions.n
        self.net = mlp(
            features,
            2 * self.n if self.continuous else self.n,
            config.actor_hidden,
            config.actor_layers,
        )
        self.min_std, self.max_std, self.unimix = config.min_std, config.max_std, config.unimix
        if self.continuous:
            low = torch.tensor(actions.low, dtype=torch.float32)
            high = torch.tensor(actions.high, dtype=torch.float32)
            self.register_buffer("action_mid", (low + high) / 2, persistent=False)
            self.register_buffer("action_half", (high - low) / 2, persistent=False)

    def params(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Box: the Gaussian's mean and std before the tanh, ``(B, n)`` each; Discrete: the
        probabilities ``(B, n)`` twice."""
        out = self.net(features)
        if self.continuous:
            mean, raw = out.chunk(2, -1)
            std = self.min_std + (self.max_std - self.min_std) * torch.sigmoid(raw + 2.0)
            return mean, std
        probs = (1 - self.unimix) * torch.softmax(out, -1) + self.unimix / self.n
        return probs, probs

    def squash(self, pre: torch.Tensor) -> torch.Tensor:
        """Box actions of pre-tanh values: ``mid + half * tanh(pre)``."""
        return self.action_mid + self.action_half * torch.tanh(pre)

    def sample(
        self, params: tuple[torch.Tensor, torch.Tensor], noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(action, pre)``: a sample for ``noise`` (Box: standard normals ``(B, n)``,
        reparameterised; Discrete: uniforms ``(B,)``), or the mode for ``noise=None`` (the
        tanh of the mean; the most likely action). ``pre`` is the pre-tanh value (Box) or
        the action (Discrete)."""
        if self.continuous:
            mean, std = params
            pre = mean if noise is None else mean + std * noise
            return self.squash(pre), pre
        probs = params[0]
        action = probs.argmax(-1) if noise is None else sample_categorical(probs, noise)
        return action, action

    def log_prob(
        self, params: tuple[torch.Tensor, torch.Tensor], pre: torch.Tensor
    ) -> torch.Tensor:
        """``(B,)`` log-density of the action of pre-tanh value ``pre`` (Box, with the tanh's
        and the scaling's Jacobian) or log-probability of the action ``pre`` (Discrete)."""
        if self.continuous:
            mean, std = params
            normal = torch.distributions.Normal(mean, std).log_prob(pre)
            log_det = 2.0 * (np.log(2.0) - pre - nn.functional.softplus(-2.0 * pre))
            return (normal - log_det - self.action_half.log()).sum(-1)
        return params[0].gather(-1, pre.unsqueeze(-1)).squeeze(-1).log()

    def entropy(self, params: tuple[torch.Tensor, torch.Tensor], pre: torch.Tensor) -> torch.Tensor:
        """``(B,)`` entropy: exact for a categorical; for the squashed Gaussian the one-sample
        estimate ``-log pi(a)`` at the reparameterised ``pre``."""
        if self.continuous:
            return -self.log_prob(params, pre)
        probs = params[0]
        return -(probs * probs.log()).sum(-1)


def differentiable(model: Any) -> bool:
    """Whether the family's next state is a reparameterised sample (gradients reach the
    actions through the whole dynamics): the ensemble, and the rssm with Gaussian states."""
    if model.family == "ensemble":
        return True
    return model.family == "rssm" and getattr(model.config, "stochastic", "") == "gaussian"


class Imagined(NamedTuple):
    """One update's imagined batch, with what the losses need."""

    rollout: Rollout
    """The trajectories (rewards, terminations, alive; with gradients in dynamics mode)."""
    features: torch.Tensor
    """``(B, H+1, F)`` the actor's inputs at each state (with gradients in dynamics mode)."""
    log_probs: torch.Tensor
    """``(B, H)`` log pi of each action taken (gradients to the actor)."""
    entropies: torch.Tensor
    """``(B, H)`` the policy's entropy at each state (gradients to the actor)."""


# --- the agent -----------------------------------------------------------------------------
class DreamerActorCritic:
    """An actor and a critic trained in the world model's imagination; SB3's ``predict``
    for ``Real-v0``. See the module docstring.

    Args:
        checkpoint: the world model (a directory or a loaded checkpoint).
        config: the settings; keyword ``overrides`` replace its fields
            (``DreamerActorCritic(path, horizon=10, batch=64)``).

    Example:
        >>> agent = DreamerActorCritic("runs/cartpole/model", batch=128, seed=1)
        >>> agent.train(200, progress=False)[-1]["imagined_return"]
        >>> actions, _ = agent.predict(obs)
    """

    checkpoint: Checkpoint
    model: WorldModel
    device: torch.device
    obs_type: str
    observation_space: gym.Space
    action_space: gym.Space
    continuous: bool
    imagination: Imagination
    evaluation: Imagination

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint,
        config: ActorCriticConfig | None = None,
        **overrides: Any,
    ) -> None:
        config = with_overrides(config or ActorCriticConfig(), overrides, "DreamerActorCritic")
        self.config = config
        self.set_checkpoint(checkpoint)
        self.features = Features(self.observation_space)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
            torch.manual_seed(config.seed)
            self.actor = Actor(self.features.size, self.model.actions, config).to(self.device)
            self.critic = mlp(self.features.size, 1, config.critic_hidden, config.critic_layers).to(
                self.device
            )
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.normalizer = ReturnNormalizer(
            config.return_decay, config.return_low, config.return_high
        ).to(self.device)
        self.actor_optimizer = torch.optim.Adam(
            self.actor.parameters(), lr=config.actor_lr, eps=1e-5
        )
        self.critic_optimizer = torch.optim.Adam(
            self.critic.parameters(), lr=config.critic_lr, eps=1e-5
        )
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        """The actor's sampling noise in training."""
        self.act_generator = torch.Generator(self.device).manual_seed(config.seed + 1)
        """The noise of ``predict(..., deterministic=False)``."""
        self.updates = 0
        """Updates done so far (keys each update's starts)."""

    def set_checkpoint(self, checkpoint: str | Path | Checkpoint) -> None:
        """Imagine with ``checkpoint`` from now on (a refitted model of the same env: its
        observations and actions must be those the actor and critic were built for)."""
        c = self.config
        ckpt = resolve_checkpoint(checkpoint, c.device, None)
        model = ckpt.model
        if model.jump > 1:
            raise ConfigError(
                f"the actor-critic acts one real step at a time; this checkpoint's model is "
                f"jumpy (jump={model.jump}). Fit a model with jump=1."
            )
        obs_type = c.obs_type or default_obs_type(model)
        model.check_obs_type(obs_type)
        space = model.observation_space(obs_type)
        gradient = c.gradient
        continuous = model.actions.kind == "continuous"
        if gradient == "auto":
            gradient = "dynamics" if continuous and differentiable(model) else "reinforce"
        if gradient == "dynamics" and not continuous:
            raise ConfigError(
                "ActorCriticConfig.gradient='dynamics' needs Box actions (a gradient cannot "
                f"pass a sampled discrete action); {model.spec.game!r} has Discrete actions. "
                "Use gradient='reinforce' (or 'auto')."
            )
        if getattr(self, "model", None) is not None:
            old, was = self.observation_space, (self.obs_type, self.model.actions, self.gradient)
            same_obs = type(old) is type(space) and old.shape == space.shape
            if not same_obs or (obs_type, model.actions, gradient) != was:
                raise CheckpointError(
                    f"the actor-critic reads {self.obs_type!r} observations {old}, acts in "
                    f"{self.model.actions} and learns by {self.gradient}; checkpoint "
                    f"{str(ckpt.path)!r} gives {obs_type!r} {space}, {model.actions} and "
                    f"{gradient}. Use a model of the same env and family."
                )
        self.checkpoint = ckpt
        self.model = model
        self.device = model.device
        self.obs_type = obs_type
        self.observation_space = space  # what evaluate() reads to pick the obs_type
        self.action_space = model.action_space
        self.continuous = continuous
        self.gradient: str = gradient
        """The resolved gradient mode: ``"dynamics"`` or ``"reinforce"``."""
        imagine = ImagineConfig(
            temperature=c.temperature,
            reward_mode="mean",
            termination_mode="probability",
            use_termination=True,
            obs_type=obs_type,
            precision=c.precision,
            grad=gradient == "dynamics",
        )
        self.imagination = Imagination(ckpt, imagine)
        self.evaluation = Imagination(ckpt, dataclasses.replace(imagine, grad=False))

    # --- imagination and losses ---------------------------------------------------------------
    def starts(self, update: int | None = None) -> Start:
        """The starts of update ``update`` (the next one if None): ``batch`` contexts of the
        start bank, keyed by the seed and the update."""
        n = self.updates if update is None else update
        seed = int(np.random.SeedSequence([self.config.seed, n]).generate_state(1)[0])
        return self.imagination.from_start_bank(self.config.batch, seed, self.config.burn_in)

    def _noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        if self.continuous:
            shape = (batch, self.model.actions.n)
            return torch.randn(shape, generator=generator, device=self.device)
        u = torch.rand((batch,), generator=generator, device=self.device)
        return u.clamp_(1e-7, 1 - 1e-7)

    def imagine(self, start: Start) -> Imagined:
        """Roll ``start`` out ``horizon`` steps under the sampling actor: with gradients
        through the dynamics (``"dynamics"``), or without, with the log-probabilities of the
        actions taken (``"reinforce"``)."""
        dynamics = self.gradient == "dynamics"
        feats: list[torch.Tensor] = []
        taken: list[torch.Tensor] = []
        noises: list[torch.Tensor] = []
        dists: list[tuple[torch.Tensor, torch.Tensor]] = []

        def policy(obs: torch.Tensor) -> torch.Tensor:
            f = self.features(obs)
            noise = self._noise(len(f), self.generator)
            params = self.actor.params(f)
            action, pre = self.actor.sample(params, noise)
            feats.append(f)
            taken.append(pre)
            noises.append(noise)
            if dynamics:
                dists.append(params)
            return action

        imagination = self.imagination
        rollout = imagination.rollout(start, self.config.horizon, policy=policy)
        if dynamics:
            final = self.features(self.model.observation(rollout.final.latent, self.obs_type))
            features = torch.stack([*feats, final], 1)
            pre = torch.stack(taken, 1)
            params = tuple(torch.stack(p, 1) for p in zip(*dists, strict=True))
            log_probs = self.actor.log_prob(params, pre)  # type: ignore[arg-type]
            return Imagined(rollout, features, log_probs, -log_probs)
        with torch.inference_mode():
            final = self.features(self.model.observation(rollout.final.latent, self.obs_type))
            features = torch.stack([*feats, final], 1)
            taken_all, noise_all = torch.stack(taken, 1), torch.stack(noises, 1)
        rollout = Rollout(
            rollout.latents.clone(),
            rollout.actions.clone(),
            rollout.rewards.clone(),
            rollout.terminations.clone(),
            rollout.alive.clone(),
            rollout.final,
        )
        features, taken_all, noise_all = features.clone(), taken_all.clone(), noise_all.clone()
        params = self.actor.params(features[:, :-1])
        log_probs = self.actor.log_prob(params, taken_all)
        if self.continuous:  # the entropy estimate at the same, now reparameterised, sample
            entropies = self.actor.entropy(params, params[0] + params[1] * noise_all)
        else:
            entropies = self.actor.entropy(params, taken_all)
        return Imagined(rollout, features, log_probs, entropies)

    def values(self, features: torch.Tensor, slow: bool = False) -> torch.Tensor:
        """The (slow) critic's values ``symexp(output)`` of features ``(..., F)``: ``(...)``."""
        net = self.slow_critic if slow else self.critic
        return symexp(net(features).squeeze(-1))

    def losses(self, imagined: Imagined, track: bool = True) -> dict[str, torch.Tensor]:
        """The actor's and critic's losses (``actor_loss``, ``critic_loss``) and diagnostics
        of an imagined batch; ``track`` updates the return normaliser's percentiles."""
        c = self.config
        rollout, features = imagined.rollout, imagined.features
        values = self.values(features, slow=True)  # (B, H+1), gradients to the states only
        returns = lambda_returns(
            rollout.rewards, values, 1.0 - rollout.terminations, c.discount, c.return_lambda
        )
        weights = rollout.alive.detach()
        scale = self.normalizer.update(returns) if track else self.normalizer.scale()
        prediction = self.critic(features[:, :-1].detach()).squeeze(-1)
        if self.gradient == "dynamics":
            objective = returns / scale
        else:  # the baseline: the critic's own (fresher) values
            advantage = ((returns - symexp(prediction)) / scale).detach()
            objective = imagined.log_probs * advantage
        actor_loss = -(weights * (objective + c.entropy * imagined.entropies)).mean()
        target = symlog(returns.detach())
        critic_loss = 0.5 * (weights * (prediction - target) ** 2).mean()
        return {
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "return": returns.detach().mean(),
            "imagined_return": rollout.returns(c.discount).detach().mean(),
            "entropy": imagined.entropies.detach().mean(),
            "return_scale": scale.detach(),
        }

    def update(self) -> dict[str, float]:
        """One update of the actor, the critic and the slow critic; its figures."""
        c = self.config
        out = self.losses(self.imagine(self.starts()))
        for loss, net, optimizer in (
            (out["actor_loss"], self.actor, self.actor_optimizer),
            (out["critic_loss"], self.critic, self.critic_optimizer),
        ):
            optimizer.zero_grad(set_to_none=True)
            params = list(net.parameters())
            loss.backward(inputs=params)  # never into the world model
            torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
            optimizer.step()
        with torch.no_grad():
            for slow, new in zip(
                self.slow_critic.parameters(), self.critic.parameters(), strict=True
            ):
                slow.lerp_(new, c.slow_critic)
        self.updates += 1
        return {k: float(v.detach()) for k, v in out.items()}

    def train(self, updates: int, progress: bool = True) -> list[dict[str, float]]:
        """``updates`` updates in the dream; one row of figures per update (``actor_loss``,
        ``critic_loss``, ``return`` (mean lambda-return), ``imagined_return`` (mean
        discounted reward over the horizon), ``entropy``, ``return_scale``).

        Example:
            >>> rows = agent.train(1000)
        """
        check_count(updates, "updates")
        rows: list[dict[str, float]] = []
        bar = tqdm(range(updates), desc="actor-critic", unit="update", disable=not progress)
        for _ in bar:
            rows.append(self.update())
            bar.set_postfix(ret=f"{rows[-1]['imagined_return']:.3g}")
        bar.close()
        return rows

    @torch.no_grad()
    def imagined_return(
        self, batch: int = 256, seed: int = 10_000_019, horizon: int | None = None
    ) -> float:
        """Mean discounted imagined return of the deterministic actor over ``horizon``
        steps (the config's if None) from ``batch`` start-bank starts keyed by ``seed``
        (by default none of the training updates' keys).

        Example:
            >>> before = agent.imagined_return(); agent.train(100); agent.imagined_return() > before
        """
        horizon = horizon or self.config.horizon
        start = self.evaluation.from_start_bank(batch, seed, self.config.burn_in)

        def policy(obs: torch.Tensor) -> torch.Tensor:
            return self.actor.sample(self.actor.params(self.features(obs)), None)[0]

        rollout = self.evaluation.rollout(start, horizon, policy=policy)
        return float(rollout.returns(self.config.discount).mean())

    # --- the SB3 face ---------------------------------------------------------------------
    def actions(self, obs: Any, deterministic: bool, noise: torch.Tensor | None = None) -> Any:
        """Actions ``(B, *action_shape)`` (numpy) for a batch of observations of the
        actor's ``obs_type``; ``noise`` (as :meth:`Actor.sample` takes it) replaces the
        predict generator's draws when sampling."""
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(obs), device=self.device)
            params = self.actor.params(self.features(x))
            if not deterministic and noise is None:
                noise = self._noise(x.shape[0], self.act_generator)
            action, _ = self.actor.sample(params, None if deterministic else noise)
            if self.continuous:
                action = torch.maximum(
                    torch.minimum(action, self.actor.action_mid + self.actor.action_half),
                    self.actor.action_mid - self.actor.action_half,
                )
                return action.float().cpu().numpy().astype(np.float32)
            return action.cpu().numpy().astype(np.int64)

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions for ``Real-v0`` observations ``(num_envs, *obs_shape)`` (or one).

        Args:
            observation: the observations of the actor's ``obs_type``.
            state: unused (the actor has no memory of its own); SB3's signature.
            episode_start: unused; SB3's signature.
            deterministic: the squashed Gaussian's mean (Box) or the most likely action
                (Discrete); False: a sample.

        Returns:
            ``(actions, None)``: float32 ``(num_envs, n)`` within the bounds, or int64.
        """
        obs = np.asarray(observation)
        space_shape = tuple(self.observation_space.shape or ())
        single = obs.shape == space_shape
        if single:
            obs = obs[None]
        if tuple(obs.shape[1:]) != space_shape:
            raise ConfigError(
                f"observation must have shape (num_envs, {', '.join(map(str, space_shape))}) "
                f"or {space_shape} (the actor reads {self.obs_type!r} observations), got "
                f"{obs.shape}."
            )
        actions = self.actions(obs, deterministic)
        return (actions[0] if single else actions), None

    def act(self, observation: np.ndarray) -> np.ndarray:
        """``predict(observation, deterministic=True)[0]``, for :func:`dreamenv.evaluate.play`."""
        return self.predict(observation, deterministic=True)[0]

    def evaluate(
        self,
        episodes: int = 32,
        num_envs: int = 16,
        seed: int = 0,
        deterministic: bool = True,
        max_steps: int | None = None,
    ) -> np.ndarray:
        """Returns of ``episodes`` real episodes in ``Real-v0``
        (:func:`dreamenv.evaluate.evaluate`)."""
        from dreamenv.evaluate import evaluate

        return evaluate(
            self,
            self.checkpoint,
            episodes=episodes,
            num_envs=num_envs,
            seed=seed,
            deterministic=deterministic,
            max_steps=max_steps,
            device=str(self.device),
        )

    # --- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the agent to the directory ``path`` (no pickle): ``actor_critic.json`` (the
        config, the model it was built for, counters, optimizer settings) and
        ``weights.safetensors`` (the networks, the return normaliser, Adam's moments, the
        random generators), as one atomic set. The world model is not copied.

        Example:
            >>> agent.save("runs/pendulum/actor-critic")
        """
        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in (
            ("actor", self.actor),
            ("critic", self.critic),
            ("slow_critic", self.slow_critic),
            ("normalizer", self.normalizer),
        ):
            for name, tensor in module.state_dict().items():
                tensors[f"{prefix}.{name}"] = tensor.detach().cpu().contiguous()
        optimizers: dict[str, Any] = {}
        for name, optimizer in self._optimizers().items():
            state = optimizer.state_dict()
            for index, entries in state["state"].items():
                for key, value in entries.items():
                    tensors[f"optim.{name}.{index}.{key}"] = torch.as_tensor(value).cpu().clone()
            optimizers[name] = state["param_groups"]
        tensors["rng.train"] = self.generator.get_state()
        tensors["rng.act"] = self.act_generator.get_state()
        manifest = {
            "format": FORMAT,
            "format_version": VERSION,
            "dreamenv_version": package_version(),
            "config": dataclasses.asdict(self.config),
            "model": self._identity(),
            "checkpoint": str(self.checkpoint.path),
            "updates": self.updates,
            "optimizers": optimizers,
            "files": [WEIGHTS],
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        write_file_set(
            path,
            {
                WEIGHTS: lambda p: save_file(tensors, str(p)),
                MANIFEST: lambda p: p.write_text(text),
            },
        )
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        checkpoint: str | Path | Checkpoint | None = None,
        device: str | None = None,
    ) -> DreamerActorCritic:
        """An agent saved by :meth:`save`, imagining with ``checkpoint`` (the one it was
        saved with if None), on ``device`` (the saved one if None).

        Example:
            >>> agent = DreamerActorCritic.load("runs/pendulum/actor-critic")
        """
        path = Path(path)

        def read() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
            manifest_file = set_file(path, MANIFEST)
            weights_file = set_file(path, WEIGHTS)
            if manifest_file is None or not manifest_file.is_file():
                raise CheckpointError(
                    f"{str(path)!r} holds no actor-critic ({MANIFEST} is missing); save one "
                    "with DreamerActorCritic.save(path)."
                )
            try:
                manifest = json.loads(manifest_file.read_text())
            except json.JSONDecodeError as err:
                raise CheckpointError(
                    f"{str(manifest_file)!r} is not valid JSON ({err}); save the agent again."
                ) from err
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise CheckpointError(
                    f"{str(manifest_file)!r} is not an actor-critic file (format "
                    f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                    f"expected {FORMAT!r})."
                )
            if manifest.get("format_version") != VERSION:
                raise CheckpointError(
                    f"{str(path)!r} is actor-critic format version "
                    f"{manifest.get('format_version')!r}; this dreamenv reads version {VERSION}."
                )
            if weights_file is None or not weights_file.is_file():
                raise CheckpointError(f"{str(path)!r} lacks {WEIGHTS}; save the agent again.")
            try:
                return manifest, load_file(str(weights_file))
            except (SafetensorError, OSError) as err:
                raise CheckpointError(
                    f"{str(weights_file)!r} is damaged ({err}); save the agent again."
                ) from err

        manifest, tensors = read_file_set(path, read)
        config = config_from_dict(ActorCriticConfig, manifest["config"])
        if device is not None:
            config = dataclasses.replace(config, device=device)
        agent = cls(checkpoint if checkpoint is not None else manifest["checkpoint"], config)
        identity = agent._identity()
        if identity != manifest["model"]:
            raise CheckpointError(
                f"{str(path)!r} was trained on {manifest['model']}; the checkpoint "
                f"{str(agent.checkpoint.path)!r} gives {identity}. Load it with a model of the "
                "same env and family."
            )
        agent._load_tensors(tensors, manifest, path)
        return agent

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    def _identity(self) -> dict[str, Any]:
        """What the saved networks fit: the family, the env, the observation and actions."""
        space = self.observation_space
        return {
            "family": self.model.family,
            "game": self.model.spec.game,
            "obs_type": self.obs_type,
            "observation_shape": list(space.shape or ()),
            "features": self.features.size,
            "actions": json.loads(json.dumps(dataclasses.asdict(self.model.actions))),
            "gradient": self.gradient,
        }

    def _load_tensors(
        self, tensors: dict[str, torch.Tensor], manifest: dict[str, Any], path: Path
    ) -> None:
        tensors = dict(tensors)
        try:
            for prefix, module in (
                ("actor", self.actor),
                ("critic", self.critic),
                ("slow_critic", self.slow_critic),
                ("normalizer", self.normalizer),
            ):
                names = list(module.state_dict())
                state = {n: tensors.pop(f"{prefix}.{n}") for n in names}
                module.load_state_dict(state)
            for name, optimizer in self._optimizers().items():
                entries: dict[int, dict[str, torch.Tensor]] = {}
                head = f"optim.{name}."
                for key in [k for k in tensors if k.startswith(head)]:
                    index, field = key[len(head) :].split(".", 1)
                    entries.setdefault(int(index), {})[field] = tensors.pop(key)
                optimizer.load_state_dict(
                    {"state": entries, "param_groups": manifest["optimizers"][name]}
                )
            self.generator.set_state(tensors.pop("rng.train"))
            self.act_generator.set_state(tensors.pop("rng.act"))
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"{str(path / WEIGHTS)!r} does not hold this actor-critic's tensors ({err}); "
                "save the agent again."
            ) from err
        if tensors:
            raise CheckpointError(
                f"{str(path / WEIGHTS)!r} holds unexpected tensors {sorted(tensors)[:3]}; save "
                "the agent again."
            )
        self.updates = int(manifest.get("updates", 0))


# --- the loop with real data -------------------------------------------------------------------
class ActorPolicy:
    """The actor as a collection policy (:data:`dreamenv.data.collect.Policy`): it sees what
    ``Real-v0`` shows it (its :meth:`observations` path) and samples its actions (or takes
    the deterministic ones) with the collection's generator.

    Example:
        >>> dreamenv.collect("runs/pendulum/data", spec, 20_000, policy=ActorPolicy(agent))
    """

    def __init__(self, agent: DreamerActorCritic, deterministic: bool = False) -> None:
        self.agent = agent
        self.deterministic = deterministic

    def observations(self, num_envs: int, spec: Any) -> RealObservations:
        """The observation path of ``num_envs`` real games of ``spec`` (the checkpoint's)."""
        ckpt = self.agent.checkpoint
        if spec != ckpt.spec:
            raise ConfigError(
                f"The actor observes through the checkpoint {str(ckpt.path)!r}, trained on "
                f"{ckpt.spec}; this collection uses {spec}. Collect with the checkpoint's spec."
            )
        return RealObservations(num_envs, spec, ckpt, self.agent.obs_type, str(self.agent.device))

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Actions for the actor's observations ``obs``, drawn with ``rng``."""
        if self.deterministic:
            return self.agent.actions(obs, True)
        if self.agent.continuous:
            draws = rng.standard_normal((len(obs), self.agent.model.actions.n))
        else:
            draws = np.clip(rng.random(len(obs)), 1e-7, 1 - 1e-7)
        noise = torch.as_tensor(draws, dtype=torch.float32, device=self.agent.device)
        return self.agent.actions(obs, False, noise)


def train_actor_critic_loop(
    env: str | Any,
    run_dir: str | Path,
    iterations: int,
    *,
    steps: int = 2000,
    epochs: int = 5,
    updates: int = 500,
    family: str = "ensemble",
    preset: str = "small",
    fit_config: Any = None,
    config: ActorCriticConfig | None = None,
    collect_envs: int = 4,
    eval_episodes: int = 16,
    eval_envs: int = 8,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Dreamer's loop with real data: each iteration collects ``steps`` more real steps (the
    first with random actions, then with the sampling actor), refits the world model on all
    of them (``epochs`` more epochs, continuing the checkpoint), trains the actor-critic
    ``updates`` more updates in the refitted dream, and evaluates it in ``Real-v0``.

    ``run_dir`` holds ``data`` (the store), ``model`` (the checkpoint), ``agent-<i>`` (the
    actor-critic after iteration ``i``) and ``results.json``. Called again on the same
    directory it continues: collection and fitting resume, saved agents are reused.

    Args:
        env: a gymnasium or ALE id (``make_spec``'s defaults), or an env spec.
        fit_config: a :class:`dreamenv.FitConfig` (its ``epochs`` is set per iteration).

    Returns:
        One row per iteration: ``iteration``, ``real_steps``, ``mean_return``, ``std_return``,
        ``returns``, ``imagined_return``.

    Example:
        >>> rows = train_actor_critic_loop("Pendulum-v1", "runs/pendulum-ac", iterations=3)
    """
    from dreamenv.data.collect import collect
    from dreamenv.envs.spec import make_spec
    from dreamenv.train.fit import FitConfig, fit

    check_count(iterations, "iterations")
    for name, value in (("steps", steps), ("epochs", epochs), ("updates", updates)):
        check_count(value, name)
    config = config or ActorCriticConfig()
    fit_config = fit_config or FitConfig(seed=config.seed, device=config.device)
    spec = make_spec(env) if isinstance(env, str) else env
    run_dir = Path(run_dir)
    data, model = run_dir / "data", run_dir / "model"
    rows: list[dict[str, Any]] = []
    agent: DreamerActorCritic | None = None
    for iteration in range(1, iterations + 1):
        policy = None if agent is None else ActorPolicy(agent)
        collect(
            data,
            spec,
            steps * iteration,
            num_envs=collect_envs,
            policy=policy,
            seed=config.seed * 1000 + iteration,
            progress=progress,
        )
        fit(
            data,
            model,
            family=family,
            preset=preset,
            config=dataclasses.replace(fit_config, epochs=epochs * iteration),
            progress=progress,
        )
        saved = run_dir / f"agent-{iteration}"
        if (saved / MANIFEST).is_file():
            agent = DreamerActorCritic.load(saved, model)
        else:
            if agent is None:
                agent = DreamerActorCritic(model, config)
            else:
                agent.set_checkpoint(model)
            agent.train(updates, progress=progress)
            agent.save(saved)
        returns = agent.evaluate(eval_episodes, eval_envs, seed=config.seed + 10_000 * iteration)
        rows.append(
            {
                "iteration": iteration,
                "real_steps": steps * iteration,
                "mean_return": float(np.mean(returns)),
                "std_return": float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0,
                "returns": returns.tolist(),
                "imagined_return": agent.imagined_return(),
            }
        )
        write_json(run_dir / "results.json", rows)
        if progress:
            tqdm.write(
                f"iteration {iteration}/{iterations}: {steps * iteration} real steps, return "
                f"{rows[-1]['mean_return']:.2f} ± {rows[-1]['std_return']:.2f}"
            )
    return rows
