"""The iterative loop (`dreamenv train`) and its reports, on a tiny run."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamenv import AtariSpec, ConfigError, DatasetError, EpisodeStore, FitConfig
from dreamenv.cli import main
from dreamenv.data.collect import Collector, HeldRandomPolicy
from dreamenv.report import human_normalized, reference_scores, write_report
from dreamenv.train.loop import LOOP_PRESETS, LoopConfig, check_resume, read_results, train

SPEC = AtariSpec("pong", max_episode_frames=600)

TINY_LOOP = LoopConfig(
    iterations=2,
    initial_steps=300,
    steps_per_iteration=100,
    collect_envs=2,
    wm_epochs=(1, 1),
    warmup_epochs=1,
    preset="tiny",
    fit=FitConfig(
        epochs=1,
        warmup_epochs=0,
        batch_size=4,
        seq_len=4,
        updates_per_epoch=2,
        start_bank_size=16,
        start_context=4,
    ),
    rollouts=(1, 1),
    dream_envs=2,
    ppo={"n_steps": 8, "batch_size": 16},
    eval_episodes=2,
    eval_envs=2,
    eval_max_steps=20,
    device="cpu",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loop") / "pong-s0"
    train("pong", path, TINY_LOOP, spec=SPEC, progress=False)
    return path


def test_a_run_records_every_iteration(run_dir: Path) -> None:
    rows = read_results(run_dir)
    assert [r["iteration"] for r in rows] == [1, 2]
    assert [r["real_steps"] for r in rows] == [300, 400]
    assert all(len(r["returns"]) == 2 for r in rows)
    assert (run_dir / "results.csv").read_text().splitlines()[0].startswith("iteration,")
    assert (run_dir / "agent-1" / "agent.json").is_file()
    assert (run_dir / "agent-2" / "agent.json").is_file()
    store_steps = sum(1 for _ in (run_dir / "data").glob("chunk-*.npz"))
    assert store_steps >= 2
    state = json.loads((run_dir / "model" / "trainer_state.json").read_text())
    assert state["progress"]["epoch"] == 2  # one world-model epoch per iteration


@pytest.mark.parametrize("go_on", [True, False])
def test_continue_games_plays_the_cut_games_on_in_the_next_iteration(
    tmp_path: Path, go_on: bool
) -> None:
    # 100 of each game's 150 steps in the first collection, 50 more in the second
    config = dataclasses.replace(TINY_LOOP, initial_steps=200, continue_games=go_on)
    train("pong", tmp_path / "run", config, spec=SPEC, progress=False)
    episodes = EpisodeStore.open(tmp_path / "run" / "data").episodes()
    assert [len(e) for e in episodes] == [100, 100, 50, 50]
    assert [e.continued for e in episodes] == [False, False, go_on, go_on]
    for cut, rest in zip(episodes[:2], episodes[2:], strict=True):
        assert (rest.frames[0] == cut.frames[-1]).all() == go_on  # the same game, or a new one


def test_a_finished_run_does_nothing_more(run_dir: Path) -> None:
    before = (run_dir / "results.json").read_text()
    assert len(train("pong", run_dir, TINY_LOOP, spec=SPEC, progress=False)) == 2
    assert (run_dir / "results.json").read_text() == before


def test_another_game_or_seed_in_the_same_dir_is_refused(run_dir: Path) -> None:
    with pytest.raises(ConfigError, match="holds a run of 'pong' with seed 0"):
        train("pong", run_dir, TINY_LOOP, seed=1, spec=SPEC, progress=False)


@pytest.mark.parametrize(
    ("config", "spec", "message"),
    [
        (
            dataclasses.replace(TINY_LOOP, horizon=20),
            SPEC,
            r"loop\.horizon: the run has 50, this call 20",
        ),
        (
            dataclasses.replace(TINY_LOOP, fit=dataclasses.replace(TINY_LOOP.fit, batch_size=8)),
            SPEC,
            r"loop\.fit\.batch_size: the run has 4, this call 8",
        ),
        (
            dataclasses.replace(TINY_LOOP, ppo={"n_steps": 8, "batch_size": 16, "n_epochs": 2}),
            SPEC,
            r"loop\.ppo\.n_epochs: the run has \(not set\), this call 2",
        ),
        (
            TINY_LOOP,
            AtariSpec("pong", max_episode_frames=900),
            r"spec\.max_episode_frames: the run has 600, this call 900",
        ),
        (
            dataclasses.replace(TINY_LOOP, iterations=1),
            SPEC,
            r"loop\.iterations: .* has 2, this call 1",
        ),
    ],
)
def test_resuming_with_other_settings_is_refused(
    run_dir: Path, config: LoopConfig, spec: AtariSpec, message: str
) -> None:
    before = (run_dir / "run.json").read_text()
    with pytest.raises(ConfigError, match=message) as err:
        train("pong", run_dir, config, spec=spec, progress=False)
    assert "must not change the experiment" in str(err.value)
    assert "start a new run in another directory (--run-dir)" in str(err.value)
    assert (run_dir / "run.json").read_text() == before  # the run's record is kept


def test_the_budget_may_grow_on_resume(run_dir: Path) -> None:
    saved = json.loads((run_dir / "run.json").read_text())
    grown = {**saved, "loop": {**saved["loop"], "iterations": 5}}
    check_resume(run_dir, saved, grown)  # no error
    with pytest.raises(ConfigError, match=r"loop\.iterations: the run has 5, this call 2"):
        check_resume(run_dir, grown, saved)


def test_the_device_may_change_on_resume(run_dir: Path) -> None:
    saved = json.loads((run_dir / "run.json").read_text())
    moved = {
        **saved,
        "loop": {
            **saved["loop"],
            "device": "cuda",
            "fit": {**saved["loop"]["fit"], "device": "cuda"},
        },
    }
    check_resume(run_dir, saved, moved)  # no error: where it runs is not the experiment


_KILLED_TRAIN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_loop import SPEC, TINY_LOOP
from dreamenv.train.loop import train
train("pong", Path(sys.argv[1]), TINY_LOOP, spec=SPEC, progress=False)
"""


