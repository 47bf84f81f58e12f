"""Counter-based per-env random streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils import seeding

from dreamenv.random_streams import BatchRandom, key_from_generator, key_from_seed

KEYS = [key_from_seed(s) for s in (0, 1, 2)]


def _rng(keys: list[int] = KEYS) -> BatchRandom:
    rng = BatchRandom(len(keys), "cpu")
    rng.set_keys(torch.arange(len(keys)), keys)
    return rng


def test_key_from_seed_is_what_a_seeded_env_draws() -> None:
    generator, _ = seeding.np_random(7)
    assert key_from_seed(7) == key_from_generator(generator)
    assert key_from_seed(7) == key_from_seed(7)
    assert key_from_seed(7) != key_from_seed(8)
    assert 0 <= key_from_seed(7) < 2**62


def test_same_keys_give_same_numbers() -> None:
    a, b = _rng(), _rng()
    for shape in [(), (5,), (2, 3)]:
        ua, ub = a.uniform(shape), b.uniform(shape)
        assert ua.shape == (3, *shape)
        assert ua.dtype == torch.float32
        torch.testing.assert_close(ua, ub, rtol=0, atol=0)


def test_streams_advance_between_draws() -> None:
    rng = _rng()
    first, second = rng.uniform((8,)), rng.uniform((8,))
    assert not torch.equal(first, second)
    assert rng.counters.tolist() == [2, 2, 2]


def test_different_keys_give_different_numbers() -> None:
    u = _rng().uniform((16,))
    assert not torch.equal(u[0], u[1])
    assert not torch.equal(u[1], u[2])


def test_a_stream_does_not_depend_on_the_batch_around_it() -> None:
    single = _rng([KEYS[1]])
    batch = _rng()
    for _ in range(3):
        torch.testing.assert_close(single.uniform((4,))[0], batch.uniform((4,))[1], rtol=0, atol=0)


def test_drawing_with_an_index_leaves_other_streams_untouched() -> None:
    moved, fresh = _rng(), _rng()
    picked = moved.uniform((4,), torch.tensor([0, 2]))
    assert picked.shape == (2, 4)
    assert moved.counters.tolist() == [1, 0, 1]
    expected = fresh.uniform((4,))
    torch.testing.assert_close(picked, expected[[0, 2]], rtol=0, atol=0)
    # stream 1 did not move: its next draw is the fresh stream's first
    torch.testing.assert_close(
        moved.uniform((4,), torch.tensor([1]))[0], expected[1], rtol=0, atol=0
    )


def test_set_keys_restarts_only_the_given_streams() -> None:
    rng = _rng()
    rng.uniform((2,))
    rng.set_keys(torch.tensor([1]), [KEYS[0]])
    assert rng.counters.tolist() == [1, 0, 1]
    fresh = _rng()
    torch.testing.assert_close(
        rng.uniform((2,), torch.tensor([1]))[0], fresh.uniform((2,))[0], rtol=0, atol=0
    )


def test_values_lie_in_the_open_unit_interval_and_look_uniform() -> None:
    u = _rng().uniform((20_000,))
    assert bool((u > 0).all()) and bool((u < 1).all())
    assert abs(float(u.mean()) - 0.5) < 0.01
    hist = np.histogram(u.numpy().ravel(), bins=10, range=(0, 1))[0]
    assert hist.min() > 0.9 * u.numel() / 10


def test_values_never_reach_one() -> None:
    # a million draws reach the top of the 23-bit range; (top + 0.5) / 2**23 is still below one
    rng = _rng([7])
    u = rng.uniform((1 << 20,))
    assert float(u.max()) < 1.0


def test_state_dict_round_trip_replays_draws() -> None:
    rng = _rng()
    rng.uniform((3,))
    saved = rng.state_dict()
    first = rng.uniform((3,))
    rng.uniform((3,))
    rng.load_state_dict(saved)
    torch.testing.assert_close(rng.uniform((3,)), first, rtol=0, atol=0)


def test_state_dict_is_a_copy() -> None:
    rng = _rng()
    saved = rng.state_dict()
    rng.uniform(())
    assert saved["counters"].tolist() == [0, 0, 0]


def _lowbias32(x: int) -> int:
    """The finaliser in plain Python integers (the reference for the tensor version)."""
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B), (16, 1)):
        x = ((x ^ (x >> shift)) * multiplier) & 0xFFFFFFFF
    return x


def _reference_uniform(key: int, counter: int, element: int) -> float:
    low_key, high_key = key & 0x7FFFFFFF, (key >> 31) & 0x7FFFFFFF
    first = _lowbias32(_lowbias32((counter & 0xFFFFFFFF) ^ low_key) ^ high_key)
    second = _lowbias32(_lowbias32(((counter >> 32) & 0xFFFFFFFF) ^ high_key) ^ first)
    x = _lowbias32(_lowbias32(element ^ first) ^ second)
    return ((x >> 9) + 0.5) / (1 << 23)


@pytest.mark.parametrize("num_envs, shape", [(3, (5,)), (40, (3000,))])  # 40 x 3000: 2 passes
def test_draws_are_the_documented_hash_in_every_pass(num_envs: int, shape: tuple) -> None:
    keys = [key_from_seed(i) for i in range(num_envs)]
    rng = _rng(keys)
    rng.uniform(shape)  # counter 1 next
    u = rng.uniform(shape)
    for env, element in [(0, 0), (1, 2), (num_envs - 1, shape[0] - 1), (num_envs // 2, 1)]:
        assert float(u[env, element]) == _reference_uniform(keys[env], 1, element)


@pytest.mark.parametrize("counter", [2**31 - 1, 2**31, 2**32 + 5, 2**40 + 3])
def test_draws_past_32_bit_counters_are_the_documented_hash(counter: int) -> None:
    keys = [key_from_seed(3), key_from_seed(4)]
    rng = _rng(keys)
    rng.counters[:] = counter
    u = rng.uniform((7,))
    for env in range(2):
        for element in (0, 6):
            assert float(u[env, element]) == _reference_uniform(keys[env], counter, element)


def test_no_draw_repeats_another_within_a_long_run() -> None:
    """The old hash added counter * golden ratio to the element index: draw 75,025 (a
    Fibonacci number) of 65,536 values per env repeated 53,833 values of draw 0, shifted
    by 11,703 elements. Now the first draw word is a bijection of the counter: no two of 2**20
    consecutive draws share it, for any key; and draws that share no word share no run
    of values."""
    from dreamenv.random_streams import draw_words

    for seed in range(3):
        keys = torch.full((2**20,), key_from_seed(seed), dtype=torch.int64)
        counters = torch.arange(2**20, dtype=torch.int64) + seed * 2**31
        first, second = draw_words(keys, counters)
        assert len(torch.unique(first)) == 2**20
    rng = _rng([key_from_seed(0)])
    a = rng.uniform((1 << 16,))
    rng.counters[:] = 75_025
    b = rng.uniform((1 << 16,))
    shared = np.intersect1d(a.numpy(), b.numpy())
    assert len(shared) < 0.01 * (1 << 16)  # values coincide only by chance (23-bit floats)
