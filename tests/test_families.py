"""The same env-level tests for every world-model family: each is trained with
``dreamenv fit --family NAME`` on the session's Pong store, then its dream and real envs
must pass gymnasium's and SB3's checkers, agree between vector and single envs, repeat
under the same seed, survive a save/load round trip, reject bad checkpoints, and let SB3
PPO train in the dream and play the real game.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dreamenv
from dreamenv import CheckpointError, DreamEnv, DreamVectorEnv, RealEnv, RealVectorEnv
from dreamenv.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint
from dreamenv.models import FAMILIES
from dreamenv.sb3 import evaluate, make_agent, wrap

FAMILY_NAMES = sorted(f for f in FAMILIES if FAMILIES[f].frame_kind == "image")
"""The image families (these tests fit them on the session's Pong store; the state-vector
family is tested on state stores in test_ensemble.py and test_gym_envs.py)."""
N = 3


def _actions(space: gym.Space, steps: int, n: int, seed: int = 0) -> np.ndarray:
    """``(steps, n, *space.shape)`` random actions of a single env's action space."""
    high = space.n if isinstance(space, gym.spaces.Discrete) else int(space.nvec[0])
    return np.random.default_rng(seed).integers(0, high, size=(steps, n, *space.shape))


def _single_rollouts(family_ckpt: Path, seeds: list[int], actions: np.ndarray, **kw) -> tuple:
    """Per seed, a single DreamEnv's observations and rewards, restarting after each end
    (the step after an end gives the reset observation and reward 0, as NextStep)."""
    all_obs, all_rewards = [], []
    for i, seed in enumerate(seeds):
        env = DreamEnv(family_ckpt, **kw)
        obs, _ = env.reset(seed=seed)
        observations, rewards, ended = [obs], [], False
        for a in actions[:, i]:
            if ended:
                obs, _ = env.reset()
                r, te, tr = 0.0, False, False
            else:
                obs, r, te, tr, _ = env.step(a)
            ended = te or tr
            observations.append(obs)
            rewards.append(r)
        all_obs.append(np.stack(observations))
        all_rewards.append(np.array(rewards))
    return np.stack(all_obs, 1), np.stack(all_rewards, 1)


