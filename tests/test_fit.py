"""Fitting a world model: metrics, resuming, continuing, refusing foreign directories."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import multiprocessing
import random
import re
import shutil
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import dreamenv
from dreamenv import CheckpointError, ConfigError, DatasetError, FitConfig, load_checkpoint
from dreamenv.atomic_files import set_file
from dreamenv.checkpoint import BANK_FILE, CONFIG_FILE, WEIGHTS_FILE
from dreamenv.data.sequences import SequenceSampler
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


def _state(path: Path) -> dict:
    return json.loads((path / STATE_FILE).read_text())


def test_fit_saves_its_settings_and_random_state(checkpoint_dir: Path) -> None:
    state = _state(checkpoint_dir)
    assert state["family"] == "discrete"
    assert state["preset"] == "tiny"
    assert state["model_overrides"] == {}
    assert set(state["random"]) == {"torch", "sampler"}
    assert state["random"]["sampler"]["bit_generator"] == "PCG64"
    config = json.loads((checkpoint_dir / CONFIG_FILE).read_text())
    assert config["files"] == sorted([WEIGHTS_FILE, BANK_FILE, OPTIMIZER_FILE, STATE_FILE])
    assert config["training"]["updates"] == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "small"}, r"preset='tiny' then, 'small' now"),
        (
            {"model_overrides": {"lstm_channels": 12}},
            r"model_overrides=\{\} then, \{'lstm_channels': 12\} now",
        ),
        ({"config_changes": {"lr": 1e-3}}, r"lr=0\.0003 then, 0\.001 now"),
        ({"config_changes": {"seed": 1}}, r"seed=0 then, 1 now"),
        ({"config_changes": {"warmup_epochs": 0}}, r"warmup_epochs=1 then, 0 now"),
        (
            {"config_changes": {"epochs": 1, "warmup_epochs": 1}},
            r"epochs=2 then, 1 now \(epochs may only grow\)",
        ),
    ],
)
def test_fit_refuses_to_continue_a_run_with_other_settings(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig, kwargs: dict, message: str
) -> None:
    changes = {"epochs": 3, **kwargs.pop("config_changes", {})}
    config = dataclasses.replace(tiny_fit_config, **changes)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(ConfigError, match=message) as err:
        dreamenv.fit(
            store_dir, run_dir, **{"preset": "tiny", **kwargs}, config=config, progress=False
        )
    assert "another output directory (--out) to start a new run" in str(err.value)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_fit_refuses_other_model_settings_of_a_run_saved_without_them(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    state = _state(run_dir)
    del state["model_overrides"]  # as saved by an earlier version
    (run_dir / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"model setting lstm_channels=\d+ then, 12 now"):
        dreamenv.fit(
            store_dir,
            run_dir,
            preset="tiny",
            model_overrides={"lstm_channels": 12},
            config=_more(tiny_fit_config),
            progress=False,
        )


def test_fit_continues_a_run_saved_by_the_previous_version(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    state = _state(run_dir)
    for key in ("family", "model_overrides", "random", "epoch_losses"):
        del state[key]
    (run_dir / STATE_FILE).write_text(json.dumps(state))
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    del config["files"]
    (run_dir / CONFIG_FILE).write_text(json.dumps(config))
    assert load_checkpoint(run_dir).config["training"]["epochs_done"] == 2
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=_more(tiny_fit_config), progress=False)
    assert _progress(run_dir) == {"epoch": 3, "update": 0, "updates_total": 9}
    assert set(_state(run_dir)) >= {"family", "model_overrides", "random"}


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_fit_continues_with_other_save_intervals_and_precision(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig, precision: str
) -> None:
    config = dataclasses.replace(
        tiny_fit_config,
        epochs=3,
        checkpoint_every_minutes=0.0,
        checkpoint_every_epochs=2,
        precision=precision,
    )
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=config, progress=False)
    assert _progress(run_dir) == {"epoch": 3, "update": 0, "updates_total": 9}


def test_fit_continues_as_the_loop_calls_it(
    store_dir: Path, tmp_path: Path, tiny_fit_config
) -> None:
    from dreamenv.train.loop import LoopConfig

    loop = LoopConfig(wm_epochs=(1, 2), warmup_epochs=5)
    out = tmp_path / "model"
    for iteration in (1, 2, 2):  # the last: an iteration redone after a crash past its fit
        config = dataclasses.replace(
            tiny_fit_config,
            epochs=loop.epochs_until(iteration),
            warmup_epochs=min(loop.warmup_epochs, loop.epochs_until(1)),
        )
        dreamenv.fit(store_dir, out, preset="tiny", config=config, progress=False)
        assert _progress(out)["epoch"] == loop.epochs_until(iteration)
    assert [r["phase"] for r in _metrics(out)] == ["warmup", "joint", "joint"]


def _held_frames(store_dir: Path) -> torch.Tensor:
    """64 frame stacks of the store, as the model encodes them."""
    store = dreamenv.EpisodeStore.open(store_dir)
    sampler = SequenceSampler(store.episodes(), store.spec.frame_stack, 15, seed=0)
    return torch.as_tensor(sampler.sample(4)["frames"]).flatten(0, 1)


def test_fit_holding_the_representation_trains_only_the_dynamics(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    frames = _held_frames(store_dir)
    before = load_checkpoint(run_dir).model
    codes = before.served_indices(frames)
    config = dataclasses.replace(tiny_fit_config, epochs=4, representation=False)
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=config, progress=False)
    after = load_checkpoint(run_dir).model
    assert [r["phase"] for r in _metrics(run_dir)] == ["warmup", "joint", "dynamics", "dynamics"]
    assert torch.equal(after.served_indices(frames), codes)
    held = ("encoder.", "decoder.", "quantizer.")
    new, old = after.state_dict(), before.state_dict()
    for name, tensor in old.items():
        if name.startswith(held):
            assert torch.equal(new[name], tensor), name
    assert not torch.equal(new["dynamics.keep_logit"], old["dynamics.keep_logit"])
    trained = [n for n in old if n.startswith("dynamics.") and not torch.equal(new[n], old[n])]
    assert len(trained) > 5, trained


def test_a_held_fit_encodes_its_data_once_and_trains_as_on_frames(
    checkpoint_dir: Path, store_dir: Path
) -> None:
    from dreamenv.train.fit import _served_latents

    model = load_checkpoint(checkpoint_dir).model
    store = dreamenv.EpisodeStore.open(store_dir)
    episodes, stack = store.episodes(), store.spec.frame_stack
    latents = _served_latents(model, episodes, stack)
    assert [len(z) for z in latents] == [len(e) + 1 for e in episodes]
    plain = SequenceSampler(episodes, stack, 5, seed=3, reward_windows=0.5)
    held = SequenceSampler(episodes, stack, 5, seed=3, reward_windows=0.5, latents=latents)
    a, b = plain.sample(6), held.sample(6)
    assert "frames" not in b and b["latents"].shape == (6, 6, model.grid, model.grid)
    for key in ("actions", "rewards", "terminated", "mask"):
        assert (a[key] == b[key]).all(), key
    frames = torch.as_tensor(a["frames"]).flatten(0, 1)
    assert torch.equal(model.served_latents(frames).view(6, 6, model.grid, model.grid),
                       torch.as_tensor(b["latents"]))  # fmt: skip
    on_frames = model.loss({k: torch.as_tensor(v) for k, v in a.items()}, "dynamics", 1)
    on_latents = model.loss({k: torch.as_tensor(v) for k, v in b.items()}, "dynamics", 1)
    assert on_frames.keys() == on_latents.keys()
    for key, value in on_frames.items():
        assert torch.allclose(value, on_latents[key]), key


def test_a_held_fit_of_a_finished_run_encodes_nothing(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit_module = importlib.import_module("dreamenv.train.fit")
    held = dataclasses.replace(tiny_fit_config, epochs=3, representation=False)
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=held, progress=False)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}

    def refuse(*args):
        raise AssertionError("a finished run has nothing to encode")

    monkeypatch.setattr(fit_module, "_served_latents", refuse)
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=held, progress=False)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_latents_that_miss_an_observation_are_refused(store_dir: Path) -> None:
    store = dreamenv.EpisodeStore.open(store_dir)
    episodes = store.episodes()
    latents = [np.zeros((len(e) + 1, 2, 2), np.int64) for e in episodes]
    latents[0] = latents[0][1:]
    with pytest.raises(
        DatasetError,
        match=rf"latents of an episode of {len(episodes[0])} steps must hold "
        rf"{len(episodes[0]) + 1} observations' latents, got {len(episodes[0])}\.",
    ):
        SequenceSampler(episodes, store.spec.frame_stack, 5, latents=latents)


def test_fit_trains_the_representation_again_when_asked(
    run_dir: Path, store_dir: Path, tiny_fit_config: FitConfig
) -> None:
    held = dataclasses.replace(tiny_fit_config, epochs=3, representation=False)
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=held, progress=False)
    encoder = load_checkpoint(run_dir).model.encoder.state_dict()
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=_more(held), progress=False)
    assert [r["phase"] for r in _metrics(run_dir)][2:] == ["dynamics", "dynamics"]
    joint = dataclasses.replace(held, epochs=5, representation=True)
    dreamenv.fit(store_dir, run_dir, preset="tiny", config=joint, progress=False)
    assert _metrics(run_dir)[-1]["phase"] == "joint"
    moved = load_checkpoint(run_dir).model.encoder.state_dict()
    assert any(not torch.equal(moved[k], v) for k, v in encoder.items())


def test_fit_refuses_to_hold_an_untrained_representation(
    store_dir: Path, tmp_path: Path, tiny_fit_config: FitConfig
) -> None:
    config = dataclasses.replace(tiny_fit_config, representation=False)
    with pytest.raises(
        ConfigError,
        match=r"representation=False holds a trained representation, but .* not trained yet "
        r"\(0 of 1 warm-up epochs done\)\. Train it first with representation=True",
    ):
        dreamenv.fit(store_dir, tmp_path / "new", preset="tiny", config=config, progress=False)
    assert not (tmp_path / "new").exists()


def test_fit_refuses_to_hold_a_representation_trained_with_the_dynamics(
    store_dir: Path, tmp_path: Path, tiny_fit_config: FitConfig
) -> None:
    out = tmp_path / "rssm"
    dreamenv.fit(
        store_dir, out, family="rssm", preset="tiny", config=tiny_fit_config, progress=False
    )
    config = dataclasses.replace(tiny_fit_config, epochs=3, representation=False)
    with pytest.raises(
        ConfigError,
        match=r"the 'rssm' family trains its representation with its dynamics and cannot hold "
        r"it; families that can: \['discrete'\]",
    ):
        dreamenv.fit(store_dir, out, family="rssm", preset="tiny", config=config, progress=False)


def test_cli_fit_names_the_warmup_flag(store_dir: Path, tmp_path: Path, capsys) -> None:
    from dreamenv.cli import main

    out = tmp_path / "model"
    assert main(["--quiet", "fit", str(store_dir), "--out", str(out), "--epochs", "1"]) == 2
    assert re.search(
        r"--warmup-epochs 5 exceeds --epochs 1; pass --warmup-epochs 0 \(or at most 1\)",
        capsys.readouterr().err,
    )
    assert not out.exists()


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / WEIGHTS_FILE))


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    oa, ob = load_file(str(a / OPTIMIZER_FILE)), load_file(str(b / OPTIMIZER_FILE))
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)
    assert _metrics(a) == _metrics(b)


def test_fit_interrupted_in_a_save_resumes_the_same_run(
    store_dir: Path,
    checkpoint_dir: Path,
    tmp_path: Path,
    tiny_fit_config: FitConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fit_module = importlib.import_module("dreamenv.train.fit")  # the package exports fit()
    real_write = fit_module._write_optimizer
    calls = []

    def killed_in_second_save(path: Path, optimizer) -> None:
        calls.append(path)
        if len(calls) == 2:  # the set of epoch 2 half written: weights, bank, no optimizer
            raise KeyboardInterrupt("killed")
        real_write(path, optimizer)

    out = tmp_path / "model"
    monkeypatch.setattr(fit_module, "_write_optimizer", killed_in_second_save)
    with pytest.raises(KeyboardInterrupt):
        dreamenv.fit(store_dir, out, preset="tiny", config=tiny_fit_config, progress=False)
    monkeypatch.setattr(fit_module, "_write_optimizer", real_write)
    assert _progress(out)["epoch"] == 1  # the first save, whole
    assert load_checkpoint(out).config["training"]["epochs_done"] == 1

    dreamenv.fit(store_dir, out, preset="tiny", config=tiny_fit_config, progress=False)
    assert _progress(out)["epoch"] == tiny_fit_config.epochs
    _assert_same_run(out, checkpoint_dir)


KILLED = FitConfig(
    epochs=3,
    warmup_epochs=1,
    batch_size=4,
    seq_len=4,
    updates_per_epoch=6,
    start_bank_size=16,
    start_context=4,
    checkpoint_every_minutes=0.0,  # a save after every update
)
"""The run that :func:`test_fit_killed_with_sigkill_resumes_the_same_run` kills."""


def _fit_to_be_killed(store: str, out: str) -> None:
    """The killed run, in a child process forked from a server that imported dreamenv."""
    torch.set_num_threads(1)
    dreamenv.fit(store, out, preset="tiny", config=KILLED, progress=False)


def _saved_updates(out: Path) -> int:
    """Updates of the last save in ``out`` (-1 before the first), read as a loader would."""
    try:
        return json.loads(set_file(out, STATE_FILE).read_text())["progress"]["updates_total"]
    except (OSError, AttributeError, ValueError):
        return -1


def _assert_one_save(out: Path) -> None:
    """``out`` loads, and its files are of one save, whenever it has a config."""
    config = set_file(out, CONFIG_FILE)
    if config is None or not config.is_file():
        return
    ckpt = load_checkpoint(out)
    state = json.loads(set_file(out, STATE_FILE).read_text())
    assert ckpt.config["training"]["updates"] == state["progress"]["updates_total"]
    assert ckpt.config["training"]["epochs_done"] == state["progress"]["epoch"]


def test_fit_killed_with_sigkill_resumes_the_same_run(store_dir: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    uninterrupted = dataclasses.replace(KILLED, checkpoint_every_minutes=10.0)
    dreamenv.fit(store_dir, reference, preset="tiny", config=uninterrupted, progress=False)

    out = tmp_path / "model"
    rng = random.Random(0)
    processes = multiprocessing.get_context("forkserver")
    processes.set_forkserver_preload(
        ["dreamenv", "torch._dynamo"]
    )  # imported once (Adam needs dynamo)
    kills = 0
    for attempt in range(5):
        before = _saved_updates(out)
        proc = processes.Process(target=_fit_to_be_killed, args=(str(store_dir), str(out)))
        proc.start()
        try:
            deadline = time.monotonic() + 120
            # the first kill may land before the first save; the others after some progress
            while attempt and _saved_updates(out) <= before and proc.is_alive():
                assert time.monotonic() < deadline, "fit saved nothing"
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 1.0 if attempt == 0 else 0.06))
            proc.kill()
        finally:
            proc.join(60)
        assert proc.exitcode in (0, -signal.SIGKILL), f"fit failed: exit code {proc.exitcode}"
        kills += proc.exitcode == -signal.SIGKILL
        _assert_one_save(out)
    assert kills >= 4, "the run finished before it was killed"

    dreamenv.fit(store_dir, out, preset="tiny", config=KILLED, progress=False)
    assert _progress(out) == {"epoch": 3, "update": 0, "updates_total": 18}
    _assert_same_run(out, reference)


def test_cli_fit_passes_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from dreamenv.cli import main

    fit_module = importlib.import_module("dreamenv.train.fit")  # the package's fit is the function
    seen: list[FitConfig] = []

    def capture(store, out, **kwargs):
        seen.append(kwargs["config"])
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "fit", capture)
    for flags in ([], ["--precision", "bfloat16"], ["--hold-representation"]):
        with pytest.raises(KeyboardInterrupt):
            main(["fit", "store", "--out", str(tmp_path / "m"), "--warmup-epochs", "0", *flags])
    assert [c.precision for c in seen] == ["float32", "bfloat16", "float32"]
    assert [c.representation for c in seen] == [True, True, False]
