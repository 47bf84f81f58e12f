"""The World Models controller (Ha & Schmidhuber 2018): a linear policy on the model's latent
(and, optionally, its recurrent state), evolved with CMA-ES entirely in the dream.

Every generation, :class:`CMAESController` asks CMA-ES (the ``cmaes`` package, ``pip install
"dreamenv[agents]"``) for ``population`` parameter vectors and scores each by its mean
imagined return over ``episodes`` dream episodes of ``horizon`` steps. All ``population *
episodes`` episodes run as ONE batch of imagined rollouts
(:meth:`~dreamenv.imagine.Imagination.rollout`, started with
:meth:`~dreamenv.imagine.Imagination.from_start_bank`, as ``Dream-v0`` starts): row ``p *
episodes + j`` is episode ``j`` of candidate ``p``, and one batched matmul gives every row the
action of its own candidate. The same batch scores the CMA-ES mean on ``eval_episodes``
further episodes. CMA-ES is told the candidates' negated mean returns; the controller kept
to act in ``Real-v0`` (through SB3's :meth:`~CMAESController.predict`) is the mean that
scored best so far (``keep="mean"``, the paper's choice) or the best candidate
(``keep="best"``).

The controller (:class:`LinearController`) is ``a = mid + half * tanh(W f + b)`` for ``Box``
actions (within the bounds) and ``a = argmax(W f + b)`` for ``Discrete`` ones (per step of a
jumpy model's chunk). Its features ``f``:

- ``"latent"``: the model's observation of the latent, flattened, as floats: the observation
  type the agent sees in ``Dream-v0`` and ``Real-v0`` (``obs_type``; by default the first of
  the family's float ones: ``"state"`` of the ``ensemble``, ``rssm`` and state-space models,
  ``"latent"`` ``[z, h]`` of the ``mdnrnn`` (the paper's controller input: its LSTM's ``h`` is
  in the latent already), the codebook ``"embeddings"`` of the ``discrete`` model (its code
  indices are categories, not magnitudes); uint8 pixels (``pixel_ar``) are scaled to [0, 1]).
  The ``Real-v0`` observation is this feature, so :meth:`~CMAESController.predict` needs
  nothing but the observation, for every family.
- ``"latent+state"``: those, then every float tensor of the model state flattened (the
  ``discrete`` model's ConvLSTM cells, an ``mdnrnn``'s ``(h, c)``, a state-space model's
  context; integer parts such as the ensemble member are left out). In the dream the rollout
  goes one step at a time (``horizon`` calls of one step, the same draws as one call); in
  ``Real-v0`` the state comes from the env (``real_env=``, as
  :class:`~dreamenv.agents.cem.CEMPlanner`'s), except for an ``ensemble`` with
  ``frame_stack=1``, whose state the observation determines.

The sizes: the paper's CarRacing controller reads ``[z, h]`` of 32 + 256 floats for 3 actions,
867 parameters. Full-covariance CMA-ES costs ``O(n^2)`` memory and an ``O(n^3)``
eigendecomposition per generation, so ``covariance="auto"`` switches to the diagonal
(separable) CMA-ES above :data:`FULL_COVARIANCE_LIMIT` parameters (a discrete Atari model's
embeddings: ``32 * 6 * 6`` floats per action).

Example:
    >>> controller = CMAESController("runs/carracing/model", population=64, episodes=16,
    ...                              horizon=100, temperature=1.15)
    >>> controller.fit(generations=50, progress=True)
    >>> returns = evaluate(controller, "runs/carracing/model", episodes=32)
    >>> controller.save("runs/carracing/controller.safetensors")
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from dreamenv.agents.overrides import with_overrides
from dreamenv.atomic_files import write_atomic
from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.options import check_reset_share
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.imagine import (
    REWARD_MODES,
    TERMINATION_MODES,
    Imagination,
    ImagineConfig,
    Start,
    check_count,
)
from dreamenv.models.base import State
from dreamenv.precision import Precision, check_precision

FEATURES = ("latent", "latent+state")
COVARIANCES = ("auto", "full", "diagonal")
KEEPS = ("mean", "best")
FULL_COVARIANCE_LIMIT = 3000
"""Parameters up to which ``covariance="auto"`` runs full-covariance CMA-ES."""
FORMAT = "dreamenv-cmaes-controller"
"""The ``format`` entry of a saved controller's metadata."""
VERSION = 1
FLOAT_OBS_TYPES = ("state", "latent", "embeddings")
"""Observation types :class:`CMAESConfig`'s ``obs_type=None`` picks from, in this order."""


