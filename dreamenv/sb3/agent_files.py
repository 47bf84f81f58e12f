"""Saved SB3 agents: writing and reading agent files.

Example:
    >>> agent = load_agent("runs/pong/agent.zip")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from dreamenv.errors import CheckpointError


def _algorithm_of(data: dict[str, Any]) -> type[BaseAlgorithm]:
    """The SB3 class a saved agent's data belongs to (PPO, A2C or DQN)."""
    if "target_update_interval" in data or "exploration_rate" in data:
        return DQN
    if "clip_range" in data:
        return PPO
    return A2C


def load_agent(path: str | Path, device: str = "cpu") -> BaseAlgorithm:
    """A saved SB3 agent; its algorithm (PPO, A2C or DQN) is read from the zip's data."""
    from stable_baselines3.common.save_util import load_from_zip_file

    path = Path(path)
    if not path.is_file() and path.with_suffix(".zip").is_file():
        path = path.with_suffix(".zip")
    if not path.is_file():
        raise CheckpointError(f"No agent at {str(path)!r}; train one with `dreamenv dream`.")
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


