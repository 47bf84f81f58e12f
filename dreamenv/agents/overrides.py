"""Keyword overrides of an agent's frozen config, checked by name (one rule for every agent).

Example:
    >>> config = with_overrides(CEMConfig(), {"horizon": 30}, "CEMPlanner")
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

from dreamenv.errors import ConfigError

Config = TypeVar("Config")


def with_overrides(config: Config, overrides: dict[str, Any], owner: str) -> Config:
    """``config`` with the fields ``overrides`` names replaced; an unknown name is a
    :class:`ConfigError` that lists the fields and suggests the closest one."""
    if not overrides:
        return config
    names = [f.name for f in dataclasses.fields(config)]  # type: ignore[arg-type]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"Unknown {owner} setting {unknown[0]!r}; the settings are {names}.{hint}"
        )
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]
