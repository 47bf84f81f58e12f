"""Swap real and imagined environments: train in the dream, play the same agent object in
the real game, and print the returns of both.

    python examples/swap_real_dream.py --checkpoint runs/kfm/model --dream-steps 50000
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import dreamenv  # noqa: F401  (registers dreamenv/Dream-v0 and dreamenv/Real-v0)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="runs/kfm/model", help="world-model directory")
    p.add_argument("--dream-steps", type=int, default=50_000, help="imagined PPO steps")
    p.add_argument("--episodes", type=int, default=4, help="episodes to play in each env")
    p.add_argument("--max-steps", type=int, default=None, help="cap on a real episode's length")
    p.add_argument("--obs-type", default=None, help="default: the family's first")
    return p.parse_args()


def play(env: gym.Env, agent: PPO, episodes: int, max_steps: int | None) -> list[float]:
    """Returns of ``episodes`` episodes of ``agent`` in ``env`` (any env with its spaces)."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        total, done, steps = 0.0, False, 0
        while not done and steps != max_steps:
            action, _ = agent.predict(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done, steps = total + float(reward), terminated or truncated, steps + 1
        returns.append(total)
    return returns


def main() -> None:
    args = parse_args()
    dream = gym.make("dreamenv/Dream-v0", checkpoint=args.checkpoint, obs_type=args.obs_type)
    real = gym.make("dreamenv/Real-v0", checkpoint=args.checkpoint, obs_type=args.obs_type)
    assert dream.observation_space == real.observation_space  # the swap needs nothing else

    agent = PPO("MlpPolicy", dream, n_steps=200, batch_size=100, seed=0).learn(args.dream_steps)
    for name, env in (("dream", dream), ("real", real)):
        returns = play(env, agent, args.episodes, args.max_steps)
        print(
            f"{name:>5}: {np.mean(returns):8.2f} ± {np.std(returns):.2f}  ({len(returns)} episodes)"
        )


if __name__ == "__main__":
    main()
