"""Fit a world model to an episode store, resumably.

The output directory is a complete checkpoint at every save (``config.json``,
``weights.safetensors``, ``start_bank.npz``), plus the trainer's own files:
``trainer_state.json`` (progress), ``optimizer.safetensors`` and ``metrics.csv``
(held-out metrics per epoch). A run killed at any point and started again with the same
call continues from its last save; saves happen every ``checkpoint_every_epochs``
epochs and every ``checkpoint_every_minutes`` minutes.

Example:
    >>> fit("runs/pong/data", "runs/pong/model", preset="small", config=FitConfig(epochs=10))
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dreamenv.atomic_files import write_atomic, write_json
from dreamenv.checkpoint import (
    CONFIG_FILE,
    config_from_dict,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from dreamenv.data.sequences import SequenceSampler, build_start_bank, split_episodes
from dreamenv.data.store import EpisodeStore
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.models.base import WorldModel, build_model

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
METRICS_FILE = "metrics.csv"


@dataclass(frozen=True)
class FitConfig:
    """How a world model is trained (family-agnostic)."""

    epochs: int = 20
    """Total epochs, warm-up included."""
    warmup_epochs: int = 5
    """First epochs that train the representation alone (the VQ-VAE warm-up); families
    without a warm-up (``has_warmup = False``) train everything in them, at ``lr``."""
    batch_size: int = 32
    """Sequences per update."""
    seq_len: int = 16
    """Model steps per training sequence (families add their context; jumpy models take
    ``jump`` real steps per model step: see ``WorldModel.window_steps``)."""
    lr: float = 3e-4
    """Adam learning rate of joint training."""
    warmup_lr: float = 1e-3
    """Adam learning rate of the warm-up (higher, as in the paper)."""
    reward_windows: float = 0.0
    """Share of each batch made of windows that hold a real nonzero reward (0: uniform
    windows, as the paper; 0.25 helps games whose rewards are sparse under random play)."""
    updates_per_epoch: int = 0
    """Updates per epoch; 0 means one pass: stored steps // (batch_size * seq_len)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping."""
    val_fraction: float = 0.1
    """Share of episodes held out for the per-epoch metrics."""
    val_batches: int = 4
    """Held-out batches evaluated per epoch."""
    checkpoint_every_epochs: int = 1
    """Save every this many epochs."""
    checkpoint_every_minutes: float = 10.0
    """Also save when this many minutes passed since the last save (mid-epoch too)."""
    start_bank_size: int = 1024
    """Real starts saved with the checkpoint for dream episodes."""
    start_context: int = 8
    """Observations of history per start (the dream env's largest ``burn_in``)."""
    seed: int = 0
    """Seeds initialisation and sampling."""
    device: str = "cpu"
    """Torch device: ``"cpu"`` or ``"cuda"``."""

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "batch_size",
            "seq_len",
            "val_batches",
            "start_bank_size",
            "start_context",
            "checkpoint_every_epochs",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"FitConfig.{name} must be a positive int, got {value!r}.")
        if not (isinstance(self.warmup_epochs, int) and 0 <= self.warmup_epochs <= self.epochs):
            raise ConfigError(
                f"FitConfig.warmup_epochs must be an int in [0, epochs={self.epochs}], "
                f"got {self.warmup_epochs!r}."
            )
        if self.lr <= 0 or self.warmup_lr <= 0:
            raise ConfigError(
                f"learning rates must be positive, got lr={self.lr}, warmup_lr={self.warmup_lr}."
            )
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={self.device!r} but CUDA is not available; use 'cpu'.")


def _to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}


def _save_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, values in state["state"].items():
        for name, value in values.items():
            key = f"{pid}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    meta = {"param_groups": json.dumps(groups), "scalars": json.dumps(scalars)}
    write_atomic(path, lambda p: save_file(tensors, str(p), metadata=meta))


def _load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - any unreadable file means the same to the user
        raise CheckpointError(
            f"{path} is unreadable ({err}); delete it to restart the optimiser."
        ) from err
    groups = json.loads(meta["param_groups"])
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        warnings.warn(
            f"{path} holds the optimiser of a model with other parameters (saved by an earlier "
            "dreamenv version); the optimiser restarts, the model's weights are kept.",
            stacklevel=3,
        )
        return
    state: dict[int, dict[str, Any]] = {}
    for key, value in {**tensors, **json.loads(meta["scalars"])}.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


