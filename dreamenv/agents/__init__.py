"""Agents that use the world model itself: planners and controllers.

Example:
    >>> from dreamenv.agents import CEMPlanner
    >>> planner = CEMPlanner("runs/pendulum/model", horizon=20, candidates=200)
"""

from dreamenv.agents.cem import CEMConfig, CEMPlanner

__all__ = ["CEMConfig", "CEMPlanner"]
