"""Save and load a world-model checkpoint directory; the only module touching its files.

Layout::

    config.json            format version, family, model config, env spec, action space and
                           meanings,
                           and ``files``: the other files of its save
    weights.safetensors    the model's tensors (parameters and buffers)
    start_bank.npz         real frames and actions that start dream episodes

A save writes its files (and any extra ones, such as the trainer's) as one atomic set
(:func:`dreamenv.atomic_files.write_file_set`): a process killed at any moment leaves the
previous save or the new one, never a mix, and a load always reads one save whole.

Nothing is unpickled: tensors come from safetensors, arrays from ``np.load(...,
allow_pickle=False)``, the rest from JSON; every field is checked before use, so a
damaged file is a :class:`CheckpointError` that says what is wrong. The directory alone
builds a dream env.

Example:
    >>> save_checkpoint("runs/pong/model", model, bank)
    >>> ckpt = load_checkpoint("runs/pong/model")
    >>> ckpt.model.family
    'discrete'
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamenv.atomic_files import read_file_set, set_file, write_file_set
from dreamenv.data.sequences import StartBank
from dreamenv.envs.atari import normalize_game
from dreamenv.envs.spec import ActionSpec, EnvSpec, GymSpec, spec_from_dict
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.models.base import WorldModel, get_family

FORMAT = "dreamenv-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
BANK_FILE = "start_bank.npz"

_FIELDS: dict[str, tuple[type, str]] = {
    "family": (str, "string"),
    "spec": (dict, "object"),
    "num_actions": (int, "integer"),
    "model_config": (dict, "object"),
    "action_meanings": (list, "list"),
}
"""The config.json fields a load needs, with their JSON types."""
_DAMAGED = "Restore the file or train the checkpoint again (`dreamenv fit`)."


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
    def spec(self) -> EnvSpec:
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
    files: Mapping[str, Callable[[Path], object]] | None = None,
) -> Path:
    """Write ``model`` and ``start_bank`` to the directory ``path`` as one atomic set.

    Args:
        path: the checkpoint directory (created if missing).
        model: the world model.
        start_bank: the real starts of dream episodes.
        action_meanings: the real env's action names, one per action.
        extra: more config.json fields.
        files: more files of the same save, ``{name: write(tmp_path)}`` (the trainer's
            state); files of the previous save that this one lacks are removed with it.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    def write_bank(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(
                f,
                frames=start_bank.frames,
                actions=start_bank.actions,
                stack=start_bank.stack,
                resets=start_bank.resets,
            )

    writers: dict[str, Callable[[Path], object]] = {
        WEIGHTS_FILE: lambda p: save_file(tensors, str(p)),
        BANK_FILE: write_bank,
        **(files or {}),
    }
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dreamenv_version": package_version(),
        "family": model.family,
        "model_config": dataclasses.asdict(model.config),
        "spec": model.spec.to_dict(),
        "env_id": model.spec.env_id
        if isinstance(model.spec, GymSpec)
        else f"ALE/{model.spec.game}",
        "num_actions": model.num_actions,
        "actions": model.actions.to_dict(),
        "action_meanings": list(action_meanings),
        "start_bank": {
            "size": start_bank.size,
            "context": start_bank.context,
            "resets": start_bank.resets,
        },
        "files": sorted(writers),
        **(extra or {}),
    }
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    writers[CONFIG_FILE] = lambda p: p.write_text(text)
    write_file_set(path, writers, remove=_saved_files(path))
    return path


