"""float32 against bfloat16 autocast, side by side in one process, one torch thread.

Speed (milliseconds per call, float32 and bfloat16 timed in turn on the same inputs):

- ``joint update``: one joint world-model update of the discrete model (batch 32 x 16
  steps, the representation's turn and the dynamics-only turn averaged), at each
  ``--sizes``;
- ``dream step``: ``DreamCore.step`` + ``observe`` at batch ``--batch``;
- ``trunk update``: forward and backward of :class:`~dreamenv.sb3.LatentExtractor` at
  PPO's minibatch of 400;
- ``encode``: the model's frames-to-codes (eval mode, BatchNorms folded) of the joint
  update's batch (32 x 17 stacks: the dynamics' targets), and ``encode (module)``: the same
  codes through the encoder module under autocast (as ``encode`` ran before the folding).

Quality (``--fit-updates`` > 0): the same fit (same data, seed and updates) in each
precision, then both checkpoints' held-out metrics on the same batches in float32.

Writes ``OUT/precision.md`` and ``OUT/precision.json``, headed by whether this CPU computes
bfloat16 natively (:func:`dreamenv.precision.native_bfloat16`, which ``"auto"`` follows).

Example:
    python benchmarks/precision.py --game seaquest --out runs/precision
    python benchmarks/precision.py --sizes 64 --fit-updates 0        # speed only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dreamenv.checkpoint import load_checkpoint  # noqa: E402
from dreamenv.data.collect import collect  # noqa: E402
from dreamenv.data.sequences import SequenceSampler  # noqa: E402
from dreamenv.data.store import EpisodeStore  # noqa: E402
from dreamenv.envs.atari import AtariSpec  # noqa: E402
from dreamenv.envs.core import DreamCore  # noqa: E402
from dreamenv.envs.options import DreamOptions  # noqa: E402
from dreamenv.memory import keep_freed_memory  # noqa: E402
from dreamenv.models.base import build_model  # noqa: E402
from dreamenv.precision import ARITHMETICS, Precision, autocast, native_bfloat16  # noqa: E402
from dreamenv.sb3.extractor import LatentExtractor  # noqa: E402
from dreamenv.train.fit import FitConfig, fit  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--game", default="seaquest")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96], help="frame sides")
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=20_000, help="random real steps collected")
    p.add_argument("--batch", type=int, default=64, help="dream envs of the dream step")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per figure")
    p.add_argument("--fit-updates", type=int, default=300, help="0: speed only")
    p.add_argument("--out", default="runs/precision")
    return p.parse_args(argv)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Milliseconds per call of ``fn`` (after two untimed calls)."""
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def speed_rows(store: EpisodeStore, preset: str, batch: int, repeats: int) -> list[dict]:
    """Per computation, its milliseconds in each precision."""
    model = build_model("discrete", preset, store.spec, len(store.action_meanings), None)
    window = model.window_steps(16)
    sampler = SequenceSampler(store.episodes(), store.spec.frame_stack, window, seed=0)
    data = {k: torch.as_tensor(v) for k, v in sampler.sample(32).items()}
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    rows = []
    for precision in ARITHMETICS:

        def update(step: int, precision: Precision = precision) -> None:
            with autocast(precision, "cpu"):
                loss = model.loss(data, "joint", step)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        model.train()
        joint = (timed(lambda: update(0), repeats) + timed(lambda: update(1), repeats)) / 2
        frames = data["frames"].flatten(0, 1)  # the joint update's 32 x 17 stacks
        coder = dataclasses.replace(model.config, precision=precision)
        model.config = coder
        model.eval()
        encode = timed(lambda frames=frames: model.encode(frames), repeats)
        module = timed(lambda frames=frames: model.module_indices(frames), repeats)
        rows.append(
            {
                "precision": precision,
                "joint update": joint,
                "encode": encode,
                "encode (module)": module,
            }
        )
    return rows


