"""Agent files: an SB3 agent (PPO, A2C, DQN, SAC, TD3) saved and loaded without pickle.

An agent is a directory; loading it executes no code from it::

    AGENT/agent.json                  format, algorithm, policy class and kwargs, spaces,
                                      hyperparameters, training counters, learned scalars
                                      (SAC's log_ent_coef), file names
    AGENT/policy-<id>.safetensors     agent.policy.state_dict() (SAC's and TD3's: actor,
                                      critic and their targets)
    AGENT/optimizer-<id>.safetensors  the tensors of every optimizer (Adam's moments) as
                                      ``<optimizer>/<index>.<key>``: ``policy.optimizer``,
                                      or SAC's ``actor.optimizer``, ``critic.optimizer``,
                                      ``ent_coef_optimizer``; their other entries (param
                                      groups, counters) are in agent.json

The replay buffer of an off-policy agent (DQN, SAC, TD3) is not kept: a loaded agent
refills it (after ``learning_starts`` fresh steps, as SB3's own ``load`` without
``load_replay_buffer``). TD3's exploration noise is kept when it is SB3's
``NormalActionNoise``.

Classes in the policy kwargs (``features_extractor_class``, ``activation_fn``,
``optimizer_class``) are stored by name and read back only from allow-lists
(:data:`CLASSES`). A save writes new weight files under fresh names, then replaces
``agent.json`` atomically, then removes the files it no longer names: a process killed
at any point leaves the previous agent or the new one, whole.

SB3's own ``.zip`` (``agent.save``) unpickles its data when loaded, which can execute
code: it is read only with ``allow_pickle=True`` (``--allow-pickle``), for trusted files.

Example:
    >>> save_agent(agent, "runs/pong/agent")
    >>> agent = load_agent("runs/pong/agent")
    >>> old = load_agent("trusted.zip", allow_pickle=True)  # SB3 zip: warns, runs pickle
"""

from __future__ import annotations

import json
import os
import re
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer, RolloutBuffer
from stable_baselines3.common.noise import NormalActionNoise, VectorizedActionNoise
from stable_baselines3.common.save_util import recursive_getattr
from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule
from torch import nn

from dreamenv.atomic_files import write_atomic, write_json
from dreamenv.errors import CheckpointError, ConfigError
from dreamenv.sb3.extractor import LatentExtractor

FORMAT = "dreamenv-agent"
"""The ``format`` entry of ``agent.json``."""
VERSION = 2
"""The version of the agent format this module writes (version 2: several optimizers)."""
READS = (1, 2)
"""The versions it reads (version 1: one optimizer, ``policy.optimizer``)."""
MANIFEST = "agent.json"
"""The file naming everything else in an agent directory (written last, atomically)."""

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {
    "ppo": PPO,
    "a2c": A2C,
    "dqn": DQN,
    "sac": SAC,
    "td3": TD3,
}
"""The SB3 algorithms an agent file can hold, by name."""


def _by_name(*classes: type) -> dict[str, type]:
    return {f"{c.__module__}.{c.__qualname__}": c for c in classes}


CLASSES: dict[str, dict[str, type]] = {
    "features_extractor_class": _by_name(LatentExtractor, FlattenExtractor, NatureCNN),
    "activation_fn": {
        f"torch.nn.{c.__name__}": c
        for c in (nn.ReLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid)
    },
    "optimizer_class": {
        f"torch.optim.{c.__name__}": c
        for c in (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.SGD)
    },
}
"""The classes a policy kwarg may name, per kwarg: nothing else is ever imported."""