def _killed_train(run: Path, kill) -> None:
    """Run :func:`train` of TINY_LOOP in a subprocess, SIGKILLed once ``kill(proc)`` returns."""
    code = _KILLED_TRAIN.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], env=env, stderr=subprocess.PIPE)
    try:
        kill(proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]


def test_train_killed_anywhere_loses_nothing_saved(tmp_path: Path) -> None:
    from dreamenv.sb3 import load_agent

    run = tmp_path / "run"

    def after_the_first_iteration(proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 300
        while not (run / "results.json").is_file() and proc.poll() is None:
            assert time.monotonic() < deadline, "the first iteration never finished"
            time.sleep(0.05)

    def at_random(proc: subprocess.Popen) -> None:
        try:
            proc.wait(timeout=rng.uniform(1.0, 6.0))
        except subprocess.TimeoutExpired:
            pass

    rng = random.Random(0)
    rows: list[dict] = []
    agent_steps: dict[int, int] = {}
    for kill in (after_the_first_iteration, at_random, at_random):
        _killed_train(run, kill)
        now = read_results(run)
        assert now[: len(rows)] == rows  # finished iterations are kept, never redone
        rows = now
        assert json.loads((run / "run.json").read_text())["loop"] == json.loads(
            json.dumps(TINY_LOOP.to_dict())
        )
        for k in range(1, TINY_LOOP.iterations + 1):
            if (run / f"agent-{k}").exists():
                steps = load_agent(run / f"agent-{k}").num_timesteps  # whole, never torn
                assert steps >= agent_steps.get(k, 0)
                agent_steps[k] = steps
        assert all(k in agent_steps for k in range(1, len(rows) + 1))
    assert rows, "the first iteration never finished"
    # resumed with a larger budget, it finishes (and logs the dream PPO to TensorBoard)
    longer = dataclasses.replace(TINY_LOOP, iterations=3)
    done = train("pong", run, longer, spec=SPEC, progress=False, tensorboard_log=tmp_path / "tb")
    assert [r["iteration"] for r in done] == [1, 2, 3]
    assert done[: len(rows)] == rows
    assert load_agent(run / "agent-3").num_timesteps > load_agent(run / "agent-2").num_timesteps
    assert list((tmp_path / "tb").glob("PPO_*/events.out.tfevents.*"))


def test_budget_sets_the_iterations() -> None:
    config = LOOP_PRESETS["atari100k"]
    assert config.total_steps == 102_400 and config.iterations == 15
    assert config.with_budget(100_000).iterations == 14
    assert config.epochs_until(1) == 140 and config.rollouts_of(15) == 3000
    assert config.rollouts_of(8) == 2000 and config.rollouts_of(12) == 2000
    with pytest.raises(ConfigError, match="below the 12800 random steps"):
        config.with_budget(1000)


def test_without_a_spec_the_config_sets_the_screen_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, AtariSpec] = {}

    def stop_at_collect(games: Collector, *args: object, **kwargs: object) -> None:
        seen["spec"] = games.spec
        raise RuntimeError("stopped before collecting")

    monkeypatch.setattr(Collector, "collect", stop_at_collect)
    config = dataclasses.replace(TINY_LOOP, screen_size=64)
    with pytest.raises(RuntimeError, match="stopped before collecting"):
        train("pong", tmp_path / "run", config, progress=False)
    assert seen["spec"].screen_size == 64
    assert json.loads((tmp_path / "run" / "run.json").read_text())["spec"]["screen_size"] == 64


