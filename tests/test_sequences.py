"""Training windows and start contexts cut from episodes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dreamenv import ConfigError, FitConfig, fit
from dreamenv.data.sequences import SequenceSampler, build_start_bank, split_episodes
from dreamenv.data.store import Episode
from dreamenv.envs.atari import stack_frames


def episode(length: int, reward_at: tuple[int, ...] = (), seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    rewards = np.zeros(length, np.float32)
    rewards[list(reward_at)] = 1.0
    terminated = np.zeros(length, bool)
    terminated[-1] = True
    return Episode(
        frames=rng.integers(0, 255, (length + 1, 8, 8), dtype=np.uint8),
        actions=rng.integers(0, 4, length),
        rewards=rewards,
        terminated=terminated,
        truncated=np.zeros(length, bool),
    )


def test_windows_are_masked_past_the_episode_end() -> None:
    ep = episode(5)
    sampler = SequenceSampler([ep], stack=2, seq_len=4)
    batch = sampler.window(np.array([0]), np.array([3]))
    assert batch["mask"][0].tolist() == [True, True, False, False]
    assert batch["terminated"][0].tolist() == [False, True, False, False]
    np.testing.assert_array_equal(batch["frames"][0, 0], stack_frames(ep.frames, np.array(3), 2))


def test_reward_windows_hold_a_reward() -> None:
    episodes = [episode(200, (150,), seed=1), episode(200, seed=2)]
    uniform = SequenceSampler(episodes, stack=2, seq_len=8, seed=0)
    biased = SequenceSampler(episodes, stack=2, seq_len=8, seed=0, reward_windows=0.5)
    share = lambda s: np.mean([(s.sample(16)["rewards"] != 0).any(1).mean() for _ in range(20)])  # noqa: E731
    assert share(biased) >= 0.5
    assert share(uniform) < 0.2


def test_reward_windows_without_rewards_fall_back_to_uniform() -> None:
    sampler = SequenceSampler([episode(50)], stack=2, seq_len=8, reward_windows=1.0)
    assert sampler.sample(4)["frames"].shape == (4, 9, 2, 8, 8)


@pytest.mark.parametrize(
    "shares, message",
    [
        ({"reward_windows": 1.5}, r"reward_windows must lie in \[0, 1\], got 1.5"),
        ({"termination_windows": -0.1}, r"termination_windows must lie in \[0, 1\], got -0.1"),
        (
            {"reward_windows": 0.75, "termination_windows": 0.5},
            r"reward_windows \+ termination_windows must be at most 1 .*0.75 \+ 0.5",
        ),
    ],
)
def test_fit_rejects_bad_window_shares(store_dir, tmp_path, shares, message) -> None:
    with pytest.raises(ConfigError, match=message):
        fit(store_dir, tmp_path / "m", preset="tiny", config=FitConfig(**shares), progress=False)


def lives_episode(length: int, lost_at: tuple[int, ...], seed: int = 0) -> Episode:
    ep = episode(length, seed=seed)
    ep.terminated[:] = False  # cut, not ended: only its lost lives end anything
    ep.life_lost = np.isin(np.arange(length), lost_at)
    return ep


def test_termination_windows_hold_an_end_after_the_reward_windows() -> None:
    episodes = [lives_episode(300, (40, 250), seed=1), episode(300, (100,), seed=2)]
    sampler = SequenceSampler(
        episodes, 2, 8, seed=0, reward_windows=0.25, life_loss=True, termination_windows=0.5
    )
    for _ in range(10):
        batch = sampler.sample(8)
        assert (batch["rewards"][:2] != 0).any(1).all()  # rows 0-1: reward windows
        assert batch["terminated"][2:6].any(1).all()  # rows 2-5: windows holding an end


def test_termination_windows_count_lost_lives_only_with_life_loss() -> None:
    episodes = [lives_episode(300, (150,), seed=1)]
    assert SequenceSampler(episodes, 2, 8, life_loss=True).end_events.tolist() == [[0, 150]]
    game_ends = SequenceSampler(episodes, 2, 8, termination_windows=1.0)
    assert len(game_ends.end_events) == 0  # without life_loss: no end, uniform windows
    assert not game_ends.sample(4)["terminated"].any()


def test_start_bank_observations_match_stack_frames() -> None:
    ep = episode(30)
    bank = build_start_bank([ep], size=5, context=4, stack=3, seed=0)
    obs = bank.observations(4)
    assert bank.resets == 1 and bank.size == 6
    assert obs.shape == (6, 4, 3, 8, 8) and bank.actions.shape == (6, 3)
    for n in range(6):  # every stacked observation is a real one of the episode
        positions = [
            t for t in range(31) if (stack_frames(ep.frames, np.array(t), 3) == obs[n, -1]).all()
        ]
        assert positions and 3 <= positions[0] <= 29


def test_start_bank_keeps_each_episode_start_after_the_random_starts() -> None:
    eps = [episode(30, seed=i) for i in range(3)]
    bank = build_start_bank(eps, size=5, context=4, stack=3, seed=0)
    assert (bank.size, bank.resets) == (8, 3)
    for k, ep in enumerate(eps):  # entry 5 + k: the first 4 observations of episode k
        expected = stack_frames(ep.frames, np.arange(4), 3)
        np.testing.assert_array_equal(bank.observations(4)[5 + k], expected)
        np.testing.assert_array_equal(bank.actions[5 + k], ep.actions[:3])
    few = build_start_bank(eps, size=2, context=4, stack=3, seed=0)
    assert (few.size, few.resets) == (4, 2)  # at most `size` episode starts


def test_start_bank_takes_no_reset_entry_from_a_continued_episode() -> None:
    eps = [episode(30, seed=i) for i in range(3)]
    eps[1] = dataclasses.replace(eps[1], continued=True)  # begins mid-game
    bank = build_start_bank(eps, size=5, context=4, stack=3, seed=0)
    assert (bank.size, bank.resets) == (7, 2)
    for k, ep in zip((5, 6), (eps[0], eps[2]), strict=True):
        np.testing.assert_array_equal(
            bank.observations(4)[k], stack_frames(ep.frames, np.arange(4), 3)
        )
    only_continued = [dataclasses.replace(e, continued=True) for e in eps]
    bank = build_start_bank(only_continued, size=5, context=4, stack=3, seed=0)
    assert bank.resets == 0
    with pytest.raises(ConfigError, match="reset_share"):
        bank.require_resets(0.5)


def test_pick_draws_reset_entries_by_their_share() -> None:
    eps = [episode(30, seed=i) for i in range(4)]
    bank = build_start_bank(eps, size=10, context=4, stack=3, seed=0)
    u = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    anywhere = bank.pick(u, 0.0)
    assert anywhere.max() < 10 and len(anywhere.unique()) == 10
    torch.testing.assert_close(anywhere, (u * 10).long())  # as banks without reset entries
    resets = bank.pick(u, 1.0)
    assert resets.min() == 10 and len(resets.unique()) == 4
    mixed = bank.pick(u, 0.25)
    assert 0.2 < (mixed >= 10).float().mean() < 0.3 and len(mixed.unique()) == 14
    with pytest.raises(ConfigError, match=r"reset_share=0.5 draws dream starts from real episode"):
        dataclasses.replace(bank, resets=0).pick(u, 0.5)


def test_split_keeps_some_episodes_for_validation() -> None:
    episodes = [episode(5, seed=i) for i in range(20)]
    train, val = split_episodes(episodes, 0.1)
    assert len(val) == 2 and len(train) == 18
    assert split_episodes(episodes[:1], 0.1) == (episodes[:1], episodes[:1])


def test_life_loss_windows_mark_lost_lives_as_ends() -> None:
    ep = episode(6)
    ep.life_lost = np.array([False, True, False, False, False, False])
    plain = SequenceSampler([ep], stack=2, seq_len=6).window(np.array([0]), np.array([0]))
    lives = SequenceSampler([ep], stack=2, seq_len=6, life_loss=True).window(
        np.array([0]), np.array([0])
    )
    assert plain["terminated"][0].tolist() == [False] * 5 + [True]
    assert lives["terminated"][0].tolist() == [False, True, False, False, False, True]
    assert lives["mask"][0].all()  # the game went on after the lost life