@dataclass(frozen=True)
class CMAESConfig:
    """Settings of :class:`CMAESController` (defaults: the paper's population and episodes)."""

    population: int = 64
    """Candidate controllers per generation (the paper: 64); at least 2."""
    episodes: int = 16
    """Dream episodes each candidate is scored on, its mean return (the paper: 16)."""
    horizon: int = 50
    """Imagined steps of each dream episode (``Dream-v0``'s default horizon)."""
    generations: int = 100
    """Generations :meth:`CMAESController.fit` runs when not told otherwise."""
    keep: Literal["mean", "best"] = "mean"
    """Which controller acts: ``"mean"``, the CMA-ES mean that scored best on
    ``eval_episodes`` dream episodes (the paper's, which scored the mean every 25
    generations on 1024); ``"best"``, the best candidate on its own ``episodes`` (optimistic:
    the luckiest of many draws of a few episodes)."""
    eval_episodes: int = 64
    """Dream episodes each generation's CMA-ES mean is scored on (``keep="mean"``; rounded
    up to a multiple of ``episodes``), in the generation's batch."""
    sigma0: float = 0.1
    """Initial step size of CMA-ES around the zero controller (the paper's estool: 0.1)."""
    temperature: float = 1.0
    """The paper's tau: sampling temperature of the dream's transitions (1: as trained;
    above 1: a harder, more uncertain dream; 0: the model's mode)."""
    features: Literal["latent", "latent+state"] = "latent"
    """What the controller reads: the latent observation, or it and the model state."""
    obs_type: str | None = None
    """Which observation of the latent (one of the family's ``obs_types``); None: the first
    of ``"state"``, ``"latent"``, ``"embeddings"`` the family has, else its default."""
    covariance: Literal["auto", "full", "diagonal"] = "auto"
    """CMA-ES's covariance: full, diagonal (separable CMA-ES, for many parameters), or full
    up to ``FULL_COVARIANCE_LIMIT`` parameters."""
    seed: int = 0
    """Seeds CMA-ES and the dream episodes (generation ``g``'s starts and model noise)."""
    reward_mode: Literal["mean", "sample", "mode"] = "mean"
    """The dream's rewards: the reward head's expectation, a sample, or its mode."""
    use_termination: bool = True
    """Weight each reward by the chance the dream episode is still running."""
    termination_mode: Literal["probability", "sample"] = "probability"
    """Endings as the head's probabilities, or sampled 0/1 ends (a hard game over)."""
    burn_in: int = 4
    """Real observations of each start-bank context the model is burnt in over."""
    reset_share: float = 0.0
    """Share of dream episodes that start at a real episode's start (as
    :attr:`~dreamenv.envs.options.DreamOptions.reset_share`; 1.0: as the real env resets)."""
    precision: Precision = "float32"
    """``"bfloat16"``: imagined steps under bfloat16 autocast (faster on CPUs with AMX)."""

    def __post_init__(self) -> None:
        for name in ("episodes", "horizon", "generations", "eval_episodes", "burn_in"):
            check_count(getattr(self, name), f"CMAESConfig.{name}")
        p = self.population
        if not (isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 2):
            raise ConfigError(
                f"CMAESConfig.population must be an int >= 2 (CMA-ES recombines the better "
                f"half of it; the paper: 64), got {p!r}."
            )
        s = self.seed
        if not (isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0):
            raise ConfigError(f"CMAESConfig.seed must be an int >= 0, got {s!r}.")
        for name, positive, hint in (
            ("sigma0", True, "> 0 (the paper's: 0.1)"),
            ("temperature", False, ">= 0 (1: as trained; the paper's Doom: 1.15)"),
        ):
            value = getattr(self, name)
            number = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise ConfigError(
                    f"CMAESConfig.{name} must be a finite number {hint}, got {value!r}."
                )
        for name, choices in (
            ("features", FEATURES),
            ("keep", KEEPS),
            ("covariance", COVARIANCES),
            ("reward_mode", REWARD_MODES),
            ("termination_mode", TERMINATION_MODES),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"CMAESConfig.{name} must be one of {list(choices)}, got "
                    f"{getattr(self, name)!r}."
                )
        if self.obs_type is not None and not isinstance(self.obs_type, str):
            raise ConfigError(
                f"CMAESConfig.obs_type must be None or a family's observation type such as "
                f"'embeddings', got {self.obs_type!r}."
            )
        if not isinstance(self.use_termination, bool):
            raise ConfigError(
                f"CMAESConfig.use_termination must be True or False, got {self.use_termination!r}."
            )
        check_reset_share(self.reset_share, "CMAESConfig.reset_share")
        check_precision(self.precision, "CMAESConfig.precision")


