"""A saved SB3 agent acting on real frames: the collection policy of the loop.

The temperature ``T`` of :func:`sample_actions`, per action space:

- ``Discrete``: actions sampled from ``softmax(logits / T)`` (DQN's logits: its Q-values);
  ``T > 0``.
- ``Box``: ``T`` scales the std of the agent's Gaussian: ``mean + T * std * z``, ``z``
  standard normal, before the squashing of a squashed Gaussian (SAC, and PPO/A2C with
  ``squash_output``: ``tanh``, then rescaled to the bounds). TD3 has no distribution: its
  deterministic action plus ``T * sigma * z`` in its ``[-1, 1]`` scale, ``sigma`` the std
  of its ``NormalActionNoise`` (else ``target_policy_noise``). ``T = 0`` is the agent's
  deterministic action, ``predict(obs, deterministic=True)``. Actions are float32
  ``(N, n)``, clipped to the space's bounds.

Example:
    >>> policy = AgentPolicy("runs/pong/agent-1", "runs/pong/model", temperature=1.5)
    >>> collect("runs/pong/data", spec, 20_000, policy=policy)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise, VectorizedActionNoise

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.atari import AtariSpec
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.real import RealObservations
from dreamenv.errors import ConfigError
from dreamenv.evaluate import infer_obs_type
from dreamenv.sb3.agent_files import load_agent


def action_logits(agent: BaseAlgorithm, obs: np.ndarray) -> torch.Tensor:
    """Unnormalised action scores of ``agent`` (of Discrete actions) for a batch of
    observations."""
    if not isinstance(agent.action_space, gym.spaces.Discrete):
        raise ConfigError(
            f"action_logits needs an agent of Discrete actions, got {agent.action_space}; "
            "sample Box actions with sample_actions(agent, obs, temperature, rng)."
        )
    with torch.no_grad():
        tensor, _ = agent.policy.obs_to_tensor(obs)
        policy: Any = agent.policy
        if isinstance(agent, DQN):
            return policy.q_net(tensor)
        return policy.get_distribution(tensor).distribution.logits


def check_temperature(temperature: float, space: gym.Space) -> None:
    """Refuse a temperature :func:`sample_actions` has no meaning for on ``space``."""
    if isinstance(space, gym.spaces.Box):
        if not temperature >= 0:
            raise ConfigError(
                f"temperature must be >= 0 for Box actions, got {temperature!r} (0: the "
                "agent's deterministic action; 1: its own action distribution)."
            )
    elif not temperature > 0:
        raise ConfigError(
            f"temperature must be positive, got {temperature!r} (Discrete actions are sampled "
            "from softmax(logits / temperature); a small one such as 0.01 is nearly greedy)."
        )


def _pre_squash(agent: BaseAlgorithm, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std of ``agent``'s Gaussian over Box actions (before any squashing),
    or TD3's action and noise std in its [-1, 1] scale."""
    policy: Any = agent.policy
    if isinstance(agent, TD3):
        action = policy.actor(tensor)
        noise: Any = agent.action_noise
        if isinstance(noise, VectorizedActionNoise):
            noise = noise.base_noise
        if isinstance(noise, NormalActionNoise):
            sigma = torch.as_tensor(np.asarray(noise._sigma), dtype=action.dtype)
        else:
            sigma = torch.tensor(float(agent.target_policy_noise), dtype=action.dtype)
        return action, sigma.to(action.device).expand_as(action)
    if isinstance(agent, SAC):
        mean, log_std, kwargs = policy.actor.get_action_dist_params(tensor)
        dist = policy.actor.action_dist.proba_distribution(mean, log_std, **kwargs)
    else:
        dist = policy.get_distribution(tensor)
    normal = dist.distribution  # torch Normal: the marginal of gSDE's noise too
    return normal.mean, normal.stddev


def sample_actions(
    agent: BaseAlgorithm, obs: np.ndarray, temperature: float, rng: np.random.Generator
) -> np.ndarray:
    """Actions of ``agent`` for the observations ``obs``, sampled at ``temperature`` (the
    module's docstring gives its meaning per action space): ``(N,)`` int64 for Discrete
    actions, ``(N, n)`` float32 within the bounds for Box ones.

    Example:
        >>> sample_actions(agent, obs, 0.5, np.random.default_rng(0))
        array([[ 0.31], [-1.2 ]], dtype=float32)
    """
    space = agent.action_space
    check_temperature(temperature, space)
    if isinstance(space, gym.spaces.Discrete):
        logits = action_logits(agent, obs) / temperature
        probs = torch.softmax(logits.double(), -1).cpu().numpy()
        u = rng.random((len(probs), 1))
        index = np.minimum((probs.cumsum(-1) < u).sum(-1), probs.shape[1] - 1)
        return (index + int(space.start)).astype(np.int64)
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(
            f"AgentPolicy samples Discrete and Box actions, got {space}; act with "
            "agent.predict instead."
        )
    policy: Any = agent.policy
    policy.set_training_mode(False)  # as predict does
    with torch.no_grad():
        tensor, _ = policy.obs_to_tensor(obs)
        mean, std = _pre_squash(agent, tensor)
        if temperature > 0:
            z = torch.as_tensor(rng.standard_normal(tuple(mean.shape)), dtype=mean.dtype)
            mean = mean + temperature * std * z.to(mean.device)
        if isinstance(agent, TD3):
            action = mean.clamp(-1.0, 1.0)  # TD3's actor output is in [-1, 1] already
        elif policy.squash_output:
            action = torch.tanh(mean)
        else:
            action = mean
    out = action.cpu().numpy().reshape(len(action), *space.shape)
    if policy.squash_output:
        out = policy.unscale_action(out)
    return np.clip(out, space.low, space.high).astype(np.float32)


class AgentPolicy:
    """A saved SB3 agent acting on real frames through a checkpoint's model, sampling at
    ``temperature`` (a :data:`dreamenv.data.collect.Policy` for collection; its meaning per
    action space: :func:`sample_actions`).

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
        self.agent = load_agent(agent, device) if isinstance(agent, (str, Path)) else agent
        check_temperature(temperature, self.agent.action_space)
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
        return sample_actions(self.agent, obs, self.temperature, rng)
