"""The `dreamenv` command end to end on a tiny run: collect, fit, info, dream, evaluate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from dreamenv.cli import main


def test_console_script_is_installed() -> None:
    exe = shutil.which("dreamenv")
    assert exe is not None, "the dreamenv console script is not on PATH; pip install -e ."
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("collect", "fit", "info", "dream", "evaluate"):
        assert command in out


def test_collect_fit_dream_evaluate(tmp_path, capsys) -> None:
    data, model, agent = tmp_path / "data", tmp_path / "model", tmp_path / "agent.zip"
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
    assert (
        main(["--quiet", "dream", str(model), "--out", str(agent), "--steps", "100", "--envs", "2"])
        == 0
    )
    assert agent.is_file()
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
    assert "| random |" in out and "Welch t" in out and "p = " in out
    returns = json.loads(result.read_text())
    assert len(returns["agent"]) == 2 and len(returns["random"]) == 2
    # an agent trained elsewhere keeps training from where it was
    assert (
        main(["--quiet", "dream", str(model), "--out", str(agent), "--steps", "100", "--envs", "2"])
        == 0
    )
    assert "continuing" in capsys.readouterr().out


def test_errors_exit_2_with_a_message(tmp_path, capsys) -> None:
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["--quiet", "collect", "pongg", "--out", str(tmp_path / "d"), "--steps", "10"]) == 2
    assert "Did you mean 'pong'" in capsys.readouterr().err


def test_collect_agent_needs_checkpoint(tmp_path) -> None:
    with pytest.raises(SystemExit, match="--agent needs --checkpoint"):
        main(["collect", "pong", "--out", str(tmp_path / "d"), "--steps", "10", "--agent", "x.zip"])


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
