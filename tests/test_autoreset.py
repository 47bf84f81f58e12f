"""The one autoreset (dreamenv.envs.autoreset) under every face: fresh observations,
final observations, episode statistics, and the SB3 adapter's per-env methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from dreamenv import ConfigError, DreamEnv, DreamVectorEnv, RealEnv, RealVectorEnv
from dreamenv.envs.autoreset import final_entries, parse_autoreset_mode, step_same_step
from dreamenv.sb3 import make_agent, wrap

N = 3


def _vector(kind: str, path: Path, mode: str) -> gym.vector.VectorEnv:
    if kind == "dream":
        return DreamVectorEnv(path, N, horizon=3, autoreset_mode=mode)
    return RealVectorEnv(path, N, autoreset_mode=mode)


@pytest.mark.parametrize("kind", ["dream", "real"])
@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
@pytest.mark.parametrize("family", ["discrete", "ar", "mdnrnn", "rssm"])
def test_vector_observations_are_fresh(
    family_checkpoint, kind: str, mode: str, family: str
) -> None:
    """An observation handed out never changes, whatever the env does next (the AR's and
    the MDN-RNN's observations are their latents, which a reset overwrites in place)."""
    env = _vector(kind, family_checkpoint(family), mode)
    held: list[tuple[np.ndarray, np.ndarray]] = []
    obs, _ = env.reset(seed=0)
    held.append((obs, obs.copy()))
    rng = np.random.default_rng(0)
    for t in range(6):
        obs, _, terminated, truncated, info = env.step(rng.integers(0, 6, N))
        held.append((obs, obs.copy()))
        for i in np.flatnonzero(info.get("_final_obs", np.zeros(N, bool))):
            held.append((info["final_obs"][i], info["final_obs"][i].copy()))
        if t % 2:
            mask = np.zeros(N, dtype=bool)
            mask[t % N] = True
            obs, _ = env.reset(options={"reset_mask": mask})
            held.append((obs, obs.copy()))
    for given, copy in held:
        np.testing.assert_array_equal(given, copy)
    env.close()


@pytest.mark.parametrize("cls", [DreamEnv, RealEnv])
@pytest.mark.parametrize("family", ["ar", "mdnrnn"])
def test_single_observations_are_fresh(family_checkpoint, cls: type, family: str) -> None:
    env = cls(family_checkpoint(family))
    obs, _ = env.reset(seed=0)
    held = [(obs, obs.copy())]
    for _ in range(4):
        obs, *_ = env.step(env.action_space.sample())
        held.append((obs, obs.copy()))
    env.reset()
    for given, copy in held:
        np.testing.assert_array_equal(given, copy)
    env.close()


@pytest.mark.parametrize("family", ["ar", "mdnrnn"])
def test_terminal_observation_through_wrap_is_the_last_frame_of_the_game(
    family_checkpoint, family: str
) -> None:
    """The SB3 face of a NextStep Real-v0 reports the ended game's last observation, not
    the next game's first (equal to what a SameStep Real-v0 of the same games reports)."""
    checkpoint_dir = family_checkpoint(family)
    wrapped = wrap(RealVectorEnv(checkpoint_dir, 2, autoreset_mode="NextStep"))
    same = RealVectorEnv(checkpoint_dir, 2, autoreset_mode="SameStep")
    wrapped.seed(5)
    obs_w = wrapped.reset()
    obs_s, _ = same.reset(seed=5)
    np.testing.assert_array_equal(obs_w, obs_s)
    rng = np.random.default_rng(1)
    done_w = np.zeros(2, dtype=bool)
    while not done_w.any():  # Pong with 600 frames: a game is 150 steps
        actions = rng.integers(0, 6, 2)
        obs_w, _, done_w, infos = wrapped.step(actions)
        obs_s, _, te, tr, info = same.step(actions)
        np.testing.assert_array_equal(done_w, te | tr)
    # the next games are others (the wrapper's reset draws new seeds), the last are the same
    for i in np.flatnonzero(done_w):
        np.testing.assert_allclose(
            infos[i]["terminal_observation"], info["final_obs"][i], rtol=1e-5, atol=1e-5
        )
        assert not np.allclose(infos[i]["terminal_observation"], obs_w[i], atol=1e-3)
    wrapped.close()
    same.close()


def test_adapter_reports_episodes_as_sb3_monitor_does(checkpoint_dir: Path) -> None:
    env = wrap(DreamVectorEnv(checkpoint_dir, 2, horizon=4, use_termination=False))
    env.reset()
    total = np.zeros(2)
    for t in range(4):
        _, reward, done, infos = env.step(np.zeros(2, dtype=np.int64))
        total += reward
        assert all(("episode" in info) == (t == 3) for info in infos)
    for i, info in enumerate(infos):
        assert info["episode"]["l"] == 4
        assert info["episode"]["r"] == pytest.approx(total[i])
        assert info["TimeLimit.truncated"] is True


def test_ppo_logs_episode_returns_without_a_monitor(checkpoint_dir: Path) -> None:
    env = wrap(DreamVectorEnv(checkpoint_dir, 2, horizon=4))
    agent = make_agent("ppo", env, seed=0, n_steps=8, batch_size=16, n_epochs=1)
    agent.learn(16)
    assert len(agent.ep_info_buffer) >= 4
    assert {"r", "l", "t"} <= set(agent.ep_info_buffer[0])


def test_adapter_uses_the_envs_own_episode_statistics(checkpoint_dir: Path) -> None:
    inner = gym.wrappers.vector.RecordEpisodeStatistics(
        DreamVectorEnv(checkpoint_dir, 2, horizon=3, use_termination=False)
    )
    env = wrap(inner)
    env.reset()
    for _ in range(3):
        _, _, done, infos = env.step(np.zeros(2, dtype=np.int64))
    assert done.all()
    assert [info["episode"]["l"] for info in infos] == [3, 3]


def test_adapter_get_attr_and_env_method_honour_indices(checkpoint_dir: Path) -> None:
    env = wrap(DreamVectorEnv(checkpoint_dir, N, horizon=5, render_mode="rgb_array"))
    env.reset()
    assert env.get_attr("render_mode", indices=[0, 2]) == ["rgb_array", "rgb_array"]
    assert len(env.get_attr("num_envs")) == N
    frames = env.env_method("render", indices=[1])
    assert len(frames) == 1 and frames[0].shape[-1] == 3
    np.testing.assert_array_equal(frames[0], env.env.render()[1])
    env.set_attr("render_mode", "rgb_array")
    with pytest.raises(
        ConfigError, match=r"set_attr\('render_mode'\) with indices=\[1\].*indices=None"
    ):
        env.set_attr("render_mode", None, indices=[1])


def test_step_same_step_refuses_disabled(checkpoint_dir: Path) -> None:
    env = DreamVectorEnv(checkpoint_dir, 2, autoreset_mode="Disabled")
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="autoresets .NextStep or SameStep., got Disabled"):
        step_same_step(env, np.zeros(2, dtype=np.int64))