_COMMON = ("learning_rate", "gamma", "seed", "stats_window_size")
_ON_POLICY = (
    *_COMMON,
    "n_steps",
    "gae_lambda",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "use_sde",
    "sde_sample_freq",
    "normalize_advantage",
    "rollout_buffer_kwargs",
)
_OFF_POLICY = (
    *_COMMON,
    "buffer_size",
    "learning_starts",
    "batch_size",
    "tau",
    "train_freq",
    "gradient_steps",
    "optimize_memory_usage",
    "n_steps",
    "replay_buffer_kwargs",
)
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "ppo": (*_ON_POLICY, "batch_size", "n_epochs", "clip_range", "clip_range_vf", "target_kl"),
    "a2c": _ON_POLICY,
    "sac": (
        *_OFF_POLICY,
        "action_noise",
        "ent_coef",
        "target_update_interval",
        "target_entropy",
        "use_sde",
        "sde_sample_freq",
        "use_sde_at_warmup",
    ),
    "td3": (
        *_OFF_POLICY,
        "action_noise",
        "policy_delay",
        "target_policy_noise",
        "target_noise_clip",
    ),
    "dqn": (
        *_OFF_POLICY,
        "target_update_interval",
        "exploration_fraction",
        "exploration_initial_eps",
        "exploration_final_eps",
        "max_grad_norm",
    ),
}
"""The constructor arguments stored per algorithm (what rebuilding it needs)."""
_SCHEDULES = ("learning_rate", "clip_range", "clip_range_vf")
_ATTRIBUTE = {"stats_window_size": "_stats_window_size"}
_DEFAULT_BUFFERS = (RolloutBuffer, ReplayBuffer, NStepReplayBuffer)
_COUNTERS = {
    "num_timesteps": "num_timesteps",
    "n_updates": "_n_updates",
    "episode_num": "_episode_num",
    "n_calls": "_n_calls",
    "exploration_rate": "exploration_rate",
}
"""Training counters of ``agent.json``'s ``state`` and the agent attributes they restore."""
_VARIABLES = ("log_ent_coef",)
"""Learned tensors outside the policy (SAC's), kept in ``agent.json``'s ``variables``."""
_WEIGHT_FILE = re.compile(r"^(policy|optimizer)-[0-9a-f]{12}\.safetensors$")
_TEMP_FILE = re.compile(r"^\.((policy|optimizer)-[0-9a-f]{12}\.safetensors|agent\.json)\..*\.tmp$")
"""What a save killed midway leaves (write_atomic's temporary files)."""


# --- JSON of values, spaces and classes ------------------------------------------------------
def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON (tuples become lists), or a ConfigError naming ``where``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = value.item() if isinstance(value, np.generic) else value
        if isinstance(number, float) and not np.isfinite(number):
            return str(number)  # "inf", "-inf", "nan": JSON has no such numbers
        return number
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise ConfigError(
        f"{where} = {value!r} cannot be stored without pickle (agent files hold JSON values "
        f"and the classes of dreamenv.sb3.agent_files.CLASSES); "
        "save it with save_agent(agent, 'agent.zip', format='sb3') instead."
    )