def _saved_files(path: Path) -> list[str]:
    """The files of the save in ``path`` besides config.json (none if unreadable)."""
    try:
        files = json.loads((path / CONFIG_FILE).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and "/" not in f and f != CONFIG_FILE]


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _check_fields(config: dict[str, Any], file: Path) -> None:
    for key, (kind, name) in _FIELDS.items():
        if key not in config:
            raise CheckpointError(f"{file} has no {key!r} field; the file is damaged. {_DAMAGED}")
        value = config[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"{file}: {key!r} must be a JSON {name}, got the {_type_name(value)} "
                f"{value!r:.80}; the file is damaged. {_DAMAGED}"
            )
    if config["num_actions"] < 1:
        raise CheckpointError(
            f"{file}: 'num_actions' must be at least 1, got {config['num_actions']}. {_DAMAGED}"
        )
    meanings = config["action_meanings"]
    if "actions" in config and not isinstance(config["actions"], dict):
        raise CheckpointError(
            f"{file}: 'actions' must be a JSON object (the action space), got "
            f"{config['actions']!r:.80}. {_DAMAGED}"
        )
    if not all(isinstance(m, str) for m in meanings) or len(meanings) != config["num_actions"]:
        raise CheckpointError(
            f"{file}: 'action_meanings' must be {config['num_actions']} strings (one per "
            f"action, 'num_actions'), got {meanings!r:.120}. {_DAMAGED}"
        )


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated config.json of the checkpoint at ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint={str(path)!r} is not a directory. Pass the directory that "
            "`dreamenv fit` wrote (it holds config.json and weights.safetensors)."
        )
    file = set_file(path, CONFIG_FILE)
    if file is None or not file.is_file():
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
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{file} is not text ({err.reason}); the file is damaged.") from err
    found = config.get("format") if isinstance(config, dict) else _type_name(config)
    if found != FORMAT:
        raise CheckpointError(
            f"{file} is not a dreamenv checkpoint config (format={found!r}, expected {FORMAT!r})."
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} has format version {version!r} (written by dreamenv "
            f"{config.get('dreamenv_version')}); this dreamenv {package_version()} reads version "
            f"{FORMAT_VERSION}. Use the matching dreamenv version or train the model again."
        )
    _check_fields(config, file)
    return config


