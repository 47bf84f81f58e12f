"""Errors raised by dreamenv.

Every error names what was wrong, what was expected, what came, and how to fix it.
All derive from :class:`DreamEnvError`, so ``except dreamenv.DreamEnvError`` catches them.
"""

from __future__ import annotations


class DreamEnvError(Exception):
    """Base class of every error dreamenv raises on purpose."""


class CheckpointError(DreamEnvError):
    """A model checkpoint directory is missing, truncated, or of another kind."""


class DatasetError(DreamEnvError):
    """An episode store is missing, damaged, or does not match the requested collection."""


class ConfigError(DreamEnvError, ValueError):
    """A configuration value (preset, option, hyperparameter) is invalid."""


class InvalidActionError(DreamEnvError, ValueError):
    """An action passed to ``step`` has the wrong shape, dtype, or value."""


class StateError(DreamEnvError):
    """An environment was used out of order (step before reset, a foreign state)."""
