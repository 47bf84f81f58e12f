"""Training an SB3 agent (PPO, A2C, DQN) in a checkpoint's dream.

Example:
    >>> agent = train_in_dream("runs/pong/model", 200_000)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.vector import DreamVectorEnv
from dreamenv.errors import ConfigError
from dreamenv.sb3.extractor import LatentExtractor
from dreamenv.sb3.vec_env import wrap

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}

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
    **kwargs: Any,
) -> BaseAlgorithm:
    """A new SB3 agent for ``env``; ``extractor`` uses :class:`LatentExtractor` (paper policy)."""
    if algo.lower() not in ALGORITHMS:
        raise ConfigError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}.")
    cls = ALGORITHMS[algo.lower()]
    params = dict(PAPER_PPO) if cls is PPO else {}
    params.update(kwargs)
    policy_kwargs = params.pop("policy_kwargs", {})
    if (
        extractor
        and not isinstance(env.observation_space, gym.spaces.Box)
        or (
            extractor
            and len(env.observation_space.shape) == 3
            and env.observation_space.dtype != np.uint8
        )
    ):
        policy_kwargs.setdefault("features_extractor_class", LatentExtractor)
    policy = (
        "CnnPolicy"
        if env.observation_space.dtype == np.uint8 and len(env.observation_space.shape) == 3
        else "MlpPolicy"
    )
    return cls(
        policy, env, seed=seed, device=device, policy_kwargs=policy_kwargs, verbose=0, **params
    )


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
    algo: str = "ppo",
    num_envs: int = 16,
    obs_type: str | None = None,
    horizon: int = 50,
    use_termination: bool = True,
    seed: int = 0,
    device: str = "cpu",
    agent: BaseAlgorithm | None = None,
    progress: bool = True,
    **agent_kwargs: Any,
) -> BaseAlgorithm:
    """Train an SB3 agent for ``timesteps`` imagined steps in the checkpoint's dream env.

    ``use_termination=False`` ends dream episodes only at the horizon, as the paper does.
    Passing ``agent`` continues training it (its env is replaced by a fresh dream env).
    """
    dream = wrap(
        DreamVectorEnv(
            checkpoint,
            num_envs,
            obs_type=obs_type,
            horizon=horizon,
            use_termination=use_termination,
            device=device,
        )
    )
    dream.seed(seed)
    if agent is None:
        agent = make_agent(algo, dream, seed=seed, device=device, **agent_kwargs)
    else:
        agent.set_env(dream)
    if agent.verbose == 0 and not agent._custom_logger:
        # SB3's default logger makes an empty SB3-<time> folder in the temp dir per learn()
        agent.set_logger(Logger(None, []))
    callback = ProgressCallback(timesteps) if progress else None
    agent.learn(timesteps, callback=callback, reset_num_timesteps=False)
    return agent


