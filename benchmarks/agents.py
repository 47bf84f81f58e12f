"""The agents side by side on one world model: an SB3 agent trained in the dream env, the CEM
planner, the CMA-ES controller and the Dreamer actor-critic, each played in the real env
against a random policy and against the SB3 agent, in one run.

For each agent: its training in the model (none for the planner, which plans at every real
step), the imagined steps it used (model steps times batch: SB3's timesteps; CMA-ES's
generations x (population + copies of the mean) x episodes x horizon; the actor-critic's
updates x batch x horizon; the planner's candidates x particles x horizon x iterations per
real step, summed over its real steps), its wall-clock (training, and the real episodes for
the planner), and its real return over ``--episodes`` episodes (mean ± std) with Welch's
t-test against random and against the SB3 agent. Every agent plays the same seeds.

Writes ``OUT/agents.csv``, ``OUT/agents.json`` and ``OUT/agents.md``.

Example:
    python benchmarks/agents.py --checkpoint runs/pendulum/model --out runs/agents
    python benchmarks/agents.py --checkpoint runs/pendulum/model --agents sb3 cem \\
        --sb3-steps 2000 --episodes 4     # a quick look
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamenv.agents import CEMPlanner, CMAESController, DreamerActorCritic
from dreamenv.atomic_files import write_json
from dreamenv.checkpoint import Checkpoint, load_checkpoint
from dreamenv.envs.options import DreamOptions
from dreamenv.evaluate import evaluate, random_policy
from dreamenv.sb3 import train_in_dream
from dreamenv.stats import AgainstRandom, mean_std

AGENTS = ("sb3", "cem", "cmaes", "actor-critic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="the world-model checkpoint of the task")
    p.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    p.add_argument("--out", default="runs/agents", help="where the table is written")
    # SB3 in the dream env
    p.add_argument("--sb3-algo", default=None, help="ppo, sac, ... (None: sac for Box, ppo)")
    p.add_argument("--sb3-steps", type=int, default=30_000, help="imagined steps")
    p.add_argument("--sb3-envs", type=int, default=16, help="dream envs")
    p.add_argument("--horizon", type=int, default=100, help="dream horizon (SB3 and CMA-ES)")
    # CEM
    p.add_argument("--cem-horizon", type=int, default=20)
    p.add_argument("--cem-candidates", type=int, default=40)
    p.add_argument("--cem-iterations", type=int, default=4)
    p.add_argument("--cem-elites", type=int, default=5)
    # CMA-ES
    p.add_argument("--cmaes-generations", type=int, default=40)
    p.add_argument("--cmaes-population", type=int, default=32)
    p.add_argument("--cmaes-rollouts", type=int, default=8, help="dream episodes per candidate")
    p.add_argument("--cmaes-eval-episodes", type=int, default=64)
    # Dreamer actor-critic
    p.add_argument("--ac-updates", type=int, default=800)
    p.add_argument("--ac-batch", type=int, default=128)
    p.add_argument("--ac-horizon", type=int, default=15)
    p.add_argument("--ac-actor-lr", type=float, default=3e-4)
    # the real env
    p.add_argument("--episodes", type=int, default=32, help="real episodes of each policy")
    p.add_argument("--num-envs", type=int, default=16, help="real envs played at once")
    p.add_argument("--max-steps", type=int, default=None, help="cap on a real episode's length")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _counting(policy: Any) -> tuple[Any, list[int]]:
    """``policy`` with its ``predict`` counting the real env-steps it is asked for."""
    calls = [0]
    predict = policy.predict

    def counted(obs: np.ndarray, *a: Any, **k: Any) -> Any:
        calls[0] += len(obs)
        return predict(obs, *a, **k)

    policy.predict = counted
    return policy, calls


def run_agent(name: str, ckpt: Checkpoint, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``name`` in the model, play it in the real env: its row of the table."""
    common = {
        "episodes": args.episodes,
        "num_envs": args.num_envs,
        "seed": args.seed,
        "max_steps": args.max_steps,
    }
    t0 = time.perf_counter()
    if name == "sb3":
        continuous = ckpt.model.actions.kind == "continuous"
        algo = args.sb3_algo or ("sac" if continuous else "ppo")
        agent = train_in_dream(
            ckpt,
            args.sb3_steps,
            algo=algo,
            num_envs=args.sb3_envs,
            seed=args.seed,
            options=DreamOptions(horizon=args.horizon, reward_mode="mean"),
            progress=False,
        )
        train_s = time.perf_counter() - t0
        returns = evaluate(agent, ckpt, deterministic=True, **common)
        what = f"SB3 {algo.upper()} in Dream-v0, {args.sb3_steps} steps"
        imagined = agent.num_timesteps
    elif name == "cem":
        planner = CEMPlanner(
            ckpt,
            horizon=args.cem_horizon,
            candidates=args.cem_candidates,
            iterations=args.cem_iterations,
            elites=args.cem_elites,
            seed=args.seed,
        )
        planner, calls = _counting(planner)
        train_s = 0.0
        returns = evaluate(planner, ckpt, deterministic=True, **common)
        c = planner.config
        imagined = calls[0] * c.candidates * c.particles * c.horizon * c.iterations
        what = f"CEM planner H{c.horizon} N{c.candidates} J{c.iterations} K{c.elites}"
    elif name == "cmaes":
        controller = CMAESController(
            ckpt,
            population=args.cmaes_population,
            episodes=args.cmaes_rollouts,
            horizon=args.horizon,
            eval_episodes=args.cmaes_eval_episodes,
            seed=args.seed,
        )
        controller.fit(args.cmaes_generations)
        train_s = time.perf_counter() - t0
        returns = controller.play_real(**common).returns
        c = controller.config
        per_generation = (c.population + controller.mean_copies) * c.episodes
        imagined = controller.generation * per_generation * c.horizon
        what = (
            f"CMA-ES linear controller, {controller.generation} generations of "
            f"{c.population}x{c.episodes}"
        )
    else:
        ac = DreamerActorCritic(
            ckpt,
            horizon=args.ac_horizon,
            batch=args.ac_batch,
            actor_lr=args.ac_actor_lr,
            seed=args.seed,
        )
        ac.train(args.ac_updates, progress=False)
        train_s = time.perf_counter() - t0
        returns = ac.evaluate(deterministic=True, **common)
        imagined = args.ac_updates * args.ac_batch * args.ac_horizon
        what = f"Dreamer actor-critic ({ac.gradient}), {args.ac_updates} updates"
    seconds = time.perf_counter() - t0
    return {
        "agent": name,
        "what": what,
        "returns": np.asarray(returns, float),
        "imagined_steps": int(imagined),
        "train_seconds": round(train_s, 1),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    random = evaluate(
        random_policy(ckpt.model.action_space, args.seed),
        ckpt,
        episodes=args.episodes,
        num_envs=args.num_envs,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    rows = [run_agent(name, ckpt, args) for name in args.agents]
    sb3 = next((r["returns"] for r in rows if r["agent"] == "sb3"), None)
    table = []
    for r in rows:
        table.append(
            {
                "agent": r["agent"],
                "what": r["what"],
                "real_return": mean_std(r["returns"]),
                "mean": round(float(r["returns"].mean()), 2),
                "p_vs_random": AgainstRandom.of(r["returns"], random).p_value,
                "p_vs_sb3": float("nan")
                if sb3 is None or r["agent"] == "sb3"
                else AgainstRandom.of(r["returns"], sb3).p_value,
                "imagined_steps": r["imagined_steps"],
                "train_seconds": r["train_seconds"],
                "seconds": r["seconds"],
            }
        )
    fields = list(table[0]) if table else []
    with open(out / "agents.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
    meta = {
        "checkpoint": str(args.checkpoint),
        "family": ckpt.model.family,
        "env": getattr(ckpt.spec, "env_id", getattr(ckpt.spec, "game", "?")),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "settings": vars(args),
        "random": {"returns": random.tolist(), "real_return": mean_std(random)},
        "rows": [{**t, "returns": r["returns"].tolist()} for t, r in zip(table, rows, strict=True)],
    }
    write_json(out / "agents.json", meta)
    lines = [
        f"{meta['env']}, `{meta['family']}` model {args.checkpoint}; {args.episodes} real "
        f"episodes per policy, {args.threads} thread(s).",
        "",
        "| agent | real return | p vs random | p vs SB3 | imagined steps | wall-clock |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| random policy | {mean_std(random)} | | | 0 | |",
    ]
    for t in table:
        lines.append(
            f"| {t['what']} | {t['real_return']} | {t['p_vs_random']:.2g} | "
            f"{'' if np.isnan(t['p_vs_sb3']) else format(t['p_vs_sb3'], '.2g')} | "
            f"{t['imagined_steps']:,} | {t['seconds']:.0f} s |"
        )
    text = "\n".join(lines) + "\n"
    (out / "agents.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
