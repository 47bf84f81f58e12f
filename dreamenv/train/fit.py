"""Fit a world model to an episode store, resumably.

The output directory is a complete checkpoint at every save (``config.json``,
``weights.safetensors``, ``start_bank.npz``), plus the trainer's own files:
``trainer_state.json`` (progress, settings, random states), ``optimizer.safetensors``
and ``metrics.csv`` (held-out metrics per epoch). Each save writes the checkpoint and the
trainer's state as one atomic set, so a run killed at any point (SIGKILL included) and
started again with the same call continues from its last save, and ends with exactly the
weights of a run never killed. Saves happen every ``checkpoint_every_epochs`` epochs and
every ``checkpoint_every_minutes`` minutes. A continued run keeps its settings: a call
that changes one (see :class:`FitConfig`) is a :class:`ConfigError`.

Example:
    >>> fit("runs/pong/data", "runs/pong/model", preset="small", config=FitConfig(epochs=10))
"""

from __future__ import annotations

import base64
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

from dreamenv.atomic_files import finish_file_set, write_atomic
from dreamenv.checkpoint import (
    CONFIG_FILE,
    config_from_dict,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from dreamenv.data.sequences import SequenceSampler, build_start_bank, split_episodes
from dreamenv.data.store import Episode, EpisodeStore
from dreamenv.envs.atari import stack_frames
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.models.base import (
    WorldModel,
    build_model,
    check_holds_representation,
    get_family,
    holding_families,
    resolve_config,
)
from dreamenv.precision import Precision, autocast, check_precision

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
METRICS_FILE = "metrics.csv"
FREE_FIELDS = (
    "checkpoint_every_epochs",
    "checkpoint_every_minutes",
    "device",
    "precision",
    "representation",
)
"""The FitConfig fields a continued run may change (besides ``epochs``, which may grow)."""


@dataclass(frozen=True)
class FitConfig:
    """How a world model is trained (family-agnostic).

    A run continued in the same directory keeps these settings: ``epochs`` may grow (to
    train on), ``checkpoint_every_epochs``, ``checkpoint_every_minutes``, ``device`` and
    ``precision`` may change (the machine's, not what is learnt); any other change is a
    :class:`ConfigError` (start the new run in another directory).
    """

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
    termination_windows: float = 0.0
    """Share of each batch made of windows that hold a real end: the game's, or with
    ``life_loss`` a lost life (0: uniform windows); they come after the ``reward_windows``
    ones. Ends are rarer than rewards (Seaquest under its agents: one step in 240); there,
    400 refit updates at 0.25 raised the head's teacher-forced recall of lost lives from
    0.47 to 0.61 and left the dream's open-loop one as it was (docs/results.md)."""
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
    """Real starts saved with the checkpoint for dream episodes, drawn anywhere in the data;
    the start of each training episode (at most as many) is saved beside them."""
    start_context: int = 8
    """Observations of history per start (the dream env's largest ``burn_in``)."""
    seed: int = 0
    """Seeds initialisation and sampling."""
    device: str = "cpu"
    """Torch device: ``"cpu"`` or ``"cuda"``."""
    life_loss: bool = False
    """Train the termination head on the loss of a life as well as on the game's end
    (Atari: the dream then ends an imagined episode when a life is lost, so an agent that
    trades lives for points sees what it costs; ``Real-v0`` still plays whole games)."""
    precision: Precision = "float32"
    """``"bfloat16"`` runs the updates' convolutions and matrix products under bfloat16
    autocast (:mod:`dreamenv.precision`; weights, optimiser and held-out metrics stay
    float32); ``"auto"`` does so where the machine computes bfloat16 natively."""
    representation: bool = True
    """Train the representation too. False continues a trained model with its
    representation held as it is (the discrete family's encoder, codebook and decoder), so
    every observation the envs serve stays the same and only the dynamics, reward and
    termination train; families whose representation trains with their dynamics
    (``holds_representation`` False) refuse it. A continued run may change it."""

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
        check_precision(self.precision, "FitConfig.precision")
        if self.lr <= 0 or self.warmup_lr <= 0:
            raise ConfigError(
                f"learning rates must be positive, got lr={self.lr}, warmup_lr={self.warmup_lr}."
            )
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={self.device!r} but CUDA is not available; use 'cpu'.")


def _to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}


