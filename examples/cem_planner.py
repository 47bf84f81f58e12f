"""Model-predictive control with CEM in the real env: plan every step in the world model's
imagination, then compare with a random policy (mean ± std, Welch's t).

    python examples/cem_planner.py --checkpoint runs/gym/pendulum/model --horizon 15 \
        --candidates 64 --iterations 4 --elites 8 --episodes 32 --num-envs 16

A family whose state one observation does not give (a recurrent model such as ``rssm``, or
stacked frames) plans from the state its ``Real-v0`` env's filter keeps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from dreamenv.agents import CEMPlanner
from dreamenv.atomic_files import write_json
from dreamenv.checkpoint import load_checkpoint
from dreamenv.envs.real import RealVectorEnv
from dreamenv.evaluate import evaluate, play, random_policy
from dreamenv.stats import AgainstRandom


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a world-model checkpoint directory")
    p.add_argument("--horizon", type=int, default=15, help="imagined steps per plan")
    p.add_argument("--candidates", type=int, default=64, help="action sequences per iteration")
    p.add_argument("--iterations", type=int, default=4, help="CEM refits per real step")
    p.add_argument("--elites", type=int, default=8, help="best candidates refitted to")
    p.add_argument("--particles", type=int, default=1, help="imagined rollouts per candidate")
    p.add_argument("--episodes", type=int, default=32, help="real episodes of each policy")
    p.add_argument("--max-steps", type=int, default=None, help="cap on a real episode's length")
    p.add_argument("--num-envs", type=int, default=16, help="real envs planned for at once")
    p.add_argument(
        "--precision", default="auto", help="auto (bfloat16 where native), float32 or bfloat16"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    # a recurrent or stacked model state follows the real game in the Real-v0 env played in
    real_env = None
    if not CEMPlanner.rebuilds_state(ckpt.model):
        real_env = RealVectorEnv(ckpt, min(args.num_envs, args.episodes))
    planner = CEMPlanner(
        ckpt,
        real_env=real_env,
        horizon=args.horizon,
        candidates=args.candidates,
        iterations=args.iterations,
        elites=args.elites,
        particles=args.particles,
        precision=args.precision,
        seed=args.seed,
    )
    common = {
        "episodes": args.episodes,
        "num_envs": args.num_envs,
        "seed": args.seed,
        "max_steps": args.max_steps,
    }
    calls = 0
    predict = planner.predict

    def counted(obs: np.ndarray, *a: object, **k: object) -> tuple[np.ndarray, None]:
        nonlocal calls
        calls += len(obs)
        return predict(obs, *a, **k)  # type: ignore[arg-type]

    planner.predict = counted  # type: ignore[method-assign]
    t0 = time.perf_counter()
    if real_env is None:
        planned = evaluate(planner, ckpt, deterministic=True, **common)  # type: ignore[arg-type]
    else:
        played = play(
            real_env, planner.act, args.episodes, seed=args.seed, max_steps=args.max_steps
        )
        planned = played.returns
        real_env.close()
    seconds = time.perf_counter() - t0
    random = evaluate(random_policy(ckpt.model.action_space, args.seed), ckpt, **common)  # type: ignore[arg-type]
    compared = AgainstRandom.of(planned, random)
    settings = (
        f"H={args.horizon} N={args.candidates} J={args.iterations} K={args.elites} "
        f"P={args.particles} {args.precision}, {args.num_envs} envs, {args.threads} thread(s)"
    )
    print(compared.lines(f"CEM planner ({settings})"))
    print(
        f"planning: {calls} env-steps in {seconds:.0f} s ({calls / seconds:.1f} env-steps/s, "
        f"{1e3 * seconds / max(calls, 1):.1f} ms each, env time included)"
    )
    if args.json:
        write_json(
            Path(args.json),
            {
                "settings": vars(args),
                "planner_returns": planned.tolist(),
                "random_returns": random.tolist(),
                "welch_t": compared.welch_t,
                "df": compared.welch_df,
                "p": compared.p_value,
                "planner_seconds": seconds,
                "planner_env_steps": calls,
            },
        )


if __name__ == "__main__":
    main()
