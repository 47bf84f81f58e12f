"""Fitting a world model: metrics, resuming, continuing, refusing foreign directories."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import dreamenv
from dreamenv import CheckpointError, ConfigError, FitConfig, load_checkpoint
from dreamenv.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from dreamenv.train.fit import METRICS_FILE, OPTIMIZER_FILE, STATE_FILE, fit_config_from_dict

VAL_COLUMNS = ("val_recon_loss", "val_latent_acc", "val_reward_acc", "val_termination_acc")


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path / METRICS_FILE, newline="") as f:
        return list(csv.DictReader(f))


def _progress(path: Path) -> dict[str, int]:
    return json.loads((path / STATE_FILE).read_text())["progress"]


@pytest.fixture
def run_dir(checkpoint_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session's finished run, free to continue or damage."""
    target = tmp_path / "model"
    shutil.copytree(checkpoint_dir, target)
    return target


def test_fit_writes_one_metrics_row_per_epoch(checkpoint_dir: Path, tiny_fit_config) -> None:
    rows = _metrics(checkpoint_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [r["phase"] for r in rows] == ["warmup", "joint"]
    assert [int(r["updates"]) for r in rows] == [3, 6]
    for column in VAL_COLUMNS:
        assert column in rows[0], column
        for row in rows:
            assert float(row[column]) >= 0.0
    for row in rows:
        for column in ("val_latent_acc", "val_reward_acc", "val_termination_acc"):
            assert 0.0 <= float(row[column]) <= 1.0
    state = json.loads((checkpoint_dir / STATE_FILE).read_text())
    assert state["progress"] == {"epoch": 2, "update": 0, "updates_total": 6}
    assert fit_config_from_dict(state["fit_config"]) == tiny_fit_config
    assert state["preset"] == "tiny"


def test_fit_output_is_a_loadable_checkpoint(checkpoint_dir: Path, store_dir: Path) -> None:
    ckpt = load_checkpoint(checkpoint_dir)
    assert ckpt.config["training"]["epochs_done"] == 2
    assert ckpt.config["training"]["steps"] == 400
    assert Path(ckpt.config["training"]["store"]) == store_dir
    assert ckpt.model.config == dreamenv.models.DiscreteWorldModel.presets["tiny"]


def test_second_fit_of_a_finished_run_does_nothing(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=tiny_fit_config, progress=False)
    after = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert after == before


def test_fit_with_more_epochs_continues(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    old_rows = _metrics(run_dir)
    config = dataclasses.replace(tiny_fit_config, epochs=3)
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=config, progress=False)
    rows = _metrics(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[:2] == old_rows
    assert rows[2]["phase"] == "joint"
    assert int(rows[2]["updates"]) == 9
    assert _progress(run_dir) == {"epoch": 3, "update": 0, "updates_total": 9}
    assert load_checkpoint(run_dir).config["training"]["epochs_done"] == 3


def _saved_before_keep_logit(run_dir: Path) -> None:
    """Make ``run_dir`` the discrete model of an earlier version: no keep_logit, an
    optimiser without it."""
    weights = run_dir / WEIGHTS_FILE
    tensors = load_file(str(weights))
    del tensors["dynamics.keep_logit"]
    save_file(tensors, str(weights))
    optimizer = run_dir / OPTIMIZER_FILE
    with safe_open(str(optimizer), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    groups = json.loads(meta["param_groups"])
    groups[0]["params"] = groups[0]["params"][:-1]
    save_file(state, str(optimizer), metadata={**meta, "param_groups": json.dumps(groups)})


def test_fit_continues_a_run_saved_before_keep_logit(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    _saved_before_keep_logit(run_dir)
    weights = run_dir / WEIGHTS_FILE
    config = dataclasses.replace(tiny_fit_config, epochs=3)
    with pytest.warns(UserWarning, match="the optimiser restarts, the model's weights are kept"):
        dreamenv.fit(store_dir, run_dir, preset="tiny", config=config, progress=False)
    assert [int(r["epoch"]) for r in _metrics(run_dir)] == [1, 2, 3]
    assert "dynamics.keep_logit" in load_file(str(weights))


def test_fit_of_a_finished_old_run_leaves_its_optimiser_alone(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    _saved_before_keep_logit(run_dir)
    before = (run_dir / OPTIMIZER_FILE).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to train: no optimiser to restart
        dreamenv.fit(store_dir, run_dir, preset="tiny", config=tiny_fit_config, progress=False)
    assert (run_dir / OPTIMIZER_FILE).read_bytes() == before


def _more(config: FitConfig) -> FitConfig:
    return dataclasses.replace(config, epochs=config.epochs + 1)


def test_fit_refuses_a_run_of_another_family(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    with pytest.raises(
        CheckpointError,
        match=r"holds a 'discrete' model of 'pong'; this run trains 'rssm' on 'pong'",
    ):
        dreamenv.fit(
            store_dir, run_dir, family="rssm", config=_more(tiny_fit_config), progress=False
        )


def test_fit_refuses_a_run_of_another_game(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    config["spec"]["game"] = "breakout"
    (run_dir / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"holds a 'discrete' model of 'breakout'; this run trains 'discrete' on 'pong'",
    ):
        dreamenv.fit(
            store_dir, run_dir, preset="tiny", config=_more(tiny_fit_config), progress=False
        )


def test_fit_refuses_a_finished_checkpoint_without_trainer_state(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    (run_dir / STATE_FILE).unlink()
    with pytest.raises(
        CheckpointError, match="already holds a finished checkpoint without trainer"
    ):
        dreamenv.fit(
            store_dir, run_dir, preset="tiny", config=_more(tiny_fit_config), progress=False
        )


def test_fit_of_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(dreamenv.DatasetError, match="No episode store at"):
        dreamenv.fit(tmp_path / "nothing", tmp_path / "model", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, r"FitConfig.epochs must be a positive int, got 0"),
        ({"batch_size": 2.0}, r"FitConfig.batch_size must be a positive int, got 2.0"),
        ({"epochs": 2, "warmup_epochs": 3}, r"warmup_epochs must be an int in \[0, epochs=2\]"),
        ({"lr": 0.0}, r"learning rates must be positive"),
    ],
)
def test_bad_fit_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FitConfig(**kwargs)


_KILLED_FIT = """
import sys
import torch
torch.set_num_threads(1)
import dreamenv
from dreamenv import FitConfig
config = FitConfig(epochs=2, warmup_epochs=1, batch_size=4, seq_len=4, updates_per_epoch=6,
                   start_bank_size=16, start_context=4, checkpoint_every_minutes=0.0)
dreamenv.fit(sys.argv[1], sys.argv[2], preset="tiny", config=config, progress=False)
"""


def _saved(out: Path) -> bool:
    """True once fit has completed a save (its trainer state says so)."""
    try:
        return bool(json.loads((out / STATE_FILE).read_text()).get("saved"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def test_fit_killed_with_sigkill_resumes(store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_FIT, str(store_dir), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not _saved(out) and proc.poll() is None:
            assert time.monotonic() < deadline, "fit saved no checkpoint"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    killed_at = _progress(out)
    assert killed_at["updates_total"] < 12, "the run finished before it was killed"
    load_checkpoint(out)  # every save is a complete checkpoint

    config = FitConfig(
        epochs=2,
        warmup_epochs=1,
        batch_size=4,
        seq_len=4,
        updates_per_epoch=6,
        start_bank_size=16,
        start_context=4,
        checkpoint_every_minutes=0.0,
    )
    dreamenv.fit(store_dir, out, preset="tiny", config=config, progress=False)
    assert _progress(out) == {"epoch": 2, "update": 0, "updates_total": 12}
    rows = _metrics(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["updates"]) for r in rows] == [6, 12]
    assert [r["phase"] for r in rows] == ["warmup", "joint"]
    for column in VAL_COLUMNS:
        assert all(r[column] != "" for r in rows)
    ckpt = load_checkpoint(out)
    assert ckpt.config["training"]["epochs_done"] == 2


def test_fit_killed_during_its_first_save_resumes(
    store_dir: Path, tmp_path: Path, tiny_fit_config: FitConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit_module = importlib.import_module("dreamenv.train.fit")  # the package exports fit()
    real_write_json = fit_module.write_json

    def killed_before_state(path: Path, data: dict) -> None:
        if Path(path).name == STATE_FILE and data.get("saved"):
            raise KeyboardInterrupt("killed")  # dies after the checkpoint, before its state
        real_write_json(path, data)

    out = tmp_path / "model"
    monkeypatch.setattr(fit_module, "write_json", killed_before_state)
    with pytest.raises(KeyboardInterrupt):
        dreamenv.fit(store_dir, out, preset="tiny", config=tiny_fit_config, progress=False)
    monkeypatch.setattr(fit_module, "write_json", real_write_json)
    assert (out / CONFIG_FILE).is_file() and not _saved(out)

    dreamenv.fit(store_dir, out, preset="tiny", config=tiny_fit_config, progress=False)
    assert _progress(out)["epoch"] == tiny_fit_config.epochs
