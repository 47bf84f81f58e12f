"""Steps per second of ``DreamVectorEnv`` against ale-py's vector env, in one run.

For every batch size, model preset (discrete family) and device, a dream vector env is
built from an untrained checkpoint and stepped with pre-generated random actions for a
fixed time; ale-py's native vector env with dreamenv's preprocessing
(:func:`dreamenv.envs.atari.make_ale_vector`) is timed the same way at the same batch
sizes. Untrained weights run exactly as fast as trained ones: the same network performs
the same operations whatever the values of its weights.

The rows are printed as a markdown table and written to ``OUT.csv`` and ``OUT.json``.

Example:
    python benchmarks/throughput.py
    python benchmarks/throughput.py --batches 1 4 --presets small --seconds 0.5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ale_py
import numpy as np
import torch

from dreamenv.checkpoint import save_checkpoint
from dreamenv.data.collect import collect
from dreamenv.data.sequences import StartBank, build_start_bank
from dreamenv.envs.atari import AtariSpec, action_meanings, make_ale_vector
from dreamenv.envs.vector import DreamVectorEnv
from dreamenv.models import build_model

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "throughput"
WARMUP_CALLS = 5
"""Untimed step() calls before timing starts."""
ACTION_POOL = 256
"""Pre-generated action batches, cycled through while timing."""
BANK_STEPS = 400
"""Real frames (random actions) collected for the start bank."""
BANK_SIZE = 64
"""Starts in the start bank."""
BANK_CONTEXT = 8
"""Observations of history per start (as ``dreamenv fit`` saves by default)."""
DREAM_OPTIONS = {"use_termination": False}
"""Untrained termination heads end about half the episodes every step, and each reset
re-runs the burn-in; without them episodes end at the horizon, as a trained model's
mostly do, and the work per step no longer depends on the weights."""
COLUMNS = ("env", "preset", "device", "batch", "steps_per_s", "ratio_vs_ale", "calls", "seconds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="pong", help="ale-py ROM id (default: pong)")
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[1, 16, 256],
        help="numbers of envs stepped together (default: 1 16 256)",
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["small", "paper"],
        help="discrete model presets (default: small paper)",
    )
    parser.add_argument(
        "--devices",
        nargs="+",
        default=None,
        help="devices of the dream env (default: cpu, plus cuda if available)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="timed seconds per row, after warm-up (default: 3)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="writes OUT.csv and OUT.json (default: benchmarks/results/throughput)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads(N) (default: torch's own choice)",
    )
    parser.add_argument(
        "--ale-threads",
        type=int,
        default=0,
        help="threads of ale-py's vector env (default 0: ale-py's own choice)",
    )
    args = parser.parse_args(argv)
    if args.devices is None:
        args.devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if any(d.startswith("cuda") for d in args.devices) and not torch.cuda.is_available():
        parser.error("--devices names cuda, but CUDA is not available here.")
    if min(args.batches) < 1 or args.seconds <= 0:
        parser.error("--batches must be positive ints and --seconds a positive number.")
    if args.out.suffix in (".csv", ".json"):
        args.out = args.out.with_suffix("")
    return args


def make_start_bank(spec: AtariSpec, root: Path) -> StartBank:
    """Starts of dream episodes cut from real frames of random-action play.

    The frames come from :func:`dreamenv.data.collect.collect`, which steps
    :func:`make_ale_vector` exactly as the data of a real checkpoint is collected.
    """
    store = collect(root / "data", spec, steps=BANK_STEPS, num_envs=4, seed=0, progress=False)
    return build_start_bank(store.episodes(), BANK_SIZE, BANK_CONTEXT, spec.frame_stack, seed=0)


def make_checkpoint(root: Path, preset: str, spec: AtariSpec, bank: StartBank) -> Path:
    """An untrained discrete model of ``preset`` saved as a checkpoint directory."""
    meanings = action_meanings(spec.game)
    model = build_model("discrete", preset, spec, len(meanings))
    return save_checkpoint(root / f"model-{preset}", model, bank, meanings)


def time_steps(
    step: Callable[[np.ndarray], Any], actions: np.ndarray, seconds: float
) -> tuple[int, float]:
    """Call ``step`` on the rows of ``actions`` (cycling) for ``seconds`` after a warm-up.

    Returns:
        The timed calls and the seconds they took (``time.perf_counter``).
    """
    for i in range(WARMUP_CALLS):
        step(actions[i % len(actions)])
    calls = 0
    start = time.perf_counter()
    while True:
        step(actions[calls % len(actions)])
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls, elapsed


def random_actions(batch: int, num_actions: int, seed: int = 0) -> np.ndarray:
    """``(ACTION_POOL, batch)`` int64 random actions, drawn before timing."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_actions, size=(ACTION_POOL, batch), dtype=np.int64)


def bench_ale(spec: AtariSpec, batch: int, seconds: float, threads: int = 0) -> tuple[int, float]:
    """Timed calls and seconds of ale-py's vector env (``make_ale_vector``) at ``batch``."""
    env = make_ale_vector(spec, batch, num_threads=threads)
    try:
        env.reset(seed=0)
        actions = random_actions(batch, int(env.single_action_space.n))
        return time_steps(env.step, actions, seconds)
    finally:
        env.close()