def test_report_png_and_table(run_dir: Path, tmp_path: Path) -> None:
    png, md = write_report([run_dir, run_dir], tmp_path / "report")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "| random | -20.7 |" in text
    assert "Robine et al. (4 frames)" in text and "human-normalised" in text
    assert "2 run(s)" in text


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is not a finished `dreamenv train` run"):
        write_report([tmp_path], tmp_path / "out")


def test_reference_scores_cover_the_atari100k_games() -> None:
    scores = reference_scores()
    assert len(scores) == 36 and "up_n_down" in scores
    pong = scores["pong"]
    assert human_normalized(pong["human"], pong) == pytest.approx(1.0)
    assert human_normalized(pong["random"], pong) == pytest.approx(0.0)


def test_cli_report(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(run_dir), "--out", str(tmp_path / "r")]) == 0
    assert "learning_curve.png" in capsys.readouterr().out


def test_video_has_three_panels_per_step(checkpoint_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from dreamenv.video import record_video

    out = record_video(checkpoint_dir, tmp_path / "v.gif", steps=6, burn_in=2)
    image = Image.open(out)
    assert image.n_frames == 6
    assert image.size[0] == 3 * image.size[1] - 3 * 18  # real | imagined | latent indices


def test_video_with_an_agent_feeds_it_real_v0_observations(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    """The agent of `dreamenv video --agent` acts on what Real-v0 shows it (not raw stacks)."""
    from dreamenv import DreamVectorEnv
    from dreamenv.sb3 import AgentPolicy, make_agent, save_agent, wrap
    from dreamenv.video import record_video

    agent = make_agent("ppo", wrap(DreamVectorEnv(checkpoint_dir, 2)), n_steps=8, batch_size=16)
    save_agent(agent, tmp_path / "agent")
    seen: list[np.ndarray] = []

    class Recording(AgentPolicy):
        def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            seen.append(obs)
            return super().__call__(obs, rng)

    policy = Recording(tmp_path / "agent", checkpoint_dir)
    record_video(checkpoint_dir, tmp_path / "v.gif", steps=4, burn_in=2, policy=policy)
    assert seen and all(obs.shape == (1, *agent.observation_space.shape) for obs in seen)
    assert (
        main(
            [
                "video",
                str(checkpoint_dir),
                "--out",
                str(tmp_path / "w.gif"),
                "--steps",
                "3",
                "--burn-in",
                "2",
                "--agent",
                str(tmp_path / "agent"),
            ]
        )
        == 0
    )


def test_inspect_rows_and_files(checkpoint_dir: Path, store_dir: Path, tmp_path: Path) -> None:
    from dreamenv.inspection import inspect_checkpoint

    rows = inspect_checkpoint(
        checkpoint_dir, store_dir, horizon=5, count=3, burn_in=2, out=tmp_path / "inspect"
    )
    assert [r["horizon"] for r in rows] == [1, 2, 3, 4, 5]
    for row in rows:
        assert 0 <= row["latent_acc"] <= 1 and 0 <= row["reward_acc"] <= 1
        assert math.isnan(row["changed_acc"]) or 0 <= row["changed_acc"] <= 1
        assert 0 <= row["recon_mae"] <= 1 and 0 <= row["frame_mae"] <= 1
    assert (tmp_path / "inspect" / "inspect.png").is_file()
    assert (
        (tmp_path / "inspect" / "inspect.csv")
        .read_text()
        .startswith("horizon,latent_acc,changed_acc,reward_acc")
    )


def test_cli_video_and_inspect(
    checkpoint_dir: Path, store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "video",
                str(checkpoint_dir),
                "--out",
                str(tmp_path / "v.gif"),
                "--steps",
                "4",
                "--burn-in",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "inspect",
                str(checkpoint_dir),
                str(store_dir),
                "--out",
                str(tmp_path / "i"),
                "--horizon",
                "4",
                "--count",
                "2",
                "--burn-in",
                "2",
            ]
        )
        == 0
    )
    assert (tmp_path / "v.gif").is_file() and (tmp_path / "i" / "inspect.csv").is_file()
    assert "| horizon | latent acc | changed-cell acc | reward acc |" in capsys.readouterr().out


