"""The Atari-100k benchmark's table, on fake finished runs (no training)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dreamenv.train.loop import LOOP_PRESETS, LoopConfig


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / "atari100k.py"
    spec = importlib.util.spec_from_file_location("atari100k_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(out: Path, key: str, finals: list[float], gap: dict[str, float] | None) -> None:
    rows: list[dict[str, Any]] = [
        {"iteration": i + 1, "real_steps": 100 * (i + 1), "mean_return": m, "std_return": 2.0}
        for i, m in enumerate(finals)
    ]
    rows[-1] |= gap or {}
    (out / key).mkdir(parents=True)
    (out / key / "run.json").write_text(json.dumps({"game": key.rsplit("-s", 1)[0], "seed": 0}))
    (out / key / "results.json").write_text(json.dumps(rows))


def test_the_table_of_finished_runs(bench: ModuleType, tmp_path: Path) -> None:
    gap = {"dream_return": 4.0, "real_window_return": -1.0, "gap": 5.0, "reward_recall": math.nan}
    fake_run(tmp_path, "pong-s0", [-21.0, -19.0], gap)
    fake_run(tmp_path, "pong-s1", [-21.0, -15.0], {**gap, "dream_return": 6.0})
    fake_run(tmp_path, "boxing-s0", [0.0, 10.0], None)
    fake_run(tmp_path, "boxing-s1", [0.0], None)  # stopped after one of two iterations
    config = LoopConfig(iterations=2)
    timings = {"pong-s0": 120.0, "pong-s1": 240.0}
    summary = bench.summarize(tmp_path, ["pong", "boxing"], [0, 1], config, timings)
    assert [r["game"] for r in summary] == ["pong"]  # boxing is unfinished
    (pong,) = summary
    assert pong["mean"] == -17.0 and pong["std"] == pytest.approx(2 * 2**0.5)
    assert pong["per_seed"] == [(-19.0, 2.0), (-15.0, 2.0)] and pong["minutes_per_run"] == 3.0
    assert pong["dream_return"] == 5.0 and pong["reward_recall"] is None
    text = bench.markdown(summary, "quick")
    assert "| pong | 2 | -17.0 ± 2.8 | -19.0 ± 2.0, -15.0 ± 2.0 | -20.7 |" in text
    assert "Robine 4 frames | SimPLe | PPO 100K | min/run |" in text
    assert "mean HNS" in text and "| pong | 5.000 | -1.000 | 5.000 | n/a |" in text
    (row,) = csv.DictReader(bench.csv_text(summary).splitlines())
    assert row["seeds"] == "0 1" and row["per_seed"] == "-19.00±2.00;-15.00±2.00"
    assert (tmp_path / "pong-report" / "learning_curve.png").is_file()


def test_finished_runs_are_not_trained_again(bench: ModuleType, tmp_path: Path) -> None:
    fake_run(tmp_path, "pong-s0", [-21.0], None)
    args = bench.parse_args(["--games", "pong", "--out", str(tmp_path), "--parallel", "2"])
    config = LoopConfig(iterations=1)
    timings = bench.train_all(args, config, ["pong"])  # would train (and fail) if it tried
    assert timings.seconds == {}


def test_parallel_must_be_positive(bench: ModuleType, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match="2"):
        bench.parse_args(["--parallel", "0"])
    assert "--parallel must be at least 1, got 0" in capsys.readouterr().err


def test_presets_are_the_loop_presets(bench: ModuleType) -> None:
    assert bench.parse_args(["--preset", "quick"]).preset in LOOP_PRESETS


@pytest.fixture(scope="module")
def played_run(checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-iteration run: the tiny model and a tiny PPO agent trained in it."""
    from dreamenv.sb3 import save_agent, train_in_dream

    run = tmp_path_factory.mktemp("bench") / "pong-s0"
    fake_run(run.parent, "pong-s0", [-21.0], None)
    shutil.copytree(checkpoint_dir, run / "model")
    policy = {"features_extractor_kwargs": {"features_dim": 16, "channels": 8}, "net_arch": [8]}
    agent = train_in_dream(
        checkpoint_dir, 16, num_envs=2, progress=False, n_steps=8, batch_size=16,
        policy_kwargs=policy,
    )  # fmt: skip
    save_agent(agent, run / "agent-1")
    return run