def _write_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
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
    save_file(tensors, str(path), metadata=meta)


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


_NEW_RUN = (
    "Restore the directory from a copy, or start a new run in another output directory "
    "(the model itself still loads with load_checkpoint)."
)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _read_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path} is not valid JSON ({err}); the file is damaged, so the run cannot continue. "
            f"{_NEW_RUN}"
        ) from err
    if not isinstance(state, dict) or not isinstance(state.get("progress"), dict):
        raise CheckpointError(f"{path} is not a dreamenv trainer state (no 'progress').")
    return state


def _changed_settings(
    state: dict[str, Any],
    previous: dict[str, Any],
    family: str,
    preset: str,
    overrides: dict[str, Any] | None,
    config: FitConfig,
) -> list[str]:
    """The settings of this call that differ from the saved run's, described."""
    changes: list[str] = []

    def differ(name: str, saved: Any, new: Any, note: str = "") -> None:
        changes.append(f"{name}={saved!r} then, {new!r} now{note}")

    if "preset" in state and state["preset"] != preset:
        differ("preset", state["preset"], preset)
    if "model_overrides" in state:
        if state["model_overrides"] != _jsonable(overrides or {}):
            differ("model_overrides", state["model_overrides"], _jsonable(overrides or {}))
    elif not changes:  # saved by an earlier version: compare the model settings they give
        cls = get_family(family)
        saved_model = dataclasses.asdict(
            config_from_dict(cls.config_class, previous["model_config"])
        )
        new_model = dataclasses.asdict(resolve_config(family, preset, overrides))
        for name in sorted(saved_model):
            if _jsonable(saved_model[name]) != _jsonable(new_model[name]):
                differ(f"model setting {name}", saved_model[name], new_model[name])
    saved_fit = state.get("fit_config") or {}
    new_fit = _jsonable(dataclasses.asdict(config))
    for name in [n for n in new_fit if n in saved_fit and n not in FREE_FIELDS]:
        if name == "epochs":
            if new_fit[name] < saved_fit[name]:
                differ(name, saved_fit[name], new_fit[name], " (epochs may only grow)")
        elif new_fit[name] != saved_fit[name]:
            differ(name, saved_fit[name], new_fit[name])
    return changes


def _encode_bytes(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _decode_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _random_state(sampler: SequenceSampler, device: torch.device) -> dict[str, Any]:
    """The random states a continued run needs to draw what this run would have drawn."""
    state = {
        "torch": _encode_bytes(torch.get_rng_state()),
        "sampler": sampler.rng.bit_generator.state,
    }
    if device.type == "cuda":
        state["cuda"] = _encode_bytes(torch.cuda.get_rng_state(device))
    return state


def _restore_random_state(
    state: dict[str, Any], device: torch.device, path: Path
) -> np.random.Generator | None:
    """Set torch's random states from ``state``; the sampler's generator, if saved."""
    try:
        torch.set_rng_state(_decode_bytes(state["torch"]))
        if device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(_decode_bytes(state["cuda"]), device)
        if "sampler" not in state:
            return None
        rng = np.random.default_rng()
        rng.bit_generator.state = state["sampler"]
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} holds an unusable random state ({err}); the file is damaged, so the run "
            f"cannot continue exactly. {_NEW_RUN}"
        ) from err
    return rng


LATENT_CHUNK = 256
"""Observations encoded at a time by :func:`_served_latents`."""


