"""Shared fixtures: one small real Pong store and one tiny fitted checkpoint per session.

Everything here is sized for a 2-core CPU: a few hundred real steps, a "tiny" model and a
handful of updates. Tests that change a store or checkpoint copy it to ``tmp_path`` first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import dreamenv
from dreamenv import AtariSpec, FitConfig

# The tiny models of the tests run as fast on one thread as on two, and a second OpenMP
# thread busy-waits whenever the (2-core) machine is shared with ale-py's threads or other
# processes, which makes small convolutions ~50x slower.
torch.set_num_threads(1)

STORE_STEPS = 400
"""Real agent steps in the session store."""

STORE_SPEC = AtariSpec("pong", max_episode_frames=600)
"""Pong with short episodes (150 agent steps), so the store holds complete episodes."""

TINY_FIT = FitConfig(
    epochs=2,
    warmup_epochs=1,
    batch_size=4,
    seq_len=4,
    updates_per_epoch=3,
    start_bank_size=16,
    start_context=4,
)
"""The smallest training run that exercises warm-up and joint training."""


@pytest.fixture(scope="session")
def store_spec() -> AtariSpec:
    """The preprocessing spec of :func:`store_dir`."""
    return STORE_SPEC


@pytest.fixture(scope="session")
def tiny_fit_config() -> FitConfig:
    """The training settings of :func:`checkpoint_dir`."""
    return TINY_FIT


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A collected real Pong episode store (read only: copy it before changing it)."""
    path = tmp_path_factory.mktemp("store") / "pong"
    dreamenv.collect(path, STORE_SPEC, STORE_STEPS, num_envs=2, chunk_steps=64, progress=False)
    return path


@pytest.fixture(scope="session")
def checkpoint_dir(store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny world model fitted on :func:`store_dir` (read only: copy it before changing it)."""
    path = tmp_path_factory.mktemp("checkpoint") / "model"
    dreamenv.fit(store_dir, path, preset="tiny", config=TINY_FIT, progress=False)
    return path


@pytest.fixture(scope="session")
def ending_ckpt(checkpoint_dir: Path) -> dreamenv.Checkpoint:
    """The session checkpoint, loaded, with its dream ending an episode with probability 0.1
    per step: the tiny model's termination head starts at the store's rate (one end in 150
    steps) and six updates hardly move it, so tests of what happens when a dream episode
    terminates take this one instead of waiting hundreds of steps for an end (read only)."""
    ckpt = dreamenv.load_checkpoint(checkpoint_dir)
    ckpt.model.set_termination_rate(0.1, 1)
    return ckpt


@pytest.fixture(scope="session")
def family_checkpoint(
    store_dir: Path, tmp_path_factory: pytest.TempPathFactory, tiny_fit_config
) -> Callable[[str], Path]:
    """``family -> checkpoint``: the tiny preset of that family fitted on the session store
    through the command line (once per family and session; read only)."""
    root = tmp_path_factory.mktemp("families")
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            out = root / family
            cfg = tiny_fit_config
            from dreamenv.cli import main as cli_main

            code = cli_main(
                [
                    "--quiet",
                    "fit",
                    str(store_dir),
                    "--out",
                    str(out),
                    "--family",
                    family,
                    "--preset",
                    "tiny",
                    "--epochs",
                    str(cfg.epochs),
                    "--warmup-epochs",
                    str(cfg.warmup_epochs),
                    "--batch-size",
                    str(cfg.batch_size),
                    "--seq-len",
                    str(cfg.seq_len),
                    "--updates-per-epoch",
                    str(cfg.updates_per_epoch),
                    "--start-bank",
                    str(cfg.start_bank_size),
                ]
            )
            assert code == 0
            made[family] = out
        return made[family]

    return get


GYM_FIT = FitConfig(
    epochs=1,
    warmup_epochs=0,
    batch_size=4,
    seq_len=4,
    updates_per_epoch=2,
    start_bank_size=8,
    start_context=4,
)
"""The smallest fit of a gymnasium env's store (no warm-up phase)."""


@pytest.fixture(scope="session")
def gym_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``(env_id, family, model_overrides=None, **spec_options) -> checkpoint``: 160 random real steps of that env
    fitted with the family's tiny preset (once per session and arguments; read only)."""
    from dreamenv.envs.spec import make_spec

    root = tmp_path_factory.mktemp("gym")
    made: dict[str, Path] = {}

    def get(
        env_id: str, family: str, model_overrides: dict | None = None, **spec_options: object
    ) -> Path:
        key = repr((env_id, family, model_overrides, sorted(spec_options.items())))
        if key not in made:
            out = root / str(len(made))
            spec = make_spec(env_id, **spec_options)  # type: ignore[arg-type]
            dreamenv.collect(out / "data", spec, 160, num_envs=2, chunk_steps=64, progress=False)
            made[key] = dreamenv.fit(
                out / "data",
                out / "model",
                family=family,
                preset="tiny",
                model_overrides=model_overrides,
                config=GYM_FIT,
                progress=False,
            )
        return made[key]

    return get
