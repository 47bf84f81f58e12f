"""Dream and real environments of a world-model checkpoint (imported lazily, so that
:mod:`dreamenv.envs.atari` can be used by the data and model modules without a cycle)."""

from typing import Any

_EXPORTS = {
    "AtariSpec": "dreamenv.envs.atari",
    "BouncingBallEnv": "dreamenv.envs.toy",
    "DreamEnv": "dreamenv.envs.dream",
    "DreamOptions": "dreamenv.envs.options",
    "DreamVectorEnv": "dreamenv.envs.vector",
    "GoalConditioned": "dreamenv.envs.goals",
    "RealEnv": "dreamenv.envs.real",
    "RealVectorEnv": "dreamenv.envs.real",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dreamenv.envs' has no attribute {name!r}")