def _served_latents(model: WorldModel, episodes: list[Episode], stack: int) -> list[np.ndarray]:
    """The latents ``model`` serves for every observation of ``episodes`` (one array of
    ``len + 1`` per episode), encoded once for a fit that holds the representation."""
    latents = []
    with torch.no_grad():
        for episode in episodes:
            if len(episode) == 0:  # the sampler drops it
                latents.append(np.zeros(0, np.int64))
                continue
            positions = np.arange(len(episode) + 1)
            chunks = [
                model.served_latents(
                    torch.as_tensor(stack_frames(episode.frames, chunk, stack), device=model.device)
                ).cpu()
                for chunk in np.array_split(positions, max(1, len(positions) // LATENT_CHUNK))
            ]
            latents.append(torch.cat(chunks).numpy())
    return latents


def _check_held_representation(
    config: FitConfig, model: WorldModel, out: Path, epoch: int, trained: bool
) -> None:
    """A :class:`ConfigError` where ``config.representation`` is False but cannot be."""
    if config.representation:
        return
    check_holds_representation(
        model.family,
        "FitConfig.representation=False",
        f"families that can: {holding_families()}. Use representation=True.",
    )
    if not trained or (model.has_warmup and epoch < config.warmup_epochs):
        raise ConfigError(
            f"FitConfig.representation=False holds a trained representation, but "
            f"{str(out)!r} holds a model whose representation is not trained yet "
            f"({epoch} of {config.warmup_epochs} warm-up epochs done). Train it first with "
            "representation=True."
        )


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
        out: the checkpoint directory to write; if it holds a run of the same family and
            game, training continues from its last save (to ``config.epochs``).
        family: the world-model family (``"discrete"``).
        preset: the family's size preset (``"small"``, ``"paper"``).
        model_overrides: model config fields to override.
        config: training settings.
        progress: show a progress bar.

    Returns:
        ``out``, a checkpoint directory loadable by ``gym.make("dreamenv/Dream-v0", checkpoint=out)``.

    Raises:
        ConfigError: ``out`` holds a run started with other settings (see :class:`FitConfig`).
        CheckpointError: ``out`` holds a model of another family or game, or damaged files.
    """
    config = config or FitConfig()
    out = Path(out)
    data = EpisodeStore.open(store)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    episodes = data.episodes()
    train_eps, val_eps = split_episodes(episodes, config.val_fraction)
    stack = data.spec.frame_stack
    for name in ("reward_windows", "termination_windows"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ConfigError(f"{name} must lie in [0, 1], got {getattr(config, name)!r}.")
    if config.reward_windows + config.termination_windows > 1.0:
        raise ConfigError(
            f"reward_windows + termination_windows must be at most 1 (shares of one batch), "
            f"got {config.reward_windows!r} + {config.termination_windows!r}."
        )
    bank = build_start_bank(
        train_eps, config.start_bank_size, config.start_context, stack, seed=config.seed
    )
    if out.is_dir():
        finish_file_set(out)  # a save killed while moving its files into place
    state_path = out / STATE_FILE
    progress_state = {"epoch": 0, "update": 0, "updates_total": 0}
    state = _read_state(state_path)
    saved_state: dict[str, Any] = {}
    if state is not None and state.get("saved", True) and (out / CONFIG_FILE).is_file():
        previous = read_config(out)
        if previous["family"] != family or previous["spec"] != data.spec.to_dict():
            raise CheckpointError(
                f"{str(out)!r} holds a {previous['family']!r} model of "
                f"{previous['spec'].get('game', previous['spec'].get('env_id'))!r}; "
                f"this run trains {family!r} on {data.spec.game!r}. Use another output directory."
            )
        changes = _changed_settings(state, previous, family, preset, model_overrides, config)
        if changes:
            done = state["progress"]["epoch"]
            raise ConfigError(
                f"{str(out)!r} holds a run ({done} epochs trained) started with other settings: "
                f"{'; '.join(changes)}. A continued run keeps its settings (epochs may grow; "
                f"{', '.join(FREE_FIELDS)} may change). Pass the saved values to continue it, "
                "or another output directory (--out) to start a new run."
            )
        model: WorldModel = load_checkpoint(out, device).model
        progress_state = state["progress"]
        saved_state = state
    else:
        if (out / CONFIG_FILE).is_file() and state is None:
            raise CheckpointError(
                f"{str(out)!r} already holds a finished checkpoint without trainer state; "
                "choose another output directory."
            )
        model = build_model(family, preset, data.spec, data.spec.action_spec, model_overrides).to(
            device
        )
        rewards = [np.abs(e.rewards).max() for e in train_eps if len(e)]
        model.set_reward_scale(max(rewards, default=1.0) or 1.0)
    _check_held_representation(config, model, out, progress_state["epoch"], bool(saved_state))
    window = model.window_steps(config.seq_len)
    held = (  # a held representation serves fixed codes: encode the data once (if any update)
        _served_latents(model, train_eps, stack)
        if not config.representation and progress_state["epoch"] < config.epochs
        else None
    )
    sampler = SequenceSampler(
        train_eps,
        stack,
        window,
        seed=config.seed,
        reward_windows=config.reward_windows,
        life_loss=config.life_loss,
        latents=held,
        termination_windows=config.termination_windows,
    )
    val_sampler = SequenceSampler(
        val_eps, stack, window, seed=config.seed + 1, life_loss=config.life_loss
    )
    if not saved_state:  # a new model: its termination head starts at the data's rate
        rate = min(1.0, sampler.termination_rate * model.jump)
        model.set_termination_rate(rate, sampler.num_steps)
    val_batches = [val_sampler.sample(config.batch_size) for _ in range(config.val_batches)]
    optimizer = torch.optim.Adam(model.param_groups(config.lr))
    scales = [g["lr"] / config.lr for g in optimizer.param_groups]
    resumes = progress_state["updates_total"] > 0 and progress_state["epoch"] < config.epochs
    if resumes and (out / OPTIMIZER_FILE).is_file():  # a finished run has nothing to train
        _load_optimizer(out / OPTIMIZER_FILE, optimizer)
    saved_rng = None
    if resumes and "random" in saved_state:
        saved_rng = _restore_random_state(saved_state["random"], device, state_path)
    metrics = _MetricsLog(out / METRICS_FILE)
    per_epoch = config.updates_per_epoch or max(
        1, sampler.num_steps // (config.batch_size * window)
    )
    last_save = time.monotonic()
    losses: list[float] = list(saved_state.get("epoch_losses", [])) if resumes else []

    def save(epoch: int, update: int, total: int) -> None:
        nonlocal last_save
        trainer_state = {
            "progress": {"epoch": epoch, "update": update, "updates_total": total},
            "saved": True,
            "family": family,
            "preset": preset,
            "model_overrides": _jsonable(model_overrides or {}),
            "fit_config": dataclasses.asdict(config),
            "epoch_losses": losses if update else [],
            "random": _random_state(sampler, device),
        }
        text = json.dumps(trainer_state, indent=2, sort_keys=True) + "\n"
        save_checkpoint(
            out,
            model,
            bank,
            data.action_meanings,
            extra={
                "training": {
                    "store": str(store),
                    "steps": data.num_steps,
                    "epochs_done": epoch,
                    "updates": total,
                }
            },
            files={
                OPTIMIZER_FILE: lambda p: _write_optimizer(p, optimizer),
                STATE_FILE: lambda p: p.write_text(text),
            },
        )
        last_save = time.monotonic()

    epoch, update, total = (
        progress_state["epoch"],
        progress_state["update"],
        progress_state["updates_total"],
    )
    while epoch < config.epochs:
        phase = (
            "warmup"
            if epoch < config.warmup_epochs and model.has_warmup
            else ("joint" if config.representation else "dynamics")
        )
        base_lr = config.warmup_lr if phase == "warmup" else config.lr
        for group, scale in zip(optimizer.param_groups, scales, strict=True):
            group["lr"] = base_lr * scale
        if update and saved_rng is not None:  # mid-epoch: where the killed run stood
            sampler.rng = saved_rng
        else:
            sampler.rng = np.random.default_rng([config.seed, epoch, update])
        model.train()
        bar = tqdm(
            total=per_epoch,
            initial=update,
            desc=f"epoch {epoch + 1}/{config.epochs} {phase}",
            disable=not progress,
            leave=False,
        )
        while update < per_epoch:
            batch = _to_torch(sampler.sample(config.batch_size), device)
            with autocast(config.precision, device):
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
        epoch, update, losses = epoch + 1, 0, []
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
