"""World Models' controller (Ha & Schmidhuber 2018): evolve a linear policy on the latent with
CMA-ES only in the dream of a checkpoint, then play it and a random policy in the real env
(mean ± std, Welch's t).

    # the paper's task: CarRacing-v3 frames at 64x64, V + M of the mdnrnn family
    python examples/cmaes_controller.py --env CarRacing-v3 --family mdnrnn --preset paper \
        --collect-steps 10000 --generations 100 --population 64 --rollouts 16 --horizon 200
    # an Atari game with the discrete family, the dream harder than trained (tau = 1.15)
    python examples/cmaes_controller.py --env pong --family discrete --preset small \
        --collect-steps 20000 --temperature 1.15 --generations 50
    # a checkpoint you already have; dreams from real episode starts (README: CarRacing-v3)
    python examples/cmaes_controller.py --checkpoint runs/car/model --generations 40 \
        --population 32 --rollouts 8 --horizon 50 --reset-share 1
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

import dreamenv
from dreamenv.agents import CMAESController
from dreamenv.atomic_files import write_json
from dreamenv.checkpoint import load_checkpoint
from dreamenv.envs.spec import is_atari, make_spec
from dreamenv.evaluate import evaluate, random_policy
from dreamenv.stats import AgainstRandom


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # the world model: a checkpoint, or one made here from random real steps of --env
    p.add_argument("--checkpoint", default=None, help="a world-model checkpoint directory")
    p.add_argument(
        "--env", default="CarRacing-v3", help="gymnasium id or ALE game (no --checkpoint)"
    )
    p.add_argument("--family", default="mdnrnn", help="world-model family of a new checkpoint")
    p.add_argument("--preset", default="small", help="its size: paper, small or tiny")
    p.add_argument("--screen-size", type=int, default=64, help="frame side of image envs")
    p.add_argument("--collect-steps", type=int, default=10_000, help="random real steps")
    p.add_argument("--fit-epochs", type=int, default=10)
    p.add_argument("--fit-updates", type=int, default=200, help="updates per epoch")
    p.add_argument("--out", default="runs/cmaes", help="store and checkpoint go here")
    # CMA-ES in the dream
    p.add_argument("--generations", type=int, default=50)
    p.add_argument("--population", type=int, default=64, help="candidates per generation")
    p.add_argument("--rollouts", type=int, default=16, help="dream episodes per candidate")
    p.add_argument("--horizon", type=int, default=100, help="imagined steps per episode")
    p.add_argument("--sigma0", type=float, default=0.1, help="initial CMA-ES step size")
    p.add_argument("--temperature", type=float, default=1.0, help="the paper's tau")
    p.add_argument("--features", default="latent", help="latent, or latent+state")
    p.add_argument("--covariance", default="auto", help="auto, full or diagonal")
    p.add_argument("--keep", default="mean", help="mean (the paper's) or best candidate")
    p.add_argument("--eval-episodes", type=int, default=64, help="dream episodes of the mean")
    p.add_argument("--precision", default="float32", help="float32, or bfloat16 autocast")
    p.add_argument(
        "--reset-share", type=float, default=0.0, help="share of dreams from real episode starts"
    )
    # the real env
    p.add_argument("--episodes", type=int, default=32, help="real episodes of each policy")
    p.add_argument("--num-envs", type=int, default=16, help="real envs played at once")
    p.add_argument("--max-steps", type=int, default=None, help="cap on a real episode's length")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="write the controller to this .safetensors file")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def make_checkpoint(args: argparse.Namespace) -> Path:
    """Collect random real steps of ``--env`` and fit ``--family`` on them."""
    out = Path(args.out)
    spec = make_spec(args.env)  # an Atari game keeps the papers' preprocessing
    if not is_atari(args.env) and spec.observation != "state":  # frames: at the asked size
        spec = make_spec(args.env, screen_size=args.screen_size)
    dreamenv.collect(out / "data", spec, args.collect_steps, num_envs=8, progress=True)
    config = dreamenv.FitConfig(
        epochs=args.fit_epochs,
        warmup_epochs=0 if args.family == "ensemble" else min(2, args.fit_epochs - 1),
        updates_per_epoch=args.fit_updates,
        start_bank_size=min(1024, args.collect_steps),
    )
    return dreamenv.fit(
        out / "data", out / "model", family=args.family, preset=args.preset, config=config
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.episodes < 2:
        raise SystemExit(
            f"error: --episodes must be >= 2 (a mean ± std and a t-test), got {args.episodes}"
        )
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint or make_checkpoint(args))
    controller = CMAESController(
        ckpt,
        population=args.population,
        episodes=args.rollouts,
        horizon=args.horizon,
        sigma0=args.sigma0,
        temperature=args.temperature,
        features=args.features,
        covariance=args.covariance,
        keep=args.keep,
        eval_episodes=args.eval_episodes,
        precision=args.precision,
        reset_share=args.reset_share,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    controller.fit(args.generations, progress=True)
    seconds = time.perf_counter() - t0
    if args.save:
        controller.save(args.save)
    common = {"episodes": args.episodes, "num_envs": args.num_envs, "max_steps": args.max_steps}
    trained = controller.play_real(seed=args.seed, **common).returns
    random = evaluate(
        random_policy(ckpt.model.action_space, args.seed), ckpt, seed=args.seed, **common
    )  # type: ignore[arg-type]
    compared = AgainstRandom.of(trained, random)
    settings = (
        f"P={args.population} E={args.rollouts} H={args.horizon} tau={args.temperature} "
        f"{args.features}, {controller.num_params} parameters"
        f"{' diagonal' if controller.diagonal else ''}"
    )
    last = controller.history[-1]
    print(
        f"dream: {len(controller.history)} generations in {seconds:.0f} s; last generation "
        f"{last.mean:.2f} ± {last.std:.2f}; kept controller ({args.keep}) "
        f"{controller.best_return:.2f} (generation {controller.best_generation})"
    )
    print(compared.lines(f"CMA-ES controller ({settings})"))
    if args.json:
        write_json(
            Path(args.json),
            {
                "settings": vars(args),
                "checkpoint": str(ckpt.path),
                "controller_returns": trained.tolist(),
                "random_returns": random.tolist(),
                "welch_t": compared.welch_t,
                "df": compared.welch_df,
                "p": compared.p_value,
                "dream_seconds": seconds,
                "history": [dataclasses.asdict(h) for h in controller.history],
            },
        )


if __name__ == "__main__":
    main()
