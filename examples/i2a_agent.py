"""An imagination-augmented agent (I2A): SB3 PPO whose features extractor imagines one
rollout of the world model per action, trained in the real game (or, with --in-dream, in
the dream of decoded frames), then played against a random policy (mean ± std, Welch's t).

    python examples/i2a_agent.py --checkpoint runs/quickstart/model --steps 100000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3 import PPO

import dreamenv  # noqa: F401  (registers the envs)
from dreamenv.atomic_files import write_json
from dreamenv.envs.real import RealVectorEnv
from dreamenv.evaluate import evaluate, random_policy
from dreamenv.sb3 import DistillRolloutPolicy, I2AExtractor, wrap
from dreamenv.stats import AgainstRandom


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a world model of a Discrete-action env")
    p.add_argument("--steps", type=int, default=100_000, help="agent steps of PPO")
    p.add_argument("--in-dream", action="store_true", help="train in Dream-v0 (decoded frames)")
    p.add_argument("--envs", type=int, default=8, help="envs stepped together")
    p.add_argument("--rollout-steps", type=int, default=3, help="imagined steps per action")
    p.add_argument("--encoder-hidden", type=int, default=64, help="rollout encoder LSTM units")
    p.add_argument("--n-steps", type=int, default=128, help="PPO steps per env per rollout")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--precision", default="float32", help="imagination: float32 or bfloat16")
    p.add_argument("--distill-epochs", type=int, default=10, help="rollout policy fits per rollout")
    p.add_argument("--horizon", type=int, default=50, help="--in-dream: the dream's horizon")
    p.add_argument("--episodes", type=int, default=32, help="real episodes of each policy")
    p.add_argument("--num-envs", type=int, default=16, help="real envs played at once")
    p.add_argument("--max-steps", type=int, default=None, help="cap on a real episode's length")
    p.add_argument("--save", default=None, help="save the agent to this path")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0, help="SB3's logging (1: every rollout)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.in_dream:
        env = gym.make_vec(
            "dreamenv/Dream-v0",
            num_envs=args.envs,
            checkpoint=args.checkpoint,
            obs_type="pixels",
            horizon=args.horizon,
            vectorization_mode="vector_entry_point",
        )
    else:
        env = RealVectorEnv(args.checkpoint, args.envs, obs_type="pixels")
    venv = wrap(env)
    venv.seed(args.seed)
    agent = PPO(
        "CnnPolicy",
        venv,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=args.lr,
        ent_coef=args.ent_coef,
        clip_range=0.1,
        seed=args.seed,
        verbose=args.verbose,
        policy_kwargs={
            "features_extractor_class": I2AExtractor,
            "features_extractor_kwargs": {
                "checkpoint": args.checkpoint,
                "rollout_steps": args.rollout_steps,
                "encoder_hidden": args.encoder_hidden,
                "precision": args.precision,
            },
        },
    )
    callback = DistillRolloutPolicy(epochs=args.distill_epochs)
    t0 = time.perf_counter()
    agent.learn(args.steps, callback=callback)
    seconds = time.perf_counter() - t0
    venv.close()
    if args.save:
        agent.save(args.save)
    common = {
        "episodes": args.episodes,
        "num_envs": args.num_envs,
        "seed": args.seed,
        "max_steps": args.max_steps,
    }
    trained = evaluate(agent, args.checkpoint, **common)
    space = agent.action_space
    random = evaluate(random_policy(space, args.seed), args.checkpoint, **common)
    compared = AgainstRandom.of(trained, random)
    where = "the dream" if args.in_dream else "the real env"
    print(
        compared.lines(
            f"I2A PPO ({args.steps} steps in {where}, {args.rollout_steps} imagined steps per "
            f"action, {seconds:.0f} s)"
        )
    )
    if callback.losses:
        print(
            f"rollout-policy distillation KL: {callback.losses[0]:.3f} -> {callback.losses[-1]:.3f}"
        )
    if args.json:
        write_json(
            Path(args.json),
            {
                "settings": vars(args),
                "trained_returns": trained.tolist(),
                "random_returns": random.tolist(),
                "welch": [compared.welch_t, compared.welch_df, compared.p_value],
                "train_seconds": seconds,
                "distill_losses": callback.losses,
            },
        )


if __name__ == "__main__":
    main()
