"""Agents that use the world model itself: planners, controllers and actor-critics.

Example:
    >>> from dreamenv.agents import CEMPlanner, CMAESController
    >>> planner = CEMPlanner("runs/pendulum/model", horizon=20, candidates=200)
    >>> controller = CMAESController("runs/pendulum/model", population=16).fit(20)
    >>> actor_critic = DreamerActorCritic("runs/pendulum/model")
    >>> rows = actor_critic.train(800)
"""

from dreamenv.agents.actor_critic import (
    ActorCriticConfig,
    DreamerActorCritic,
    train_actor_critic_loop,
)
from dreamenv.agents.cem import CEMConfig, CEMPlanner
from dreamenv.agents.evolution import (
    CMAESConfig,
    CMAESController,
    GenerationStats,
    LinearController,
)

__all__ = [
    "ActorCriticConfig",
    "DreamerActorCritic",
    "CEMConfig",
    "CEMPlanner",
    "CMAESConfig",
    "CMAESController",
    "GenerationStats",
    "LinearController",
    "train_actor_critic_loop",
]