def _family_class(name: str, file: Path) -> type[WorldModel]:
    from dreamenv.models.base import FAMILIES

    try:
        return get_family(name)
    except ConfigError:
        close = difflib.get_close_matches(name, list(FAMILIES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CheckpointError(
            f"{file}: unknown world-model family {name!r}; {hint}registered families: "
            f"{sorted(FAMILIES)}. Fix 'family', or import the package that registers it "
            "before loading."
        ) from None


def _build(config: dict[str, Any], file: Path) -> WorldModel:
    """The untrained model that config.json describes."""
    try:
        spec = spec_from_dict(config["spec"])
        # checkpoints written before continuous actions hold only num_actions (Discrete)
        actions = ActionSpec.from_dict(
            config.get("actions") or {"kind": "discrete", "n": config["num_actions"]}
        )
    except (ConfigError, TypeError, ValueError, KeyError) as err:
        kind = "GymSpec" if config["spec"].get("kind") == "gym" else "AtariSpec"
        raise CheckpointError(f"{file}: 'spec' is not a valid {kind} ({err}). {_DAMAGED}") from err
    cls = _family_class(config["family"], file)
    try:
        model_config = config_from_dict(cls.config_class, config["model_config"])
        return cls(model_config, spec, actions)
    except (ConfigError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{file}: 'model_config' does not build a {config['family']!r} model ({err}). "
            f"{_DAMAGED}"
        ) from err


def _check_bank(bank: StartBank, file: Path, spec: Any, action_spec: ActionSpec) -> None:
    """A start bank that fits the model's frames and actions, or a CheckpointError."""
    frames, actions = bank.frames, bank.actions
    num_actions = action_spec.n
    fix = "Save the checkpoint again with a start bank built from this game's store."
    if not 0 <= bank.resets <= len(frames):
        raise CheckpointError(
            f"{file} marks {bank.resets} of its {len(frames)} starts as episode starts; "
            f"expected 0 to {len(frames)}. {fix}"
        )
    if bank.stack != spec.frame_stack:
        raise CheckpointError(
            f"{file} stacks {bank.stack} frames per observation; the spec stacks "
            f"{spec.frame_stack}. {fix}"
        )
    single = tuple(spec.single_frame_shape)
    dtype = np.dtype(spec.frame_dtype)
    if frames.dtype != dtype or frames.ndim != 2 + len(single) or frames.shape[2:] != single:
        raise CheckpointError(
            f"{file} holds frames of shape {frames.shape} and dtype {frames.dtype}; the spec "
            f"needs {dtype} (N, context + {bank.stack - 1}, {', '.join(map(str, single))}). {fix}"
        )
    if action_spec.kind == "continuous":
        if (
            actions.dtype != np.float32
            or actions.shape[2:] != (num_actions,)
            or actions.shape[0] != frames.shape[0]
            or frames.shape[1] != actions.shape[1] + bank.stack
        ):
            raise CheckpointError(
                f"{file} holds actions of shape {actions.shape} and dtype {actions.dtype}; "
                f"expected float32 (N, context - 1, {num_actions}) continuous actions. {fix}"
            )
        return
    if (
        not np.issubdtype(actions.dtype, np.integer)
        or actions.ndim != 2
        or actions.shape[0] != frames.shape[0]
        or frames.shape[0] < 1
        or frames.shape[1] != actions.shape[1] + bank.stack
    ):
        raise CheckpointError(
            f"{file} holds actions of shape {actions.shape} and dtype {actions.dtype} beside "
            f"frames of shape {frames.shape}; expected integer (N, context - 1) actions for "
            f"(N, context + {bank.stack - 1}, ...) frames, N >= 1. {fix}"
        )
    if actions.size and (actions.min() < 0 or actions.max() >= num_actions):
        raise CheckpointError(
            f"{file} holds actions in [{actions.min()}, {actions.max()}]; the model takes "
            f"{num_actions} actions, [0, {num_actions - 1}]. {fix}"
        )


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
        CheckpointError: missing, truncated or malformed files, non-finite weights, a start
            bank that does not fit the model, another format version, family or game.
    """
    path = Path(path)
    try:
        ckpt = read_file_set(path, lambda: _load(path, family, game))
    except TimeoutError as err:
        raise CheckpointError(str(err)) from err
    ckpt.model.to(device).eval()
    return ckpt


def _load(path: Path, family: str | None, game: str | None) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config(path)
    file = path / CONFIG_FILE
    if family is not None and config["family"] != family:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds a {config['family']!r} model, expected {family!r}."
        )
    model = _build(config, file)
    spec = model.spec
    if game is not None:
        wanted = game if spec.kind == "gym" else normalize_game(game)
        if wanted != spec.game:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} models the game {spec.game!r}, not {wanted!r}. "
                "Pass a checkpoint trained on that game."
            )
    weights = set_file(path, WEIGHTS_FILE)
    if weights is None or not weights.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} has no {WEIGHTS_FILE}; it is incomplete.")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{weights} is unreadable ({err}); the file is truncated or damaged. "
            "Restore it or train the checkpoint again."
        ) from err
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise CheckpointError(
            f"{weights} holds NaN or inf values in {sorted(bad)[:5]} ({len(bad)} tensors): the "
            "training diverged. Train again from an earlier checkpoint or with a lower lr."
        )
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
    bank_file = set_file(path, BANK_FILE)
    if bank_file is None or not bank_file.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} has no {BANK_FILE}; it is incomplete.")
    try:
        with np.load(bank_file, allow_pickle=False) as data:
            resets = int(data["resets"]) if "resets" in data else 0  # older banks: none
            bank = StartBank(data["frames"], data["actions"], int(data["stack"]), resets)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError, EOFError) as err:
        raise CheckpointError(
            f"{bank_file} is unreadable ({err}); the file is truncated or damaged."
        ) from err
    _check_bank(bank, bank_file, spec, model.actions)
    return Checkpoint(path, model, bank, config)
