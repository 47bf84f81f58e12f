"""Gymnasium's autoreset, written once: the dream and the real vector envs and the SB3 face.

:class:`AutoresetVectorEnv` owns the rules of a batched env: the three autoreset modes
(``NextStep``, ``SameStep``, ``Disabled``), ``reset(options={"reset_mask": mask})``,
per-env seeds, ``final_obs``/``final_info`` and the copy guarantee (every observation
handed out is a fresh array that nothing inside the env writes to later). A subclass is
only the engine: it starts episodes, advances every env one step and observes.

:func:`step_same_step` is the SB3 face of any gymnasium vector env: the step of a
``SameStep`` env (ended envs already restarted), with the last observation of every
ended episode, whatever the env's own mode.

Example:
    >>> class Engine(AutoresetVectorEnv):
    ...     def _reset_envs(self, index, seeds): ...
    ...     def _advance(self, actions, restarting): ...
    ...     def _autorestart(self, index): ...
    ...     def _observe(self, index=None): ...
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from dreamenv.errors import ConfigError, StateError

StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]
"""What an engine's ``_advance`` returns: reward, terminated, truncated, info."""


def parse_autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """An :class:`AutoresetMode` from itself or its value/name (``"NextStep"``, ``"same_step"``)."""
    if isinstance(mode, AutoresetMode):
        return mode
    for m in AutoresetMode:
        if str(mode).replace("_", "").lower() in (m.value.lower(), m.name.replace("_", "").lower()):
            return m
    raise ConfigError(
        f"autoreset_mode must be one of {[m.value for m in AutoresetMode]}, got {mode!r}."
    )


def parse_reset_mask(options: dict[str, Any] | None, num_envs: int) -> np.ndarray | None:
    """The validated ``options["reset_mask"]`` (None when absent)."""
    if not options or "reset_mask" not in options:
        return None
    mask = options["reset_mask"]
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (num_envs,):
        raise ConfigError(
            f"options['reset_mask'] must be a bool numpy array of shape ({num_envs},), got "
            f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {getattr(mask, 'shape', '')}."
        )
    if not mask.any():
        raise ConfigError("options['reset_mask'] must select at least one env.")
    return mask


def seed_list(
    seed: int | list[int | None] | None, num_envs: int, index: np.ndarray
) -> list[int | None]:
    """Seeds of envs ``index``: an int ``s`` seeds env ``i`` with ``s + i`` (gymnasium's
    convention); a list holds one seed per env (``num_envs`` entries)."""
    if seed is None:
        return [None] * len(index)
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + int(i) for i in index]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ConfigError(f"seed must be an int or a list of {num_envs} seeds, got {len(seeds)}.")
    return [seeds[i] for i in index]


def final_entries(final_obs: np.ndarray, done: np.ndarray) -> dict[str, Any]:
    """``SameStep``'s info entries: ``final_obs`` rows of the envs ``done`` (an object
    array, None elsewhere) and empty ``final_info``, with their ``_`` masks."""
    final = np.full(len(done), None, dtype=object)
    for j, i in enumerate(np.flatnonzero(done)):
        final[i] = final_obs[j]
    return {
        "final_obs": final,
        "_final_obs": done.copy(),
        "final_info": {},
        "_final_info": done.copy(),
    }


