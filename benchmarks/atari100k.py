"""The Atari-100k benchmark: `dreamenv train` on a list of games and seeds, then one table
of final scores against the published references, with the wall-clock time of each run.

Meant for a GPU machine (the ``atari100k`` preset is the paper's full protocol); every run
is resumable, so a killed benchmark continues where it stopped when started again (runs
already finished are only read). ``--parallel N`` trains N runs at a time, each in its own
process on one CPU thread.

    python benchmarks/atari100k.py --games pong breakout --seeds 0 1 2 --out runs/atari100k
    python benchmarks/atari100k.py --games pong --seeds 0 --preset quick   # CPU-sized
    python benchmarks/atari100k.py --games pong boxing --seeds 0 1 --parallel 4

After training, each run's last agent and a random policy play ``--versus-random``
real episodes each (the same seeds) and Welch's t-test compares them: the table's
"vs random" column, kept in ``RUN/versus_random.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import contextlib
import csv
import dataclasses
import io
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from dreamenv.atomic_files import null_as_nan, write_json
from dreamenv.envs.atari import normalize_game
from dreamenv.report import (
    GAP_RETURN_KEYS,
    MODEL_SCORE_KEYS,
    human_normalized,
    reference_scores,
    write_report,
)
from dreamenv.train.loop import LOOP_PRESETS, LoopConfig, read_results, train

BENCH_REFERENCES = {
    "robine_4frames": "Robine 4 frames",
    "simple_sd_gamma099": "SimPLe",
    "ppo_100k": "PPO 100K",
}
"""Reference columns of the table (columns of the reference CSV) and their headings."""

GAP_COLUMNS = (*GAP_RETURN_KEYS, "gap", *MODEL_SCORE_KEYS)
"""The reality-gap keys of a run's last iteration tabled per game (mean over seeds)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="runs trained at a time, each in its own process on one CPU thread (1: one "
        "run at a time in this process, with the default threads)",
    )
    p.add_argument(
        "--versus-random",
        type=int,
        default=32,
        metavar="EPISODES",
        help="real episodes each for the last agent and a random policy of every run, "
        "compared by Welch's t-test (0: skip)",
    )
    p.add_argument("--out", default="runs/atari100k")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.parallel < 1:
        p.error(f"--parallel must be at least 1, got {args.parallel}")
    if args.versus_random == 1 or args.versus_random < 0:
        p.error(
            f"--versus-random must be 0 (skip) or at least 2 episodes, got {args.versus_random}"
        )
    return args


def build_config(args: argparse.Namespace) -> LoopConfig:
    """The preset of ``args`` with its device, iterations and JSON overrides."""
    config = dataclasses.replace(LOOP_PRESETS[args.preset], device=args.device)
    if args.iterations:
        config = dataclasses.replace(config, iterations=args.iterations)
    overrides = json.loads(args.overrides)
    if "fit" in overrides:
        overrides["fit"] = dataclasses.replace(config.fit, **overrides["fit"])
    for name in ("wm_epochs", "rollouts"):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    return dataclasses.replace(config, **overrides)


def run_key(game: str, seed: int) -> str:
    """The name of a run: its directory under the output and its key in timings.json."""
    return f"{game}-s{seed}"


def is_finished(run_dir: Path, config: LoopConfig) -> bool:
    """Whether the run in ``run_dir`` has all of ``config``'s iterations."""
    return len(read_results(run_dir)) >= config.iterations


