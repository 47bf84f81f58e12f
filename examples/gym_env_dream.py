"""Any gymnasium env, end to end: collect random real steps, fit a world model, train an
off-the-shelf SB3 agent only in the dream, then play it and a random policy in the real env.

    python examples/gym_env_dream.py --env CartPole-v1 --family ensemble --preset paper
    python examples/gym_env_dream.py --env MiniGrid-Empty-5x5-v0 --screen-size 80 --family discrete
    python examples/gym_env_dream.py --env Pendulum-v1 --family ensemble --algo sac --dream-steps 30000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

import dreamenv
from dreamenv.envs.spec import make_spec
from dreamenv.evaluate import evaluate, random_policy
from dreamenv.sb3 import train_in_dream
from dreamenv.stats import AgainstRandom


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="CartPole-v1", help="any registered gymnasium id")
    p.add_argument(
        "--observation", default=None, help="image, render or state (default: the env's)"
    )
    p.add_argument("--screen-size", type=int, default=64, help="frame side of image sources")
    p.add_argument("--out", default="runs/gym-example", help="store, checkpoint and agent go here")
    p.add_argument("--collect-steps", type=int, default=20_000, help="random real steps")
    p.add_argument("--family", default="ensemble", help="ensemble for state vectors, else discrete")
    p.add_argument("--preset", default="paper", help="world-model size")
    p.add_argument("--fit-epochs", type=int, default=10)
    p.add_argument("--fit-updates", type=int, default=200, help="updates per epoch")
    p.add_argument("--algo", default="ppo", help="ppo, or sac / td3 for Box actions")
    p.add_argument("--dream-steps", type=int, default=100_000, help="imagined agent steps")
    p.add_argument("--num-envs", type=int, default=64, help="dream envs")
    p.add_argument("--horizon", type=int, default=100, help="imagined episode length")
    p.add_argument("--episodes", type=int, default=32, help="real episodes of each policy")
    p.add_argument("--max-steps", type=int, default=None, help="cap on a real episode's length")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    spec = make_spec(args.env, observation=args.observation)
    if spec.observation != "state":  # frames: at the asked size
        spec = make_spec(args.env, observation=spec.observation, screen_size=args.screen_size)
    print(
        f"{args.env}: frames {spec.frame_shape} {np.dtype(spec.frame_dtype)}, "
        f"actions {spec.action_spec.space()}, rewards {spec.reward_kind}"
    )

    dreamenv.collect(out / "data", spec, args.collect_steps, num_envs=8, progress=False)
    config = dreamenv.FitConfig(
        epochs=args.fit_epochs,
        warmup_epochs=0 if args.family == "ensemble" else min(2, args.fit_epochs - 1),
        updates_per_epoch=args.fit_updates,
        lr=1e-3 if args.family == "ensemble" else 3e-4,
        start_bank_size=min(1024, args.collect_steps),
    )
    checkpoint = dreamenv.fit(
        out / "data",
        out / "model",
        family=args.family,
        preset=args.preset,
        config=config,
        progress=False,
    )
    agent = train_in_dream(
        checkpoint,
        args.dream_steps,
        options=dreamenv.DreamOptions(horizon=args.horizon, reward_mode="mean"),
        algo=args.algo,
        num_envs=args.num_envs if args.algo in ("ppo", "a2c") else 16,
        progress=False,
    )
    real = gym.make("dreamenv/Real-v0", checkpoint=str(checkpoint))
    assert real.action_space == spec.action_spec.space()  # the real env's own actions
    kwargs = dict(episodes=args.episodes, num_envs=4, max_steps=args.max_steps)
    trained = evaluate(agent, checkpoint, **kwargs)
    rand = evaluate(random_policy(real.action_space), checkpoint, **kwargs)
    print(AgainstRandom.of(trained, rand).lines("real return of the dream-trained agent", 2))


if __name__ == "__main__":
    main()