def _array(values: Any, dtype: np.dtype) -> np.ndarray:
    return np.asarray(values, dtype=np.float64 if dtype.kind == "f" else np.int64).astype(dtype)


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A gymnasium Box, Discrete, MultiDiscrete or MultiBinary space as JSON.

    Example:
        >>> space_to_json(gym.spaces.Discrete(6))
        {'type': 'Discrete', 'n': 6, 'start': 0}
    """
    if isinstance(space, gym.spaces.Box):

        def bound(b: np.ndarray) -> Any:
            flat = b.reshape(-1)
            same = flat.size > 0 and (flat == flat[0]).all()
            return _plain(flat[0] if same else b.tolist(), "Box bound")

        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": space.dtype.name,
            "low": bound(space.low),
            "high": bound(space.high),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "dtype": space.dtype.name,
            "start": space.start.tolist(),
        }
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": _plain(space.n, "MultiBinary.n")}
    raise ConfigError(
        f"agent files store Box, Discrete, MultiDiscrete and MultiBinary spaces, got {space}; "
        "save it with format='sb3' instead."
    )


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """The space :func:`space_to_json` wrote."""
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        shape = tuple(int(n) for n in data["shape"])
        low, high = (np.broadcast_to(_array(data[k], dtype), shape).copy() for k in ("low", "high"))
        return gym.spaces.Box(low, high, shape, dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(int(data["n"]), start=int(data["start"]))
    if kind == "MultiDiscrete":
        dtype = np.dtype(data["dtype"])
        return gym.spaces.MultiDiscrete(
            np.array(data["nvec"], dtype), dtype=dtype, start=np.array(data["start"], dtype)
        )
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(data["n"])
    raise CheckpointError(f"unknown space type {kind!r} (expected Box, Discrete, MultiDiscrete).")


def _schedule_to_json(value: Any, name: str) -> Any:
    if isinstance(value, FloatSchedule):
        value = value.value_schedule
    if isinstance(value, ConstantSchedule):
        value = value.val
    if isinstance(value, LinearSchedule):
        return {
            "schedule": "linear",
            "start": float(value.start),
            "end": float(value.end),
            "end_fraction": float(value.end_fraction),
        }
    if value is None or isinstance(value, (int, float, np.number)):
        return _plain(value, name)
    raise ConfigError(
        f"{name} is the callable {value!r}; agent files store numbers and SB3's "
        "LinearSchedule. Use one of those, or save with format='sb3'."
    )


def _schedule_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("schedule") != "linear":
            raise CheckpointError(f"unknown schedule {value!r} (expected 'linear').")
        return LinearSchedule(value["start"], value["end"], value["end_fraction"])
    return value


def _noise_to_json(noise: Any) -> Any:
    if isinstance(noise, VectorizedActionNoise):  # SB3 wraps the noise of n_envs > 1 in this
        noise = noise.base_noise
    if noise is None:
        return None
    if isinstance(noise, NormalActionNoise):
        return {
            "noise": "normal",
            "mean": _plain(np.asarray(noise._mu, np.float64).tolist(), "action_noise mean"),
            "sigma": _plain(np.asarray(noise._sigma, np.float64).tolist(), "action_noise sigma"),
            "dtype": np.dtype(noise._dtype).name,
        }
    raise ConfigError(
        f"action_noise = {noise!r}: agent files store SB3's NormalActionNoise (or none); use "
        "that, or save with format='sb3'."
    )


def _noise_from_json(value: Any) -> NormalActionNoise | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("noise") != "normal":
        raise CheckpointError(f"unknown action_noise {value!r} (expected 'normal' or null).")
    return NormalActionNoise(
        np.array(value["mean"], np.float64),
        np.array(value["sigma"], np.float64),
        dtype=np.dtype(value["dtype"]),
    )


def _policy_kwargs_to_json(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "device":
            continue
        if key in CLASSES:
            names = {cls: name for name, cls in CLASSES[key].items()}
            if value not in names:
                raise ConfigError(
                    f"policy_kwargs[{key!r}] = {value!r} is not one of the classes agent files "
                    f"can name ({sorted(CLASSES[key])}); save it with format='sb3' instead."
                )
            out[key] = names[value]
        else:
            out[key] = _plain(value, f"policy_kwargs[{key!r}]")
    return out


def _policy_kwargs_from_json(data: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(data)
    for key, allowed in CLASSES.items():
        if key in kwargs:
            if kwargs[key] not in allowed:
                raise CheckpointError(
                    f"policy_kwargs[{key!r}] names {kwargs[key]!r}, which agent files do not "
                    f"load (allowed: {sorted(allowed)})."
                )
            kwargs[key] = allowed[kwargs[key]]
    return kwargs


def _algorithm_name(agent: BaseAlgorithm) -> str:
    for name, cls in ALGORITHMS.items():
        if type(agent) is cls:
            return name
    raise ConfigError(
        f"agent files hold {[c.__name__ for c in ALGORITHMS.values()]}, got "
        f"{type(agent).__name__}; save it with format='sb3' instead."
    )


def _policy_alias(agent: BaseAlgorithm) -> str:
    for alias, cls in type(agent).policy_aliases.items():
        if agent.policy_class is cls:
            return alias
    raise ConfigError(
        f"the policy class {agent.policy_class.__name__} is not one of SB3's "
        f"{sorted(type(agent).policy_aliases)}; save it with format='sb3' instead."
    )


def _hyperparameters(agent: BaseAlgorithm, algo: str) -> dict[str, Any]:
    for attr in ("rollout_buffer_class", "replay_buffer_class"):
        buffer = getattr(agent, attr, None)
        if buffer is not None and buffer not in _DEFAULT_BUFFERS:
            raise ConfigError(
                f"{attr}={buffer.__name__} cannot be stored without pickle; save with "
                "format='sb3' instead."
            )
    params: dict[str, Any] = {}
    for name in HYPERPARAMETERS[algo]:
        value = getattr(agent, _ATTRIBUTE.get(name, name))
        if name in _SCHEDULES:
            params[name] = _schedule_to_json(value, name)
        elif name == "action_noise":
            params[name] = _noise_to_json(value)
        elif isinstance(value, TrainFreq):
            params[name] = [int(value.frequency), value.unit.value]
        else:
            params[name] = _plain(value, name)
    return params


# --- optimizer state -------------------------------------------------------------------------
def _optimizer_split(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict as (tensors for safetensors, the rest as JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(index), {})[key] = _plain(value, f"optimizer {key}")
    groups = [_plain(g, "optimizer param_groups") for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "state": rest}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The state dict :func:`_optimizer_split` split (``tensors`` of this optimizer only)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    for index, entries in meta["state"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _optimizers(agent: BaseAlgorithm) -> dict[str, torch.optim.Optimizer]:
    """The agent's optimizers by SB3's attribute path (what SB3's own save keeps):
    ``policy.optimizer``, or SAC's and TD3's ``actor.optimizer`` and ``critic.optimizer``
    (and SAC's ``ent_coef_optimizer`` when it learns its entropy coefficient)."""
    state_dicts, _ = agent._get_torch_save_params()
    return {name: recursive_getattr(agent, name) for name in state_dicts if name != "policy"}


# --- saving ----------------------------------------------------------------------------------
def save_agent(
    agent: BaseAlgorithm,
    path: str | Path,
    *,
    optimizer: bool = True,
    format: Literal["dreamenv", "sb3"] = "dreamenv",
) -> Path:
    """Save ``agent`` as the agent directory ``path`` (replaced atomically as a whole).

    ``optimizer=False`` leaves out the optimizer state (a continued agent then starts its
    optimizer afresh). ``format="sb3"`` writes SB3's own ``.zip`` instead (``path`` must end
    in ``.zip``), for SB3 users: loading that one runs pickle.

    Returns:
        ``path``.

    Example:
        >>> save_agent(agent, "runs/pong/agent")
        PosixPath('runs/pong/agent')
    """
    path = Path(path)
    if format == "sb3":
        if path.suffix != ".zip":
            raise ConfigError(f"format='sb3' writes a .zip, got path {str(path)!r}.")
        write_atomic(path, agent.save)
        return path
    if format != "dreamenv":
        raise ConfigError(f"format must be 'dreamenv' or 'sb3', got {format!r}.")
    if path.suffix == ".zip":
        raise ConfigError(
            f"{str(path)!r} ends in .zip, the name of SB3's pickle format; a dreamenv agent "
            f"is a directory: save to {str(path.with_suffix(''))!r}, or pass format='sb3'."
        )
    algo = _algorithm_name(agent)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "algorithm": algo,
        "policy": _policy_alias(agent),
        "policy_kwargs": _policy_kwargs_to_json(agent.policy_kwargs),
        "observation_space": space_to_json(agent.observation_space),
        "action_space": space_to_json(agent.action_space),
        "n_envs": int(agent.n_envs),
        "hyperparameters": _hyperparameters(agent, algo),
        "state": {
            key: _plain(getattr(agent, attr), key)
            for key, attr in _COUNTERS.items()
            if hasattr(agent, attr)
        },
        "variables": {
            name: _plain(getattr(agent, name).detach().cpu().double().tolist(), name)
            for name in _VARIABLES
            if isinstance(getattr(agent, name, None), torch.Tensor)
        },
        "versions": {
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
        },
    }
    _check_target(path)
    token = uuid.uuid4().hex[:12]
    files = {"policy": f"policy-{token}.safetensors"}
    write_atomic(
        path / files["policy"], lambda p: save_model(agent.policy, str(p), force_contiguous=True)
    )
    if optimizer:
        tensors: dict[str, torch.Tensor] = {}
        manifest["optimizers"] = {}
        for name, opt in _optimizers(agent).items():
            own, meta = _optimizer_split(opt.state_dict())
            tensors.update({f"{name}/{key}": value for key, value in own.items()})
            manifest["optimizers"][name] = meta
        files["optimizer"] = f"optimizer-{token}.safetensors"
        write_atomic(path / files["optimizer"], lambda p: save_file(tensors, str(p)))
    manifest["files"] = files
    write_json(path / MANIFEST, manifest)
    _fsync_dir(path)
    for old in path.iterdir():  # the previous save's files, and any a killed save left
        if _TEMP_FILE.match(old.name) or (
            _WEIGHT_FILE.match(old.name) and old.name not in files.values()
        ):
            old.unlink(missing_ok=True)
    return path


def _check_target(path: Path) -> None:
    """Refuse to save into a file, or into a directory holding anything but an agent."""
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{str(path)!r} is a file; an agent is saved as a directory.")
    if path.is_dir() and not (path / MANIFEST).is_file():
        foreign = [
            p.name for p in path.iterdir() if not (_WEIGHT_FILE.match(p.name) or p.name[0] == ".")
        ]
        if foreign:
            raise CheckpointError(
                f"{str(path)!r} is a directory of other files ({foreign[:3]}), not an agent; "
                "save the agent to a new path."
            )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- loading ---------------------------------------------------------------------------------
def is_agent(path: str | Path) -> bool:
    """Whether ``path`` holds a saved agent: an agent directory, or SB3's ``.zip`` (also
    as ``path`` + ``.zip``, the name SB3 gives a path without a suffix)."""
    path = Path(path)
    return (path / MANIFEST).is_file() or _sb3_zip(path) is not None


def _sb3_zip(path: Path) -> Path | None:
    for candidate in (path, path.parent / f"{path.name}.zip"):
        if candidate.is_file() and zipfile.is_zipfile(candidate):
            return candidate
    return None


def load_agent(
    path: str | Path, device: str = "cpu", *, allow_pickle: bool = False
) -> BaseAlgorithm:
    """The agent saved at ``path`` by :func:`save_agent`, ready to act and to train on.

    Nothing in the files is executed: JSON and safetensors only. An SB3 ``.zip`` needs
    ``allow_pickle=True`` (it unpickles, which can run code: trusted files only) and warns.

    Example:
        >>> agent = load_agent("runs/pong/agent")
        >>> action, _ = agent.predict(obs, deterministic=True)
    """
    path = Path(path)
    if (path / MANIFEST).is_file():
        return _load_directory(path, device)
    legacy = _sb3_zip(path)
    if legacy is not None:
        if not allow_pickle:
            raise CheckpointError(
                f"{str(legacy)!r} is an SB3 .zip agent: loading it unpickles its data, which "
                "can execute code. Pass --allow-pickle (allow_pickle=True) only for a file you "
                "trust, or convert it once into an agent directory: "
                f"save_agent(load_agent({str(legacy)!r}, allow_pickle=True), "
                f"{str(legacy.with_suffix(''))!r})."
            )
        return _load_sb3_zip(legacy, device)
    if path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} holds no {MANIFEST}: it is not an agent directory (or the first "
            "save into it was interrupted)."
        )
    if path.exists():
        raise CheckpointError(
            f"{str(path)!r} is not an agent: an agent is a directory with {MANIFEST} "
            "(dreamenv.sb3.save_agent), or SB3's .zip with --allow-pickle."
        )
    raise CheckpointError(f"No agent at {str(path)!r}; train one with `dreamenv dream`.")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{str(path / MANIFEST)!r} is not readable JSON ({err}).") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{str(path / MANIFEST)!r} is not a {FORMAT} manifest.")
    if manifest.get("version") not in READS:
        raise CheckpointError(
            f"{str(path)!r} is agent format version {manifest.get('version')!r}; this dreamenv "
            f"reads versions {list(READS)}. Upgrade dreamenv, or save the agent again."
        )
    return manifest