def bench_dream(checkpoint: Path, batch: int, device: str, seconds: float) -> tuple[int, float]:
    """Timed calls and seconds of ``DreamVectorEnv`` (``DREAM_OPTIONS``) at ``batch``."""
    env = DreamVectorEnv(checkpoint, num_envs=batch, device=device, **DREAM_OPTIONS)
    try:
        env.reset(seed=0)
        actions = random_actions(batch, int(env.single_action_space.n))
        return time_steps(env.step, actions, seconds)
    finally:
        env.close()
        del env
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def make_row(
    env: str, preset: str, device: str, batch: int, calls: int, seconds: float
) -> dict[str, Any]:
    """One result row (the ratio is filled in by :func:`add_ratios`)."""
    return {
        "env": env,
        "preset": preset,
        "device": device,
        "batch": batch,
        "steps_per_s": batch * calls / seconds,
        "ratio_vs_ale": None,
        "calls": calls,
        "seconds": round(seconds, 4),
    }


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Set each row's ``ratio_vs_ale``: its steps/s over ALE's at the same batch size."""
    ale = {r["batch"]: r["steps_per_s"] for r in rows if r["env"] == "ale"}
    for r in rows:
        if r["batch"] in ale:
            r["ratio_vs_ale"] = r["steps_per_s"] / ale[r["batch"]]


def header_lines(args: argparse.Namespace, spec: AtariSpec, load: float) -> list[str]:
    """The lines printed above the table: what was measured, and on what machine."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none available"
    return [
        f"# Throughput: DreamVectorEnv vs ale-py vector env ({spec.game})",
        "",
        "- Dream envs use UNTRAINED weights: a trained checkpoint of the same preset runs at "
        "the same speed (same network, same operations).",
        "- Dream env: discrete family, obs_type=indices, horizon=50, burn_in=4, NextStep "
        "autoreset (resets happen inside the timed steps), use_termination=False: an untrained "
        "termination head ends ~half the episodes each step, so every env would re-run its "
        "burn-in every other step; with it off, episodes end at the horizon (as a trained "
        "model's mostly do) and the work per step does not depend on the weights.",
        f"- ALE: make_ale_vector(AtariSpec({spec.game!r}), batch): {spec.screen_size}x"
        f"{spec.screen_size} grayscale single frames, frame_skip={spec.frame_skip}, no frame "
        f"stacking; ale-py threads: {args.ale_threads or 'its own choice'}.",
        f"- Timing: {WARMUP_CALLS} warm-up calls, then {args.seconds:g} s of step() calls with "
        "pre-generated random int64 actions; steps/s = batch * calls / seconds.",
        f"- torch {torch.__version__}, threads {torch.get_num_threads()}; ale-py "
        f"{ale_py.__version__}; os.cpu_count() {os.cpu_count()}; GPU: {gpu}.",
        f"- 1-minute load average before the run: {load:.2f} (near or above the core count "
        "means other processes were competing for the CPU).",
        "",
    ]


def format_value(value: float | None, suffix: str = "") -> str:
    """A readable number: thousands separators for large values, 2-3 digits otherwise."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}{suffix}"
    return f"{value:#.3g}{suffix}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| env | preset | device | batch | steps/s | ratio vs ALE |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['preset']} | {r['device']} | {r['batch']} | "
            f"{format_value(r['steps_per_s'])} | {format_value(r['ratio_vs_ale'], 'x')} |"
        )
    return "\n".join(lines)


def write_results(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    """Write ``out.csv`` (the rows) and ``out.json`` (``meta`` and the rows)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Measure every configuration, then print the table and write the files."""
    load = os.getloadavg()[0]
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    spec = AtariSpec(args.game)
    header = header_lines(args, spec, load)
    print("\n".join(header), flush=True)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    rows = []
    for batch in args.batches:
        calls, seconds = bench_ale(spec, batch, args.seconds, args.ale_threads)
        rows.append(make_row("ale", "-", "cpu", batch, calls, seconds))
        log(f"ale batch={batch}: {rows[-1]['steps_per_s']:,.0f} steps/s")
    with tempfile.TemporaryDirectory(prefix="dreamenv-bench-") as tmp:
        bank = make_start_bank(spec, Path(tmp))
        for preset in args.presets:
            checkpoint = make_checkpoint(Path(tmp), preset, spec, bank)
            for device in args.devices:
                for batch in args.batches:
                    calls, seconds = bench_dream(checkpoint, batch, device, args.seconds)
                    rows.append(make_row("dream", preset, device, batch, calls, seconds))
                    log(
                        f"dream {preset} {device} batch={batch}: "
                        f"{rows[-1]['steps_per_s']:,.0f} steps/s"
                    )
    add_ratios(rows)
    order = {"ale": 0, "dream": 1}
    rows.sort(key=lambda r: (r["batch"], order[r["env"]]))
    print(format_table(rows))
    meta = {
        "game": spec.game,
        "seconds": args.seconds,
        "warmup_calls": WARMUP_CALLS,
        "untrained_weights": True,
        "dream_options": DREAM_OPTIONS,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ale_py": ale_py.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": load,
        "machine": platform.platform(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "header": header,
    }
    write_results(rows, meta, args.out)
    print(f"\nWrote {args.out.with_suffix('.csv')} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