def test_keys_map_to_the_games_actions() -> None:
    from dreamenv.envs.atari import action_meanings
    from dreamenv.play import action_for_keys

    pong = action_meanings("pong")  # NOOP FIRE RIGHT LEFT RIGHTFIRE LEFTFIRE
    assert pong[action_for_keys(False, False, False, False, False, pong)] == "NOOP"
    assert pong[action_for_keys(False, False, False, True, True, pong)] == "RIGHTFIRE"
    assert pong[action_for_keys(True, False, False, True, False, pong)] == "RIGHT"  # no UP
    assert pong[action_for_keys(True, False, False, False, False, pong)] == "NOOP"
    full = action_meanings("kung_fu_master")
    assert full[action_for_keys(True, False, True, False, True, full)] == "UPLEFTFIRE"
    assert full[action_for_keys(True, True, True, True, False, full)] == "NOOP"


def test_play_without_display_records_a_video(
    checkpoint_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "play.gif"
    assert main(["play", str(checkpoint_dir), "--video", str(out)]) == 0
    assert out.is_file()


def test_quickstart_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dreamenv.quickstart import quickstart

    result = quickstart(tmp_path / "q", game="pong", config=TINY_LOOP, progress=False)
    assert len(result["agent"]) == 2 and len(result["random"]) == 2
    assert 0.0 <= result["p_value"] <= 1.0
    out = capsys.readouterr().out
    assert "| trained in the dream | 2 |" in out and "| random | 2 |" in out
    assert "two-sided p" in out and Path(result["report"]).is_file()


@pytest.mark.parametrize("hold", [1.0, 16.0])
def test_the_first_collection_holds_random_actions_as_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: float
) -> None:
    seen: dict[str, object] = {}

    def stop_at_collect(*args: object, policy: object = None, **kwargs: object) -> None:
        seen["policy"] = policy
        raise RuntimeError("stopped before collecting")

    monkeypatch.setattr(Collector, "collect", stop_at_collect)
    config = dataclasses.replace(TINY_LOOP, random_hold=hold)
    with pytest.raises(RuntimeError, match="stopped before collecting"):
        train("pong", tmp_path / "run", config, spec=SPEC, progress=False)
    policy = seen["policy"]
    if hold == 1.0:
        assert policy is None  # collect's own RandomPolicy: the paper's, and older runs' data
    else:
        assert isinstance(policy, HeldRandomPolicy) and policy.hold == hold
        assert policy.spec == SPEC.action_spec


