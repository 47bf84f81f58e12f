"""Table 1 of Buesing et al. (2018), measured here in one run: every world-model family
trained the same way on the same data, then its test likelihood and its rollout speed
relative to the AR baseline, on the BouncingBall toy data and on one Atari game; and a
figure of rollouts from the same start (as the paper's Figures 16 and 17).

For each dataset: collect real steps (random policy) into an episode store, fit each family
(``--preset``, the same updates, batch and sequence length for all; ``dreamenv fit``, so a
killed run continues), then on held-out episodes:

- test NLL: :meth:`WorldModel.test_nll` of windows of ``--seq-len`` model steps after a
  context of three observations, in nats per pixel (a per-pixel Bernoulli KL with the pixels
  as pseudo-probabilities, as the paper's appendix A.2; the negative ELBO, an upper bound,
  for latent-variable models); lower is better;
- rollout speed: imagined real steps per second of ``model.step`` over ``--horizon`` real
  steps for a batch of ``--batch`` starts (a jumpy model takes ``horizon / jump`` steps), all
  families timed in turn in the same process; ``vs AR`` = speed / speed of ``ar``;
- multiply-accumulates per imagined real step of ``model.step`` (convolutions and matrix
  products, counted by :class:`torch.utils.flop_counter.FlopCounterMode`); ``AR / MACs``
  = the AR's count / the family's, the speed-up that the arithmetic alone allows.

The process keeps freed memory (:func:`dreamenv.memory.keep_freed_memory`): otherwise
glibc maps and unmaps the pixel models' large per-step tensors on every step, a cost of
the allocator (up to 1.5x on the AR at batch 256), not of the model.

Writes ``OUT/models.csv``, ``OUT/models.json``, ``OUT/models.md`` and one
``OUT/rollouts-DATASET.png`` per dataset.

Example:
    python benchmarks/models.py --out runs/models
    python benchmarks/models.py --families ar sssm --datasets ball --updates 50   # quick look
    python benchmarks/models.py --speed-only --preset paper --batches 1 16 256    # speed alone
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamenv.checkpoint import load_checkpoint
from dreamenv.data.collect import collect
from dreamenv.data.sequences import SequenceSampler, split_episodes
from dreamenv.data.store import EpisodeStore
from dreamenv.envs.atari import AtariSpec
from dreamenv.memory import keep_freed_memory
from dreamenv.models import FAMILIES, build_model
from dreamenv.models.base import WorldModel
from dreamenv.models.common import NLL_CONTEXT
from dreamenv.random_streams import BatchRandom, key_from_seed
from dreamenv.train.fit import FitConfig, fit

DATASETS = {
    "ball": lambda a: AtariSpec(
        "bouncing_ball",
        screen_size=80,
        frame_stack=1,
        frame_skip=1,
        noop_max=0,
        max_episode_frames=a.ball_episode,
    ),
    "atari": lambda a: AtariSpec(a.game, screen_size=a.atari_screen),
}
"""The two datasets: the paper's toy data (80x80, single frames) and an Atari game."""
BASELINE = "ar"
"""The family every speed is divided by."""
COLUMNS = (
    "dataset",
    "family",
    "parameters",
    "test_nll",
    "macs_per_step",
    "macs_ar_over",
    "batch",
    "steps_per_s",
    "vs_ar",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", nargs="+", default=None, help="default: every family")
    p.add_argument("--datasets", nargs="+", default=["ball", "atari"], choices=sorted(DATASETS))
    p.add_argument("--game", default="ms_pacman", help="the Atari game (the paper's: ms_pacman)")
    p.add_argument("--atari-screen", type=int, default=64, choices=(64, 80, 96))
    p.add_argument("--ball-episode", type=int, default=500, help="steps per ball episode")
    p.add_argument("--steps", type=int, default=30_000, help="real steps collected per dataset")
    p.add_argument("--preset", default="small", help="size preset of every family")
    p.add_argument("--updates", type=int, default=1500, help="training updates per family")
    p.add_argument("--batch-size", type=int, default=16, help="the paper's minibatch: 16")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of every family")
    p.add_argument("--seq-len", type=int, default=10, help="model steps per window (paper: 10)")
    p.add_argument("--test-batches", type=int, default=8, help="held-out batches for the NLL")
    p.add_argument(
        "--batches", type=int, nargs="+", default=[16, 256], help="rollouts timed together"
    )
    p.add_argument("--horizon", type=int, default=48, help="real steps per timed rollout")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (median per family)")
    p.add_argument("--figure-steps", type=int, default=12, help="real steps in the figure")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/models")
    p.add_argument(
        "--speed-only",
        action="store_true",
        help="time untrained models of --preset (no fitting, no NLL, no figure)",
    )
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def fit_family(store: Path, out: Path, family: str, args: argparse.Namespace) -> WorldModel:
    """The family fitted on ``store`` with the benchmark's shared settings (resumable)."""
    config = FitConfig(
        epochs=1,
        warmup_epochs=0,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        updates_per_epoch=args.updates,
        lr=args.lr,
        warmup_lr=args.lr,
        start_bank_size=64,
        device=args.device,
    )
    if FAMILIES[family].has_warmup:  # a representation warm-up for a third of the updates
        third = max(1, args.updates // 3)
        config = dataclasses.replace(config, epochs=3, warmup_epochs=1, updates_per_epoch=third)
    fit(store, out, family=family, preset=args.preset, config=config, progress=not args.quiet)
    return load_checkpoint(out, args.device).model


def test_windows(
    store: EpisodeStore, model: WorldModel, args: argparse.Namespace
) -> list[dict[str, torch.Tensor]]:
    """Held-out windows (the fit's own split) for the model's context and jumps."""
    _, held_out = split_episodes(store.episodes(), 0.1)
    sampler = SequenceSampler(
        held_out, store.spec.frame_stack, model.window_steps(args.seq_len), seed=12345
    )
    return [
        {
            k: torch.as_tensor(v, device=args.device)
            for k, v in sampler.sample(args.batch_size).items()
        }
        for _ in range(args.test_batches)
    ]


@torch.inference_mode()
def test_nll(model: WorldModel, windows: list[dict[str, torch.Tensor]]) -> float:
    """Mean test NLL (nats per pixel) over the windows; NaN for families without one."""
    try:
        return float(np.mean([model.test_nll(w) for w in windows]))
    except NotImplementedError:
        return float("nan")


def start_context(model: WorldModel) -> int:
    """Real observations a rollout starts from: the three of the paper's context, and the
    ``jump`` before them that a jumpy model's first state is filtered from."""
    return NLL_CONTEXT + model.jump


def start_of(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, batch: int) -> tuple:
    """Embeddings and actions of the first :func:`start_context` observations of the
    windows ``frames`` ``(N, T+1, ...)``, ``actions`` ``(N, T)`` (repeated to ``batch``)."""
    k = start_context(model)
    rows = torch.arange(batch) % len(frames)
    frames, actions = frames[rows, :k], actions[rows, : k - 1]
    emb = model.encode(frames.flatten(0, 1))
    return emb.view(batch, k, *emb.shape[1:]), actions


@torch.inference_mode()
def rollout(
    model: WorldModel, start: tuple, actions: torch.Tensor, seed: int = 0, decode: bool = False
) -> tuple[float, list[torch.Tensor]]:
    """Seconds to imagine ``actions`` ``(B, horizon)`` (chunked for a jumpy model) from
    ``start``, and the decoded frames of each step if ``decode`` (not timed)."""
    b = actions.shape[0]
    rng = BatchRandom(b, model.device)
    rng.set_keys(torch.arange(b), [key_from_seed(seed + i) for i in range(b)])
    latent, state = model.initial_state(*start)
    steps = actions.shape[1] // model.jump
    chunks = actions[:, : steps * model.jump].reshape(b, steps, model.jump)
    frames: list[torch.Tensor] = []
    elapsed = 0.0
    for k in range(steps):
        action = chunks[:, k, 0] if model.jump == 1 else chunks[:, k]
        t0 = time.perf_counter()
        pred = model.step(state, latent, action, rng)
        elapsed += time.perf_counter() - t0
        latent, state = pred.next_latent, pred.state
        if decode:
            frames.append(model.decode(latent)[:, -1].cpu())
    return elapsed, frames


@torch.inference_mode()
def macs_per_step(model: WorldModel, start: tuple, actions: torch.Tensor) -> float:
    """Multiply-accumulates per imagined real step of one ``model.step`` from ``start``
    (convolutions and matrix products; a jumpy step's count divided by its ``jump``)."""
    from torch.utils.flop_counter import FlopCounterMode

    latent, state = model.initial_state(*start)
    action = actions[:, 0] if model.jump == 1 else actions[:, : model.jump]
    with FlopCounterMode(display=False) as counter:
        model.step(state, latent, action, BatchRandom(actions.shape[0], model.device))
    return counter.get_total_flops() / 2 / (actions.shape[0] * model.jump)


def measure_speeds(
    models: dict[str, WorldModel], starts: dict, args: argparse.Namespace, batch: int
) -> dict[str, float]:
    """Imagined real steps per second of ``batch`` rollouts from held-out real starts, per
    family: the median of ``--repeats`` rounds after a warm-up, each round timing every
    family in turn (interleaved, so that a slow spell of the machine hits all of them)."""
    rng = np.random.default_rng(0)
    actions = torch.as_tensor(rng.integers(0, 2**31, (batch, args.horizon)))
    setup = {}
    for family, model in models.items():
        start = start_of(model, starts["frames"], starts["actions"], batch)
        acts = (actions % model.num_actions).to(model.device)
        rollout(model, start, acts)  # warm-up
        setup[family] = (start, acts)
    times: dict[str, list[float]] = {family: [] for family in models}
    for r in range(args.repeats):
        for family, model in models.items():
            times[family].append(rollout(model, *setup[family], seed=r)[0])
    speeds = {}
    for family, model in models.items():
        real_steps = batch * (args.horizon // model.jump) * model.jump
        speeds[family] = real_steps / float(np.median(times[family]))
    return speeds


def rollout_figure(
    path: Path, title: str, models: dict[str, WorldModel], window: dict, horizon: int
) -> Path:
    """Rows: the real continuation, then each model's imagined frames (two samples each)
    from the same real start (``window``'s first observations) with the same actions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(start_context(m) for m in models.values())
    real = window["frames"][0, k - 1 :, -1].cpu().numpy()  # the start, then what came
    rows = [("real", real[1 : horizon + 1])]
    for name, model in models.items():
        offset = k - start_context(model)  # every model starts at the same observation
        start = start_of(model, window["frames"][:, offset:], window["actions"][:, offset:], 1)
        acts = window["actions"][:, k - 1 : k - 1 + horizon]
        h = acts.shape[1] // model.jump * model.jump
        for sample in (0, 1):
            _, frames = rollout(model, start, acts[:, :h], seed=sample, decode=True)
            imagined = torch.cat(frames).numpy()
            if model.jump > 1:  # each jumpy frame under the real step it shows
                spread = np.zeros((h, *imagined.shape[1:]), imagined.dtype)
                spread[model.jump - 1 :: model.jump] = imagined
                imagined = spread
            rows.append((f"{name} #{sample + 1}", imagined))
    cols = min(len(frames) for _, frames in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.9, len(rows) * 1.0), squeeze=False)
    for i, (label, frames) in enumerate(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.imshow(frames[j], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            if i == 0:
                ax.set_title(f"t+{j + 1}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def held_out_windows(store: EpisodeStore, steps: int, count: int, seed: int) -> dict:
    """``count`` windows of ``steps`` real steps of held-out episodes (whole, no episode end)."""
    _, held_out = split_episodes(store.episodes(), 0.1)
    usable = [e for e in held_out if len(e) > steps] or held_out
    sampler = SequenceSampler(usable, store.spec.frame_stack, steps, seed=seed)
    which = sampler.rng.choice(len(usable), size=count)
    starts = np.array([sampler.rng.integers(0, max(1, len(usable[i]) - steps)) for i in which])
    return {k: torch.as_tensor(v) for k, v in sampler.window(which, starts).items()}


def run_dataset(name: str, args: argparse.Namespace, families: list[str]) -> list[dict[str, Any]]:
    spec = DATASETS[name](args)
    out = Path(args.out) / name
    store = collect(out / "data", spec, args.steps, num_envs=8, progress=not args.quiet)
    models: dict[str, WorldModel] = {}
    rows: list[dict[str, Any]] = []
    for family in families:
        if args.speed_only:  # untrained weights run exactly the same operations
            torch.manual_seed(0)
            models[family] = build_model(
                family, args.preset, spec, len(store.action_meanings)
            ).eval()
        else:
            models[family] = fit_family(out / "data", out / family, family, args)
    longest = max(start_context(m) for m in models.values())
    starts = held_out_windows(store, longest, max(args.batches), seed=1)
    speeds = {batch: measure_speeds(models, starts, args, batch) for batch in args.batches}
    macs = {
        family: macs_per_step(
            model,
            start_of(model, starts["frames"], starts["actions"], 1),
            torch.zeros(1, model.jump, dtype=torch.long, device=model.device),
        )
        for family, model in models.items()
    }
    for family, model in models.items():
        nll = float("nan") if args.speed_only else test_nll(model, test_windows(store, model, args))
        for batch in args.batches:
            rows.append(
                {
                    "dataset": name,
                    "family": family,
                    "parameters": model.parameter_counts()["total"],
                    "test_nll": nll,
                    "macs_per_step": macs[family],
                    "batch": batch,
                    "steps_per_s": speeds[batch][family],
                }
            )
    for r in rows:
        base = [b for b in rows if b["family"] == BASELINE and b["batch"] == r["batch"]]
        r["vs_ar"] = r["steps_per_s"] / base[0]["steps_per_s"] if base else float("nan")
        r["macs_ar_over"] = base[0]["macs_per_step"] / r["macs_per_step"] if base else float("nan")
    shown = {f: models[f] for f in ("dssm_det", "sssm", "sssm_jumpy", "ar") if f in models}
    if args.speed_only:
        return rows
    rollout_figure(
        Path(args.out) / f"rollouts-{name}.png",
        f"{spec.game}: rollouts from the same start and actions (two samples each)",
        shown or models,
        held_out_windows(store, longest - 1 + args.figure_steps, 1, seed=2),
        args.figure_steps,
    )
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    trained = (
        "untrained (speed only)"
        if args.speed_only
        else f"{args.updates} updates (Adam, lr {args.lr}) of batch {args.batch_size} x "
        f"{args.seq_len} steps"
    )
    allocator = "freed memory kept" if args.kept_memory else "default allocator"
    lines = [
        f"World models, preset {args.preset!r}, {trained}; speed: imagined real steps per "
        f"second over {args.horizon} real steps (median of {args.repeats} interleaved rounds), "
        f"{args.threads} thread(s), {allocator}, {platform.processor() or platform.machine()}",
        "",
        "| dataset | family | parameters | test NLL (nats/pixel, lower is better) | "
        "MMACs / real step | AR / MACs | "
        + " | ".join(f"steps/s, batch {b} | vs AR" for b in args.batches)
        + " |",
        "|---|---|---:|---:|---:|---:|" + "---:|---:|" * len(args.batches),
    ]
    for key in dict.fromkeys((r["dataset"], r["family"]) for r in rows):
        mine = [r for r in rows if (r["dataset"], r["family"]) == key]
        first = mine[0]
        nll = "n/a" if np.isnan(first["test_nll"]) else f"{first['test_nll']:.5f}"
        arithmetic = f"{first['macs_per_step'] / 1e6:,.2f} | {first['macs_ar_over']:.1f}x"
        speeds = " | ".join(f"{r['steps_per_s']:,.0f} | {r['vs_ar']:.1f}x" for r in mine)
        lines.append(
            f"| {key[0]} | {key[1]} | {first['parameters']:,} | {nll} | {arithmetic} | {speeds} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.kept_memory = keep_freed_memory()
    torch.set_num_threads(args.threads)
    # the image families (the benchmark's data are frames; 'ensemble' models state vectors)
    families = args.families or sorted(f for f in FAMILIES if FAMILIES[f].frame_kind == "image")
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise SystemExit(f"error: unknown families {sorted(unknown)}; known: {sorted(FAMILIES)}")
    rows: list[dict[str, Any]] = []
    for name in args.datasets:
        rows += run_dataset(name, args, families)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "models.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "models.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    table = markdown(rows, args)
    (out / "models.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