def _vector_rollout(envs: gym.vector.VectorEnv, seed: int, actions: np.ndarray) -> tuple:
    obs, _ = envs.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, r, _, _, _ = envs.step(a)
        observations.append(obs)
        rewards.append(r)
    return np.stack(observations), np.stack(rewards)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_fit_writes_a_checkpoint_of_the_family(family: str, family_checkpoint) -> None:
    ckpt = load_checkpoint(family_checkpoint(family), family=family)
    assert ckpt.model.family == family
    assert (family_checkpoint(family) / "metrics.csv").is_file()


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("env_id", ["dreamenv/Dream-v0", "dreamenv/Real-v0"])
def test_env_checkers_pass_for_every_observation_type(
    family: str, env_id: str, family_checkpoint
) -> None:
    path = family_checkpoint(family)
    for obs_type in load_checkpoint(path).model.obs_types:
        env = gym.make(env_id, checkpoint=path, obs_type=obs_type, render_mode="rgb_array")
        try:
            gym_check_env(env.unwrapped, skip_render_check=False)
            sb3_check_env(env.unwrapped, warn=False)
        finally:
            env.close()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_dream_and_real_envs_have_the_same_spaces(family: str, family_checkpoint) -> None:
    path = family_checkpoint(family)
    for obs_type in load_checkpoint(path).model.obs_types:
        dream = gym.make("dreamenv/Dream-v0", checkpoint=path, obs_type=obs_type)
        real = gym.make("dreamenv/Real-v0", checkpoint=path, obs_type=obs_type)
        assert dream.observation_space == real.observation_space
        assert dream.action_space == real.action_space
        obs, _ = real.reset(seed=0)
        for a in _actions(real.action_space, 5, 1)[:, 0]:
            obs, *_ = real.step(a)
            assert real.observation_space.contains(obs)
        real.close()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_vector_env_rolls_out_as_single_envs(family: str, family_checkpoint) -> None:
    path = family_checkpoint(family)
    envs = DreamVectorEnv(path, N, horizon=4)
    actions = _actions(envs.single_action_space, 11, N, seed=1)
    vec_obs, vec_rewards = _vector_rollout(envs, 7, actions)
    single_obs, single_rewards = _single_rollouts(
        path, [7 + i for i in range(N)], actions, horizon=4
    )
    np.testing.assert_allclose(vec_obs, single_obs, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(vec_rewards, single_rewards)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_same_seed_same_rollout_other_seed_another(family: str, family_checkpoint) -> None:
    path = family_checkpoint(family)
    envs = DreamVectorEnv(path, N, obs_type="pixels")
    actions = _actions(envs.single_action_space, 8, N, seed=2)
    a = _vector_rollout(envs, 3, actions)
    b = _vector_rollout(DreamVectorEnv(path, N, obs_type="pixels"), 3, actions)
    c = _vector_rollout(envs, 4, actions)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_save_load_round_trip_gives_the_same_rollouts(
    family: str, family_checkpoint, tmp_path: Path
) -> None:
    path = family_checkpoint(family)
    ckpt = load_checkpoint(path)
    copy = save_checkpoint(tmp_path / "copy", ckpt.model, ckpt.start_bank, ckpt.action_meanings)
    reloaded = load_checkpoint(copy)
    original = {k: v for k, v in ckpt.model.state_dict().items()}
    for key, value in reloaded.model.state_dict().items():
        torch.testing.assert_close(value, original[key], rtol=0, atol=0)
    actions = _actions(ckpt.model.action_space, 6, N, seed=3)
    a = _vector_rollout(DreamVectorEnv(path, N), 5, actions)
    b = _vector_rollout(DreamVectorEnv(copy, N), 5, actions)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_bad_checkpoints_raise_clear_errors(family: str, family_checkpoint, tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    shutil.copytree(family_checkpoint(family), path)
    other = "discrete" if family != "discrete" else "sssm"
    with pytest.raises(CheckpointError, match=f"holds a '{family}' model, expected '{other}'"):
        load_checkpoint(path, family=other)
    weights = path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        gym.make("dreamenv/Dream-v0", checkpoint=path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="has no weights.safetensors"):
        gym.make("dreamenv/Real-v0", checkpoint=path)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_ppo_trains_in_the_dream_and_plays_the_real_game(family: str, family_checkpoint) -> None:
    path = family_checkpoint(family)
    dream = wrap(DreamVectorEnv(path, 2, horizon=8))
    agent = make_agent("ppo", dream, seed=0, n_steps=8, batch_size=16, n_epochs=1)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(32)
    after = list(agent.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    returns = evaluate(agent, path, episodes=2, num_envs=2, max_steps=20)
    assert returns.shape == (2,)
    assert np.isfinite(returns).all()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_real_env_single_matches_vector_env(family: str, family_checkpoint) -> None:
    path = family_checkpoint(family)
    single = RealEnv(path)
    vec = RealVectorEnv(path, 2)
    actions = _actions(single.action_space, 6, 2, seed=4)
    obs_s, _ = single.reset(seed=11)
    obs_v, _ = vec.reset(seed=11)
    np.testing.assert_allclose(obs_s, obs_v[0], rtol=1e-5, atol=1e-5)
    for a in actions:
        obs_s, r_s, *_ = single.step(a[0])
        obs_v, r_v, *_ = vec.step(a)
        np.testing.assert_allclose(obs_s, obs_v[0], rtol=1e-5, atol=1e-5)
        assert r_s == r_v[0]
    single.close()
    vec.close()


def test_unknown_family_is_a_clear_error(store_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(dreamenv.ConfigError, match="Unknown world-model family 'nope'"):
        dreamenv.fit(store_dir, tmp_path / "m", family="nope", progress=False)


def test_jumpy_real_env_applies_the_chunk(family_checkpoint) -> None:
    """One step of a jumpy model's Real-v0 is ``jump`` real steps: the same frames and the
    summed rewards as that many steps of a one-step model's Real-v0 (pixels: real frames)."""
    jumpy = RealVectorEnv(family_checkpoint("sssm_jumpy"), 2, obs_type="pixels")
    plain = RealVectorEnv(family_checkpoint("sssm"), 2, obs_type="pixels")
    assert jumpy.single_action_space == gym.spaces.MultiDiscrete([6] * 4)
    chunks = _actions(jumpy.single_action_space, 10, 2, seed=5)
    obs_j, _ = jumpy.reset(seed=3)
    obs_p, _ = plain.reset(seed=3)
    np.testing.assert_array_equal(obs_j, obs_p)
    for chunk in chunks:
        obs_j, r_j, te_j, tr_j, _ = jumpy.step(chunk)
        total = np.zeros(2)
        for k in range(4):
            obs_p, r_p, te_p, tr_p, _ = plain.step(chunk[:, k])
            total += r_p
            assert not (te_p | tr_p).any()  # the session store's episodes are longer
        np.testing.assert_array_equal(obs_j, obs_p)
        np.testing.assert_array_equal(r_j, total)
    with pytest.raises(dreamenv.InvalidActionError, match=r"shape \(2, 4\)"):
        jumpy.step(np.zeros(2, dtype=np.int64))
    jumpy.close()
    plain.close()


@pytest.mark.parametrize("family", [f for f in FAMILY_NAMES if "jumpy" not in f])
def test_collection_feeds_the_agent_what_real_v0_shows(
    family: str, family_checkpoint, tmp_path: Path
) -> None:
    """The observations an agent collects from are Real-v0's on the same games (through
    game ends: Pong's 150-step episodes end inside this collection)."""
    from dreamenv.sb3 import AgentPolicy

    path = family_checkpoint(family)
    agent = make_agent("ppo", wrap(DreamVectorEnv(path, 2)), seed=0, n_steps=8, batch_size=16)

    class Recording(AgentPolicy):
        def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            actions = super().__call__(obs, rng)
            seen.append((obs.copy(), actions.copy()))
            return actions

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    policy = Recording(agent, path)
    spec = policy.checkpoint.spec
    dreamenv.collect(tmp_path / "data", spec, 2 * 170, num_envs=2, policy=policy, progress=False)
    # collect() seeds ale-py's games with consecutive seeds from its own generator
    first = int(np.random.default_rng([0, 0]).integers(2**31 - 2))
    real = RealVectorEnv(path, 2, autoreset_mode="SameStep")
    obs, _ = real.reset_with_ale_seeds([first, first + 1])
    ended = 0
    for fed, actions in seen:
        np.testing.assert_allclose(fed, obs, rtol=1e-5, atol=1e-5)
        obs, _, terminated, truncated, _ = real.step(actions)
        ended += int((terminated | truncated).sum())
    assert ended >= 2
    real.close()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_bfloat16_updates_and_dream_steps_stay_close_to_float32(
    family: str, family_checkpoint, store_dir: Path
) -> None:
    """Under bfloat16 autocast a training loss and its gradients exist and stay finite and
    near float32's, and a dream rollout keeps float32 state and valid observations."""
    from dreamenv.data.sequences import SequenceSampler
    from dreamenv.data.store import EpisodeStore
    from dreamenv.precision import autocast

    model = load_checkpoint(family_checkpoint(family)).model.train()
    store = EpisodeStore.open(store_dir)
    sampler = SequenceSampler(store.episodes(), store.spec.frame_stack, model.window_steps(4))
    batch = {k: torch.as_tensor(v) for k, v in sampler.sample(4).items()}
    losses = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        with autocast(precision, "cpu"):  # type: ignore[arg-type]
            out = model.loss(batch, "joint", 1)
        out["loss"].backward()
        assert out["loss"].dtype == torch.float32
        assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())
        losses[precision] = float(out["loss"].detach())
        model.zero_grad()
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.1)
    env = DreamVectorEnv(family_checkpoint(family), 2, precision="bfloat16")
    env.reset(seed=0)
    for _ in range(3):
        obs, reward, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert reward.dtype == np.float32 or reward.dtype == np.float64
    state = env.get_state()["model_state"]
    assert all(s.dtype != torch.bfloat16 for s in state)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("rate", [0.02, 0.0])
def test_termination_head_starts_at_the_rate_it_is_given(
    family: str, rate: float, family_checkpoint
) -> None:
    env = DreamEnv(family_checkpoint(family))
    env.reset(seed=0)
    core = env.core
    core.model.set_termination_rate(rate, steps=500)
    env.action_space.seed(0)
    for _ in range(3):
        actions = core.check_actions(np.stack([env.action_space.sample()]))
        with torch.no_grad():
            pred = core.model.step(core.state, core.latent, actions, core.rng)
        expected = rate or 1 / (10 * 500)
        torch.testing.assert_close(
            torch.sigmoid(pred.termination_logits.float()), torch.full((1,), expected)
        )
        env.step(actions.numpy()[0])
