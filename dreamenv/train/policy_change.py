"""How far one loop iteration moved the agent's policy, on the dream start states (real
frames of the start bank, as the dream's resets present them), two ways:

- ``action_agreement``: the share of the states on which this iteration's agent and the
  previous iteration's take the same most likely action;
- ``policy_shift``: the mean total variation distance between the two agents' action
  distributions (half the summed absolute difference of the action probabilities: 0 for the
  same distribution, 1 for disjoint ones), for agents with a categorical action
  distribution over Discrete actions (SB3's PPO and A2C); NaN for others.

PPO in the dream can change the policy a lot in one iteration; a policy that churns
forgets what earned its score. On MsPacman (``cpu100k``, iterations 1-3) the two agents
agreed on 77% and 86% of the start states, and the world model's new codes alone (the
same agent on the old and the new model's codes) changed only 5-8% of the actions
(docs/results.md). The agreement is blind where an agent's most likely action is the same
in every state and it acts by sampling (MsPacman, seed 1: NOOP everywhere for ten
iterations, agreement 1.0 however the rest of the distribution moved); the shift sees it.

Example:
    >>> policy_change("runs/pong/model", load_agent("runs/pong/agent-3"),
    ...               load_agent("runs/pong/agent-2"), options=DreamOptions())
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.options import DreamOptions
from dreamenv.envs.vector import DreamVectorEnv
from dreamenv.errors import ConfigError
from dreamenv.evaluate import PolicyLike, as_actor
from dreamenv.sb3.agent_policy import action_logits


def action_probabilities(agent: PolicyLike, obs: np.ndarray) -> np.ndarray | None:
    """``(N, n)`` action probabilities of an SB3 agent with a categorical distribution over
    Discrete actions (PPO, A2C) for the observations ``obs``; None for any other policy
    (DQN's scores are values, not probabilities; a callable gives actions only)."""
    if not isinstance(agent, BaseAlgorithm) or isinstance(agent, DQN):
        return None
    if not isinstance(agent.action_space, gym.spaces.Discrete):
        return None
    logits = action_logits(agent, obs)
    return torch.softmax(logits.double(), -1).cpu().numpy()


def unmeasured() -> dict[str, float]:
    """:func:`policy_change`'s figures where there is nothing to compare (the loop's first
    iteration has no earlier agent; continuous actions): NaN."""
    return {"action_agreement": float("nan"), "policy_shift": float("nan")}


def policy_change(
    checkpoint: str | Path | Checkpoint,
    agent: PolicyLike,
    previous: PolicyLike,
    *,
    options: DreamOptions | None = None,
    states: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """``action_agreement`` and ``policy_shift`` (the module's docstring) of ``agent``
    against ``previous`` on ``states`` dream start states, both observing through
    ``checkpoint`` with ``options``: the agreement compares deterministic actions (SB3
    agents; any callable policy as it is), the shift action probabilities (NaN unless both
    agents have them). Both are NaN for a continuous action space.

    Example:
        >>> policy_change(ckpt, agent, agent)
        {'action_agreement': 1.0, 'policy_shift': 0.0}
    """
    if not (isinstance(states, int) and not isinstance(states, bool) and states >= 1):
        raise ConfigError(f"states must be a positive int (default 256), got {states!r}.")
    options = options or DreamOptions()
    ckpt = resolve_checkpoint(checkpoint, options.device, None)
    options = options.resolved(ckpt.start_bank.context, ckpt.model.obs_types)
    act, obs_type = as_actor(agent, ckpt, options.obs_type, deterministic=True)
    act_before, obs_type_before = as_actor(previous, ckpt, options.obs_type, deterministic=True)
    if obs_type != obs_type_before:
        raise ConfigError(
            f"the two agents observe differently ({obs_type!r} and {obs_type_before!r}); "
            "compare agents trained on the same observations."
        )
    if obs_type != options.obs_type:
        options = DreamOptions.from_kwargs(options, {"obs_type": obs_type})
    env = DreamVectorEnv(ckpt, states, options=options)
    try:
        if not isinstance(env.single_action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
            return unmeasured()
        obs, _ = env.reset(seed=seed)
    finally:
        env.close()
    now, before = np.asarray(act(obs)), np.asarray(act_before(obs))
    same = (now == before).reshape(states, -1).all(1)
    probs, probs_before = action_probabilities(agent, obs), action_probabilities(previous, obs)
    shift = float("nan")
    if probs is not None and probs_before is not None:
        shift = float(0.5 * np.abs(probs - probs_before).sum(-1).mean())
    return {"action_agreement": float(same.mean()), "policy_shift": shift}