@pytest.mark.parametrize("hold", [0.5, 0, True, "16"])
def test_random_hold_below_one_step_is_refused(hold: object) -> None:
    with pytest.raises(ConfigError, match=r"random_hold must be a number of steps >= 1.*got"):
        dataclasses.replace(TINY_LOOP, random_hold=hold)


def test_the_atari100k_preset_counts_the_papers_real_steps() -> None:
    from dreamenv.train.loop import LOOP_PRESETS

    config = LOOP_PRESETS["atari100k"]
    assert config.total_steps == 102_400 == 12_800 + 14 * 6_400
    assert config.with_budget(100_000).total_steps == 96_000  # whole iterations only


def test_the_cpu100k_preset_keeps_the_papers_protocol() -> None:
    paper, cpu = LOOP_PRESETS["atari100k"], LOOP_PRESETS["cpu100k"]
    same = ("iterations", "initial_steps", "steps_per_iteration", "temperature", "eval_episodes")
    assert {k: getattr(cpu, k) for k in same} == {k: getattr(paper, k) for k in same}
    assert cpu.total_steps == 102_400 and cpu.screen_size == 96
    spec = AtariSpec("pong", screen_size=cpu.screen_size)
    assert spec.frame_skip == 4 and spec.repeat_action_probability == 0.0
    assert cpu.fit.life_loss and cpu.use_termination and cpu.device == "cpu"
    assert paper.random_hold == 1 and cpu.random_hold == 16  # uniform actions, held


