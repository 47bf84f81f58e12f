"""Save and load a world-model checkpoint directory; the only module touching its files.

Layout::

    config.json            format version, family, model config, AtariSpec, action meanings
    weights.safetensors    the model's tensors (parameters and buffers)
    start_bank.npz         real frames and actions that start dream episodes

Nothing is unpickled: tensors come from safetensors, arrays from ``np.load(...,
allow_pickle=False)``, the rest from JSON. The directory alone builds a dream env.

Example:
    >>> save_checkpoint("runs/pong/model", model, bank)
    >>> ckpt = load_checkpoint("runs/pong/model")
    >>> ckpt.model.family
    'discrete'
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamenv.atomic_files import write_atomic, write_json
from dreamenv.data.sequences import StartBank
from dreamenv.envs.atari import AtariSpec, normalize_game
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.models.base import WorldModel, get_family

FORMAT = "dreamenv-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
BANK_FILE = "start_bank.npz"


def package_version() -> str:
    from dreamenv import __version__

    return __version__


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode), its spec, and its start bank."""

    path: Path
    """The directory it was loaded from."""
    model: WorldModel
    """The world model, in eval mode, on the requested device."""
    start_bank: StartBank
    """Real starts of dream episodes."""
    config: dict[str, Any]
    """The parsed config.json."""

    @property
    def spec(self) -> AtariSpec:
        return self.model.spec

    @property
    def action_meanings(self) -> tuple[str, ...]:
        return tuple(self.config["action_meanings"])


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """A frozen dataclass from JSON data (lists become tuples); unknown keys are errors."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"Unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(names)}."
        )
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def save_checkpoint(
    path: str | Path,
    model: WorldModel,
    start_bank: StartBank,
    action_meanings: tuple[str, ...],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and ``start_bank`` to the directory ``path`` (each file atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))

    def write_bank(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(
                f, frames=start_bank.frames, actions=start_bank.actions, stack=start_bank.stack
            )

    write_atomic(path / BANK_FILE, write_bank)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dreamenv_version": package_version(),
        "family": model.family,
        "model_config": dataclasses.asdict(model.config),
        "spec": model.spec.to_dict(),
        "env_id": f"ALE/{model.spec.game}",
        "num_actions": model.num_actions,
        "action_meanings": list(action_meanings),
        "start_bank": {"size": start_bank.size, "context": start_bank.context},
        **(extra or {}),
    }
    write_json(path / CONFIG_FILE, config)
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated config.json of the checkpoint at ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint={str(path)!r} is not a directory. Pass the directory that "
            "`dreamenv fit` wrote (it holds config.json and weights.safetensors)."
        )
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} has no {CONFIG_FILE}; it is incomplete or not a "
            "dreamenv checkpoint. Train one with `dreamenv fit`."
        )
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{file} is not valid JSON ({err.msg} at line {err.lineno}); the file is truncated "
            "or damaged. Restore it or train the checkpoint again."
        ) from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(
            f"{file} is not a dreamenv checkpoint config (format={config.get('format')!r})."
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} has format version {version!r} (written by dreamenv "
            f"{config.get('dreamenv_version')}); this dreamenv {package_version()} reads version "
            f"{FORMAT_VERSION}. Use the matching dreamenv version or train the model again."
        )
    return config


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    family: str | None = None,
    game: str | None = None,
) -> Checkpoint:
    """Load the checkpoint directory ``path``.

    Args:
        path: the directory.
        device: where the model's tensors go (``"cpu"``, ``"cuda"``).
        family: if given, the family the checkpoint must be of.
        game: if given, the game the checkpoint must model.

    Raises:
        CheckpointError: missing or truncated files, another format version, family or game.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config = read_config(path)
    if family is not None and config["family"] != family:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds a {config['family']!r} model, expected {family!r}."
        )
    spec = AtariSpec.from_dict(config["spec"])
    if game is not None and normalize_game(game) != spec.game:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} models the game {spec.game!r}, not {normalize_game(game)!r}. "
            "Pass a checkpoint trained on that game."
        )
    cls = get_family(config["family"])
    model = cls(
        config_from_dict(cls.config_class, config["model_config"]), spec, config["num_actions"]
    )
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} has no {WEIGHTS_FILE}; it is incomplete.")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{weights} is unreadable ({err}); the file is truncated or damaged. "
            "Restore it or train the checkpoint again."
        ) from err
    tensors = model.upgrade_weights(tensors)
    missing, unexpected = (
        model.state_dict().keys() - tensors.keys(),
        tensors.keys() - model.state_dict().keys(),
    )
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match the {config['family']!r} model of config.json: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
        )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{weights} does not match config.json: {err}") from err
    bank_file = path / BANK_FILE
    if not bank_file.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} has no {BANK_FILE}; it is incomplete.")
    try:
        with np.load(bank_file, allow_pickle=False) as data:
            bank = StartBank(data["frames"], data["actions"], int(data["stack"]))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
        raise CheckpointError(
            f"{bank_file} is unreadable ({err}); the file is truncated or damaged."
        ) from err
    model.to(device).eval()
    return Checkpoint(path, model, bank, config)