def _load_directory(path: Path, device: str) -> BaseAlgorithm:
    manifest = _read_manifest(path)
    try:
        algo = manifest["algorithm"]
        if algo not in ALGORITHMS:
            raise CheckpointError(f"algorithm must be one of {sorted(ALGORITHMS)}, got {algo!r}.")
        cls = ALGORITHMS[algo]
        if manifest["policy"] not in cls.policy_aliases:
            raise CheckpointError(
                f"policy must be one of {sorted(cls.policy_aliases)}, got {manifest['policy']!r}."
            )
        params = dict(manifest["hyperparameters"])
        unknown = sorted(set(params) - set(HYPERPARAMETERS[algo]))
        if unknown:
            raise CheckpointError(f"unknown {algo} hyperparameters {unknown}.")
        for name in _SCHEDULES:
            if name in params:
                params[name] = _schedule_from_json(params[name])
        if "action_noise" in params:
            params["action_noise"] = _noise_from_json(params["action_noise"])
        if isinstance(params.get("train_freq"), list):
            frequency, unit = params["train_freq"]
            params["train_freq"] = (int(frequency), TrainFrequencyUnit(unit).value)
        if algo == "a2c":
            params["use_rms_prop"] = False  # its optimizer is in policy_kwargs already
        agent = cls(  # type: ignore[call-arg]  # every algorithm takes _init_setup_model
            manifest["policy"],
            env=None,
            device=device,
            policy_kwargs=_policy_kwargs_from_json(manifest["policy_kwargs"]),
            _init_setup_model=False,
            **params,
        )
        agent.observation_space = space_from_json(manifest["observation_space"])
        agent.action_space = space_from_json(manifest["action_space"])
        agent.n_envs = int(manifest["n_envs"])
        agent._setup_model()
        files = manifest["files"]
    except CheckpointError as err:
        raise CheckpointError(f"{str(path)!r}: {err}") from err
    except (KeyError, TypeError, ValueError, AssertionError) as err:
        raise CheckpointError(f"{str(path)!r} could not be rebuilt as an agent ({err!r}).") from err
    try:
        load_model(agent.policy, str(path / files["policy"]), strict=True, device=str(agent.device))
        if "optimizer" in files:
            tensors = load_file(str(path / files["optimizer"]), device=str(agent.device))
            if "optimizers" in manifest:
                metas = manifest["optimizers"]
            else:  # version 1: the one optimizer, its tensors' keys unprefixed
                metas = {"policy.optimizer": manifest["optimizer"]}
                tensors = {f"policy.optimizer/{k}": v for k, v in tensors.items()}
            optimizers = _optimizers(agent)
            if sorted(metas) != sorted(optimizers):
                raise KeyError(f"optimizers {sorted(metas)}, expected {sorted(optimizers)}")
            for name, opt in optimizers.items():
                prefix = f"{name}/"
                own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                opt.load_state_dict(_optimizer_join(own, metas[name]))
        for name, value in manifest.get("variables", {}).items():
            if name not in _VARIABLES or not isinstance(getattr(agent, name, None), torch.Tensor):
                raise KeyError(f"variable {name!r}, which a {algo} agent has not")
            with torch.no_grad():
                getattr(agent, name).copy_(torch.tensor(value, dtype=torch.float64))
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as err:
        raise CheckpointError(
            f"{str(path)!r}: the weights do not load into its {algo} policy ({err})."
        ) from err
    for key, attr in _COUNTERS.items():
        if key in manifest["state"]:
            setattr(agent, attr, manifest["state"][key])
    return agent


def _algorithm_of(data: dict[str, Any]) -> type[BaseAlgorithm]:
    """The SB3 class a saved zip's data belongs to (PPO, A2C, DQN, SAC or TD3)."""
    if "target_entropy" in data:
        return SAC
    if "policy_delay" in data:
        return TD3
    if "target_update_interval" in data or "exploration_rate" in data:
        return DQN
    if "clip_range" in data:
        return PPO
    return A2C


def _load_sb3_zip(path: Path, device: str) -> BaseAlgorithm:
    from stable_baselines3.common.save_util import load_from_zip_file

    warnings.warn(
        f"loading the SB3 zip {str(path)!r} unpickles it, which can execute code: do this only "
        "for files you trust (save_agent writes an agent directory that loads without pickle).",
        UserWarning,
        stacklevel=3,
    )
    try:
        data, _, _ = load_from_zip_file(path, device=device, load_data=True)
    except Exception as err:  # noqa: BLE001 - any unreadable zip means the same to the user
        raise CheckpointError(f"{str(path)!r} is not a saved SB3 agent ({err}).") from err
    cls = _algorithm_of(data or {})
    try:
        return cls.load(path, device=device)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"{str(path)!r} could not be loaded as {cls.__name__} ({err})."
        ) from err
