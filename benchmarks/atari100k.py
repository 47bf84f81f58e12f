"""The Atari-100k benchmark: `dreamenv train` on a list of games and seeds, then one table
of final scores against the published references, with the wall-clock time of each run.

Meant for a GPU machine (the ``atari100k`` preset is the paper's full protocol); every run
is resumable, so a killed benchmark continues where it stopped when started again.

    python benchmarks/atari100k.py --games pong breakout --seeds 0 1 2 --out runs/atari100k
    python benchmarks/atari100k.py --games pong --seeds 0 --preset quick   # CPU-sized
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from dreamenv.envs.atari import normalize_game
from dreamenv.report import REFERENCE_COLUMNS, human_normalized, reference_scores, write_report
from dreamenv.train.loop import LOOP_PRESETS, read_results, train


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--games", nargs="+", default=["pong", "breakout", "freeway", "boxing"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--preset", default="atari100k", choices=sorted(LOOP_PRESETS))
    p.add_argument("--iterations", type=int, help="override the preset's iterations")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--overrides",
        default="{}",
        help='JSON of LoopConfig fields, e.g. \'{"eval_episodes": 8}\'; "fit" takes '
        "a dict of FitConfig fields",
    )
    p.add_argument("--out", default="runs/atari100k")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args()


def run_all(args: argparse.Namespace) -> list[dict]:
    """Train every (game, seed) run; returns one summary row per game."""
    config = dataclasses.replace(LOOP_PRESETS[args.preset], device=args.device)
    if args.iterations:
        config = dataclasses.replace(config, iterations=args.iterations)
    overrides = json.loads(args.overrides)
    if "fit" in overrides:
        overrides["fit"] = dataclasses.replace(config.fit, **overrides["fit"])
    for name in ("wm_epochs", "rollouts"):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    config = dataclasses.replace(config, **overrides)
    out = Path(args.out)
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    summary = []
    refs = reference_scores()
    for game in [normalize_game(g) for g in args.games]:
        run_dirs = []
        for seed in args.seeds:
            run_dir = out / f"{game}-s{seed}"
            start = time.monotonic()
            rows = train(game, run_dir, config, seed=seed, progress=not args.quiet)
            key = f"{game}-s{seed}"
            timings[key] = timings.get(key, 0.0) + time.monotonic() - start
            timings_path.parent.mkdir(parents=True, exist_ok=True)
            timings_path.write_text(json.dumps(timings, indent=2))
            run_dirs.append(run_dir)
            print(
                f"{key}: final return {rows[-1]['mean_return']:.1f} in {timings[key] / 60:.1f} min"
            )
        write_report(run_dirs, out / f"{game}-report")
        finals = np.array([read_results(d)[-1]["mean_return"] for d in run_dirs])
        game_refs = refs.get(game, {})
        summary.append(
            {
                "game": game,
                "runs": len(run_dirs),
                "mean": float(finals.mean()),
                "std": float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
                "hns": human_normalized(float(finals.mean()), game_refs),
                "minutes_per_run": float(
                    np.mean([timings[f"{game}-s{s}"] for s in args.seeds]) / 60
                ),
                **{k: game_refs.get(k) for k in ("random", *REFERENCE_COLUMNS)},
            }
        )
    return summary


def markdown(summary: list[dict], preset: str) -> str:
    """The per-game table: dreamenv's final score beside the reference methods."""
    refs = ["random", *REFERENCE_COLUMNS]
    head = ["game", f"dreamenv ({preset})", "HNS", "min/run", *refs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary:
        hns = "n/a" if row["hns"] is None else f"{row['hns']:.3f}"
        cells = [
            row["game"],
            f"{row['mean']:.1f} ± {row['std']:.1f} (n={row['runs']})",
            hns,
            f"{row['minutes_per_run']:.1f}",
        ]
        cells += ["" if row[k] is None else f"{row[k]:.1f}" for k in refs]
        lines.append("| " + " | ".join(cells) + " |")
    hns_values = [r["hns"] for r in summary if r["hns"] is not None]
    if hns_values:
        lines.append(
            f"\nmedian HNS {np.median(hns_values):.3f}, mean HNS {np.mean(hns_values):.3f}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    summary = run_all(args)
    table = markdown(summary, args.preset)
    print(table)
    out = Path(args.out)
    (out / "atari100k.md").write_text(table)
    (out / "atari100k.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'atari100k.md'} and {out / 'atari100k.json'}")


if __name__ == "__main__":
    main()