@dataclass(frozen=True)
class GenerationStats:
    """One generation of :meth:`CMAESController.fit`: its candidates' mean imagined returns."""

    generation: int
    """Index of the generation (0 first), counted over every ``fit`` call."""
    mean: float
    """Mean over the candidates of their mean returns."""
    std: float
    """Their standard deviation."""
    best: float
    """The best candidate's mean return."""
    worst: float
    """The worst candidate's mean return."""
    mean_controller: float
    """The CMA-ES mean's return over ``eval_episodes`` episodes (NaN with ``keep="best"``)."""
    kept: float
    """The kept controller's score (:attr:`CMAESController.best_return`)."""
    sigma: float
    """CMA-ES's step size after the update."""


class LinearController:
    """``action = squash(W f + b)`` for one parameter vector, or for a population at once.

    ``Box`` actions: ``mid + half * tanh(y)`` (inside the bounds); ``Discrete(A)``:
    ``argmax(y)`` over ``A`` outputs; ``MultiDiscrete([A] * c)`` (a jumpy model's chunks):
    an argmax of ``A`` outputs per step. The parameter vector is ``W`` ``(outputs,
    num_features)`` row by row, then ``b`` ``(outputs,)``.

    Args:
        num_features: length of a feature vector ``f``.
        action_space: the model's (single-env) action space.
        params: ``(num_params,)`` the parameters (zeros if None).
        device: where the parameters live.

    Example:
        >>> controller = LinearController(3, gym.spaces.Box(-2, 2, (1,)))
        >>> controller(torch.zeros(5, 3)).shape
        torch.Size([5, 1])
    """

    def __init__(
        self,
        num_features: int,
        action_space: gym.Space,
        params: torch.Tensor | np.ndarray | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.num_features = check_count(num_features, "num_features")
        self.action_space = action_space
        self.device = torch.device(device)
        self.action_shape: tuple[int, ...] = tuple(action_space.shape or ())
        self.continuous = isinstance(action_space, gym.spaces.Box)
        if isinstance(action_space, gym.spaces.Box):
            low, high = np.asarray(action_space.low), np.asarray(action_space.high)
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise ConfigError(
                    f"LinearController squashes Box actions into their bounds, which must be "
                    f"finite; got {action_space}."
                )
            self.mid = torch.as_tensor((low + high) / 2, dtype=torch.float32, device=self.device)
            self.half = torch.as_tensor((high - low) / 2, dtype=torch.float32, device=self.device)
            self.choices = 1
        elif isinstance(action_space, gym.spaces.Discrete):
            self.choices = int(action_space.n)
        elif isinstance(action_space, gym.spaces.MultiDiscrete):
            nvec = np.asarray(action_space.nvec).reshape(-1)
            if len(set(nvec.tolist())) != 1:
                raise ConfigError(
                    f"LinearController takes a MultiDiscrete of equal sizes (a jumpy model's "
                    f"chunks), got nvec={nvec.tolist()}."
                )
            self.choices = int(nvec[0])
        else:
            raise ConfigError(
                f"LinearController acts in a Box, Discrete or MultiDiscrete space, got "
                f"{action_space}."
            )
        self.outputs = int(np.prod(self.action_shape, dtype=np.int64)) * self.choices
        """Rows of ``W``: one per action dimension (Box) or per action (Discrete)."""
        self.num_params = self.outputs * self.num_features + self.outputs
        """Length of the parameter vector."""
        self.params = torch.zeros(self.num_params, device=self.device)
        if params is not None:
            self.set_params(params)

    def set_params(self, params: torch.Tensor | np.ndarray) -> None:
        """Use ``params`` ``(num_params,)`` (copied)."""
        p = torch.as_tensor(params, dtype=torch.float32, device=self.device).reshape(-1)
        if p.numel() != self.num_params:
            raise ConfigError(
                f"params must have {self.num_params} values ({self.outputs} x "
                f"{self.num_features} weights, then {self.outputs} biases), got {p.numel()}."
            )
        self.params = p.clone()

    @property
    def weight(self) -> torch.Tensor:
        """``W`` ``(outputs, num_features)`` (a view of :attr:`params`)."""
        return self.params[: self.outputs * self.num_features].view(self.outputs, self.num_features)

    @property
    def bias(self) -> torch.Tensor:
        """``b`` ``(outputs,)`` (a view of :attr:`params`)."""
        return self.params[self.outputs * self.num_features :]

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Actions ``(B, *action_shape)`` of features ``(B, num_features)``."""
        return self.batched(self.params[None], features)

    def batched(self, params: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Actions ``(P * R, *action_shape)`` of ``P`` controllers ``params`` ``(P,
        num_params)`` for features ``(P * R, num_features)``: rows ``p * R .. p * R + R - 1``
        use controller ``p`` (one batched matmul)."""
        n_p, f = params.shape[0], self.num_features
        if features.dim() != 2 or features.shape[1] != f or features.shape[0] % n_p:
            raise ConfigError(
                f"features must have shape (P * R, {f}) for P = {n_p} controllers, got "
                f"{tuple(features.shape)}."
            )
        split = self.outputs * f
        weight = params[:, :split].view(n_p, self.outputs, f)
        bias = params[:, split:].view(n_p, 1, self.outputs)
        y = torch.baddbmm(bias, features.view(n_p, -1, f), weight.transpose(1, 2))
        y = y.reshape(-1, self.outputs)
        if self.continuous:
            return self.mid + self.half * torch.tanh(y.view(-1, *self.action_shape))
        return y.view(-1, *self.action_shape, self.choices).argmax(-1)


class CMAESController:
    """The World Models controller, evolved by CMA-ES in the dream; SB3's ``predict`` for
    ``Real-v0``. See the module docstring.

    Args:
        checkpoint: the world model's checkpoint (a directory or a loaded one); its start
            bank begins the dream episodes.
        config: the settings; keyword ``overrides`` replace its fields
            (``CMAESController(path, population=32, temperature=1.15)``).
        device: where a checkpoint directory is loaded.
        real_env: a ``Real-v0`` env (``RealVectorEnv``) whose model state ``predict`` reads
            for ``features="latent+state"`` (not needed for ``"latent"``, nor for an
            ``ensemble`` with ``frame_stack=1``); can be set later as ``.real_env``.

    Example:
        >>> controller = CMAESController("runs/pendulum/model", population=16, episodes=4)
        >>> controller.fit(generations=20)
        >>> actions, _ = controller.predict(obs)
    """

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint,
        config: CMAESConfig | None = None,
        *,
        device: str = "cpu",
        real_env: Any = None,
        **overrides: Any,
    ) -> None:
        config = with_overrides(config or CMAESConfig(), overrides, "CMAESController")
        self.config = config
        self.checkpoint = resolve_checkpoint(checkpoint, device, None)
        self.model = self.checkpoint.model
        self.device = self.model.device
        self.obs_type = self._pick_obs_type(config.obs_type)
        self.imagination = Imagination(
            self.checkpoint,
            ImagineConfig(
                temperature=config.temperature,
                reward_mode=config.reward_mode,
                termination_mode=config.termination_mode,
                use_termination=config.use_termination,
                obs_type=self.obs_type,
                precision=config.precision,
                grad=False,
            ),
        )
        bank = self.checkpoint.start_bank
        bank.require_resets(config.reset_share)
        if config.burn_in > bank.context:
            raise ConfigError(
                f"CMAESConfig.burn_in={config.burn_in} exceeds the start bank's context of "
                f"{bank.context} real observations; use burn_in <= {bank.context}."
            )
        if config.features == "latent+state" and self.obs_type == "pixels":
            raise ConfigError(
                "features='latent+state' reads the model state that Real-v0 follows, and it "
                "follows none for obs_type='pixels': use features='latent', or another "
                f"obs_type of the {self.model.family!r} family ({list(self.model.obs_types)})."
            )
        self.observation_space = self.model.observation_space(self.obs_type)
        """What :func:`dreamenv.evaluate.evaluate` reads to pick the observation type."""
        self.action_space = self.model.action_space
        self.latent_size = int(np.prod(self.observation_space.shape or (1,), dtype=np.int64))
        """Features of the latent observation."""
        self.state_size = 0
        """Features of the model state (``features="latent+state"``)."""
        if config.features == "latent+state":
            probe = self.imagination.from_start_bank(1, seed=0, burn_in=config.burn_in)
            self.state_size = int(self.state_features(probe.state).shape[1])
        self.controller = LinearController(
            self.latent_size + self.state_size, self.action_space, device=self.device
        )
        """The kept controller (``config.keep``; zeros before :meth:`fit`)."""
        self.real_env = real_env
        self.best_return = -math.inf
        """The kept controller's mean imagined return, in the generation it was scored."""
        self.best_generation = -1
        """The generation the kept controller comes from (-1: none yet)."""
        self.generation = 0
        """Generations run so far, over every :meth:`fit` call."""
        self.history: list[GenerationStats] = []
        """One entry per generation run."""
        self.strategy: Any = None
        """The ``cmaes`` optimiser (``CMA`` or ``SepCMA``), made by the first :meth:`fit`
        around the kept controller."""

    def _pick_obs_type(self, obs_type: str | None) -> str:
        types = self.model.obs_types
        if obs_type is None:
            return next((t for t in FLOAT_OBS_TYPES if t in types), types[0])
        if obs_type not in types:
            raise ConfigError(
                f"CMAESConfig.obs_type={obs_type!r} is not an observation of the "
                f"{self.model.family!r} family; choose one of {list(types)} (or None)."
            )
        return obs_type

    # --- features ---------------------------------------------------------------------------
    @staticmethod
    def latent_features(obs: torch.Tensor) -> torch.Tensor:
        """Observations ``(B, ...)`` as float feature rows ``(B, D)``; uint8 pixels / 255."""
        flat = obs.flatten(1)
        return flat.float() / 255.0 if flat.dtype == torch.uint8 else flat.float()

    @staticmethod
    def state_features(state: State) -> torch.Tensor:
        """The float tensors of a model state, flattened and concatenated ``(B, D)``."""
        parts = [s.flatten(1).float() for s in state if s.is_floating_point()]
        if not parts:
            raise ConfigError(
                "features='latent+state' needs a model state with float tensors; this model's "
                "state has none: use features='latent'."
            )
        return torch.cat(parts, 1)

    # --- the dream --------------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        """Parameters of the controller (CMA-ES's dimension)."""
        return self.controller.num_params

    @property
    def diagonal(self) -> bool:
        """Whether CMA-ES runs with a diagonal covariance (see ``CMAESConfig.covariance``)."""
        cov = self.config.covariance
        return cov == "diagonal" or (cov == "auto" and self.num_params > FULL_COVARIANCE_LIMIT)

    @property
    def mean_copies(self) -> int:
        """Copies of the CMA-ES mean in each generation's batch, ``episodes`` rows each
        (``ceil(eval_episodes / episodes)``; 0 with ``keep="best"``)."""
        c = self.config
        return 0 if c.keep == "best" else -(-c.eval_episodes // c.episodes)

    def generation_seed(self, generation: int) -> int:
        """The seed of generation ``generation``'s dream episodes (row ``i`` as a dream env
        reset with ``seed + i``)."""
        return int(np.random.SeedSequence([self.config.seed, generation]).generate_state(1)[0])

    @torch.inference_mode()
    def imagined_returns(self, params: torch.Tensor | np.ndarray, seed: int) -> torch.Tensor:
        """Imagined returns ``(P, episodes)`` of ``P`` controllers ``params`` ``(P,
        num_params)``: ``P * episodes`` dream episodes from the start bank in one batch
        (episode ``j`` of controller ``p`` is row ``p * episodes + j``; its streams as a
        dream env reset with ``seed + p * episodes + j``)."""
        p = torch.as_tensor(params, dtype=torch.float32, device=self.device)
        if p.dim() != 2 or p.shape[1] != self.num_params:
            raise ConfigError(
                f"params must have shape (P, {self.num_params}), got {tuple(p.shape)}."
            )
        c = self.config
        start = self.imagination.from_start_bank(
            p.shape[0] * c.episodes, seed, c.burn_in, c.reset_share
        )
        return self.rollout_returns(start, p).view(p.shape[0], c.episodes)

    def rollout_returns(self, start: Start, params: torch.Tensor) -> torch.Tensor:
        """Returns ``(B,)`` of ``horizon`` imagined steps from ``start`` (``B = P * R``
        rows) under the ``P`` controllers ``params`` (rows of a controller together)."""
        c, imagination, act = self.config, self.imagination, self.controller.batched
        if c.features == "latent":
            rollout = imagination.rollout(
                start, c.horizon, policy=lambda obs: act(params, self.latent_features(obs))
            )
            return rollout.returns()
        total = torch.zeros(start.batch, device=self.device)
        running = torch.ones(start.batch, device=self.device)
        for _ in range(c.horizon):  # one step a call: the policy reads the state it starts in
            extra = self.state_features(start.state)

            def policy(obs: torch.Tensor, extra: torch.Tensor = extra) -> torch.Tensor:
                return act(params, torch.cat([self.latent_features(obs), extra], 1))

            step = imagination.rollout(start, 1, policy=policy)
            total += running * step.rewards[:, 0]
            if c.use_termination:
                running = running * (1.0 - step.terminations[:, 0])
            start = step.final
        return total

    def _make_strategy(self) -> Any:
        try:
            from cmaes import CMA, SepCMA
        except ImportError as err:  # an optional dependency
            raise ImportError(
                "CMAESController needs the cmaes package: pip install 'dreamenv[agents]' "
                "(or pip install cmaes)."
            ) from err
        cls = SepCMA if self.diagonal else CMA
        mean = self.controller.params.detach().cpu().double().numpy()
        return cls(
            mean=mean,
            sigma=float(self.config.sigma0),
            seed=int(self.config.seed),
            population_size=int(self.config.population),
        )

    def fit(
        self,
        generations: int | None = None,
        progress: bool = False,
        callback: Callable[[GenerationStats], object] | None = None,
    ) -> CMAESController:
        """Run ``generations`` generations of CMA-ES in the dream (``config.generations``
        if None); a later call continues where this one ended.

        Args:
            generations: generations to run.
            progress: show a progress bar with the returns.
            callback: called with each generation's :class:`GenerationStats`; returning
                True stops the run.

        Returns:
            ``self``, its :attr:`controller` the one kept so far (``config.keep``).

        Example:
            >>> controller.fit(20, progress=True).history[-1].best
        """
        c = self.config
        gens = c.generations if generations is None else check_count(generations, "generations")
        if self.strategy is None:
            self.strategy = self._make_strategy()
        es = self.strategy
        bar = tqdm(range(gens), desc="CMA-ES", unit="gen", disable=not progress)
        n, m = c.population, self.mean_copies
        for _ in bar:
            xs = [es.ask() for _ in range(n)]
            center = np.array(es.mean, dtype=np.float64)  # the mean they were drawn around
            params = torch.as_tensor(
                np.stack(xs + [center] * m), dtype=torch.float32, device=self.device
            )
            seed = self.generation_seed(self.generation)
            # the one host sync per generation
            returns = self.imagined_returns(params, seed).double().cpu().numpy()
            scores = returns[:n].mean(1)
            scores = np.where(np.isfinite(scores), scores, -np.inf)  # NaN: the worst
            es.tell([(x, -float(s)) for x, s in zip(xs, scores, strict=True)])
            k = int(np.argmax(scores))
            center_score = float(returns[n:].mean()) if m else math.nan
            if m and not math.isfinite(center_score):
                center_score = -math.inf
            score, index = (center_score, n) if m else (float(scores[k]), k)
            if score > self.best_return:
                self.best_return = score
                self.best_generation = self.generation
                self.controller.set_params(params[index])
            finite = scores[np.isfinite(scores)]
            stats = GenerationStats(
                generation=self.generation,
                mean=float(finite.mean()) if len(finite) else -math.inf,
                std=float(finite.std()) if len(finite) else 0.0,
                best=float(scores[k]),
                worst=float(scores.min()),
                mean_controller=center_score,
                kept=self.best_return,
                sigma=float(getattr(es, "_sigma", math.nan)),  # cmaes keeps it private
            )
            self.history.append(stats)
            self.generation += 1
            bar.set_postfix(mean=f"{stats.mean:.3g}", kept=f"{stats.kept:.3g}")
            if callback is not None and callback(stats) is True:
                break
        bar.close()
        return self

    # --- the SB3 face ---------------------------------------------------------------------
    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions of the kept controller for ``Real-v0`` observations ``(num_envs,
        *obs_shape)`` (or one observation).

        Args:
            observation: observations of ``obs_type`` (``Real-v0`` made with
                ``obs_type=controller.obs_type``, as :func:`dreamenv.evaluate.evaluate`
                makes it); with ``features="latent+state"`` and ``real_env``, the env's
                model state is read instead (the batch sizes must match).
            state: unused (the model state lives in the env); SB3's signature.
            episode_start: unused (the controller has no memory of its own).
            deterministic: unused: the controller is deterministic.

        Returns:
            ``(actions, None)``: float32 ``(num_envs, *action_shape)`` within the bounds, or
            int64 ``(num_envs, ...)``.
        """
        obs = np.asarray(observation)
        space_shape = tuple(self.observation_space.shape or ())
        single = obs.shape == space_shape
        if single:
            obs = obs[None]
        if tuple(obs.shape[1:]) != space_shape:
            raise ConfigError(
                f"observation must have shape (num_envs, {', '.join(map(str, space_shape))}) "
                f"or {space_shape} (the {self.obs_type!r} observations of Real-v0), got "
                f"{obs.shape}."
            )
        with torch.inference_mode():
            features = self.features_of(obs)
            actions = self.controller(features).cpu().numpy()
        if self.controller.continuous:
            actions = actions.astype(np.float32)
        return (actions[0] if single else actions), None

    def act(self, observation: np.ndarray) -> np.ndarray:
        """``predict(observation)[0]``: the controller as a function of the observations,
        for :func:`dreamenv.evaluate.play`."""
        return self.predict(observation)[0]

    @property
    def needs_real_env(self) -> bool:
        """Whether :meth:`predict` reads the model state from ``real_env``: features with
        the state of a model whose observation does not determine it."""
        stack = tuple(self.model.spec.frame_shape)[0]
        rebuilt = self.model.family == "ensemble" and stack == 1
        return self.config.features == "latent+state" and not rebuilt

    def features_of(self, obs: np.ndarray) -> torch.Tensor:
        """The controller's features ``(B, D)`` for real observations ``(B, *obs_shape)``:
        the observations themselves, and (``"latent+state"``) the model state, rebuilt
        from the observation (ensemble) or read from ``real_env``."""
        latent = self.latent_features(torch.as_tensor(obs, device=self.device))
        if self.config.features == "latent":
            return latent
        b = len(obs)
        if self.needs_real_env:
            if self.real_env is None:
                raise ConfigError(
                    f"features='latent+state' reads the {self.model.family!r} model's state "
                    "from the Real-v0 env it plays: set controller.real_env = "
                    "RealVectorEnv(checkpoint, num_envs, obs_type=controller.obs_type) and "
                    "play there (controller.play_real(...) does)."
                )
            start = self.imagination.from_real_env(self.real_env)
            if start.batch != b:
                raise ConfigError(
                    f"real_env follows {start.batch} games but the observation has {b} rows; "
                    "act in the env the observations come from."
                )
            obs_t = self.model.observation(start.latent, self.obs_type)
            return torch.cat([self.latent_features(obs_t), self.state_features(start.state)], 1)
        frames = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        start = self.imagination.from_observations(frames.reshape(b, *self.model.spec.frame_shape))
        return torch.cat([latent, self.state_features(start.state)], 1)

    def play_real(
        self,
        episodes: int = 32,
        *,
        num_envs: int = 16,
        seed: int = 0,
        max_steps: int | None = None,
        progress: bool = False,
    ) -> Any:
        """Play ``episodes`` real episodes in ``Real-v0`` (following the model state when
        the features need it) and return their :class:`~dreamenv.evaluate.EpisodeStats`;
        as :func:`dreamenv.evaluate.play_episodes` plays any policy.

        Example:
            >>> controller.play_real(32).returns.mean()
        """
        from dreamenv.envs.real import RealVectorEnv
        from dreamenv.evaluate import play, play_episodes

        if not self.needs_real_env:
            return play_episodes(
                self,
                self.checkpoint,
                episodes=episodes,
                num_envs=num_envs,
                seed=seed,
                deterministic=True,
                max_steps=max_steps,
                device=str(self.device),
                progress=progress,
            )
        env = RealVectorEnv(
            self.checkpoint, max(1, min(num_envs, episodes)), obs_type=self.obs_type
        )
        previous, self.real_env = self.real_env, env
        try:
            return play(env, self.act, episodes, seed=seed, max_steps=max_steps, progress=progress)
        finally:
            self.real_env = previous
            env.close()

    # --- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the kept controller and its settings to one safetensors file (atomically;
        tensors and JSON metadata only, no pickle). CMA-ES's own state is not kept: a
        loaded controller's :meth:`fit` restarts CMA-ES around it.

        Example:
            >>> controller.save("runs/pendulum/controller.safetensors")
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{str(path)!r} is a directory; save the controller to a file.")
        meta = {
            "format": FORMAT,
            "version": str(VERSION),
            "config": json.dumps(dataclasses.asdict(self.config)),
            "family": self.model.family,
            "game": str(self.model.spec.game),
            "obs_type": self.obs_type,
            "num_features": str(self.controller.num_features),
            "action_space": str(self.action_space),
            "best_return": json.dumps(self.best_return),
            "best_generation": str(self.best_generation),
            "generation": str(self.generation),
        }
        tensors = {
            "weight": self.controller.weight.detach().cpu().contiguous(),
            "bias": self.controller.bias.detach().cpu().contiguous(),
        }
        write_atomic(path, lambda p: save_file(tensors, str(p), metadata=meta))
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        checkpoint: str | Path | Checkpoint,
        *,
        device: str = "cpu",
        real_env: Any = None,
    ) -> CMAESController:
        """The controller :meth:`save` wrote, acting with ``checkpoint``'s model (the one it
        was evolved in: the family, game, observation and actions must match).

        Example:
            >>> controller = CMAESController.load("runs/pendulum/controller.safetensors",
            ...                                   "runs/pendulum/model")
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"No controller file at {str(path)!r}; save one first.")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{str(path)!r} is not a readable safetensors file ({err})."
            ) from err
        if meta.get("format") != FORMAT or set(tensors) != {"weight", "bias"}:
            raise CheckpointError(f"{str(path)!r} is not a {FORMAT} file.")
        if meta.get("version") != str(VERSION):
            raise CheckpointError(
                f"{str(path)!r} is controller format version {meta.get('version')!r}; this "
                f"dreamenv reads version {VERSION}."
            )
        try:
            config = CMAESConfig(**json.loads(meta["config"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{str(path)!r} holds unreadable settings ({err}).") from err
        controller = cls(checkpoint, config, device=device, real_env=real_env)
        model = controller.model
        saved = (meta.get("family"), meta.get("game"), meta.get("obs_type"))
        here = (model.family, str(model.spec.game), controller.obs_type)
        if saved != here or meta.get("num_features") != str(controller.controller.num_features):
            raise CheckpointError(
                f"{str(path)!r} is a controller of a {saved[0]!r} model of {saved[1]!r} "
                f"(obs_type {saved[2]!r}, {meta.get('num_features')} features); the checkpoint "
                f"is a {here[0]!r} model of {here[1]!r} (obs_type {here[2]!r}, "
                f"{controller.controller.num_features} features). Load it with the checkpoint "
                "it was evolved in."
            )
        if meta.get("action_space") != str(controller.action_space):
            raise CheckpointError(
                f"{str(path)!r} acts in {meta.get('action_space')}, the checkpoint in "
                f"{controller.action_space}."
            )
        params = torch.cat([tensors["weight"].reshape(-1), tensors["bias"].reshape(-1)])
        controller.controller.set_params(params)
        best = json.loads(meta.get("best_return", "null"))
        controller.best_return = -math.inf if best is None else float(best)
        controller.best_generation = int(meta.get("best_generation", -1))
        controller.generation = int(meta.get("generation", 0))
        return controller