def train_run(
    game: str, seed: int, run_dir: str, config: LoopConfig, threads: int, progress: bool
) -> float:
    """Train (or resume) one run; its wall-clock seconds. With ``threads`` > 0 torch uses
    that many CPU threads and the run's output goes to ``RUN_DIR/benchmark.log``."""
    start = time.monotonic()
    if threads <= 0:
        train(game, run_dir, config, seed=seed, progress=progress)
        return time.monotonic() - start
    import torch

    from dreamenv.memory import keep_freed_memory

    torch.set_num_threads(threads)
    keep_freed_memory()  # as the command line does (fits ran 1.6x slower without)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with (
        open(Path(run_dir) / "benchmark.log", "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        train(game, run_dir, config, seed=seed, progress=False)
    return time.monotonic() - start


class Timings:
    """Wall-clock seconds of every run, summed over its sessions, in ``OUT/timings.json``;
    each ``add`` re-reads the file first, so two benchmark calls sharing one output keep
    each other's runs."""

    def __init__(self, out: Path) -> None:
        self.path = out / "timings.json"
        self.seconds: dict[str, float] = self._read()

    def _read(self) -> dict[str, float]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def add(self, key: str, seconds: float) -> None:
        self.seconds = self._read()  # what another call wrote since
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds
        write_json(self.path, self.seconds)


def train_all(args: argparse.Namespace, config: LoopConfig, games: list[str]) -> Timings:
    """Train every unfinished (game, seed) run, ``args.parallel`` at a time."""
    out = Path(args.out)
    timings = Timings(out)
    todo = [
        (game, seed)
        for game in games
        for seed in args.seeds
        if not is_finished(out / run_key(game, seed), config)
    ]

    def done(game: str, seed: int, seconds: float) -> None:
        key = run_key(game, seed)
        timings.add(key, seconds)
        final = read_results(out / key)[-1]["mean_return"]
        print(f"{key}: final return {final:.1f} in {timings.seconds[key] / 60:.1f} min", flush=True)

    if args.parallel == 1:
        for game, seed in todo:
            done(
                game,
                seed,
                train_run(game, seed, str(out / run_key(game, seed)), config, 0, not args.quiet),
            )
        return timings
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(args.parallel, mp_context=context) as pool:
        running = {
            pool.submit(train_run, game, seed, str(out / run_key(game, seed)), config, 1, False): (
                game,
                seed,
            )
            for game, seed in todo
        }
        for future in futures.as_completed(running):
            game, seed = running[future]
            try:
                seconds = future.result()
            except Exception as err:  # one failed run leaves the others running
                log = out / run_key(game, seed) / "benchmark.log"
                print(f"{run_key(game, seed)} failed: {err!r} (its output: {log})", flush=True)
                continue
            done(game, seed, seconds)
    return timings


VERSUS_FILE = "versus_random.json"
"""Where a run keeps its last agent's comparison with a random policy."""

SIGNIFICANCE = 0.01
"""Two-sided p below which an agent counts as beating (or losing to) the random policy."""


EVAL_SEED_STRIDE = 10_000
"""A run of seed ``s`` plays its comparison with random from evaluation seed
``EVAL_SEED_STRIDE * s``: each seed's random sample is its own, so the seeds of a game
give independent p-values (seed 0: evaluation seed 0, as before)."""


def read_versus(path: Path) -> dict[str, Any]:
    """A saved last-agent-against-random comparison; a statistic Welch's test could not give
    (saved as ``null``: both samples constant) reads as NaN."""
    return null_as_nan(json.loads(path.read_text()))


def versus_random(run_dir: Path, episodes: int, device: str = "cpu") -> dict[str, Any]:
    """The run's last agent and a uniformly random policy, ``episodes`` real episodes each
    on the same seeds (from :data:`EVAL_SEED_STRIDE` times the run's seed), compared by
    Welch's t-test; kept in ``RUN/versus_random.json`` and read back while the agent,
    ``episodes`` and the evaluation seed are the same.

    Example:
        >>> versus_random(Path("runs/atari100k/pong-s0"), 32)["p_value"]
    """
    from dreamenv.checkpoint import load_checkpoint
    from dreamenv.evaluate import against_random
    from dreamenv.sb3 import load_agent

    iteration = len(read_results(run_dir))
    seed = EVAL_SEED_STRIDE * int(json.loads((run_dir / "run.json").read_text())["seed"])
    path = run_dir / VERSUS_FILE
    if path.is_file():
        saved = read_versus(path)
        kept = (saved.get("iteration"), saved.get("episodes"), saved.get("seed", 0))
        if kept == (iteration, episodes, seed):
            return saved
    ckpt = load_checkpoint(run_dir / "model", device)
    agent = load_agent(run_dir / f"agent-{iteration}", device)
    compared = against_random(agent, ckpt, episodes=episodes, seed=seed, device=device)
    result = {
        "iteration": iteration,
        "episodes": episodes,
        "seed": seed,
        "agent": compared.agent.tolist(),
        "random": compared.random.tolist(),
        "welch_t": compared.welch_t,
        "welch_df": compared.welch_df,
        "p_value": compared.p_value,
    }
    write_json(path, result)
    return result


def versus_all(args: argparse.Namespace, config: LoopConfig, games: list[str]) -> None:
    """:func:`versus_random` for every finished run of ``args`` (one at a time)."""
    if not args.versus_random:
        return
    out = Path(args.out)
    for game in games:
        for seed in args.seeds:
            run_dir = out / run_key(game, seed)
            if is_finished(run_dir, config):
                r = versus_random(run_dir, args.versus_random, config.resolved_device())
                print(
                    f"{run_key(game, seed)}: agent {np.mean(r['agent']):.1f} vs random "
                    f"{np.mean(r['random']):.1f} (p = {r['p_value']:.2g})",
                    flush=True,
                )


def _versus_cell(row: dict[str, Any]) -> str:
    """``agent ± std vs random ± std (p)`` per seed, or empty where not measured."""
    cells = []
    for versus in row["versus"]:
        if versus is None:
            return ""
        a, r = np.array(versus["agent"]), np.array(versus["random"])
        cells.append(
            f"{a.mean():.1f} ± {a.std(ddof=1):.1f} vs {r.mean():.1f} ± {r.std(ddof=1):.1f} "
            f"(p {versus['p_value']:.2g})"
        )
    return "; ".join(cells)


def beats_random(versus: dict[str, Any] | None) -> bool | None:
    """Whether the agent's mean is above random's with p below :data:`SIGNIFICANCE`."""
    if versus is None:
        return None
    p = versus["p_value"]
    return bool(np.mean(versus["agent"]) > np.mean(versus["random"]) and p < SIGNIFICANCE)


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def game_summary(
    game: str, seeds: list[int], out: Path, timings: dict[str, float]
) -> dict[str, Any]:
    """One game's row from its runs under ``out``: the last evaluation of every seed and
    their average (std over seeds; with one seed, that of its evaluation), the reference
    scores, the human-normalised score, minutes per run and the last reality gap.

    Example:
        >>> game_summary("pong", [0, 1], Path("runs/atari100k"), {"pong-s0": 600.0})["hns"]
    """
    keys = [run_key(game, s) for s in seeds]
    lasts = [read_results(out / k)[-1] for k in keys]
    finals = np.array([r["mean_return"] for r in lasts])
    refs = reference_scores().get(game, {})
    minutes = [timings[k] / 60 for k in keys if k in timings]
    versus = [
        read_versus(out / k / VERSUS_FILE) if (out / k / VERSUS_FILE).is_file() else None
        for k in keys
    ]
    return {
        "game": game,
        "seeds": list(seeds),
        "per_seed": [(float(r["mean_return"]), float(r["std_return"])) for r in lasts],
        "real_steps": int(lasts[0]["real_steps"]),
        "mean": float(finals.mean()),
        "std": float(finals.std(ddof=1)) if len(finals) > 1 else float(lasts[0]["std_return"]),
        "hns": human_normalized(float(finals.mean()), refs),
        "minutes_per_run": float(np.mean(minutes)) if minutes else None,
        "versus": versus,
        **{k: refs.get(k) for k in ("random", *BENCH_REFERENCES)},
        **{k: _mean([r.get(k) for r in lasts]) for k in GAP_COLUMNS},
    }


def _num(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown(summary: list[dict[str, Any]], preset: str) -> str:
    """The per-game table: dreamenv's final score beside random and the reference methods,
    then the mean HNS of the set and, where runs measured it, the last reality gap."""
    head = [
        "game",
        "seeds",
        f"dreamenv ({preset})",
        "per seed",
        "random",
        "HNS",
        *BENCH_REFERENCES.values(),
        "min/run",
        "last agent vs random, same run (p)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary:
        cells = [
            row["game"],
            str(len(row["seeds"])),
            f"{row['mean']:.1f} ± {row['std']:.1f}",
            ", ".join(f"{m:.1f} ± {s:.1f}" for m, s in row["per_seed"]),
            _num(row["random"]),
            "n/a" if row["hns"] is None else f"{row['hns']:.3f}",
            *(_num(row[k]) for k in BENCH_REFERENCES),
            _num(row["minutes_per_run"]),
            _versus_cell(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    hns = [r["hns"] for r in summary if r["hns"] is not None]
    if hns:
        lines.append(
            f"\nmean HNS {np.mean(hns):.3f} over {len(hns)} games (median {np.median(hns):.3f})"
        )
    compared = [[beats_random(v) for v in r["versus"]] for r in summary]
    compared = [c for c in compared if None not in c]
    if compared:
        wins = sum(all(c) for c in compared)
        lines.append(
            f"\nthe last agent beats random (p < {SIGNIFICANCE}) in {wins} of {len(compared)} "
            "games (in every seed)"
        )
    gapped = [r for r in summary if any(r[k] is not None for k in GAP_COLUMNS)]
    if gapped:
        lines += [
            "",
            "reality gap of the last iteration (mean over seeds):",
            "",
            "| game | " + " | ".join(GAP_COLUMNS) + " |",
            "|---|" + "---:|" * len(GAP_COLUMNS),
        ]
        for r in gapped:
            lines.append(
                f"| {r['game']} | "
                + " | ".join("n/a" if r[k] is None else f"{r[k]:.3f}" for k in GAP_COLUMNS)
                + " |"
            )
    return "\n".join(lines) + "\n"


def csv_text(summary: list[dict[str, Any]]) -> str:
    """The per-game table as CSV (one row per game; per-seed scores as ``mean±std;...``)."""
    fields = [
        "game",
        "seeds",
        "real_steps",
        "mean",
        "std",
        "per_seed",
        "random",
        "hns",
        *BENCH_REFERENCES,
        "minutes_per_run",
        "versus_agent",
        "versus_random",
        "versus_p",
        *GAP_COLUMNS,
    ]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in summary:
        writer.writerow(
            {
                **row,
                "seeds": " ".join(str(s) for s in row["seeds"]),
                "per_seed": ";".join(f"{m:.2f}±{s:.2f}" for m, s in row["per_seed"]),
                **{
                    f"versus_{key}": ";".join(
                        "" if v is None else f"{np.mean(v[key]):.2f}" for v in row["versus"]
                    )
                    for key in ("agent", "random")
                },
                "versus_p": ";".join(
                    "" if v is None else f"{v['p_value']:.3g}" for v in row["versus"]
                ),
            }
        )
    return buf.getvalue()


def summarize(
    out: Path, games: list[str], seeds: list[int], config: LoopConfig, timings: dict[str, float]
) -> list[dict[str, Any]]:
    """Reports and summary rows of every game whose runs have all finished."""
    summary = []
    for game in games:
        run_dirs = [out / run_key(game, s) for s in seeds]
        if not all(is_finished(d, config) for d in run_dirs):
            print(f"{game}: not every run has finished; left out of the table (run again)")
            continue
        write_report(run_dirs, out / f"{game}-report")
        summary.append(game_summary(game, seeds, out, timings))
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = build_config(args)
    games = [normalize_game(g) for g in args.games]
    timings = train_all(args, config, games)
    versus_all(args, config, games)
    out = Path(args.out)
    summary = summarize(out, games, args.seeds, config, timings.seconds)
    table = markdown(summary, args.preset)
    print(table)
    (out / "atari100k.md").write_text(table)
    (out / "atari100k.csv").write_text(csv_text(summary))
    write_json(out / "atari100k.json", summary)
    print(f"wrote {out / 'atari100k.md'}, {out / 'atari100k.csv'} and {out / 'atari100k.json'}")


if __name__ == "__main__":
    main()
