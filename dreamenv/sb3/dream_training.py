"""Training an SB3 agent (PPO, A2C, DQN; SAC, TD3 for Box actions) in a checkpoint's dream.

Example:
    >>> agent = train_in_dream("runs/pong/model", 200_000)
    >>> agent = train_in_dream("runs/pendulum/model", 50_000, algo="sac")  # Box actions
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.options import DreamOptions
from dreamenv.envs.vector import DreamVectorEnv
from dreamenv.errors import ConfigError
from dreamenv.precision import Precision, check_precision
from dreamenv.sb3.agent_files import ALGORITHMS
from dreamenv.sb3.extractor import LatentExtractor
from dreamenv.sb3.vec_env import wrap

PAPER_PPO = {
    "n_steps": 50,
    "batch_size": 256,
    "n_epochs": 4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_range": 0.1,
    "ent_coef": 0.01,
    "learning_rate": 2.5e-4,
    "max_grad_norm": 0.5,
}
"""PPO settings of Robine et al. (with 16 dream envs: 800 steps per rollout)."""

DISCRETE_ONLY = ("dqn",)
"""Algorithms that take Discrete actions only."""
BOX_ONLY = ("sac", "td3")
"""Algorithms that take Box actions only."""
TD3_NOISE = 0.1
"""The std of a new TD3 agent's Gaussian exploration noise, in its [-1, 1] action scale
(SB3's TD3 explores with none unless given ``action_noise``)."""


def _check_action_space(algo: str, space: gym.Space) -> None:
    if algo in DISCRETE_ONLY and not isinstance(space, gym.spaces.Discrete):
        raise ConfigError(
            f"{algo.upper()} takes Discrete actions, and this env's are {space}; use 'sac' or "
            "'ppo' for Box actions."
        )
    if algo in BOX_ONLY and not isinstance(space, gym.spaces.Box):
        raise ConfigError(
            f"{algo.upper()} takes Box actions, and this env's are {space}; use 'ppo', 'a2c' "
            "or 'dqn' for Discrete actions."
        )


def make_agent(
    algo: str,
    env: VecEnv,
    *,
    extractor: bool = True,
    seed: int | None = None,
    device: str = "cpu",
    precision: Precision = "float32",
    **kwargs: Any,
) -> BaseAlgorithm:
    """A new SB3 agent for ``env``; ``extractor`` uses :class:`LatentExtractor` (paper policy)
    for latent observations, run in ``precision`` (:mod:`dreamenv.precision`). Other
    observations (pixels, state vectors) get SB3's own ``CnnPolicy`` / ``MlpPolicy``.

    ``kwargs`` go to the algorithm (``verbose``, ``tensorboard_log``, ``n_steps``, ...). PPO
    starts from :data:`PAPER_PPO`. SAC and TD3 (Box actions only) with ``n_envs > 1`` start
    from ``gradient_steps=-1``: one gradient step per transition collected, the ratio of
    the SAC and TD3 papers (SB3's default, one per vector step, would lower it by
    ``n_envs``); pass ``gradient_steps=1`` for cheaper updates. TD3 explores with Gaussian
    noise of std :data:`TD3_NOISE` unless given ``action_noise``. DQN takes Discrete actions only.

    Example:
        >>> agent = make_agent("ppo", wrap(DreamVectorEnv("runs/pong/model", 16)), verbose=1)
        >>> agent = make_agent("sac", wrap(DreamVectorEnv("runs/pendulum/model", 16)))
    """
    name = algo.lower()
    if name not in ALGORITHMS:
        raise ConfigError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}.")
    _check_action_space(name, env.action_space)
    cls = ALGORITHMS[name]
    defaults: dict[str, Any] = dict(PAPER_PPO) if cls is PPO else {}
    if name in BOX_ONLY and env.num_envs > 1:
        defaults["gradient_steps"] = -1
    if name == "td3":
        n = int(np.prod(env.action_space.shape or ()))
        defaults["action_noise"] = NormalActionNoise(np.zeros(n), np.full(n, TD3_NOISE))
    _check_settings(cls, kwargs)
    params: dict[str, Any] = {"verbose": 0, **defaults, **kwargs}
    policy_kwargs = dict(params.pop("policy_kwargs", None) or {})
    space = env.observation_space
    shape = tuple(space.shape or ())
    pixels = space.dtype == np.uint8 and len(shape) == 3
    if extractor and (not isinstance(space, gym.spaces.Box) or (len(shape) == 3 and not pixels)):
        policy_kwargs.setdefault("features_extractor_class", LatentExtractor)
        if precision != "float32" and policy_kwargs["features_extractor_class"] is LatentExtractor:
            extractor_kwargs = dict(policy_kwargs.get("features_extractor_kwargs") or {})
            extractor_kwargs.setdefault("precision", check_precision(precision))
            policy_kwargs["features_extractor_kwargs"] = extractor_kwargs
    policy = "CnnPolicy" if pixels else "MlpPolicy"
    return cls(policy, env, seed=seed, device=device, policy_kwargs=policy_kwargs, **params)


