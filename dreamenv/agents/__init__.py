"""Agents that use the world model itself: planners and controllers.

Example:
    >>> from dreamenv.agents import CEMPlanner, CMAESController
    >>> planner = CEMPlanner("runs/pendulum/model", horizon=20, candidates=200)
    >>> controller = CMAESController("runs/pendulum/model", population=16).fit(20)
"""

from dreamenv.agents.cem import CEMConfig, CEMPlanner
from dreamenv.agents.evolution import (
    CMAESConfig,
    CMAESController,
    GenerationStats,
    LinearController,
)

__all__ = [
    "CEMConfig",
    "CEMPlanner",
    "CMAESConfig",
    "CMAESController",
    "GenerationStats",
    "LinearController",
]
