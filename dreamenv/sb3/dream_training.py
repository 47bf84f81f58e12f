"""Training an SB3 agent (PPO, A2C, DQN) in a checkpoint's dream.

Example:
    >>> agent = train_in_dream("runs/pong/model", 200_000)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
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
    for latent observations, run in ``precision`` (:mod:`dreamenv.precision`).

    ``kwargs`` go to the algorithm (``verbose``, ``tensorboard_log``, ``n_steps``, ...); PPO
    starts from :data:`PAPER_PPO`.

    Example:
        >>> agent = make_agent("ppo", wrap(DreamVectorEnv("runs/pong/model", 16)), verbose=1)
    """
    if algo.lower() not in ALGORITHMS:
        raise ConfigError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}.")
    cls = ALGORITHMS[algo.lower()]
    params: dict[str, Any] = {"verbose": 0, **(PAPER_PPO if cls is PPO else {}), **kwargs}
    policy_kwargs = dict(params.pop("policy_kwargs", None) or {})
    space = env.observation_space
    shape = tuple(space.shape or ())
    pixels = space.dtype == np.uint8 and len(shape) == 3
    if extractor and (
        not isinstance(space, gym.spaces.Box) or (len(shape) == 3 and not pixels)
    ):
        policy_kwargs.setdefault("features_extractor_class", LatentExtractor)
        if precision != "float32" and policy_kwargs["features_extractor_class"] is LatentExtractor:
            extractor_kwargs = dict(policy_kwargs.get("features_extractor_kwargs") or {})
            extractor_kwargs.setdefault("precision", check_precision(precision))
            policy_kwargs["features_extractor_kwargs"] = extractor_kwargs
    policy = "CnnPolicy" if pixels else "MlpPolicy"
    return cls(policy, env, seed=seed, device=device, policy_kwargs=policy_kwargs, **params)


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
