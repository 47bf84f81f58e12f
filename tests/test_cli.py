"""The `dreamenv` command end to end on a tiny run: collect, fit, info, dream, evaluate."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dreamenv.cli import main


def test_console_script_is_installed() -> None:
    exe = shutil.which("dreamenv")
    assert exe is not None, "the dreamenv console script is not on PATH; pip install -e ."
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("collect", "fit", "info", "dream", "evaluate"):
        assert command in out


def test_collect_fit_dream_evaluate(tmp_path, capsys) -> None:
    data, model, agent = tmp_path / "data", tmp_path / "model", tmp_path / "agent"
    assert (
        main(
            [
                "--quiet",
                "collect",
                "pong",
                "--out",
                str(data),
                "--steps",
                "400",
                "--envs",
                "2",
                "--chunk-steps",
                "200",
            ]
        )
        == 0
    )
    assert "400 steps" in capsys.readouterr().out
    assert (
        main(
            [
                "--quiet",
                "fit",
                str(data),
                "--out",
                str(model),
                "--preset",
                "tiny",
                "--epochs",
                "2",
                "--warmup-epochs",
                "1",
                "--batch-size",
                "4",
                "--seq-len",
                "4",
                "--updates-per-epoch",
                "2",
                "--start-bank",
                "16",
            ]
        )
        == 0
    )
    assert (model / "config.json").is_file()
    assert main(["info", str(model)]) == 0
    info = capsys.readouterr().out
    assert "dynamics" in info and "total" in info and "pong" in info
    assert re.search(r"start bank  \d+ starts x 8 observations \(\d+ of them where a real", info)
    assert (
        main(["--quiet", "dream", str(model), "--out", str(agent), "--steps", "100", "--envs", "2"])
        == 0
    )
    assert (agent / "agent.json").is_file()
    result = tmp_path / "eval.json"
    assert (
        main(
            [
                "--quiet",
                "evaluate",
                str(model),
                str(agent),
                "--episodes",
                "2",
                "--envs",
                "2",
                "--max-steps",
                "30",
                "--json",
                str(result),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| random |" in out and "Welch's t = " in out and "p = " in out
    returns = json.loads(result.read_text())
    assert len(returns["agent"]) == 2 and len(returns["random"]) == 2
    # an agent trained elsewhere keeps training from where it was, logging to TensorBoard
    tb = tmp_path / "tb"
    assert (
        main(
            ["--quiet", "dream", str(model), "--out", str(agent), "--steps", "100"]
            + ["--tensorboard", str(tb)]
        )
        == 0
    )
    assert "continuing the ppo agent" in capsys.readouterr().out
    assert list(tb.glob("PPO_*/events.out.tfevents.*"))
    # and collects real data
    more = tmp_path / "more"
    assert (
        main(
            ["--quiet", "collect", "pong", "--out", str(more), "--steps", "20", "--envs", "2"]
            + ["--agent", str(agent), "--checkpoint", str(model)]
        )
        == 0
    )
    assert "20 steps" in capsys.readouterr().out


def test_errors_exit_2_with_a_message(tmp_path, capsys) -> None:
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["--quiet", "collect", "pongg", "--out", str(tmp_path / "d"), "--steps", "10"]) == 2
    assert "Did you mean 'pong'" in capsys.readouterr().err


def test_collect_agent_needs_checkpoint(tmp_path) -> None:
    with pytest.raises(SystemExit, match="--agent needs --checkpoint"):
        main(["collect", "pong", "--out", str(tmp_path / "d"), "--steps", "10", "--agent", "x.zip"])


def test_collect_holds_random_actions(tmp_path) -> None:
    out = tmp_path / "d"
    argv = ["--quiet", "collect", "Pendulum-v1", "--out", str(out), "--steps", "64", "--envs", "2"]
    assert main([*argv, "--hold", "1000"]) == 0
    from dreamenv.data.store import EpisodeStore

    actions = np.concatenate([e.actions for e in EpisodeStore.open(out).episodes()])
    assert len(np.unique(actions)) <= 4  # one held action per env, rarely redrawn
    with pytest.raises(SystemExit, match=r"--hold: hold must be a number of steps >= 1"):
        main([*argv, "--hold", "0.5"])
    with pytest.raises(SystemExit, match="--hold sets the random policy; drop it with --agent"):
        main([*argv, "--hold", "4", "--agent", "a", "--checkpoint", "c"])


def test_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dreamenv.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "evaluate" in out


@pytest.mark.parametrize(("flags", "kept"), [([], 1), (["--release-memory"], 0)])
def test_cli_keeps_freed_memory_unless_told(tmp_path, monkeypatch, flags, kept) -> None:
    from dreamenv import memory

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    assert main([*flags, "info", str(tmp_path / "missing")]) == 2
    assert len(calls) == kept


def _dream(checkpoint: Path, out: Path, *flags: str) -> int:
    return main(["--quiet", "dream", str(checkpoint), "--out", str(out), "--steps", "100", *flags])


def test_dream_continues_the_agent_at_out(checkpoint_dir: Path, tmp_path: Path, capsys) -> None:
    from dreamenv.sb3 import load_agent

    out = tmp_path / "runs" / "agent"
    assert _dream(checkpoint_dir, out, "--envs", "2") == 0
    assert load_agent(out).num_timesteps == 100  # one rollout of 2 envs x 50 steps
    assert _dream(checkpoint_dir, out) == 0  # the agent's own 2 envs
    assert f"continuing the ppo agent {out} (100 imagined steps so far)" in capsys.readouterr().out
    assert load_agent(out).num_timesteps == 200
    assert _dream(checkpoint_dir, out, "--algo", "a2c") == 2
    assert "holds a ppo agent, --algo asks for a2c" in capsys.readouterr().err
    assert _dream(checkpoint_dir, out, "--restart", "--envs", "2") == 0
    assert f"a new agent replaces {out}" in capsys.readouterr().out
    assert load_agent(out).num_timesteps == 100
    assert _dream(checkpoint_dir, tmp_path / "agent.zip") == 2
    assert "ends in .zip, SB3's pickle format; a dreamenv agent is a directory" in (
        capsys.readouterr().err
    )


def test_an_sb3_zip_agent_needs_allow_pickle(checkpoint_dir: Path, tmp_path: Path, capsys) -> None:
    from dreamenv.sb3 import load_agent, save_agent

    _dream(checkpoint_dir, tmp_path / "new", "--envs", "2")
    save_agent(load_agent(tmp_path / "new"), tmp_path / "old.zip", format="sb3")
    old = tmp_path / "old"  # as SB3 users passed it: SB3 wrote old.zip
    assert _dream(checkpoint_dir, old) == 2
    assert "can execute code. Pass --allow-pickle" in capsys.readouterr().err
    for command in (["evaluate", str(checkpoint_dir), str(old)], ["video", str(checkpoint_dir)]):
        extra = ["--agent", str(old)] if command[0] == "video" else []
        assert main(["--quiet", *command, *extra]) == 2
        assert "--allow-pickle" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="can execute code"):
        assert _dream(checkpoint_dir, old, "--allow-pickle") == 0
    assert "continuing the ppo agent" in capsys.readouterr().out
    assert load_agent(old).num_timesteps == 200  # now an agent directory


class _Stop(Exception):
    pass


def test_dream_options_come_whole_with_dreamoptions_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dreamenv.sb3
    from dreamenv import DreamOptions

    seen: list[dict] = []

    def capture(checkpoint, steps, **kwargs):
        seen.append(kwargs)
        raise _Stop

    monkeypatch.setattr(dreamenv.sb3, "train_in_dream", capture)
    for flags in (
        [],
        "--horizon 7 --reward-mode mean --burn-in 2 --temperature 0.5 --no-termination "
        "--obs-type embeddings --reset-share 0.5 --verbose 1 --tensorboard tb".split(),
    ):
        with pytest.raises(_Stop):
            main(["dream", "ckpt", "--out", str(tmp_path / "a"), *flags])
    assert seen[0]["options"] == DreamOptions()
    assert seen[0]["verbose"] is None and seen[0]["tensorboard_log"] is None
    assert seen[1]["options"] == DreamOptions(
        horizon=7,
        reward_mode="mean",
        burn_in=2,
        temperature=0.5,
        use_termination=False,
        obs_type="embeddings",
        reset_share=0.5,
    )
    assert seen[1]["verbose"] == 1 and seen[1]["tensorboard_log"] == "tb"
    with pytest.raises(_Stop):
        main(
            ["dream", "ckpt", "--out", str(tmp_path / "b"), "--set", "gamma=0.9"]
            + ["--set", "use_sde=true", "--set", 'policy_kwargs={"net_arch": [8]}']
        )
    assert (seen[2]["gamma"], seen[2]["use_sde"]) == (0.9, True)
    assert seen[2]["policy_kwargs"] == {"net_arch": [8]}


def test_train_passes_tensorboard_reset_share_random_hold_and_continue_games(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dreamenv.train.loop

    seen: list[dict] = []
    monkeypatch.setattr(
        dreamenv.train.loop, "train", lambda *a, **k: seen.append({**k, "config": a[2]}) or []
    )
    assert main(["train", "pong", "--run-dir", str(tmp_path), "--tensorboard", "tb"]) == 0
    assert seen[0]["tensorboard_log"] == "tb"
    assert main(["train", "pong", "--run-dir", str(tmp_path / "b"), "--reset-share", "1"]) == 0
    assert seen[0]["config"].reset_share == 0.0 and seen[1]["config"].reset_share == 1.0
    assert main(["train", "pong", "--run-dir", str(tmp_path / "c"), "--random-hold", "16"]) == 0
    assert seen[0]["config"].random_hold == 1.0 and seen[2]["config"].random_hold == 16.0
    paper_draws = ["--preset", "cpu100k", "--random-hold", "1"]
    assert main(["train", "pong", "--run-dir", str(tmp_path / "d"), *paper_draws]) == 0
    assert seen[3]["config"].random_hold == 1.0  # the preset holds 16; the flag undoes it
    assert main(["train", "pong", "--run-dir", str(tmp_path / "e"), "--continue-games"]) == 0
    assert not seen[0]["config"].continue_games and seen[4]["config"].continue_games
    assert main(["train", "pong", "--run-dir", str(tmp_path / "f"), "--no-continue-games"]) == 0
    assert seen[5]["config"].continue_games is False


def _killed_dream(checkpoint: Path, out: Path, kill) -> int:
    """Run `dreamenv dream` (100 more steps) in a subprocess; ``kill(proc)`` returns once it
    is time to SIGKILL it. Returns the exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dreamenv.cli", "--quiet", "--threads", "1", "dream"]
    proc = subprocess.Popen(
        [*command, str(checkpoint), "--out", str(out), "--steps", "100"],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        kill(proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    return proc.returncode


def test_dream_killed_anywhere_keeps_the_saved_agent(checkpoint_dir: Path, tmp_path: Path) -> None:
    from dreamenv.sb3 import load_agent

    out = tmp_path / "agent"
    assert _dream(checkpoint_dir, out, "--envs", "2") == 0
    steps = [load_agent(out).num_timesteps]
    rng = random.Random(0)

    def at_random(proc: subprocess.Popen) -> None:
        try:
            proc.wait(timeout=rng.uniform(1.0, 6.0))
        except subprocess.TimeoutExpired:
            pass

    def while_saving(proc: subprocess.Popen) -> None:
        named = set(os.listdir(out))
        deadline = time.monotonic() + 120
        while proc.poll() is None and set(os.listdir(out)) <= named:
            assert time.monotonic() < deadline, "the dream never saved"
            time.sleep(0.001)

    for kill in (at_random, while_saving, at_random):
        status = _killed_dream(checkpoint_dir, out, kill)
        agent = load_agent(out)  # whole: the previous save or the new one
        assert agent.num_timesteps in (steps[-1], steps[-1] + 100), status
        assert status != 0 or agent.num_timesteps == steps[-1] + 100
        steps.append(agent.num_timesteps)
    assert _dream(checkpoint_dir, out) == 0  # resumed, it finishes
    assert load_agent(out).num_timesteps == steps[-1] + 100
    names = sorted(os.listdir(out))
    assert len(names) == 3 and names[0] == "agent.json", names  # nothing a kill left behind


def test_fit_flags_default_to_fitconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line restates no default: a bare `dreamenv fit` trains FitConfig()."""
    import importlib

    from dreamenv import FitConfig

    fit_module = importlib.import_module("dreamenv.train.fit")  # the package exports fit()
    seen: list[FitConfig] = []

    def capture(store, out, **kwargs):
        seen.append(kwargs["config"])
        raise _Stop

    monkeypatch.setattr(fit_module, "fit", capture)
    with pytest.raises(_Stop):
        main(["fit", "store", "--out", "model"])
    assert seen == [FitConfig()]
    with pytest.raises(_Stop):
        main(["fit", "store", "--out", "model", "--termination-windows", "0.25", "--life-loss"])
    assert seen[1] == FitConfig(termination_windows=0.25, life_loss=True)


def _train_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *argv: str):
    import dreamenv.train.loop

    seen: list[dict] = []
    monkeypatch.setattr(dreamenv.train.loop, "train", lambda *a, **k: seen.append(k) or [])
    assert main(["train", *argv, "--run-dir", str(tmp_path)]) == 0
    return seen[0]["spec"]


def test_train_takes_the_spec_options_of_a_gym_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _train_spec(
        tmp_path,
        monkeypatch,
        "CarRacing-v3",
        "--action-repeat",
        "4",
        "--frame-stack",
        "2",
        "--grayscale",
        "--max-episode-steps",
        "100",
    )
    assert (spec.env_id, spec.action_repeat, spec.frame_stack) == ("CarRacing-v3", 4, 2)
    assert spec.grayscale and spec.max_episode_steps == 100
    assert spec.screen_size == 64  # the quick preset's frame side
    assert _train_spec(tmp_path / "b", monkeypatch, "CartPole-v1").observation == "state"
    atari = _train_spec(tmp_path / "c", monkeypatch, "pong", "--preset", "cpu100k")
    assert (atari.game, atari.screen_size, atari.frame_stack) == ("pong", 96, 4)


def test_train_rejects_gym_options_for_an_atari_game(tmp_path: Path, capsys) -> None:
    assert main(["train", "pong", "--action-repeat", "2", "--run-dir", str(tmp_path)]) == 2
    assert "['--action-repeat'] are options of gymnasium envs" in capsys.readouterr().err


def test_dream_set_is_for_a_new_agent(family_checkpoint, tmp_path: Path, capsys) -> None:
    ckpt = str(family_checkpoint("discrete"))
    out = str(tmp_path / "agent")
    flags = ["--quiet", "dream", ckpt, "--out", out, "--steps", "64", "--envs", "2"]
    assert main([*flags, "--set", "n_steps=32", "--set", "batch_size=16"]) == 0
    assert main([*flags, "--set", "gamma=0.9"]) == 2
    assert "--set gamma=0.9 sets up a new agent" in capsys.readouterr().err
    assert main([*flags, "--set", "gamma=0.9", "--set", "n_steps=32", "--restart"]) == 0
    assert main([*flags, "--restart", "--set", "gama=0.9"]) == 2
    assert "Did you mean 'gamma'?" in capsys.readouterr().err


@pytest.fixture
def train_configs(monkeypatch: pytest.MonkeyPatch) -> list:
    """The ``LoopConfig`` of every ``dreamenv train`` call, in order, with the loop itself
    replaced by a no-op."""
    import dreamenv.train.loop

    seen: list = []
    monkeypatch.setattr(dreamenv.train.loop, "train", lambda *a, **k: seen.append(a[2]) or [])
    return seen


def test_train_set_overrides_the_presets_model_settings(
    tmp_path: Path, train_configs: list
) -> None:
    from dreamenv.train.loop import LOOP_PRESETS

    seen = train_configs
    argv = ["train", "pong", "--preset", "cpu100k", "--run-dir", str(tmp_path)]
    assert main([*argv, "--set", "moving_weight=20", "--set", "num_codes=64"]) == 0
    assert main(argv) == 0
    assert seen[0].model_overrides == {
        "precision": "auto",
        "moving_weight": 20,
        "num_codes": 64,
    }
    assert seen[1].model_overrides == LOOP_PRESETS["cpu100k"].model_overrides


def test_train_precision_sets_the_refits_and_the_dreams(
    tmp_path: Path, train_configs: list
) -> None:
    from dreamenv.train.loop import LOOP_PRESETS

    seen = train_configs
    argv = ["train", "pong", "--preset", "cpu100k", "--run-dir", str(tmp_path)]
    assert main([*argv, "--precision", "float32", "--set", "precision=float32"]) == 0
    assert main(argv) == 0
    assert (seen[0].precision, seen[0].fit.precision) == ("float32", "float32")
    assert seen[0].model_overrides["precision"] == "float32"
    preset = LOOP_PRESETS["cpu100k"]
    assert (seen[1].precision, seen[1].fit) == (preset.precision, preset.fit)


def test_train_passes_representation_iterations(
    tmp_path: Path, train_configs: list, capsys
) -> None:
    seen = train_configs
    argv = ["train", "pong", "--preset", "cpu100k", "--run-dir", str(tmp_path)]
    assert main([*argv, "--representation-iterations", "1"]) == 0
    assert main(argv) == 0
    assert [c.representation_iterations for c in seen] == [1, None]
    assert main([*argv, "--representation-iterations", "0"]) == 2
    assert "representation_iterations must be None" in capsys.readouterr().err
    assert len(seen) == 2