def test_every_iteration_records_its_phases_and_reality_gap(run_dir: Path) -> None:
    from dreamenv.report import GAP_KEYS

    for row in read_results(run_dir):
        for phase in ("collect", "fit", "dream", "evaluate", "gap"):
            assert row[f"{phase}_seconds"] >= 0
        assert set(GAP_KEYS) <= set(row)
        assert row["gap"] == pytest.approx(row["dream_return"] - row["real_window_return"])
    first, second = read_results(run_dir)
    assert math.isnan(first["action_agreement"])  # no earlier agent
    assert math.isnan(first["policy_shift"])
    assert 0.0 <= second["action_agreement"] <= 1.0
    assert 0.0 <= second["policy_shift"] <= 1.0  # PPO agents: a categorical distribution
    header = (run_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert "fit_seconds" in header and "reward_recall" in header


def test_newest_episodes_are_those_of_the_last_collection(run_dir: Path) -> None:
    from dreamenv.data.store import EpisodeStore

    store = EpisodeStore.open(run_dir / "data")
    newest = store.episodes(after_steps=300)
    assert sum(len(e) for e in newest) == 100  # the second iteration's 100 steps
    assert len(store.episodes(after_steps=0)) == len(store.episodes())


def test_results_csv_holds_columns_a_resumed_run_gained(tmp_path: Path) -> None:
    from dreamenv.train.loop import _write_results

    _write_results(tmp_path, [{"iteration": 1, "returns": [1]}, {"iteration": 2, "gap": 0.5}])
    assert (tmp_path / "results.csv").read_text().splitlines() == ["iteration,gap", "1,", "2,0.5"]


def _no_constant(token: str) -> None:
    raise ValueError(f"{token} is not standard JSON")


def test_results_json_is_standard_json_and_reads_nan_back(tmp_path: Path) -> None:
    from dreamenv.train.loop import _write_results

    _write_results(tmp_path, [{"iteration": 1, "policy_shift": math.nan, "gap": 0.5}])
    text = (tmp_path / "results.json").read_text()
    json.loads(text, parse_constant=_no_constant)  # what jq or JavaScript would read
    assert '"policy_shift": null' in text
    (row,) = read_results(tmp_path)
    assert math.isnan(row["policy_shift"]) and row["gap"] == 0.5
    (tmp_path / "results.json").write_text('[{"iteration": 1, "policy_shift": NaN}]')
    assert math.isnan(read_results(tmp_path)[0]["policy_shift"])  # an older release's file


def test_the_loop_runs_with_another_family_in_bfloat16(tmp_path: Path) -> None:
    config = dataclasses.replace(
        TINY_LOOP,
        iterations=1,
        family="rssm",
        model_overrides={"precision": "bfloat16"},
        fit=dataclasses.replace(TINY_LOOP.fit, precision="bfloat16", life_loss=True),
        precision="bfloat16",
    )
    with pytest.warns(UserWarning, match="'rssm' family has no setting 'precision'"):
        rows = train("pong", tmp_path / "run", config, spec=SPEC, progress=False)
    assert len(rows) == 1 and np.isfinite(rows[0]["mean_return"])
    state = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert state["family"] == "rssm"


def test_bad_precisions_are_clear_errors() -> None:
    from dreamenv.envs.options import DreamOptions
    from dreamenv.sb3.extractor import LatentExtractor

    with pytest.raises(ConfigError, match=r"LoopConfig.reset_share must be a number in \[0, 1\]"):
        LoopConfig(reset_share=2.0)
    with pytest.raises(ConfigError, match="LoopConfig.precision must be one of"):
        LoopConfig(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="FitConfig.precision must be one of"):
        FitConfig(precision="half")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="precision must be one of .*got 'bf16'"):
        DreamOptions(precision="bf16")  # type: ignore[arg-type]
    import gymnasium as gym

    with pytest.raises(ConfigError, match="LatentExtractor precision must be one of"):
        LatentExtractor(gym.spaces.MultiDiscrete([4] * 4), precision="int8")  # type: ignore[arg-type]


def test_a_run_saved_before_newer_settings_resumes_at_their_defaults(run_dir: Path) -> None:
    saved = json.loads((run_dir / "run.json").read_text())
    for name in ("family", "precision", "model_overrides"):
        del saved["loop"][name]
    for name in ("life_loss", "precision"):
        del saved["loop"]["fit"][name]
    meta = {**saved, "loop": TINY_LOOP.to_dict()}
    check_resume(run_dir, saved, meta)  # what the earlier version ran: these defaults
    changed = {**TINY_LOOP.to_dict(), "family": "rssm"}
    with pytest.raises(
        ConfigError, match="loop.family: the run has \\(not set\\), this call 'rssm'"
    ):
        check_resume(run_dir, saved, {**saved, "loop": changed})


def test_a_resumed_run_may_change_its_arithmetic(run_dir: Path) -> None:
    """Precision is the machine's (``"auto"`` resolves per CPU), as a continued fit's."""
    saved = json.loads((run_dir / "run.json").read_text())
    loop = TINY_LOOP.to_dict()
    changed = {**loop, "precision": "auto", "fit": {**loop["fit"], "precision": "auto"}}
    check_resume(run_dir, saved, {**saved, "loop": changed})
    overrides = {**loop, "model_overrides": {"precision": "auto"}}
    with pytest.raises(ConfigError, match="loop.model_overrides.precision: the run has"):
        check_resume(run_dir, saved, {**saved, "loop": overrides})


