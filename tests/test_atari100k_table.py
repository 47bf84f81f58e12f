"""The Atari-100k benchmark's table, on fake finished runs (no training)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
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
