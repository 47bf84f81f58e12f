"""Registers ``dreamenv/Dream-v0``, ``dreamenv/Real-v0``, their goal-conditioned faces
``dreamenv/GoalDream-v0`` and ``dreamenv/GoalReal-v0``, and the toy
``dreamenv/BouncingBall-v0`` with gymnasium (on import)."""

from __future__ import annotations

import gymnasium as gym

DREAM_ID = "dreamenv/Dream-v0"
REAL_ID = "dreamenv/Real-v0"
BOUNCING_BALL_ID = "dreamenv/BouncingBall-v0"
GOAL_DREAM_ID = "dreamenv/GoalDream-v0"
GOAL_REAL_ID = "dreamenv/GoalReal-v0"


def register_envs() -> None:
    """Register the envs once; both ``gym.make`` and ``gym.make_vec`` work with each."""
    if DREAM_ID not in gym.registry:
        gym.register(
            DREAM_ID,
            entry_point="dreamenv.envs.dream:DreamEnv",
            vector_entry_point="dreamenv.envs.vector:DreamVectorEnv",
        )
    if BOUNCING_BALL_ID not in gym.registry:
        gym.register(
            BOUNCING_BALL_ID,
            entry_point="dreamenv.envs.toy:BouncingBallEnv",
            max_episode_steps=None,
        )
    if REAL_ID not in gym.registry:
        gym.register(
            REAL_ID,
            entry_point="dreamenv.envs.real:RealEnv",
            vector_entry_point="dreamenv.envs.real:RealVectorEnv",
        )
    if GOAL_DREAM_ID not in gym.registry:
        gym.register(GOAL_DREAM_ID, entry_point="dreamenv.envs.goals:make_goal_dream")
    if GOAL_REAL_ID not in gym.registry:
        gym.register(GOAL_REAL_ID, entry_point="dreamenv.envs.goals:make_goal_real")
