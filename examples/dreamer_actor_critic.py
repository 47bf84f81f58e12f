"""A Dreamer actor-critic trained only in a world model's imagination, then played in the real
env against a random policy (mean ± std, Welch's t).

With --checkpoint it trains in the dream of that checkpoint; with --env it runs the loop with
real data (collect, fit, train in the dream, collect with the actor, refit, ...) in --run-dir.

    python examples/dreamer_actor_critic.py --checkpoint runs/gym/pendulum/model --updates 800 \
        --batch 128 --actor-lr 3e-4
    python examples/dreamer_actor_critic.py --env Pendulum-v1 --iterations 3 --steps 2000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dreamenv.agents.actor_critic import (
    ActorCriticConfig,
    DreamerActorCritic,
    train_actor_critic_loop,
)
from dreamenv.atomic_files import write_json
from dreamenv.evaluate import evaluate, random_policy
from dreamenv.stats import AgainstRandom
from dreamenv.train.fit import FitConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a world-model checkpoint to dream in")
    source.add_argument("--env", help="a gymnasium id: run the loop with real data")
    p.add_argument("--updates", type=int, default=600, help="actor-critic updates (per iteration)")
    p.add_argument("--horizon", type=int, default=15, help="imagined steps per update")
    p.add_argument("--batch", type=int, default=128, help="imagined trajectories per update")
    p.add_argument("--discount", type=float, default=0.99)
    p.add_argument("--gradient", default="auto", help="auto, dynamics or reinforce")
    p.add_argument("--hidden", type=int, default=256, help="units per layer of actor and critic")
    p.add_argument("--actor-lr", type=float, default=1e-4)
    p.add_argument("--critic-lr", type=float, default=3e-4)
    p.add_argument("--entropy", type=float, default=3e-4)
    p.add_argument("--precision", default="float32", help="float32, or bfloat16 autocast")
    p.add_argument("--run-dir", default="runs/dreamer-ac", help="--env: store, model, agents")
    p.add_argument("--iterations", type=int, default=3, help="--env: collect-fit-train rounds")
    p.add_argument("--steps", type=int, default=2000, help="--env: real steps per iteration")
    p.add_argument("--epochs", type=int, default=5, help="--env: fit epochs per iteration")
    p.add_argument("--family", default="ensemble", help="--env: the world-model family")
    p.add_argument("--preset", default="small", help="--env: the world-model size")
    p.add_argument("--episodes", type=int, default=32, help="real episodes of each policy")
    p.add_argument("--num-envs", type=int, default=16, help="real envs played at once")
    p.add_argument("--max-steps", type=int, default=None, help="cap on a real episode's length")
    p.add_argument("--save", default=None, help="save the actor-critic to this directory")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = ActorCriticConfig(
        horizon=args.horizon,
        batch=args.batch,
        discount=args.discount,
        gradient=args.gradient,
        actor_hidden=args.hidden,
        critic_hidden=args.hidden,
        actor_lr=args.actor_lr,
        critic_lr=args.critic_lr,
        entropy=args.entropy,
        precision=args.precision,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    loop_rows = None
    if args.env:
        loop_rows = train_actor_critic_loop(
            args.env,
            args.run_dir,
            args.iterations,
            steps=args.steps,
            epochs=args.epochs,
            updates=args.updates,
            family=args.family,
            preset=args.preset,
            fit_config=FitConfig(seed=args.seed),
            config=config,
        )
        agent = DreamerActorCritic.load(f"{args.run_dir}/agent-{args.iterations}")
        rows: list[dict[str, float]] = []
    else:
        agent = DreamerActorCritic(args.checkpoint, config)
        before = agent.imagined_return()
        rows = agent.train(args.updates)
        print(
            f"imagined return over {args.horizon} steps: {before:.2f} before, "
            f"{agent.imagined_return():.2f} after {args.updates} updates "
            f"({agent.gradient} gradients)"
        )
    seconds = time.perf_counter() - t0
    if args.save:
        agent.save(args.save)
    common = {
        "episodes": args.episodes,
        "num_envs": args.num_envs,
        "seed": args.seed,
        "max_steps": args.max_steps,
    }
    trained = agent.evaluate(deterministic=True, **common)
    space = agent.model.action_space
    random = evaluate(random_policy(space, args.seed), agent.checkpoint, **common)
    compared = AgainstRandom.of(trained, random)
    what = f"{agent.gradient}, H={args.horizon} B={args.batch}, {args.updates} updates"
    print(compared.lines(f"Dreamer actor-critic ({what}) after {seconds:.0f} s of training"))
    if args.json:
        write_json(
            Path(args.json),
            {
                "settings": vars(args),
                "trained_returns": trained.tolist(),
                "random_returns": random.tolist(),
                "welch_t": compared.welch_t,
                "df": compared.welch_df,
                "p": compared.p_value,
                "train_seconds": seconds,
                "history": rows,
                "loop": loop_rows,
            },
        )


if __name__ == "__main__":
    main()
