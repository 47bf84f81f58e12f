"""Every example and benchmark script runs with tiny arguments."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_quickstart_builds_a_checkpoint_and_plays(tmp_path) -> None:
    out = run(
        "examples/quickstart.py",
        "--checkpoint",
        str(tmp_path / "model"),
        "--collect-steps",
        "300",
        "--fit-epochs",
        "1",
        "--fit-updates",
        "2",
        "--preset",
        "tiny",
        "--dream-steps",
        "100",
        "--num-envs",
        "2",
        "--episodes",
        "1",
        "--max-steps",
        "20",
        cwd=tmp_path,
    )
    assert "real return of the dream-trained agent" in out
    assert (tmp_path / "model" / "weights.safetensors").is_file()


def test_gym_env_dream(tmp_path) -> None:
    out = run(
        "examples/gym_env_dream.py",
        "--env",
        "Pendulum-v1",
        "--out",
        str(tmp_path / "run"),
        "--collect-steps",
        "200",
        "--preset",
        "tiny",
        "--fit-epochs",
        "1",
        "--fit-updates",
        "2",
        "--algo",
        "sac",
        "--dream-steps",
        "40",
        "--episodes",
        "2",
        "--max-steps",
        "10",
        cwd=tmp_path,
    )
    assert "Box(-2.0, 2.0, (1,), float32)" in out and "Welch's t = " in out


def test_swap_real_dream(checkpoint_dir, tmp_path) -> None:
    out = run(
        "examples/swap_real_dream.py",
        "--checkpoint",
        str(checkpoint_dir),
        "--dream-steps",
        "200",
        "--episodes",
        "1",
        "--max-steps",
        "20",
        cwd=tmp_path,
    )
    assert "dream:" in out and "real:" in out


def test_throughput_benchmark(tmp_path) -> None:
    out = run(
        "benchmarks/throughput.py",
        "--batches",
        "1",
        "4",
        "--presets",
        "small",
        "--seconds",
        "0.5",
        "--out",
        str(tmp_path / "throughput"),
        cwd=tmp_path,
    )
    assert "ratio" in out.lower()


def test_atari100k_benchmark(tmp_path) -> None:
    overrides = (
        '{"iterations": 1, "initial_steps": 200, "collect_envs": 2, "wm_epochs": [1], '
        '"warmup_epochs": 1, "preset": "tiny", "fit": {"batch_size": 4, "seq_len": 4, '
        '"updates_per_epoch": 2, "start_bank_size": 8, "start_context": 4}, "rollouts": [1], '
        '"dream_envs": 2, "ppo": {"n_steps": 8, "batch_size": 16}, "eval_episodes": 2, '
        '"eval_envs": 2, "eval_max_steps": 10}'
    )
    out = run(
        "benchmarks/atari100k.py",
        "--games",
        "pong",
        "--seeds",
        "0",
        "--preset",
        "quick",
        "--device",
        "cpu",
        "--overrides",
        overrides,
        "--versus-random",
        "2",  # whole real Pong games: the default 32 each took 100 of this test's 128 s
        "--out",
        str(tmp_path / "b"),
        "--quiet",
        cwd=tmp_path,
    )
    assert "| pong |" in out and "HNS" in out and "(p " in out  # the vs-random cell
    assert (tmp_path / "b" / "pong-report" / "learning_curve.png").is_file()
    run_dir, figure = tmp_path / "b" / "pong-s0", tmp_path / "decoded.png"
    out = run(
        "benchmarks/what_moves.py",
        str(run_dir),
        "--stacks",
        "8",
        "--figure",
        str(figure),
        "--data",
        str(run_dir / "data"),
        cwd=tmp_path,
    )
    assert f"{run_dir}: 8 stacks; decoded: mse" in out and "each stack's median frame" in out
    assert figure.is_file()


def test_models_benchmark(tmp_path) -> None:
    out = run(
        "benchmarks/models.py",
        "--families",  # the table's rule for every family; each family has its own tests
        "ar",
        "sssm",
        "sssm_jumpy",
        "discrete",
        "--datasets",
        "ball",
        "atari",
        "--game",
        "pong",
        "--steps",
        "600",
        "--ball-episode",
        "100",
        "--preset",
        "tiny",
        "--updates",
        "3",
        "--batch-size",
        "2",
        "--test-batches",
        "1",
        "--batches",
        "2",
        "3",
        "--horizon",
        "8",
        "--repeats",
        "1",
        "--out",
        str(tmp_path / "m"),
        "--quiet",
        cwd=tmp_path,
    )
    assert "| ball | ar |" in out and "| atari | sssm |" in out and "vs AR" in out
    assert "MMACs / real step" in out and "freed memory kept" in out
    for name in ("models.csv", "models.json", "rollouts-ball.png", "rollouts-atari.png"):
        assert (tmp_path / "m" / name).is_file()
    with open(tmp_path / "m" / "models.csv") as f:
        rows = {(r["dataset"], r["family"]): r for r in csv.DictReader(f)}
    assert float(rows["ball", "ar"]["macs_ar_over"]) == 1.0
    # a state-space step does not render, encode or decode pixels; a jumpy one covers 4
    sssm, jumpy = (float(rows["ball", f]["macs_ar_over"]) for f in ("sssm", "sssm_jumpy"))
    assert 1.0 < sssm < jumpy


def test_family_dream_example(tmp_path) -> None:
    out = run(
        "examples/family_dream.py",
        "--family",
        "rssm",
        "--set",
        "stochastic=categorical",
        "--preset",
        "tiny",
        "--game",
        "pong",
        "--out",
        str(tmp_path / "run"),
        "--collect-steps",
        "300",
        "--updates",
        "2",
        "--batch-size",
        "2",
        "--dream-steps",
        "64",
        "--episodes",
        "2",
        "--max-steps",
        "10",
        cwd=tmp_path,
    )
    assert "dream-trained:" in out and "random:" in out


def test_precision_benchmark(tmp_path) -> None:
    out = run(
        "benchmarks/precision.py",
        "--sizes",
        "64",
        "--preset",
        "tiny",
        "--steps",
        "300",
        "--fit-updates",
        "2",
        "--repeats",
        "1",
        "--batch",
        "2",
        "--out",
        str(tmp_path / "precision"),
        cwd=tmp_path,
    )
    assert "float32 / bfloat16" in out and (tmp_path / "precision" / "precision.md").is_file()
    assert "bfloat16 native" in out or "bfloat16 emulated" in out


def test_goal_dream_example(gym_checkpoint, tmp_path) -> None:
    ckpt = gym_checkpoint("Pendulum-v1", "ensemble")
    out = run(
        "examples/goal_dream.py",
        "--checkpoint",
        str(ckpt),
        "--steps",
        "40",
        "--envs",
        "2",
        "--learning-starts",
        "10",
        "--batch-size",
        "8",
        "--net",
        "16",
        "--horizon",
        "5",
        "--episodes",
        "2",
        "--json",
        str(tmp_path / "goal.json"),
        cwd=tmp_path,
    )
    assert "SAC + HER trained in the dream" in out and "random policy, success:" in out
    assert (tmp_path / "goal.json").is_file()


def test_agents_benchmark(gym_checkpoint, tmp_path) -> None:
    ckpt = gym_checkpoint("Pendulum-v1", "ensemble")
    out = run(
        "benchmarks/agents.py",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(tmp_path / "agents"),
        "--sb3-steps",
        "64",
        "--sb3-envs",
        "2",
        "--horizon",
        "8",
        "--cem-horizon",
        "3",
        "--cem-candidates",
        "4",
        "--cem-iterations",
        "1",
        "--cem-elites",
        "2",
        "--cmaes-generations",
        "2",
        "--cmaes-population",
        "4",
        "--cmaes-rollouts",
        "2",
        "--cmaes-eval-episodes",
        "2",
        "--ac-updates",
        "2",
        "--ac-batch",
        "4",
        "--ac-horizon",
        "3",
        "--episodes",
        "2",
        "--num-envs",
        "2",
        "--max-steps",
        "5",
        cwd=tmp_path,
    )
    assert "| random policy |" in out and "CEM planner" in out and "CMA-ES" in out
    with open(tmp_path / "agents" / "agents.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["agent"] for r in rows] == ["sb3", "cem", "cmaes", "actor-critic"]
    # CEM: 2 envs x 5 steps planned, 4 candidates x 1 particle x 3 steps x 1 iteration each
    assert int(rows[1]["imagined_steps"]) == 2 * 5 * 4 * 3
    assert int(rows[3]["imagined_steps"]) == 2 * 4 * 3


def test_i2a_example(family_checkpoint, tmp_path) -> None:
    out = run(
        "examples/i2a_agent.py",
        "--checkpoint",
        str(family_checkpoint("sssm")),
        "--steps",
        "16",
        "--envs",
        "2",
        "--n-steps",
        "8",
        "--batch-size",
        "8",
        "--n-epochs",
        "1",
        "--rollout-steps",
        "1",
        "--distill-epochs",
        "1",
        "--episodes",
        "2",
        "--num-envs",
        "2",
        "--max-steps",
        "5",
        cwd=tmp_path,
    )
    assert "I2A PPO (16 steps in the real env" in out and "random policy:" in out


def test_held_fit_benchmark(checkpoint_dir, store_dir, tmp_path) -> None:
    out = run(
        "benchmarks/held_fit.py",
        str(checkpoint_dir),
        str(store_dir),
        "--epochs",
        "1",
        "--repeats",
        "1",
        "--out",
        str(tmp_path / "held"),
        cwd=tmp_path,
    )
    assert "held fit of 1 epochs, 1 thread(s): encoding once" in out
    result = json.loads((tmp_path / "held" / "held_fit.json").read_text())
    assert len(result["seconds"]["encode_once"]) == 1 and result["ratio_every_over_once"] > 0
