"""Shared model pieces: pixel likelihood, binary rewards, context split and action chunks."""

from __future__ import annotations

import math

import pytest
import torch

from dreamenv.errors import ConfigError
from dreamenv.models.common import (
    RewardBits,
    action_chunk_onehot,
    normal_from_uniform,
    pixel_kl,
    reward_classes,
    sample_categorical,
    split_context,
    window_steps,
)


def _window(steps: int) -> dict[str, torch.Tensor]:
    return {
        "frames": torch.arange(steps + 1)[None].repeat(2, 1),
        "actions": torch.arange(100, 100 + steps)[None].repeat(2, 1),
        "rewards": torch.ones(2, steps),
        "terminated": torch.zeros(2, steps, dtype=torch.bool),
        "mask": torch.ones(2, steps, dtype=torch.bool),
    }


def test_pixel_kl_is_zero_for_a_perfect_prediction_and_positive_otherwise() -> None:
    frames = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    p = (frames.float() / 255).clamp(1e-6, 1 - 1e-6)
    perfect = torch.log(p / (1 - p))
    assert float(pixel_kl(perfect, frames)) == pytest.approx(0.0, abs=1e-4)
    assert float(pixel_kl(torch.zeros(1, 3), frames)) > 0.1


def test_reward_bits_encode_magnitude_sign_and_zero() -> None:
    bits = RewardBits(3)
    targets = bits.targets(torch.tensor([0.0, 5.0, -2.0, 100.0]))
    assert targets.tolist() == [
        [0, 0, 0, 0, 1],
        [1, 0, 1, 0, 0],
        [0, 1, 0, 1, 0],
        [1, 1, 1, 0, 0],  # clamped to 2^3 - 1
    ]
    probs = bits.sign_logits(torch.tensor([0, 0, 0, -9.0, 9.0])).exp()
    assert probs.argmax().item() == 1  # the zero bit says 0
    assert float(probs.sum()) == pytest.approx(1.0)


def test_split_context_sub_samples_chunks_and_sums() -> None:
    batch = _window(window_steps(3, jump=4))  # 2 + 12 steps
    out = split_context(batch, jump=4)
    assert out["context"][0].tolist() == [0, 1, 2]
    assert out["frames"][0].tolist() == [6, 10, 14]
    assert out["actions"][0, 0].tolist() == [102, 103, 104, 105]
    assert out["rewards"][0].tolist() == [4.0, 4.0, 4.0]
    plain = split_context(_window(12))
    assert plain["frames"][0].tolist() == list(range(3, 13))
    assert plain["actions"].shape == (2, 10, 1)


def test_split_context_rejects_a_too_short_window() -> None:
    with pytest.raises(ConfigError, match="too short for a context of 3 observations"):
        split_context(_window(3), jump=4)


def test_action_chunks_are_concatenated_one_hots() -> None:
    onehot = action_chunk_onehot(torch.tensor([[1, 0], [2, 2]]), 3)
    assert onehot.tolist() == [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 1]]
    assert action_chunk_onehot(torch.tensor([2]), 3).tolist() == [[0, 0, 1]]


def test_samplers_invert_the_cdf() -> None:
    probs = torch.tensor([[0.2, 0.5, 0.3]]).repeat(3, 1)
    assert sample_categorical(probs, torch.tensor([0.1, 0.6, 0.95])).tolist() == [0, 1, 2]
    z = normal_from_uniform(torch.tensor([0.5, 0.8413447]))
    assert z.tolist() == pytest.approx([0.0, 1.0], abs=1e-4)
    assert math.isfinite(float(normal_from_uniform(torch.tensor(1e-7))))


def test_reward_classes_follow_the_sign() -> None:
    """Small rewards keep their sign (clamping and rounding mapped |r| <= 0.5 to 0)."""
    rewards = torch.tensor([-20.0, -1.0, -0.3, 0.0, 0.2, 0.5, 1.0, 300.0])
    assert reward_classes(rewards).tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