def _check_settings(cls: type[BaseAlgorithm], settings: dict[str, Any]) -> None:
    """Settings a new ``cls`` agent takes: its ``__init__``'s keywords (SB3's own error
    would be a bare ``TypeError``)."""
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "policy", "env"}
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{key!r} is not a setting of {cls.__name__} (SB3's keyword arguments, e.g. "
                f"{', '.join(sorted(known)[:6])}, ...).{hint}"
            )


class _SilentLogger(Logger):
    """The logger of an agent that asked for no output (SB3's default makes an empty
    ``SB3-<time>`` folder in the temp dir per ``learn``)."""

    def __init__(self) -> None:
        super().__init__(None, [])


class ProgressCallback(BaseCallback):
    """A tqdm bar over the imagined steps of ``learn`` (SB3's own bar needs ``rich``)."""

    def __init__(self, total: int, desc: str = "dream") -> None:
        super().__init__()
        self.total = total
        self.desc = desc
        self.bar: Any = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, desc=self.desc, unit="step")
        self._start = self.num_timesteps

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self._start - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def train_in_dream(
    checkpoint: str | Path | Checkpoint,
    timesteps: int,
    *,
    options: DreamOptions | None = None,
    algo: str = "ppo",
    num_envs: int | None = None,
    seed: int = 0,
    agent: BaseAlgorithm | None = None,
    progress: bool = True,
    verbose: int | None = None,
    tensorboard_log: str | Path | None = None,
    tb_log_name: str | None = None,
    **agent_kwargs: Any,
) -> BaseAlgorithm:
    """Train an SB3 agent for ``timesteps`` imagined steps in the checkpoint's dream env.

    ``algo`` is one of :data:`~dreamenv.sb3.agent_files.ALGORITHMS`: ``ppo``/``a2c`` for any
    action space, ``dqn`` for Discrete actions, ``sac``/``td3`` for Box actions (a new
    agent's defaults: :func:`make_agent`).

    Args:
        options: the dream env's options (horizon, obs_type, reward_mode, burn_in,
            temperature, use_termination, device and precision: a new agent's too); None:
            defaults.
            ``use_termination=False`` ends dream episodes only at the horizon, as the paper.
        num_envs: dream envs per step; None: the agent's own count, or 16 for a new agent.
        agent: an agent to continue (its env is replaced by a fresh dream env); None: a new
            ``algo`` agent built by :func:`make_agent` with ``agent_kwargs``.
        verbose, tensorboard_log, tb_log_name: as SB3's; SB3's logger is silenced only when
            neither output is asked for (by these or by the agent's own settings).

    Example:
        >>> agent = train_in_dream("runs/pong/model", 200_000,
        ...                        options=DreamOptions(horizon=50, use_termination=False),
        ...                        tensorboard_log="runs/pong/tb")
    """
    options = options if options is not None else DreamOptions()
    if num_envs is None:
        num_envs = agent.n_envs if agent is not None else 16
    if agent is not None and agent.n_envs != num_envs:
        raise ConfigError(
            f"the agent was trained with {agent.n_envs} envs and SB3 keeps that count; got "
            f"num_envs={num_envs}. Pass num_envs={agent.n_envs} (--envs {agent.n_envs})."
        )
    dream = wrap(DreamVectorEnv(checkpoint, num_envs, options=options))
    dream.seed(seed)
    outputs: dict[str, Any] = {}
    if verbose is not None:
        outputs["verbose"] = verbose
    if tensorboard_log is not None:
        outputs["tensorboard_log"] = str(tensorboard_log)
    if agent is None:
        agent = make_agent(
            algo,
            dream,
            seed=seed,
            device=options.device,
            precision=options.precision,
            **outputs,
            **agent_kwargs,
        )
    else:
        agent.set_env(dream)
        for name, value in outputs.items():
            setattr(agent, name, value)
    silent = agent.verbose == 0 and agent.tensorboard_log is None
    if isinstance(getattr(agent, "_logger", None), _SilentLogger) and not silent:
        agent._custom_logger = False  # SB3 configures stdout / TensorBoard in learn()
    elif silent and not agent._custom_logger:
        agent.set_logger(_SilentLogger())
    callback = ProgressCallback(timesteps) if progress else None
    agent.learn(
        timesteps,
        callback=callback,
        reset_num_timesteps=agent.num_timesteps == 0,  # a new agent: a new TensorBoard run
        tb_log_name=tb_log_name or type(agent).__name__,
    )
    return agent