def dream_and_trunk_rows(checkpoint: Path, batch: int, repeats: int) -> list[dict]:
    """The dream step and the policy trunk's update in each precision."""
    rows = []
    for precision in ARITHMETICS:
        core = DreamCore(checkpoint, batch, DreamOptions(horizon=10**9, precision=precision))
        core.seed(np.arange(batch), list(range(batch)))
        core.reset_envs(np.arange(batch))
        actions = torch.zeros(batch, dtype=torch.long)

        def step(core: DreamCore = core, actions: torch.Tensor = actions) -> None:
            core.step(actions)
            core.observe()

        space = core.observation_space
        trunk = LatentExtractor(space, precision=precision)  # type: ignore[arg-type]
        obs = torch.nn.functional.one_hot(
            torch.as_tensor(np.stack([space.sample() for _ in range(400)])), 128
        ).float()

        def trunk_update(trunk: LatentExtractor = trunk, obs: torch.Tensor = obs) -> None:
            trunk(obs.flatten(1)).sum().backward()

        rows.append(
            {
                "precision": precision,
                "dream step": timed(step, repeats * 3),
                "trunk update": timed(trunk_update, repeats),
            }
        )
    return rows


def quality_rows(store_dir: Path, out: Path, preset: str, updates: int) -> list[dict]:
    """Held-out metrics (float32 evaluation, same batches) of the same fit in each precision."""
    rows = []
    val = None
    for precision in ARITHMETICS:
        config = FitConfig(
            epochs=2,
            warmup_epochs=1,
            updates_per_epoch=max(1, updates // 2),
            reward_windows=0.25,
            precision=precision,  # type: ignore[arg-type]
        )
        model_dir = out / f"fit-{precision}"
        start = time.perf_counter()
        fit(
            store_dir,
            model_dir,
            preset=preset,
            model_overrides={"precision": precision},
            config=config,
            progress=False,
        )
        seconds = time.perf_counter() - start
        model = load_checkpoint(model_dir).model.eval()
        model.config = dataclasses.replace(model.config, precision="float32")
        if val is None:
            store = EpisodeStore.open(store_dir)
            sampler = SequenceSampler(
                store.episodes(), store.spec.frame_stack, model.window_steps(16), seed=7
            )
            val = [{k: torch.as_tensor(v) for k, v in sampler.sample(32).items()} for _ in range(4)]
        metrics = [model.metrics(b) for b in val]
        row = {"precision": precision, "fit seconds": seconds}
        row.update({k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]})
        rows.append(row)
    return rows


def markdown(title: str, rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) == 2:
        ratios = [
            f"{rows[0][k] / rows[1][k]:.2f}x"
            if isinstance(rows[0][k], float) and rows[1][k]
            else ""
            for k in keys[1:]
        ]
        lines.append("| float32 / bfloat16 | " + " | ".join(ratios) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    keep_freed_memory()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for size in args.sizes:
        store_dir = out / f"data-{size}"
        collect(store_dir, AtariSpec(args.game, screen_size=size), args.steps, num_envs=16)
        store = EpisodeStore.open(store_dir)
        results[f"{size}x{size} model"] = speed_rows(store, args.preset, args.batch, args.repeats)
        if args.fit_updates:
            quality = quality_rows(store_dir, out / str(size), args.preset, args.fit_updates)
            results[f"{size}x{size} fit of {args.fit_updates} updates"] = quality
            checkpoint = out / str(size) / "fit-float32"
        else:
            checkpoint = out / str(size) / "speed-model"
            fit(
                store_dir,
                checkpoint,
                preset=args.preset,
                config=FitConfig(epochs=1, warmup_epochs=1, updates_per_epoch=2),
                progress=False,
            )
        results[f"{size}x{size} dream (batch {args.batch}) and trunk"] = dream_and_trunk_rows(
            checkpoint, args.batch, args.repeats
        )
    native, capability = native_bfloat16("cpu"), torch.backends.cpu.get_cpu_capability()
    text = (
        f"CPU: {capability}, bfloat16 {'native' if native else 'emulated'} (precision 'auto' "
        f"runs {'bfloat16' if native else 'float32'} here)\n\n"
    ) + "".join(markdown(title, rows) + "\n" for title, rows in results.items())
    results["cpu"] = [{"capability": capability, "native": native}]
    (out / "precision.md").write_text(text)
    (out / "precision.json").write_text(json.dumps(results, indent=2))
    print(text)


if __name__ == "__main__":
    main()
