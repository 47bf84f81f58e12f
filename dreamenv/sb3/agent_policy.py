"""A saved SB3 agent acting on real frames: the collection policy of the loop.

Example:
    >>> policy = AgentPolicy("runs/pong/agent-1.zip", "runs/pong/model", temperature=1.5)
    >>> collect("runs/pong/data", spec, 20_000, policy=policy)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.real import LatentFilter
from dreamenv.errors import ConfigError
from dreamenv.evaluate import infer_obs_type
from dreamenv.sb3.agent_files import load_agent


def action_logits(agent: BaseAlgorithm, obs: np.ndarray) -> torch.Tensor:
    """Unnormalised action scores of ``agent`` for a batch of observations."""
    with torch.no_grad():
        tensor, _ = agent.policy.obs_to_tensor(obs)
        if isinstance(agent, DQN):
            return agent.policy.q_net(tensor)
        return agent.policy.get_distribution(tensor).distribution.logits


class AgentPolicy:
    """A saved SB3 agent acting on real frames through a checkpoint's model, sampling at
    ``temperature`` (a :data:`dreamenv.data.collect.Policy` for collection).

    It follows each env's game with the model (:class:`~dreamenv.envs.real.LatentFilter`),
    so families with memory see the same observations as in the dream; the collection
    tells it which games restarted (:meth:`restart`).
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
        self.filter: LatentFilter | None = None
        self.last_actions: np.ndarray | None = None

    def restart(self, frames: np.ndarray, mask: np.ndarray) -> None:
        """The games of ``mask`` restarted and now show the stacks ``frames[mask]``."""
        if self.filter is not None and mask.any():
            self.filter.reset(frames[mask], np.flatnonzero(mask))

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.filter is None or self.filter.num_envs != len(frames):
            self.filter = LatentFilter(self.checkpoint, self.obs_type, len(frames), self.device)
            self.filter.reset(frames)
        else:
            self.filter.step(frames, self.last_actions)
        logits = action_logits(self.agent, self.filter.observe(frames)) / self.temperature
        probs = torch.softmax(logits.double(), -1).cpu().numpy()
        u = rng.random((len(probs), 1))
        actions = np.minimum((probs.cumsum(-1) < u).sum(-1), probs.shape[1] - 1).astype(np.int64)
        self.last_actions = actions
        return actions


