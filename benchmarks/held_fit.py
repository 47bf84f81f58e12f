"""What a fit that holds the representation saves by encoding its data once.

For a trained discrete checkpoint and its episode store: on fresh copies of the checkpoint,
continue its fit by ``--epochs`` epochs with the representation held
(``FitConfig.representation=False``), once as dreamenv does it (every stored observation
encoded once, then the updates train on the codes) and once re-encoding every batch's frames
at every update (as a held fit did before), alternating ``--repeats`` times in one process.
Both train on the same batches to the same weights; the figure is their wall-clock ratio.
Writes ``OUT/held_fit.json``.

Example:
    $ python benchmarks/held_fit.py runs/pong-s0/model runs/pong-s0/data --epochs 4 \\
          --out runs/held-fit
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from dreamenv.train.fit import STATE_FILE, fit, fit_config_from_dict

fit_module = importlib.import_module("dreamenv.train.fit")  # the package's ``fit`` is the function


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a trained discrete checkpoint with its trainer state")
    p.add_argument("store", help="the episode store it was trained on")
    p.add_argument("--epochs", type=int, default=4, help="epochs to continue by (default 4)")
    p.add_argument("--repeats", type=int, default=2, help="timings of each way (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", default="runs/held-fit")
    return p.parse_args(argv)


def timed_fit(args: argparse.Namespace, work: Path, encode_once: bool) -> float:
    """Seconds of one held continuation of a fresh copy of the checkpoint."""
    model = work / ("once" if encode_once else "every")
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(args.checkpoint, model)
    state = json.loads((model / STATE_FILE).read_text())
    config = fit_config_from_dict(state["fit_config"])
    config = dataclasses.replace(
        config,
        epochs=int(state["progress"]["epoch"]) + args.epochs,
        representation=False,
        device="cpu",
        checkpoint_every_minutes=1e9,
    )
    encode = fit_module._served_latents
    if not encode_once:  # no latents: the sampler serves frames and every update encodes them
        fit_module._served_latents = lambda *a: None  # type: ignore[assignment, return-value]
    try:
        start = time.perf_counter()
        fit(
            args.store,
            model,
            family=state["family"],
            preset=state["preset"],
            model_overrides=state["model_overrides"] or None,
            config=config,
            progress=False,
        )
        return time.perf_counter() - start
    finally:
        fit_module._served_latents = encode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, list[float]] = {"encode_once": [], "encode_every_update": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            seconds["encode_once"].append(timed_fit(args, Path(tmp), True))
            seconds["encode_every_update"].append(timed_fit(args, Path(tmp), False))
    best = {k: min(v) for k, v in seconds.items()}
    result = {
        "checkpoint": args.checkpoint,
        "epochs": args.epochs,
        "threads": args.threads,
        "seconds": seconds,
        "ratio_every_over_once": best["encode_every_update"] / best["encode_once"],
        "command": " ".join([os.path.basename(sys.argv[0]), *(argv or sys.argv[1:])]),
    }
    (out / "held_fit.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"held fit of {args.epochs} epochs, {args.threads} thread(s): encoding once "
        f"{best['encode_once']:.1f} s, every update {best['encode_every_update']:.1f} s "
        f"(ratio {result['ratio_every_over_once']:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
