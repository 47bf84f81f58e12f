"""The reality gap of an iteration: dream against real return, and open-loop scores."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamenv import ConfigError
from dreamenv.checkpoint import load_checkpoint
from dreamenv.data.store import EpisodeStore
from dreamenv.envs.options import DreamOptions
from dreamenv.evaluate import EpisodeStats, random_policy
from dreamenv.inspection import (
    OpenLoop,
    changed_accuracy,
    changed_cells,
    open_loop,
    real_segments,
)
from dreamenv.train.policy_change import action_probabilities, policy_change
from dreamenv.train.reality_gap import (
    FORCED_KEYS,
    OPEN_LOOP_KEYS,
    concat_open_loops,
    model_scores,
    open_loop_scores,
    real_window_return,
    reality_gap,
    sampled_end_precision_recall,
    sampled_sign_precision_recall,
    sign_precision_recall,
)

VALUES = torch.tensor([-1.0, 0.0, 1.0])


def test_sign_precision_recall_on_a_hand_built_case() -> None:
    predicted = np.array([1, 0, -1, 1, 0, -1])
    real = np.array([1, -1, -1, 0, 0, 1])
    # real events at 0, 1, 2, 5: right at 0 and 2; claims at 0, 2, 3, 5: right at 0 and 2
    assert sign_precision_recall(predicted, real) == (0.5, 0.5, 4)
    assert sign_precision_recall(np.array([2.0, 0.0]), np.array([7.0, 0.0])) == (1.0, 1.0, 1)


def test_precision_and_recall_are_nan_when_undefined() -> None:
    precision, recall, events = sign_precision_recall(np.zeros(3), np.zeros(3))
    assert math.isnan(precision) and math.isnan(recall) and events == 0
    precision, recall, events = sign_precision_recall(np.zeros(2), np.array([1, 0]))
    assert math.isnan(precision) and recall == 0.0 and events == 1


def test_sign_precision_recall_takes_equal_sizes() -> None:
    with pytest.raises(ConfigError, match="must have the same size, got 2 and 3"):
        sign_precision_recall(np.zeros(2), np.zeros(3))


def perfect(rewards: np.ndarray, terminated: np.ndarray, latents: torch.Tensor) -> OpenLoop:
    """An open loop that imagines exactly what really happened."""
    logits = torch.nn.functional.one_hot(torch.as_tensor(np.sign(rewards)).long() + 1, 3)
    return OpenLoop(
        latents=latents,
        reward_logits=30.0 * logits.float(),  # all but certain
        real_latents=latents.clone(),
        termination_logits=torch.as_tensor(np.where(terminated, 9.0, -9.0)),
    )


def test_a_perfect_predictor_scores_one() -> None:
    rewards = np.array([[0.0, 3.0, 0.0], [-1.0, 0.0, 0.0]])
    terminated = np.array([[False, False, False], [False, False, True]])
    scores = open_loop_scores(
        perfect(
            rewards,
            terminated,
            torch.randint(0, 5, (2, 3, 4), generator=torch.Generator().manual_seed(0)),
        ),
        rewards,
        terminated,
        VALUES,
    )
    assert set(scores) == set(OPEN_LOOP_KEYS)
    for key in (
        "open_latent_acc",
        "open_changed_acc",
        "reward_precision",
        "reward_recall",
        "reward_recall_sampled",
    ):
        assert scores[key] == pytest.approx(1.0)
    assert scores["termination_precision"] == scores["termination_recall"] == 1.0
    assert scores["termination_recall_sampled"] == pytest.approx(1.0, abs=1e-3)  # p = 0.9999
    assert scores["termination_precision_sampled"] == pytest.approx(1.0, abs=1e-3)
    assert scores["reward_steps"] == 2 and scores["termination_steps"] == 1
    assert math.isnan(scores["open_latent_mse"])


def test_float_latents_give_a_mean_squared_error_instead() -> None:
    rewards, terminated = np.zeros((1, 2)), np.zeros((1, 2), dtype=bool)
    pred = perfect(rewards, terminated, torch.zeros(1, 2, 3))
    pred.real_latents[..., 0] = 3.0
    scores = open_loop_scores(pred, rewards, terminated, VALUES)
    assert scores["open_latent_mse"] == pytest.approx(3.0)  # 9 on one entry of three
    assert math.isnan(scores["open_latent_acc"]) and math.isnan(scores["open_changed_acc"])
    assert math.isnan(scores["reward_recall"]) and scores["reward_steps"] == 0


def test_changed_accuracy_scores_only_what_changes() -> None:
    # 2 segments, 4 steps, 3x3 grids: one moving cell each, the rest still
    real = torch.zeros(2, 4, 3, 3, dtype=torch.long)
    real[:, :, 1, 1] = torch.arange(4)
    still = real[:, :1].expand_as(real).clone()  # a model that holds the first latent
    assert float((still == real).float().mean()) > 0.9  # plain accuracy looks good
    assert changed_accuracy(still, real) == 0.0
    assert changed_accuracy(real.clone(), real) == 1.0
    half = real.clone()
    half[0, :, 1, 1] = 9  # the first segment's moving cell always wrong
    assert changed_accuracy(half, real) == 0.5


def test_changed_accuracy_is_nan_where_it_cannot_be_scored() -> None:
    still = torch.zeros(1, 3, 2, 2, dtype=torch.long)
    assert math.isnan(changed_accuracy(still, still))  # nothing changes
    assert math.isnan(changed_accuracy(still[:, :1], still[:, :1]))  # one step
    assert math.isnan(changed_accuracy(torch.zeros(1, 3, 4), torch.ones(1, 3, 4)))  # float


def test_changed_cells_mark_what_differs_from_the_step_before() -> None:
    real = torch.tensor([[[0, 0], [1, 0], [1, 2]]])
    assert changed_cells(real)[0].tolist() == [[False, False], [True, False], [False, True]]
    start = torch.tensor([[0, 7]])
    assert changed_cells(real, start)[0, 0].tolist() == [False, True]


def test_changed_accuracy_scores_the_first_step_against_the_start() -> None:
    real = torch.tensor([[[1, 0], [1, 0]]])  # entry 0 changed from the start at step 1 only
    imagined = torch.tensor([[[1, 0], [0, 0]]])
    assert math.isnan(changed_accuracy(imagined, real))  # without a start: nothing changes
    assert changed_accuracy(imagined, real, start=torch.tensor([[0, 0]])) == 1.0
    assert changed_accuracy(real.roll(1, -1), real, start=torch.tensor([[0, 0]])) == 0.0


def test_concatenated_open_loops_keep_their_starts() -> None:
    parts = [
        perfect(np.zeros((n, 2)), np.zeros((n, 2), dtype=bool), torch.zeros(n, 2, 3))
        for n in (1, 2)
    ]
    assert concat_open_loops(parts).start_latents is None
    for i, part in enumerate(parts):
        part.start_latents = torch.full((len(part.latents), 3), float(i))
    joined = concat_open_loops(parts)
    assert joined.start_latents is not None
    assert joined.start_latents[:, 0].tolist() == [0.0, 1.0, 1.0]


def test_a_wrong_sign_is_a_miss_and_a_false_claim() -> None:
    rewards, terminated = np.array([[1.0, 0.0]]), np.zeros((1, 2), dtype=bool)
    pred = perfect(-rewards, terminated, torch.zeros(1, 2, 1, dtype=torch.long))
    scores = open_loop_scores(pred, rewards, terminated, VALUES)
    assert scores["reward_precision"] == 0.0 and scores["reward_recall"] == 0.0
    assert scores["reward_recall_sampled"] == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(scores["termination_precision"])  # never predicted, never happened


def test_sampled_scores_count_what_the_most_likely_reward_misses() -> None:
    # a rewarded step at P(+1) = 0.4, an unrewarded one at P(+1) = 0.1, a penalty at P(-1) = 0.5
    probs = np.array([[0.0, 0.6, 0.4], [0.0, 0.9, 0.1], [0.5, 0.5, 0.0]])
    real = np.array([1.0, 0.0, -2.0])
    precision, recall = sampled_sign_precision_recall(probs, real)
    assert recall == pytest.approx((0.4 + 0.5) / 2)
    assert precision == pytest.approx((0.4 + 0.5) / (0.4 + 0.1 + 0.5))
    pred = perfect(real[None], np.zeros((1, 3), dtype=bool), torch.zeros(1, 3, 1))
    pred.reward_logits = torch.log(torch.as_tensor(probs[None], dtype=torch.float32))
    scores = open_loop_scores(pred, real[None], np.zeros((1, 3), dtype=bool), VALUES)
    assert scores["reward_recall"] == pytest.approx(0.5)  # the most likely: 0, 0, -1 or 0
    assert scores["reward_recall_sampled"] == pytest.approx(recall)
    assert math.isnan(sampled_sign_precision_recall(np.array([[0, 1, 0]]), np.zeros(1))[1])
    with pytest.raises(ConfigError, match="must have the same size, got 1 and 2"):
        sampled_sign_precision_recall(np.array([[0, 1, 0]]), np.zeros(2))


def test_sampled_ends_count_near_a_real_end_and_nowhere_else() -> None:
    real = np.zeros((2, 12), dtype=bool)
    real[0, 6] = True  # one real end; the second segment never ends
    spread = np.zeros((2, 12))
    spread[0, 2:7] = 0.1  # the head's mass over the five steps up to the end
    spread[1, 9] = 0.5  # an end where nothing ends
    precision, recall = sampled_end_precision_recall(spread, real)  # tolerance 4: steps 2-10
    assert recall == pytest.approx(1 - 0.9**5)
    assert precision == pytest.approx(0.5 / 1.0)
    assert sampled_end_precision_recall(spread, real, tolerance=0) == pytest.approx((0.1, 0.1))
    assert sampled_end_precision_recall(spread, real, tolerance=3)[0] == pytest.approx(0.4)
    never = sampled_end_precision_recall(np.zeros((1, 3)), np.zeros((1, 3)))
    assert all(math.isnan(x) for x in never)
    with pytest.raises(ConfigError, match=r"same \(segments, steps\) shape, got \(3,\) and"):
        sampled_end_precision_recall(np.zeros(3), np.zeros((1, 3)))


def test_open_loop_ends_are_scored_as_the_dream_draws_them() -> None:
    rewards, real = np.zeros((1, 8)), np.zeros((1, 8), dtype=bool)
    real[0, 5] = True
    pred = perfect(rewards, real, torch.zeros(1, 8, 1, dtype=torch.long))
    pred.termination_logits = torch.full((1, 8), -30.0)
    pred.termination_logits[0, 3] = 0.0  # p = 0.5 two steps early: never above 0.5
    scores = open_loop_scores(pred, rewards, real, VALUES)
    assert scores["termination_recall"] == 0.0
    assert scores["termination_recall_sampled"] == pytest.approx(0.5)
    assert scores["termination_precision_sampled"] == pytest.approx(1.0)


def test_real_window_return_is_the_clipped_rate_times_the_horizon() -> None:
    stats = EpisodeStats(
        returns=np.array([30.0, -2.0]),
        clipped_returns=np.array([3.0, -1.0]),
        lengths=np.array([150, 50]),
    )
    assert real_window_return(stats, 50) == pytest.approx(50 * 2 / 200)
    empty = EpisodeStats(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
    assert math.isnan(real_window_return(empty, 50))


def test_open_loop_imagines_termination_logits(checkpoint_dir: Path, store_dir: Path) -> None:
    ckpt = load_checkpoint(checkpoint_dir)
    seg = real_segments(EpisodeStore.open(store_dir).episodes(), 5, 2, 2, 4)
    pred = open_loop(ckpt.model, torch.as_tensor(seg["frames"]), torch.as_tensor(seg["actions"]), 2)
    assert pred.termination_logits.shape == (2, 5)
    assert pred.reward_logits.shape[:2] == (2, 5)
    frames = torch.as_tensor(seg["frames"][:, :2])
    embeddings = ckpt.model.encode(frames.flatten(0, 1)).unflatten(0, (2, 2))
    start, _ = ckpt.model.initial_state(embeddings, torch.as_tensor(seg["actions"][:, :1]))
    assert pred.start_latents is not None
    assert torch.equal(pred.start_latents, start)  # the burn-in's real latent


@pytest.mark.parametrize("reads_next", [False, True])
def test_open_loop_scores_the_heads_teacher_forced_too(
    checkpoint_dir: Path, store_dir: Path, reads_next: bool
) -> None:
    """The forced logits are the training pass's: every step from the real codes and the
    state the real game led to (and the real next codes, where the heads read them),
    whatever the imagining drew."""
    model = load_checkpoint(checkpoint_dir).model
    if reads_next:
        config = dataclasses.replace(model.config, heads_read_next=True)
        model = type(model)(config, model.spec, model.actions).eval()
    burn_in, steps = 2, 6
    seg = real_segments(EpisodeStore.open(store_dir).episodes(), steps, 3, burn_in, 4)
    frames, actions = torch.as_tensor(seg["frames"]), torch.as_tensor(seg["actions"])
    pred = open_loop(model, frames, actions, burn_in)
    with torch.no_grad():
        codes = model.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        _, reward_logits, term_logits = model._dynamics_outputs(codes, actions)
    assert pred.forced_termination_logits is not None and pred.forced_reward_logits is not None
    torch.testing.assert_close(pred.forced_termination_logits, term_logits[:, burn_in - 1 :])
    torch.testing.assert_close(pred.forced_reward_logits, reward_logits[:, burn_in - 1 :])
    again = open_loop(model, frames, actions, burn_in)
    assert torch.equal(again.latents, pred.latents)  # the imagining's own random streams


def test_forced_scores_tell_a_right_head_from_a_drifting_dream() -> None:
    rewards = np.array([[0.0, 1.0, 0.0, 0.0]])
    real = np.array([[False, False, False, True]])
    pred = perfect(rewards, real, torch.zeros(1, 4, 1, dtype=torch.long))
    scores = open_loop_scores(pred, rewards, real, VALUES)
    assert all(math.isnan(scores[k]) for k in FORCED_KEYS)  # not computed: NaN
    pred.forced_reward_logits, pred.forced_termination_logits = (
        pred.reward_logits.clone(),
        pred.termination_logits.clone(),
    )
    pred.reward_logits = pred.reward_logits.roll(1, 1)  # the dream drifted off both events
    pred.termination_logits = pred.termination_logits.roll(-3, 1)
    scores = open_loop_scores(pred, rewards, real, VALUES)
    assert scores["reward_recall_sampled"] < 0.01 and scores["termination_recall"] == 0.0
    for key in FORCED_KEYS:
        assert scores[key] == pytest.approx(1.0, abs=1e-3)
    joined = concat_open_loops([pred, pred])
    assert joined.forced_termination_logits is not None
    assert joined.forced_termination_logits.shape == (2, 4)


def test_reality_gap_of_a_tiny_model(checkpoint_dir: Path, store_dir: Path) -> None:
    episodes = EpisodeStore.open(store_dir).episodes()
    real = EpisodeStats(np.array([-3.0]), np.array([-3.0]), np.array([150]))
    options = DreamOptions(horizon=6, use_termination=False)
    gap = reality_gap(
        checkpoint_dir,
        random_policy(6),
        episodes,
        real=real,
        options=options,
        dream_episodes=3,
        segments=18,
    )
    assert set(gap) == {
        "dream_return",
        "dream_length",
        "real_window_return",
        "gap",
        *OPEN_LOOP_KEYS,
    }
    assert gap["dream_length"] == 6.0  # no termination: every dream runs to the horizon
    assert abs(gap["dream_return"]) <= 6
    assert gap["real_window_return"] == pytest.approx(6 * -3 / 150)
    assert gap["gap"] == pytest.approx(gap["dream_return"] - gap["real_window_return"])
    assert 0.0 <= gap["open_latent_acc"] <= 1.0 and math.isnan(gap["open_latent_mse"])
    for key in ("reward_precision", "reward_recall", "termination_precision", "termination_recall"):
        assert math.isnan(gap[key]) or 0.0 <= gap[key] <= 1.0
    assert gap["reward_steps"] >= 0 and gap["termination_steps"] >= 0


def test_segments_in_batches_score_as_one(checkpoint_dir: Path, store_dir: Path) -> None:
    ckpt = load_checkpoint(checkpoint_dir)
    episodes = EpisodeStore.open(store_dir).episodes()
    many = model_scores(ckpt, episodes, horizon=3, burn_in=2, segments=18, seed=1)
    seg = real_segments(episodes, 3, 18, 2, ckpt.spec.frame_stack, 1)
    pred = open_loop(
        ckpt.model, torch.as_tensor(seg["frames"]), torch.as_tensor(seg["actions"]), 2, 1
    )
    once = open_loop_scores(
        pred, seg["rewards"][:, 1:], seg["terminated"][:, 1:], ckpt.model.reward_values()
    )
    np.testing.assert_equal(many, once)


def test_no_long_enough_episode_gives_nan_scores(checkpoint_dir: Path, store_dir: Path) -> None:
    ckpt = load_checkpoint(checkpoint_dir)
    episodes = EpisodeStore.open(store_dir).episodes()
    scores = model_scores(ckpt, episodes, horizon=10_000, burn_in=4, segments=4)
    assert scores["reward_steps"] == 0.0
    assert all(math.isnan(v) for k, v in scores.items() if not k.endswith("_steps"))


def test_reality_gap_checks_its_counts(checkpoint_dir: Path) -> None:
    real = EpisodeStats(np.zeros(1), np.zeros(1), np.ones(1, dtype=np.int64))
    with pytest.raises(ConfigError, match="dream_episodes must be a positive int .* got 0"):
        reality_gap(checkpoint_dir, random_policy(6), [], real=real, dream_episodes=0)
    with pytest.raises(ConfigError, match="segments must be an int >= 0 .* got -1"):
        reality_gap(checkpoint_dir, random_policy(6), [], real=real, segments=-1)


def constant_policy(action: int) -> Callable[[np.ndarray], np.ndarray]:
    """A policy (any callable of observations) that always takes ``action``."""
    return lambda obs: np.full(len(obs), action)


def test_policy_change_of_policies_that_always_or_never_agree(checkpoint_dir: Path) -> None:
    options = DreamOptions(horizon=6, use_termination=False)
    same = policy_change(
        checkpoint_dir, constant_policy(2), constant_policy(2), options=options, states=5
    )
    other = policy_change(
        checkpoint_dir, constant_policy(2), constant_policy(3), options=options, states=5
    )
    assert (same["action_agreement"], other["action_agreement"]) == (1.0, 0.0)
    # a callable gives actions, not probabilities: no shift to measure
    assert math.isnan(same["policy_shift"]) and math.isnan(other["policy_shift"])


def test_policy_change_of_an_sb3_agent_with_itself_and_another(checkpoint_dir: Path) -> None:
    from stable_baselines3 import PPO

    from dreamenv.sb3 import train_in_dream

    options = DreamOptions(horizon=6, use_termination=False)
    agent = train_in_dream(
        checkpoint_dir, 64, options=options, num_envs=2, n_steps=32, seed=0, progress=False
    )
    assert isinstance(agent, PPO)
    itself = policy_change(checkpoint_dir, agent, agent, options=options, states=16)
    assert itself == {"action_agreement": 1.0, "policy_shift": 0.0}
    versus_constant = policy_change(
        checkpoint_dir, agent, constant_policy(0), options=options, states=16, seed=3
    )
    assert 0.0 <= versus_constant["action_agreement"] <= 1.0
    assert math.isnan(versus_constant["policy_shift"])


def test_policy_shift_sees_what_the_most_likely_action_hides(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    """The same agent at a lower temperature: every most likely action is kept, and the
    shift is the total variation distance between the two distributions, state by state."""
    from stable_baselines3 import PPO

    from dreamenv.sb3 import train_in_dream

    options = DreamOptions(horizon=6, use_termination=False)
    agent = train_in_dream(
        checkpoint_dir, 64, options=options, num_envs=2, n_steps=32, seed=0, progress=False
    )
    agent.save(tmp_path / "agent")
    sharper = PPO.load(tmp_path / "agent")
    with torch.no_grad():
        for param in sharper.policy.action_net.parameters():
            param.mul_(50.0)
    change = policy_change(checkpoint_dir, sharper, agent, options=options, states=16, seed=1)
    assert change["action_agreement"] == 1.0
    assert change["policy_shift"] > 0.01

    from dreamenv.envs.vector import DreamVectorEnv

    env = DreamVectorEnv(checkpoint_dir, 16, options=options)
    obs, _ = env.reset(seed=1)
    env.close()
    p, q = action_probabilities(sharper, obs), action_probabilities(agent, obs)
    assert p is not None and q is not None
    np.testing.assert_allclose(p.sum(-1), 1.0)
    assert change["policy_shift"] == pytest.approx(0.5 * np.abs(p - q).sum(-1).mean())
    assert action_probabilities(constant_policy(0), obs) is None


@pytest.mark.parametrize("states", [0, -1, 2.5, True])
def test_policy_change_takes_a_positive_number_of_states(
    checkpoint_dir: Path, states: object
) -> None:
    with pytest.raises(ConfigError, match="states must be a positive int"):
        policy_change(checkpoint_dir, constant_policy(0), constant_policy(0), states=states)  # type: ignore[arg-type]


def test_policy_change_through_a_model_with_memory(family_checkpoint) -> None:
    rssm = family_checkpoint("rssm")  # observations carry the model's recurrent state
    options = DreamOptions(horizon=4, use_termination=False)
    same = policy_change(rssm, constant_policy(1), constant_policy(1), options=options)
    other = policy_change(rssm, constant_policy(1), constant_policy(4), options=options)
    assert (same["action_agreement"], other["action_agreement"]) == (1.0, 0.0)


def test_policy_change_is_nan_for_continuous_actions(gym_checkpoint) -> None:
    pendulum = gym_checkpoint("Pendulum-v1", "ensemble")

    def zero(obs: np.ndarray) -> np.ndarray:
        return np.zeros((len(obs), 1), dtype=np.float32)

    change = policy_change(pendulum, zero, zero, states=4)
    assert math.isnan(change["action_agreement"]) and math.isnan(change["policy_shift"])