@pytest.mark.parametrize("kind", ["dream", "real"])
def test_disabled_mode_needs_a_reset_of_ended_envs(checkpoint_dir: Path, kind: str) -> None:
    from dreamenv import StateError

    env = _vector(kind, checkpoint_dir, "Disabled")
    env.reset(seed=0)
    done = np.zeros(N, dtype=bool)
    for _ in range(400):
        _, _, te, tr, _ = env.step(np.zeros(N, dtype=np.int64))
        done = te | tr
        if done.any():
            break
    assert done.any()
    with pytest.raises(StateError, match=r"have ended and autoreset_mode is Disabled"):
        env.step(np.zeros(N, dtype=np.int64))
    env.reset(options={"reset_mask": done})
    env.step(np.zeros(N, dtype=np.int64))
    env.close()


def test_final_entries_marks_only_the_ended_envs() -> None:
    done = np.array([False, True, False, True])
    info = final_entries(np.array([[1.0], [2.0]]), done)
    assert info["final_obs"][0] is None and info["final_obs"][2] is None
    assert info["final_obs"][1][0] == 1.0 and info["final_obs"][3][0] == 2.0
    np.testing.assert_array_equal(info["_final_obs"], done)


@pytest.mark.parametrize("bad", ["Sometimes", 3])
def test_parse_autoreset_mode_names_the_choices(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"autoreset_mode must be one of \['NextStep'"):
        parse_autoreset_mode(bad)
    assert parse_autoreset_mode("same_step") == AutoresetMode.SAME_STEP
