"""Dream and real envs: gymnasium/SB3 compliance, seeding, autoreset, branching, bad input."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dreamenv
from dreamenv import (
    CheckpointError,
    ConfigError,
    DreamEnv,
    DreamVectorEnv,
    InvalidActionError,
    RealEnv,
    RealVectorEnv,
    StateError,
    load_checkpoint,
)

OBS_TYPES = ("indices", "embeddings", "pixels")
ENV_IDS = ("dreamenv/Dream-v0", "dreamenv/Real-v0")
N = 4


@pytest.fixture(scope="module")
def ckpt(checkpoint_dir: Path) -> dreamenv.Checkpoint:
    """The session checkpoint, loaded once for this module (envs only read it)."""
    return load_checkpoint(checkpoint_dir)


def _actions(steps: int, n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 6, size=(steps, n))


def _rollout(env: gym.Env, seed: int, actions: np.ndarray) -> tuple[np.ndarray, ...]:
    """Observations, rewards, terminations, truncations of a single env, resetting it after
    each episode (the step after an end returns the reset observation, as NextStep does)."""
    obs, _ = env.reset(seed=seed)
    observations, rewards, terms, truncs = [obs], [], [], []
    ended = False
    for a in actions:
        if ended:
            obs, _ = env.reset()
            r, te, tr = 0.0, False, False
        else:
            obs, r, te, tr, _ = env.step(a)
        ended = te or tr
        observations.append(obs)
        rewards.append(r)
        terms.append(te)
        truncs.append(tr)
    return np.stack(observations), np.array(rewards), np.array(terms), np.array(truncs)


def _vector_rollout(envs: gym.vector.VectorEnv, seed: int, actions: np.ndarray):
    obs, _ = envs.reset(seed=seed)
    observations, rewards, terms, truncs = [obs], [], [], []
    for a in actions:
        obs, r, te, tr, _ = envs.step(a)
        observations.append(obs)
        rewards.append(r)
        terms.append(te)
        truncs.append(tr)
    return np.stack(observations), np.stack(rewards), np.stack(terms), np.stack(truncs)


# --- compliance ------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("obs_type", OBS_TYPES)
def test_gymnasium_env_checker(checkpoint_dir: Path, env_id: str, obs_type: str) -> None:
    env = gym.make(env_id, checkpoint=checkpoint_dir, obs_type=obs_type, render_mode="rgb_array")
    try:
        gym_check_env(env.unwrapped, skip_render_check=False)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("obs_type", OBS_TYPES)
def test_sb3_env_checker(checkpoint_dir: Path, env_id: str, obs_type: str) -> None:
    env = gym.make(env_id, checkpoint=checkpoint_dir, obs_type=obs_type)
    try:
        sb3_check_env(env.unwrapped, warn=False)
    finally:
        env.close()


@pytest.mark.parametrize("obs_type", OBS_TYPES)
def test_dream_and_real_spaces_are_identical(ckpt: dreamenv.Checkpoint, obs_type: str) -> None:
    dream = DreamEnv(ckpt, obs_type=obs_type)
    real = RealEnv(ckpt, obs_type=obs_type)
    try:
        assert dream.observation_space == real.observation_space
        assert dream.action_space == real.action_space == gym.spaces.Discrete(6)
        dream_obs, _ = dream.reset(seed=0)
        real_obs, _ = real.reset(seed=0)
        assert dream_obs.dtype == real_obs.dtype == dream.observation_space.dtype
        assert dream.observation_space.contains(dream_obs)
        assert real.observation_space.contains(real_obs)
    finally:
        real.close()


def test_observation_shapes(ckpt: dreamenv.Checkpoint) -> None:
    shapes = {t: DreamEnv(ckpt, obs_type=t).observation_space.shape for t in OBS_TYPES}
    assert shapes == {"indices": (36,), "embeddings": (32, 6, 6), "pixels": (4, 96, 96)}


@pytest.mark.parametrize(
    ("env_id", "cls"), [("dreamenv/Dream-v0", DreamVectorEnv), ("dreamenv/Real-v0", RealVectorEnv)]
)
def test_make_vec_uses_the_vector_entry_point(checkpoint_dir: Path, env_id: str, cls: type) -> None:
    envs = gym.make_vec(
        env_id, num_envs=3, vectorization_mode="vector_entry_point", checkpoint=checkpoint_dir
    )
    try:
        assert isinstance(envs.unwrapped, cls)
        assert envs.num_envs == 3
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (3, 36)
        obs, reward, terminated, truncated, _ = envs.step(np.array([0, 1, 2]))
        assert envs.observation_space.contains(obs)
        assert reward.shape == terminated.shape == truncated.shape == (3,)
    finally:
        envs.close()


def test_real_env_single_matches_vector_env_zero(ckpt: dreamenv.Checkpoint) -> None:
    single = RealEnv(ckpt)
    vec = RealVectorEnv(ckpt, 2)
    try:
        actions = _actions(20, 2, seed=3)
        obs, rewards, _, _ = _rollout(single, 5, actions[:, 0])
        vobs, vrewards, _, _ = _vector_rollout(vec, 5, actions)
        np.testing.assert_array_equal(obs, vobs[:, 0])
        np.testing.assert_array_equal(rewards, vrewards[:, 0])
    finally:
        single.close()
        vec.close()


def test_real_vector_env_autoreset_modes_agree(ckpt: dreamenv.Checkpoint) -> None:
    """Episodes of the session spec are cut after 150 steps; both modes restart them."""
    next_step = RealVectorEnv(ckpt, 2, obs_type="pixels")
    same_step = RealVectorEnv(ckpt, 2, obs_type="pixels", autoreset_mode="SameStep")
    try:
        obs_n, _ = next_step.reset(seed=1)
        obs_s, _ = same_step.reset(seed=1)
        np.testing.assert_array_equal(obs_n, obs_s)
        assert (obs_n[:, 0] == obs_n[:, 3]).all()  # a fresh stack repeats the reset frame
        for t, a in enumerate(_actions(400, 2), start=1):
            obs_n, r_n, term_n, trunc_n, _ = next_step.step(a)
            obs_s, r_s, term_s, trunc_s, info = same_step.step(a)
            np.testing.assert_array_equal(r_n, r_s)
            np.testing.assert_array_equal(term_n | trunc_n, term_s | trunc_s)
            done = term_n | trunc_n
            if not done.any():
                np.testing.assert_array_equal(obs_n, obs_s)
                continue
            assert info["_final_obs"].tolist() == done.tolist()
            for i in np.flatnonzero(done):
                np.testing.assert_array_equal(info["final_obs"][i], obs_n[i])
                assert (obs_s[i] == obs_s[i][-1]).all(), "SameStep returns a fresh stack"
            obs_n, r_n, term_n, trunc_n, _ = next_step.step(a)  # NextStep's reset step
            for i in np.flatnonzero(done):
                assert r_n[i] == 0.0 and not term_n[i] and not trunc_n[i]
                np.testing.assert_array_equal(obs_n[i], obs_s[i])
            assert t <= 160
            return
        pytest.fail("no real episode ended")
    finally:
        next_step.close()
        same_step.close()


# --- seeding and the vector env ------------------------------------------------------------
@pytest.mark.parametrize("use_termination", [False, True])
def test_vector_env_matches_single_envs(
    ending_ckpt: dreamenv.Checkpoint, use_termination: bool
) -> None:
    horizon, steps, seed = 20, 60, 11
    actions = _actions(steps)
    kwargs = {"horizon": horizon, "use_termination": use_termination}
    vobs, vrew, vterm, vtrunc = _vector_rollout(
        DreamVectorEnv(ending_ckpt, N, **kwargs), seed, actions
    )
    single = DreamEnv(ending_ckpt, **kwargs)
    for i in range(N):
        obs, rew, term, trunc = _rollout(single, seed + i, actions[:, i])
        np.testing.assert_array_equal(obs, vobs[:, i], err_msg=f"env {i}")
        np.testing.assert_array_equal(rew, vrew[:, i], err_msg=f"env {i}")
        np.testing.assert_array_equal(term, vterm[:, i], err_msg=f"env {i}")
        np.testing.assert_array_equal(trunc, vtrunc[:, i], err_msg=f"env {i}")
    if use_termination:
        assert vterm.any(), "no episode terminated; the test would not cover autoreset"
    else:
        assert not vterm.any()
        # truncated at steps 20 and 41 (step 21 is the reset step), for every env
        assert np.flatnonzero(vtrunc[:, 0]).tolist() == [horizon - 1, 2 * horizon]
        assert (vtrunc == vtrunc[:, :1]).all()


@pytest.mark.parametrize("cls", [DreamEnv, DreamVectorEnv])
def test_same_seed_same_rollout_different_seed_different(
    ckpt: dreamenv.Checkpoint, cls: type
) -> None:
    actions = _actions(15)
    if cls is DreamEnv:

        def run(seed: int) -> tuple[np.ndarray, ...]:
            return _rollout(DreamEnv(ckpt, reward_mode="sample"), seed, actions[:, 0])
    else:

        def run(seed: int) -> tuple[np.ndarray, ...]:
            return _vector_rollout(DreamVectorEnv(ckpt, N), seed, actions)

    a, b, c = run(3), run(3), run(4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_reset_without_seed_continues_the_stream(ckpt: dreamenv.Checkpoint) -> None:
    env = DreamEnv(ckpt)
    env.reset(seed=1)
    first = [env.step(0)[0] for _ in range(3)]
    env.reset()
    second = [env.step(0)[0] for _ in range(3)]
    assert not all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))


def test_seed_list_seeds_each_env(ckpt: dreamenv.Checkpoint) -> None:
    actions = _actions(10, 2)
    a = _vector_rollout(DreamVectorEnv(ckpt, 2), [7, 8], actions)
    b = _vector_rollout(DreamVectorEnv(ckpt, 2), 7, actions)
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ConfigError, match="seed must be an int or a list of 2 seeds, got 3"):
        DreamVectorEnv(ckpt, 2).reset(seed=[1, 2, 3])


# --- horizon and autoreset -----------------------------------------------------------------
@pytest.mark.parametrize("horizon", [1, 5])
def test_horizon_truncates_never_terminates(ckpt: dreamenv.Checkpoint, horizon: int) -> None:
    env = DreamEnv(ckpt, horizon=horizon, use_termination=False)
    for episode in range(2):
        env.reset(seed=episode)
        for t in range(1, horizon + 1):
            _, _, terminated, truncated, _ = env.step(t % 6)
            assert terminated is False
            assert truncated is (t == horizon)


def test_vector_env_truncates_every_env_at_the_horizon(ckpt: dreamenv.Checkpoint) -> None:
    envs = DreamVectorEnv(ckpt, N, horizon=3, use_termination=False)
    envs.reset(seed=0)
    truncs = [envs.step(np.zeros(N, dtype=int))[3] for _ in range(8)]
    # ends at steps 3 and 7; step 4 is the NextStep reset step
    assert [bool(t.all()) for t in truncs] == [False, False, True, False, False, False, True, False]
    assert not any(t.any() for i, t in enumerate(truncs) if i not in (2, 6))


def test_next_step_reset_step_returns_reset_observation(ckpt: dreamenv.Checkpoint) -> None:
    envs = DreamVectorEnv(ckpt, 2, horizon=2, use_termination=False)
    single = DreamEnv(ckpt, horizon=2, use_termination=False)
    envs.reset(seed=0)
    single.reset(seed=0)
    for _ in range(2):
        envs.step(np.array([1, 1]))
        single.step(1)
    obs, reward, terminated, truncated, info = envs.step(np.array([4, 4]))
    expected, _ = single.reset()
    np.testing.assert_array_equal(obs[0], expected)
    assert reward.tolist() == [0.0, 0.0]
    assert not terminated.any() and not truncated.any()
    assert info == {}


def test_same_step_mode_reports_final_observations(ckpt: dreamenv.Checkpoint) -> None:
    kwargs = {"horizon": 3, "use_termination": False}
    envs = DreamVectorEnv(ckpt, N, autoreset_mode="SameStep", **kwargs)
    reference = DreamVectorEnv(ckpt, N, autoreset_mode="NextStep", **kwargs)
    envs.reset(seed=2)
    reference.reset(seed=2)
    actions = _actions(3)
    for a in actions[:2]:
        _, _, _, _, info = envs.step(a)
        reference.step(a)
        assert "final_obs" not in info
    obs, _, terminated, truncated, info = envs.step(actions[2])
    ref_obs, *_ = reference.step(actions[2])
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].tolist() == [True] * N
    assert info["final_obs"].dtype == object
    for i in range(N):
        np.testing.assert_array_equal(info["final_obs"][i], ref_obs[i])
    assert "final_info" in info and info["_final_info"].all()
    # the returned observation is already the next episode's first one
    next_obs, _, _, _, _ = reference.step(actions[2])
    np.testing.assert_array_equal(obs, next_obs)
    obs, reward, terminated, truncated, info = envs.step(actions[0])
    assert not truncated.any() and "final_obs" not in info


def test_same_step_final_obs_only_for_ended_envs(ending_ckpt: dreamenv.Checkpoint) -> None:
    envs = DreamVectorEnv(ending_ckpt, N, autoreset_mode="SameStep", horizon=1000)
    envs.reset(seed=0)
    for a in _actions(60):
        _, _, terminated, truncated, info = envs.step(a)
        done = terminated | truncated
        if done.any() and not done.all():
            assert info["_final_obs"].tolist() == done.tolist()
            assert all((info["final_obs"][i] is None) == (not done[i]) for i in range(N))
            return
    pytest.fail("no step ended some but not all envs")


def test_disabled_mode_refuses_to_step_ended_envs(ckpt: dreamenv.Checkpoint) -> None:
    envs = DreamVectorEnv(ckpt, 3, autoreset_mode="Disabled", horizon=2, use_termination=False)
    envs.reset(seed=0)
    envs.step(np.zeros(3, dtype=int))
    _, _, _, truncated, info = envs.step(np.zeros(3, dtype=int))
    assert truncated.all() and info == {}
    with pytest.raises(
        StateError, match=r"envs \[0, 1, 2\] have ended and autoreset_mode is Disabled"
    ):
        envs.step(np.zeros(3, dtype=int))


def test_reset_mask_resets_only_masked_envs(ckpt: dreamenv.Checkpoint) -> None:
    envs = DreamVectorEnv(ckpt, 3, autoreset_mode="Disabled", horizon=2, use_termination=False)
    envs.reset(seed=0)
    envs.step(np.array([1, 2, 3]))
    before = envs.step(np.array([1, 2, 3]))[0]
    mask = np.array([True, False, True])
    obs, _ = envs.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[1], before[1])
    assert not np.array_equal(obs[mask], before[mask])
    with pytest.raises(StateError, match=r"envs \[1\] have ended"):
        envs.step(np.zeros(3, dtype=int))
    obs, _ = envs.reset(options={"reset_mask": np.array([False, True, False])})
    _, _, _, truncated, _ = envs.step(np.zeros(3, dtype=int))
    assert not truncated.any()
    _, _, _, truncated, _ = envs.step(np.zeros(3, dtype=int))
    assert truncated.all()


def test_masked_reset_with_seed_seeds_env_i_with_seed_plus_i(ckpt: dreamenv.Checkpoint) -> None:
    envs = DreamVectorEnv(ckpt, 3, horizon=1000, use_termination=False)
    envs.reset(seed=0)
    envs.reset(seed=10, options={"reset_mask": np.array([False, False, True])})
    actions = _actions(5, 3)
    vobs = _vector_rollout_from_here(envs, actions)
    single = DreamEnv(ckpt, horizon=1000, use_termination=False)
    obs, *_ = _rollout(single, 12, actions[:, 2])
    np.testing.assert_array_equal(obs[1:], vobs[:, 2])


def _vector_rollout_from_here(envs: DreamVectorEnv, actions: np.ndarray) -> np.ndarray:
    return np.stack([envs.step(a)[0] for a in actions])


def test_real_env_reset_mask_restarts_only_masked_games(ckpt: dreamenv.Checkpoint) -> None:
    envs = RealVectorEnv(ckpt, 2, obs_type="pixels")
    try:
        envs.reset(seed=0)
        for a in _actions(6, 2):
            before, *_ = envs.step(a)
        assert not (before[:, 0] == before[:, 3]).all()
        obs, info = envs.reset(options={"reset_mask": np.array([True, False])})
        np.testing.assert_array_equal(obs[1], before[1])
        assert (obs[0] == obs[0][-1]).all()  # a fresh stack of the reset frame
        assert info["lives"].shape == (2,)
    finally:
        envs.close()


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        ([True, False, True], r"reset_mask'\] must be a bool numpy array of shape \(3,\)"),
        (np.array([1, 0, 1]), r"must be a bool numpy array"),
        (np.array([True, False]), r"of shape \(3,\)"),
        (np.zeros(3, dtype=bool), r"must select at least one env"),
    ],
)
def test_bad_reset_mask(ckpt: dreamenv.Checkpoint, mask: object, message: str) -> None:
    envs = DreamVectorEnv(ckpt, 3)
    envs.reset(seed=0)
    with pytest.raises(ConfigError, match=message):
        envs.reset(options={"reset_mask": mask})


def test_first_reset_cannot_be_masked(ckpt: dreamenv.Checkpoint) -> None:
    with pytest.raises(StateError, match="The first reset must reset every env"):
        DreamVectorEnv(ckpt, 2).reset(seed=0, options={"reset_mask": np.array([True, False])})


def test_bad_autoreset_mode(ckpt: dreamenv.Checkpoint) -> None:
    with pytest.raises(ConfigError, match=r"autoreset_mode must be one of .*got 'Sometimes'"):
        DreamVectorEnv(ckpt, 2, autoreset_mode="Sometimes")


# --- branching -----------------------------------------------------------------------------
def test_branching_from_a_state_replays_the_future(ckpt: dreamenv.Checkpoint) -> None:
    env = DreamEnv(ckpt, horizon=1000)
    env.reset(seed=5)
    for a in (1, 2, 3):
        env.step(a)
    state = env.get_state()
    actions = _actions(12, 1, seed=9)[:, 0]
    branches = []
    for _ in range(3):
        env.set_state(state)
        branches.append([env.step(a)[:4] for a in actions])
    for branch in branches[1:]:
        for x, y in zip(branches[0], branch, strict=True):
            np.testing.assert_array_equal(x[0], y[0])
            assert x[1:] == y[1:]


def test_vector_branching_replays_the_future(ckpt: dreamenv.Checkpoint) -> None:
    envs = DreamVectorEnv(ckpt, N, horizon=4, use_termination=False)
    envs.reset(seed=5)
    for a in _actions(4):  # the last step ends every episode: NextStep state travels too
        envs.step(a)
    state = envs.get_state()
    actions = _actions(8, seed=1)
    runs = []
    for _ in range(2):
        envs.set_state(state)
        runs.append([envs.step(a) for a in actions])
    for x, y in zip(*runs, strict=True):
        for u, v in zip(x[:4], y[:4], strict=True):
            np.testing.assert_array_equal(u, v)
    assert not runs[0][0][3].any()  # the first branched step is the NextStep reset step


def test_set_state_rejects_foreign_states(ckpt: dreamenv.Checkpoint) -> None:
    single, envs = DreamEnv(ckpt), DreamVectorEnv(ckpt, 2)
    with pytest.raises(StateError, match=r"get_state\(\) needs a reset env"):
        single.get_state()
    single.reset(seed=0)
    envs.reset(seed=0)
    with pytest.raises(StateError, match=r"got a state of 2 envs; this env has 1"):
        single.set_state({k: v for k, v in envs.get_state().items() if k != "ended"})
    with pytest.raises(StateError, match=r"takes the dict returned by get_state\(\)"):
        single.set_state({"latent": None})
    with pytest.raises(StateError, match=r"takes the dict returned by get_state\(\)"):
        envs.set_state(single.get_state())


# --- rendering and rewards -----------------------------------------------------------------
def test_render_dream_env(ckpt: dreamenv.Checkpoint) -> None:
    env = DreamEnv(ckpt, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[..., 0], frame[..., 2])


def test_render_vector_envs(ckpt: dreamenv.Checkpoint) -> None:
    envs = DreamVectorEnv(ckpt, 3, render_mode="rgb_array")
    envs.reset(seed=0)
    frames = envs.render()
    assert frames.shape == (3, 96, 96, 3) and frames.dtype == np.uint8
    real = RealVectorEnv(ckpt, 2, render_mode="rgb_array")
    try:
        obs, _ = real.reset(seed=0)
        frames = real.render()
        assert frames.shape == (2, 96, 96, 3) and frames.dtype == np.uint8
    finally:
        real.close()


def test_render_without_mode_returns_none(ckpt: dreamenv.Checkpoint) -> None:
    env = DreamEnv(ckpt)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode=None"):
        assert env.render() is None


def test_pixels_observation_is_the_decoded_frame(ckpt: dreamenv.Checkpoint) -> None:
    env = DreamEnv(ckpt, obs_type="pixels", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render()[..., 0], obs[-1])


@pytest.mark.parametrize("mode", ["mean", "mode", "sample"])
def test_reward_modes(ckpt: dreamenv.Checkpoint, mode: str) -> None:
    envs = DreamVectorEnv(ckpt, N, reward_mode=mode, horizon=1000, use_termination=False)
    envs.reset(seed=0)
    rewards = np.concatenate([envs.step(a)[1] for a in _actions(10)])
    assert rewards.dtype == np.float64
    assert ((rewards >= -1.0) & (rewards <= 1.0)).all()
    if mode in ("mode", "sample"):
        assert set(rewards.tolist()) <= {-1.0, 0.0, 1.0}
    else:
        assert not set(rewards.tolist()) <= {-1.0, 0.0, 1.0}


# --- bad input -----------------------------------------------------------------------------
@pytest.fixture
def env(ckpt: dreamenv.Checkpoint) -> DreamEnv:
    env = DreamEnv(ckpt)
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (6, r"actions must lie in \[0, 5\] \(the game has 6 actions: NOOP, FIRE.*got \[6\]"),
        (-1, r"actions must lie in \[0, 5\].*got \[-1\]"),
        (np.array([0, 1]), r"action must be a single int in \[0, 5\], got shape \(2,\)"),
        (np.zeros((1, 1), dtype=int), r"action must be a single int .*got shape \(1, 1\)"),
        (float("nan"), r"actions must be integers in \[0, 5\], got dtype float64"),
        (1.5, r"actions must be integers in \[0, 5\], got dtype float64 \(values \[1.5\]\)"),
        ("left", r"actions must be integers in \[0, 5\], got dtype <U4"),
    ],
)
def test_bad_action(env: DreamEnv, action: object, message: str) -> None:
    with pytest.raises(InvalidActionError, match=message):
        env.step(action)


def test_integral_float_and_numpy_actions_are_accepted(env: DreamEnv) -> None:
    for action in (2.0, np.int32(3), np.array(4), np.array([5])):
        obs, *_ = env.step(action)
        assert env.observation_space.contains(obs)


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (
            np.zeros(3, dtype=int),
            r"actions must have shape \(4,\) \(one per env\), got shape \(3,\)",
        ),
        (np.zeros((4, 1), dtype=int), r"actions must have shape \(4,\).*got shape \(4, 1\)"),
        (np.array([0, 1, 2, 9]), r"actions must lie in \[0, 5\].*got \[9\]"),
        (np.array([0, np.nan, 1, 2]), r"actions must be integers in \[0, 5\]"),
    ],
)
def test_bad_vector_actions(ckpt: dreamenv.Checkpoint, actions: np.ndarray, message: str) -> None:
    envs = DreamVectorEnv(ckpt, N)
    envs.reset(seed=0)
    with pytest.raises(InvalidActionError, match=message):
        envs.step(actions)


def test_real_env_bad_action(ckpt: dreamenv.Checkpoint) -> None:
    real = RealEnv(ckpt)
    try:
        with pytest.raises(StateError, match=r"Cannot call step\(\) before reset\(\)"):
            real.step(0)
        real.reset(seed=0)
        with pytest.raises(InvalidActionError, match=r"actions must lie in \[0, 5\].*got \[7\]"):
            real.step(7)
    finally:
        real.close()


@pytest.mark.parametrize("cls", [DreamEnv, DreamVectorEnv])
def test_step_before_reset(ckpt: dreamenv.Checkpoint, cls: type) -> None:
    env = cls(ckpt)
    with pytest.raises(StateError, match=r"Cannot call step\(\) before reset\(\); call reset\(\)"):
        env.step(0 if cls is DreamEnv else np.zeros(1, dtype=int))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"obs_type": "rgb"},
            r"obs_type must be one of \['indices', 'embeddings', 'pixels'\], got 'rgb'",
        ),
        (
            {"reward_mode": "max"},
            r"reward_mode must be one of \['sample', 'mean', 'mode'\], got 'max'",
        ),
        ({"horizon": 0}, r"horizon must be a positive int \(default 50\), got 0"),
        ({"horizon": 2.5}, r"horizon must be a positive int \(default 50\), got 2.5"),
        (
            {"burn_in": 5},
            r"burn_in must be an int in \[1, 4\] \(the checkpoint's start context\), got 5",
        ),
        ({"burn_in": 0}, r"burn_in must be a positive int \(default 4\), got 0"),
        ({"horizn": 9}, r"Unknown dream option 'horizn'.*Did you mean 'horizon'\?"),
        ({"use_termination": "no"}, r"use_termination must be True or False, got 'no'"),
        ({"reset_share": 1.5}, r"reset_share must be a number in \[0, 1\] .*got 1.5"),
        ({"reset_share": "all"}, r"reset_share must be a number in \[0, 1\] .*got 'all'"),
    ],
)
def test_bad_options(checkpoint_dir: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        gym.make("dreamenv/Dream-v0", checkpoint=checkpoint_dir, **kwargs)
    with pytest.raises(ConfigError, match=message):
        DreamVectorEnv(checkpoint_dir, 2, **kwargs)


@pytest.mark.parametrize(("share", "from_resets"), [(0.0, False), (1.0, True)])
def test_reset_share_starts_dreams_where_real_episodes_start(
    ckpt: dreamenv.Checkpoint, share: float, from_resets: bool
) -> None:
    bank = ckpt.start_bank
    env = DreamVectorEnv(ckpt, 8, reset_share=share)
    env.reset(seed=0)
    for _ in range(3):
        env.reset(options={"reset_mask": np.ones(8, bool)})
    used = np.flatnonzero(env.core._bank_encoded.numpy())  # the entries encoded for a start
    assert len(used) and ((used >= bank.size - bank.resets) == from_resets).all()


@pytest.mark.parametrize("cls", [DreamEnv, DreamVectorEnv, RealEnv, RealVectorEnv])
def test_bad_render_mode(ckpt: dreamenv.Checkpoint, cls: type) -> None:
    with pytest.raises(ConfigError, match=r"render_mode must be None or 'rgb_array', got 'human'"):
        cls(ckpt, render_mode="human")


@pytest.mark.parametrize("burn_in", [1, 4])
def test_burn_in_range_is_accepted(ckpt: dreamenv.Checkpoint, burn_in: int) -> None:
    env = DreamEnv(ckpt, burn_in=burn_in)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_bad_num_envs(ckpt: dreamenv.Checkpoint) -> None:
    with pytest.raises(ConfigError, match="num_envs must be a positive int, got 0"):
        DreamVectorEnv(ckpt, 0)
    with pytest.raises(ConfigError, match="num_envs must be a positive int, got 0"):
        RealVectorEnv(ckpt, 0)


def test_real_env_bad_obs_type(ckpt: dreamenv.Checkpoint) -> None:
    with pytest.raises(
        ConfigError, match=r"obs_type of the 'discrete' family must be one of \[.*\], got 'rgb'"
    ):
        RealEnv(ckpt, obs_type="rgb")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_checkpoint_is_required(env_id: str) -> None:
    with pytest.raises(ConfigError, match=r"checkpoint is required: gym.make\('dreamenv/Dream-v0'"):
        gym.make(env_id)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_checkpoint_of_another_game(checkpoint_dir: Path, env_id: str) -> None:
    with pytest.raises(CheckpointError, match=r"models the game 'pong', not 'breakout'"):
        gym.make(env_id, checkpoint=checkpoint_dir, game="ALE/Breakout-v5")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_config_error(checkpoint_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"device='cuda' but CUDA is not available here"):
        DreamEnv(checkpoint_dir, device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_real_env_cuda_without_cuda_is_a_config_error(checkpoint_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"CUDA is not available"):
        RealEnv(checkpoint_dir, device="cuda")


@pytest.mark.parametrize("cls", [DreamEnv, DreamVectorEnv, RealEnv, RealVectorEnv])
def test_every_env_states_its_render_fps(cls: type) -> None:
    """Video recorders (gymnasium's RecordVideo, SB3's VecVideoRecorder) read it."""
    assert cls.metadata["render_fps"] == 15
    assert cls.metadata["render_modes"] == ["rgb_array"]
