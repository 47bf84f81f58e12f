"""Quickstart: train PPO inside a learned Atari world model, then play the real game.

The README's example, runnable. If --checkpoint does not exist yet, it is built first from
--collect-steps real random steps with the recipe of the README's measured results (about
40 minutes on 2 CPU cores).

    python examples/quickstart.py --checkpoint runs/kfm/model --dream-steps 100000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import dreamenv
from dreamenv.sb3 import wrap


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="runs/kfm/model", help="world-model directory")
    p.add_argument("--game", default="kung_fu_master", help="game to learn if none is saved")
    p.add_argument("--collect-steps", type=int, default=40_000, help="real steps to learn from")
    p.add_argument("--fit-epochs", type=int, default=11, help="world-model epochs")
    p.add_argument("--fit-updates", type=int, default=150, help="updates per epoch (0: a pass)")
    p.add_argument("--reward-windows", type=float, default=0.25, help="share of reward windows")
    p.add_argument("--preset", default="small", help="world-model size: small, paper")
    p.add_argument("--dream-steps", type=int, default=100_000, help="imagined PPO steps")
    p.add_argument("--num-envs", type=int, default=16, help="dream envs in one batch")
    p.add_argument("--episodes", type=int, default=4, help="real episodes to play")
    p.add_argument("--max-steps", type=int, default=None, help="cap on real episode length")
    return p.parse_args()


def build_checkpoint(args: argparse.Namespace) -> None:
    """Collect real random steps and fit a world model to them."""
    data = Path(args.checkpoint).with_name(Path(args.checkpoint).name + "-data")
    dreamenv.collect(data, dreamenv.AtariSpec(args.game), args.collect_steps)
    config = dreamenv.FitConfig(
        epochs=args.fit_epochs,
        warmup_epochs=max(1, args.fit_epochs * 4 // 11),
        updates_per_epoch=args.fit_updates,
        reward_windows=args.reward_windows,
    )
    dreamenv.fit(data, args.checkpoint, preset=args.preset, config=config)


def main() -> None:
    args = parse_args()
    if not (Path(args.checkpoint) / "config.json").is_file():
        build_checkpoint(args)

    # 1. The dream: a batched gymnasium VectorEnv of imagined episodes.
    dream = gym.make_vec(
        "dreamenv/Dream-v0",
        num_envs=args.num_envs,
        checkpoint=args.checkpoint,
        vectorization_mode="vector_entry_point",
    )
    agent = PPO("MlpPolicy", wrap(dream), n_steps=50, batch_size=200, seed=0)
    agent.learn(args.dream_steps)

    # 2. The real game, wrapped with the model's encoder: the same spaces, no code change.
    real = gym.make("dreamenv/Real-v0", checkpoint=args.checkpoint)
    returns = []
    for episode in range(args.episodes):
        obs, _ = real.reset(seed=episode)
        total, done, steps = 0.0, False, 0
        while not done and steps != args.max_steps:
            action, _ = agent.predict(obs)
            obs, reward, terminated, truncated, _ = real.step(action)
            total, done, steps = total + reward, terminated or truncated, steps + 1
        returns.append(total)
    print(
        f"real return of the dream-trained agent: {np.mean(returns):.2f} ± {np.std(returns):.2f} "
        f"over {args.episodes} episodes"
    )


if __name__ == "__main__":
    main()