def test_the_last_agent_plays_against_random_once(
    bench: ModuleType, played_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = bench.versus_random(played_run, 3)
    assert (result["iteration"], result["episodes"], result["seed"]) == (1, 3, 0)
    assert len(result["agent"]) == len(result["random"]) == 3
    assert 0.0 <= result["p_value"] <= 1.0 or math.isnan(result["p_value"])
    assert json.loads((played_run / bench.VERSUS_FILE).read_text()) == result
    import dreamenv.evaluate

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("played again")

    monkeypatch.setattr(dreamenv.evaluate, "evaluate", refuse)
    assert bench.versus_random(played_run, 3) == result  # read back, not played again
    with pytest.raises(AssertionError, match="played again"):
        bench.versus_random(played_run, 4)  # another episode count is another comparison


def test_a_comparison_without_a_p_value_is_saved_as_json_and_reads_nan(
    bench: ModuleType, tmp_path: Path
) -> None:
    from dreamenv.atomic_files import write_json

    path = tmp_path / bench.VERSUS_FILE
    constant = {"agent": [-21.0, -21.0], "random": [-21.0, -21.0]}  # Welch's t undefined
    nan = math.nan
    write_json(path, {**constant, "welch_t": nan, "welch_df": nan, "p_value": nan})
    assert "NaN" not in path.read_text() and '"p_value": null' in path.read_text()
    saved = bench.read_versus(path)
    assert math.isnan(saved["p_value"]) and math.isnan(saved["welch_t"])
    assert saved["agent"] == constant["agent"]


def test_each_seed_plays_its_own_evaluation_seeds(
    bench: ModuleType, played_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seed 1's agent and random play other episodes than seed 0's: independent samples."""
    import dreamenv.evaluate

    run = tmp_path / "pong-s1"
    shutil.copytree(played_run, run)
    (run / bench.VERSUS_FILE).unlink(missing_ok=True)
    (run / "run.json").write_text(json.dumps({"game": "pong", "seed": 1}))
    seeds: list[int] = []
    real = dreamenv.evaluate.against_random

    def spy(*args: Any, **kwargs: Any) -> Any:
        seeds.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(dreamenv.evaluate, "against_random", spy)
    result = bench.versus_random(run, 2)
    assert seeds == [bench.EVAL_SEED_STRIDE] and result["seed"] == bench.EVAL_SEED_STRIDE
    saved = json.loads((run / bench.VERSUS_FILE).read_text())
    (run / bench.VERSUS_FILE).write_text(json.dumps({**saved, "seed": 0}))
    bench.versus_random(run, 2)  # a comparison kept from other evaluation seeds: played again
    assert seeds == [bench.EVAL_SEED_STRIDE] * 2


def test_the_table_shows_the_same_run_comparison(bench: ModuleType, tmp_path: Path) -> None:
    fake_run(tmp_path, "pong-s0", [-21.0, -19.0], None)
    versus = {"iteration": 2, "episodes": 3, "agent": [-19.0, -18.0, -17.0]}
    versus |= {"random": [-21.0, -20.0, -21.0], "welch_t": 4.0, "welch_df": 3.5, "p_value": 0.004}
    (tmp_path / "pong-s0" / bench.VERSUS_FILE).write_text(json.dumps(versus))
    summary = bench.summarize(tmp_path, ["pong"], [0], LoopConfig(iterations=2), {})
    text = bench.markdown(summary, "cpu100k")
    assert "| -18.0 ± 1.0 vs -20.7 ± 0.6 (p 0.004) |" in text
    assert "the last agent beats random (p < 0.01) in 1 of 1 games" in text
    (row,) = csv.DictReader(bench.csv_text(summary).splitlines())
    assert (row["versus_agent"], row["versus_random"], row["versus_p"]) == (
        "-18.00",
        "-20.67",
        "0.004",
    )
    assert bench.beats_random({**versus, "p_value": 0.02}) is False
    assert bench.beats_random({**versus, "agent": [-22.0] * 3}) is False


def test_versus_random_needs_two_episodes(bench: ModuleType, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match="2"):
        bench.parse_args(["--versus-random", "1"])
    assert (
        "--versus-random must be 0 (skip) or at least 2 episodes, got 1" in capsys.readouterr().err
    )


def test_two_benchmark_calls_sharing_an_output_keep_each_others_timings(
    bench: ModuleType, tmp_path: Path
) -> None:
    first, second = bench.Timings(tmp_path), bench.Timings(tmp_path)  # both start empty
    first.add("freeway-s0", 60.0)
    second.add("ms_pacman-s0", 30.0)
    second.add("freeway-s0", 6.0)  # a resumed run adds its new session
    assert json.loads((tmp_path / "timings.json").read_text()) == {
        "freeway-s0": 66.0,
        "ms_pacman-s0": 30.0,
    }
