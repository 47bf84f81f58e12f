"""One world-model family end to end: collect real frames, fit the family, train PPO in its
dream, then play the same agent in the real game and print both returns.

    python examples/family_dream.py --family sssm --game kung_fu_master
    python examples/family_dream.py --family rssm --set stochastic=categorical
    python examples/family_dream.py --family sssm_jumpy    # one step = a chunk of 4 actions
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

import dreamenv
from dreamenv.cli import parse_overrides
from dreamenv.sb3 import evaluate, make_agent, wrap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="sssm", help="dssm_det, sssm, sssm_jumpy, ar, rar, ...")
    p.add_argument("--preset", default="small", help="paper, small or tiny")
    p.add_argument("--set", action="append", default=[], help="model setting KEY=VALUE")
    p.add_argument("--game", default="kung_fu_master")
    p.add_argument("--out", default="runs/family", help="run directory (resumable)")
    p.add_argument("--collect-steps", type=int, default=20_000, help="random real steps")
    p.add_argument("--updates", type=int, default=1_000, help="world-model updates")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dream-steps", type=int, default=50_000, help="imagined PPO steps")
    p.add_argument("--episodes", type=int, default=8, help="real episodes to evaluate")
    p.add_argument("--max-steps", type=int, default=None, help="cap on a real episode")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    store = dreamenv.collect(out / "data", dreamenv.AtariSpec(args.game), args.collect_steps)
    model = out / args.family
    dreamenv.fit(
        store.path,
        model,
        family=args.family,
        preset=args.preset,
        model_overrides=parse_overrides(args.set),
        config=dreamenv.FitConfig(
            epochs=1, warmup_epochs=0, updates_per_epoch=args.updates, batch_size=args.batch_size
        ),
    )
    dream = gym.make_vec(
        "dreamenv/Dream-v0", num_envs=8, checkpoint=model, vectorization_mode="vector_entry_point"
    )
    agent = make_agent("ppo", wrap(dream), seed=0, n_steps=50, batch_size=200)
    agent.learn(args.dream_steps)
    kwargs = {
        "episodes": args.episodes,
        "num_envs": min(8, args.episodes),
        "max_steps": args.max_steps,
    }
    trained = evaluate(agent, model, **kwargs)
    random = evaluate(dreamenv.sb3.random_policy(dream.single_action_space), model, **kwargs)
    for name, returns in (("dream-trained", trained), ("random", random)):
        print(f"{name:>13}: {np.mean(returns):8.1f} ± {np.std(returns):.1f}  (real game)")


if __name__ == "__main__":
    main()