def test_the_loop_dreams_from_real_starts_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dreamenv.sb3

    seen: list = []

    class Stop(Exception):
        pass

    def capture(checkpoint, steps, **kwargs):
        seen.append(kwargs["options"])
        raise Stop

    monkeypatch.setattr(dreamenv.sb3, "train_in_dream", capture)
    config = dataclasses.replace(TINY_LOOP, iterations=1, reset_share=1.0)
    with pytest.raises(Stop):
        train("pong", tmp_path / "run", config, spec=SPEC, progress=False)
    assert seen[0].reset_share == 1.0


def test_the_agent_observes_codebook_vectors_when_asked(tmp_path: Path) -> None:
    import gymnasium as gym

    from dreamenv.sb3 import load_agent

    config = dataclasses.replace(TINY_LOOP, obs_type="embeddings")
    rows = train("pong", tmp_path / "run", config, spec=SPEC, progress=False)
    assert len(rows) == 2 and np.isfinite(rows[1]["mean_return"])
    for iteration in (1, 2):  # the second continues the first and collected with it
        space = load_agent(tmp_path / "run" / f"agent-{iteration}").observation_space
        assert isinstance(space, gym.spaces.Box) and space.dtype == np.float32
        assert len(space.shape) == 3  # (D, G, G) codebook vectors, not one-hot codes
    assert json.loads((tmp_path / "run" / "run.json").read_text())["loop"]["obs_type"] == (
        "embeddings"
    )


def test_an_unknown_obs_type_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(
        ConfigError,
        match=r"LoopConfig.obs_type must be one of \['indices', 'embeddings', 'pixels'\], "
        r"got 'embedding'. Did you mean 'embeddings'\?",
    ):
        LoopConfig(obs_type="embedding")
    code = main(["train", "pong", "--preset", "quick", "--obs-type", "codes",
                 "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert code == 2 and not (tmp_path / "run").exists()
    assert "LoopConfig.obs_type must be one of" in capsys.readouterr().err


def test_later_refits_hold_the_representation_when_asked(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    config = dataclasses.replace(TINY_LOOP, iterations=1, wm_epochs=(2, 1),
                                 representation_iterations=1)  # fmt: skip
    run = tmp_path / "run"
    train("pong", run, config, spec=SPEC, progress=False)
    first = load_file(run / "model" / "weights.safetensors")
    rows = train("pong", run, dataclasses.replace(config, iterations=3), spec=SPEC, progress=False)
    assert len(rows) == 3 and np.isfinite(rows[2]["mean_return"])
    with open(run / "model" / "metrics.csv", newline="") as f:
        phases = [row["phase"] for row in csv.DictReader(f)]
    assert phases == ["warmup", "joint", "dynamics", "dynamics"]
    last = load_file(run / "model" / "weights.safetensors")
    held = [n for n in first if n.startswith(("encoder.", "decoder.", "quantizer."))]
    assert held and all(torch.equal(last[n], first[n]) for n in held)
    assert not torch.equal(last["dynamics.keep_logit"], first["dynamics.keep_logit"])


@pytest.mark.parametrize("value", [0, -1, True, "1", 1.5])
def test_representation_iterations_below_one_are_refused(value: object) -> None:
    with pytest.raises(
        ConfigError,
        match=r"LoopConfig.representation_iterations must be None \(every refit trains the "
        rf"representation\) or an int of at least 1, got {re.escape(repr(value))}\.",
    ):
        LoopConfig(representation_iterations=value)  # type: ignore[arg-type]


def test_a_family_that_cannot_hold_its_representation_is_refused() -> None:
    assert LoopConfig(family="rssm").trains_representation(7)
    with pytest.raises(
        ConfigError,
        match=r"LoopConfig.representation_iterations=2: the 'rssm' family trains its "
        r"representation with its dynamics and cannot hold it; use None, or family 'discrete'",
    ):
        LoopConfig(family="rssm", representation_iterations=2)
    config = LoopConfig(representation_iterations=2)
    assert [config.trains_representation(i) for i in (1, 2, 3)] == [True, True, False]
