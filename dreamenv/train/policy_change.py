"""How far one loop iteration moved the agent's policy: the share of dream start states
(real frames of the start bank, as the dream's resets present them) on which this
iteration's agent and the previous iteration's take the same most likely action.

PPO in the dream can change the policy a lot in one iteration; a policy that churns
forgets what earned its score. On MsPacman (``cpu100k``, iterations 1-3) the two agents
agreed on 77% and 86% of the start states, and the world model's new codes alone (the
same agent on the old and the new model's codes) changed only 5-8% of the actions
(docs/results.md). It compares most likely actions only: where an agent's most likely
action is the same in every state and it acts by sampling (MsPacman, seed 1: NOOP
everywhere for ten iterations), it reads 1.0 however the rest of the distribution moved.

Example:
    >>> action_agreement("runs/pong/model", load_agent("runs/pong/agent-3"),
    ...                  load_agent("runs/pong/agent-2"), options=DreamOptions())
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.options import DreamOptions
from dreamenv.envs.vector import DreamVectorEnv
from dreamenv.errors import ConfigError
from dreamenv.evaluate import PolicyLike, as_actor


def action_agreement(
    checkpoint: str | Path | Checkpoint,
    agent: PolicyLike,
    previous: PolicyLike,
    *,
    options: DreamOptions | None = None,
    states: int = 256,
    seed: int = 0,
) -> float:
    """Share of ``states`` dream start states on which ``agent`` and ``previous`` act alike
    (deterministic actions of SB3 agents; any callable policy as it is), both observing
    through ``checkpoint`` with ``options``. NaN for a continuous action space (equal
    float actions mean nothing there).

    Example:
        >>> action_agreement(ckpt, agent, agent)
        1.0
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
            return float("nan")
        obs, _ = env.reset(seed=seed)
    finally:
        env.close()
    now, before = np.asarray(act(obs)), np.asarray(act_before(obs))
    same = (now == before).reshape(states, -1).all(1)
    return float(same.mean())
