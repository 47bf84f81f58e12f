"""A saved SB3 agent acting on real frames: the collection policy of the loop.

Example:
    >>> policy = AgentPolicy("runs/pong/agent-1", "runs/pong/model", temperature=1.5)
    >>> collect("runs/pong/data", spec, 20_000, policy=policy)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.atari import AtariSpec
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.real import RealObservations
from dreamenv.errors import ConfigError
from dreamenv.evaluate import infer_obs_type
from dreamenv.sb3.agent_files import load_agent


def action_logits(agent: BaseAlgorithm, obs: np.ndarray) -> torch.Tensor:
    """Unnormalised action scores of ``agent`` for a batch of observations."""
    with torch.no_grad():
        tensor, _ = agent.policy.obs_to_tensor(obs)
        policy: Any = agent.policy
        if isinstance(agent, DQN):
            return policy.q_net(tensor)
        return policy.get_distribution(tensor).distribution.logits


class AgentPolicy:
    """A saved SB3 agent acting on real frames through a checkpoint's model, sampling at
    ``temperature`` (a :data:`dreamenv.data.collect.Policy` for collection).

    Collection asks it for its :meth:`observations` (a
    :class:`~dreamenv.envs.real.RealObservations`, the very path ``Real-v0`` uses) and
    feeds that the real frames, so the agent sees exactly what it sees in ``Real-v0`` and,
    for families with memory, in the dream.
    """

    def __init__(
        self,
        agent: BaseAlgorithm | str | Path,
        checkpoint: str | Path | Checkpoint,
        temperature: float = 1.0,
        device: str = "cpu",
    ) -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature!r}.")
        self.agent = load_agent(agent, device) if isinstance(agent, (str, Path)) else agent
        self.checkpoint = resolve_checkpoint(checkpoint, device, None)
        if self.checkpoint.model.jump > 1:
            raise ConfigError(
                f"collecting with an agent of a jumpy model (jump={self.checkpoint.model.jump}) "
                "is not supported: collect with a random policy, or use a model with jump=1."
            )
        self.obs_type = infer_obs_type(self.agent.observation_space, self.checkpoint)
        self.device = device
        self.temperature = temperature

    def observations(self, num_envs: int, spec: AtariSpec) -> RealObservations:
        """The observation path of ``num_envs`` real games of ``spec`` (the checkpoint's)."""
        if spec != self.checkpoint.spec:
            raise ConfigError(
                f"The agent observes through the checkpoint {str(self.checkpoint.path)!r}, "
                f"trained on {self.checkpoint.spec}; this collection uses {spec}. Collect "
                "with the checkpoint's spec (the store's), or pass the matching checkpoint."
            )
        return RealObservations(num_envs, spec, self.checkpoint, self.obs_type, self.device)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Actions for the agent observations ``obs``, sampled at the temperature."""
        logits = action_logits(self.agent, obs) / self.temperature
        probs = torch.softmax(logits.double(), -1).cpu().numpy()
        u = rng.random((len(probs), 1))
        return np.minimum((probs.cumsum(-1) < u).sum(-1), probs.shape[1] - 1).astype(np.int64)