class _MetricsLog:
    """metrics.csv, rewritten atomically after each epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            with open(path, newline="") as f:
                self.rows = list(csv.DictReader(f))

    def append(self, row: dict[str, Any]) -> None:
        self.rows = [r for r in self.rows if int(r["epoch"]) < int(row["epoch"])] + [row]
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.path, lambda p: p.write_text(buf.getvalue()))


def fit(
    store: str | Path,
    out: str | Path,
    *,
    family: str = "discrete",
    preset: str = "small",
    model_overrides: dict[str, Any] | None = None,
    config: FitConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train (or continue training) a world model on the episode store ``store``.

    Args:
        store: an episode store directory (``dreamenv collect``).
        out: the checkpoint directory to write; if it holds an unfinished run of the same
            family and game, training continues from its last save.
        family: the world-model family (``"discrete"``).
        preset: the family's size preset (``"small"``, ``"paper"``).
        model_overrides: model config fields to override.
        config: training settings.
        progress: show a progress bar.

    Returns:
        ``out``, a checkpoint directory loadable by ``gym.make("dreamenv/Dream-v0", checkpoint=out)``.
    """
    config = config or FitConfig()
    out = Path(out)
    data = EpisodeStore.open(store)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    episodes = data.episodes()
    train_eps, val_eps = split_episodes(episodes, config.val_fraction)
    stack = data.spec.frame_stack
    if not 0.0 <= config.reward_windows <= 1.0:
        raise ConfigError(f"reward_windows must lie in [0, 1], got {config.reward_windows!r}.")
    bank = build_start_bank(
        train_eps, config.start_bank_size, config.start_context, stack, seed=config.seed
    )
    state_path = out / STATE_FILE
    progress_state = {"epoch": 0, "update": 0, "updates_total": 0}
    saved_before = state_path.is_file() and json.loads(state_path.read_text()).get("saved", True)
    if saved_before and (out / CONFIG_FILE).is_file():
        previous = read_config(out)
        if previous["family"] != family or previous["spec"] != data.spec.to_dict():
            raise CheckpointError(
                f"{str(out)!r} holds a {previous['family']!r} model of {previous['spec']['game']!r}; "
                f"this run trains {family!r} on {data.spec.game!r}. Use another output directory."
            )
        ckpt = load_checkpoint(out, device)
        model: WorldModel = ckpt.model
        progress_state = json.loads(state_path.read_text())["progress"]
    else:
        if (out / CONFIG_FILE).is_file() and not state_path.is_file():
            raise CheckpointError(
                f"{str(out)!r} already holds a finished checkpoint without trainer state; "
                "choose another output directory."
            )
        model = build_model(
            family, preset, data.spec, len(data.action_meanings), model_overrides
        ).to(device)
        # marks the directory as this run's before its first save: a run killed during
        # that save starts afresh when called again
        write_json(state_path, {"progress": progress_state, "saved": False})
    window = model.window_steps(config.seq_len)
    sampler = SequenceSampler(
        train_eps, stack, window, seed=config.seed, reward_windows=config.reward_windows
    )
    val_sampler = SequenceSampler(val_eps, stack, window, seed=config.seed + 1)
    val_batches = [val_sampler.sample(config.batch_size) for _ in range(config.val_batches)]
    optimizer = torch.optim.Adam(model.param_groups(config.lr))
    scales = [g["lr"] / config.lr for g in optimizer.param_groups]
    resumes = progress_state["updates_total"] > 0 and progress_state["epoch"] < config.epochs
    if resumes and (out / OPTIMIZER_FILE).is_file():  # a finished run has nothing to train
        _load_optimizer(out / OPTIMIZER_FILE, optimizer)
    metrics = _MetricsLog(out / METRICS_FILE)
    per_epoch = config.updates_per_epoch or max(
        1, sampler.num_steps // (config.batch_size * window)
    )
    last_save = time.monotonic()

    def save(epoch: int, update: int, total: int) -> None:
        nonlocal last_save
        save_checkpoint(
            out,
            model,
            bank,
            data.action_meanings,
            extra={
                "training": {"store": str(store), "steps": data.num_steps, "epochs_done": epoch}
            },
        )
        _save_optimizer(out / OPTIMIZER_FILE, optimizer)
        write_json(
            state_path,
            {
                "progress": {"epoch": epoch, "update": update, "updates_total": total},
                "saved": True,
                "fit_config": dataclasses.asdict(config),
                "preset": preset,
            },
        )
        last_save = time.monotonic()

    epoch, update, total = (
        progress_state["epoch"],
        progress_state["update"],
        progress_state["updates_total"],
    )
    while epoch < config.epochs:
        phase = "warmup" if epoch < config.warmup_epochs and model.has_warmup else "joint"
        base_lr = config.warmup_lr if phase == "warmup" else config.lr
        for group, scale in zip(optimizer.param_groups, scales, strict=True):
            group["lr"] = base_lr * scale
        sampler.rng = np.random.default_rng([config.seed, epoch, update])
        model.train()
        bar = tqdm(
            total=per_epoch,
            initial=update,
            desc=f"epoch {epoch + 1}/{config.epochs} {phase}",
            disable=not progress,
            leave=False,
        )
        losses = []
        while update < per_epoch:
            batch = _to_torch(sampler.sample(config.batch_size), device)
            out_losses = model.loss(batch, phase, total)
            optimizer.zero_grad(set_to_none=True)
            out_losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            losses.append(float(out_losses["loss"].detach()))
            update += 1
            total += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if (
                time.monotonic() - last_save > config.checkpoint_every_minutes * 60
                and update < per_epoch
            ):
                save(epoch, update, total)
        bar.close()
        model.eval()
        vals = [model.metrics(_to_torch(b, device)) for b in val_batches]
        row = {
            "epoch": epoch + 1,
            "phase": phase,
            "updates": total,
            "train_loss": float(np.mean(losses)) if losses else math.nan,
        }
        row.update({f"val_{k}": float(np.mean([v[k] for v in vals])) for k in vals[0]})
        metrics.append(row)
        epoch, update = epoch + 1, 0
        if progress:
            tqdm.write(
                " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                )
            )
        if epoch % config.checkpoint_every_epochs == 0 or epoch == config.epochs:
            save(epoch, update, total)
    if not (out / CONFIG_FILE).is_file():
        save(epoch, update, total)
    return out


def fit_config_from_dict(data: dict[str, Any]) -> FitConfig:
    """A :class:`FitConfig` from a dict (such as ``trainer_state.json``'s ``fit_config``)."""
    return config_from_dict(FitConfig, data)