class AutoresetVectorEnv(VectorEnv):
    """A batched env whose reset, autoreset and seeding follow gymnasium's rules.

    A subclass sets ``num_envs``, the spaces and ``autoreset_mode`` (via
    :meth:`_init_autoreset`) and implements the engine:

    - ``_reset_envs(index, seeds) -> info``: start new episodes in envs ``index`` (a
      ``reset()``); ``seeds`` holds one seed (or None) per env of ``index``.
    - ``_advance(actions, restarting) -> (reward, terminated, truncated, info)``: one step of
      every env; the envs of the bool mask ``restarting`` (NextStep) start a new episode
      instead (what they report is overwritten here).
    - ``_autorestart(index)``: start new episodes in ``index`` right after their final
      observation was read (SameStep).
    - ``_observe(index=None) -> np.ndarray``: the current observations (of ``index``), as a
      fresh array.
    - ``_check_actions(actions) -> actions``: validated actions.
    """

    autoreset_mode: AutoresetMode

    def _init_autoreset(self, mode: AutoresetMode | str) -> None:
        self.autoreset_mode = parse_autoreset_mode(mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self._ended = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    # --- the engine ----------------------------------------------------------------------
    def _reset_envs(self, index: np.ndarray, seeds: list[int | None]) -> dict[str, Any]:
        raise NotImplementedError

    def _advance(self, actions: Any, restarting: np.ndarray) -> StepResult:
        raise NotImplementedError

    def _autorestart(self, index: np.ndarray) -> None:
        raise NotImplementedError

    def _observe(self, index: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def _check_actions(self, actions: Any) -> Any:
        return actions

    # --- the rules -----------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all envs, or those of ``options["reset_mask"]``; ``seed`` seeds them (an
        int ``s`` seeds env ``i`` with ``s + i``)."""
        mask = parse_reset_mask(options, self.num_envs)
        if mask is not None and not self._started:
            raise StateError("The first reset must reset every env; call reset() without a mask.")
        if seed is not None:
            super().reset(seed=int(seed) if isinstance(seed, (int, np.integer)) else None)
        index = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        info = self._reset_envs(index, seed_list(seed, self.num_envs, index))
        self._ended[index] = False
        self._started = True
        return self._observe(), info

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every env one step; ended envs restart as ``autoreset_mode`` says."""
        if not self._started:
            raise StateError("Cannot call step() before reset(); call reset() first.")
        actions = self._check_actions(actions)
        restarting = self._ended.copy()
        if restarting.any() and self.autoreset_mode == AutoresetMode.DISABLED:
            raise StateError(
                f"envs {np.flatnonzero(restarting).tolist()} have ended and autoreset_mode is "
                "Disabled; reset them first with reset(options={'reset_mask': mask})."
            )
        reward, terminated, truncated, info = self._advance(actions, restarting)
        reward = np.asarray(reward, dtype=np.float64).copy()
        terminated = np.asarray(terminated, dtype=bool).copy()
        truncated = np.asarray(truncated, dtype=bool).copy()
        reward[restarting] = 0.0  # NextStep: these envs started a new episode
        terminated[restarting] = False
        truncated[restarting] = False
        done = terminated | truncated
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            if done.any():
                index = np.flatnonzero(done)
                info = {**info, **final_entries(self._observe(index), done)}
                self._autorestart(index)
            self._ended[:] = False
        else:
            self._ended = done
        return self._observe(), reward, terminated, truncated, info


def step_same_step(
    env: VectorEnv, actions: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, Any], dict[str, Any]]:
    """One step of ``env`` as a ``SameStep`` env: observations, rewards, terminated,
    truncated, ``{i: last observation}`` of the envs whose episode ended, and the info.

    A ``NextStep`` env's ended envs are restarted at once with a reset mask (gymnasium's
    way), so the next step steps them; a ``SameStep`` env's ``final_obs`` is read.
    """
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode == AutoresetMode.DISABLED:
        raise ConfigError(
            "This needs a vector env that autoresets (NextStep or SameStep), got Disabled."
        )
    obs, reward, terminated, truncated, info = env.step(actions)
    done = np.logical_or(terminated, truncated)
    final: dict[int, Any] = {}
    if done.any():
        index = np.flatnonzero(done)
        if mode == AutoresetMode.SAME_STEP:
            final = {int(i): info["final_obs"][i] for i in index}
        else:
            final = {int(i): _row_copy(obs, int(i)) for i in index}
            new_obs, _ = env.reset(options={"reset_mask": done})
            obs = _merge_rows(obs, new_obs, done)
    return obs, reward, terminated, truncated, final, info


def _row_copy(obs: Any, i: int) -> Any:
    if isinstance(obs, dict):
        return {k: _row_copy(v, i) for k, v in obs.items()}
    return np.array(obs[i], copy=True)


def _merge_rows(old: Any, new: Any, mask: np.ndarray) -> Any:
    if isinstance(old, dict):
        return {k: _merge_rows(old[k], new[k], mask) for k in old}
    merged = np.array(old, copy=True)
    merged[mask] = new[mask]
    return merged
