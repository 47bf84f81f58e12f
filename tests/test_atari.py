"""The Atari preprocessing spec and frame stacking."""

from __future__ import annotations

import numpy as np
import pytest

from dreamenv.envs.atari import AtariSpec, FrameStacker, normalize_game, stack_frames
from dreamenv.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "rom"),
    [
        ("ALE/MsPacman-v5", "ms_pacman"),
        ("MsPacman", "ms_pacman"),
        ("ms_pacman", "ms_pacman"),
        ("ALE/Pong-v5", "pong"),
        ("PongNoFrameskip-v4", "pong"),
        ("SpaceInvaders", "space_invaders"),
        ("pong", "pong"),
    ],
)
def test_game_names_normalise_to_rom_ids(name: str, rom: str) -> None:
    assert normalize_game(name) == rom
    assert AtariSpec(game=name).game == rom


def test_specs_of_equivalent_names_are_equal() -> None:
    assert AtariSpec("ALE/Pong-v5") == AtariSpec("pong")


def test_unknown_game_suggests_close_rom() -> None:
    with pytest.raises(ConfigError, match=r"game='pongg' is not an Atari ROM.*Did you mean 'pong'"):
        AtariSpec(game="pongg")


@pytest.mark.parametrize("game", ["", None, 3])
def test_game_must_be_a_non_empty_string(game: object) -> None:
    with pytest.raises(ConfigError, match="game must be a non-empty string"):
        AtariSpec(game=game)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [84, 0, 128])
def test_bad_screen_size(size: int) -> None:
    with pytest.raises(
        ConfigError, match=rf"screen_size must be one of \(64, 80, 96\) .*, got {size}"
    ):
        AtariSpec(screen_size=size)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("frame_skip", 0, r"frame_skip must be an int >= 1, got 0"),
        ("frame_stack", 17, r"frame_stack must be an int in \[1, 16\], got 17"),
        ("repeat_action_probability", 1.5, r"repeat_action_probability must lie in \[0, 1\]"),
        ("noop_max", -1, r"noop_max must be an int >= 0, got -1"),
    ],
)
def test_bad_fields(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AtariSpec(**{field: value})


def test_frame_shape_and_dict_round_trip() -> None:
    spec = AtariSpec("ALE/Breakout-v5", screen_size=64, frame_stack=3)
    assert spec.frame_shape == (3, 64, 64)
    data = spec.to_dict()
    assert data["game"] == "breakout"
    assert AtariSpec.from_dict(data) == spec


def test_from_dict_rejects_unknown_fields() -> None:
    data = {**AtariSpec().to_dict(), "grayscale": True}
    with pytest.raises(ConfigError, match=r"Unknown AtariSpec fields \['grayscale'\]"):
        AtariSpec.from_dict(data)


def _episode(length: int, size: int = 3, offset: int = 0) -> np.ndarray:
    """Frames whose every pixel is the frame's position (plus ``offset``)."""
    values = np.arange(length, dtype=np.uint8) + offset
    return np.broadcast_to(values[:, None, None], (length, size, size)).copy()


def test_stack_frames_pads_with_the_reset_frame() -> None:
    frames = _episode(6)
    stacks = stack_frames(frames, np.array([0, 1, 2, 5]), 3)
    assert stacks.shape == (4, 3, 3, 3)
    assert stacks.dtype == np.uint8
    firsts = stacks[:, :, 0, 0].tolist()
    assert firsts == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [3, 4, 5]]


def test_stack_frames_keeps_the_index_shape() -> None:
    frames = _episode(5)
    stacks = stack_frames(frames, np.array([[0, 4], [2, 3]]), 2)
    assert stacks.shape == (2, 2, 2, 3, 3)
    assert stacks[1, 0, :, 0, 0].tolist() == [1, 2]


def test_stack_of_one_is_the_frame_itself() -> None:
    frames = _episode(4)
    np.testing.assert_array_equal(stack_frames(frames, np.arange(4), 1)[:, 0], frames)


def test_frame_stacker_push_agrees_with_stack_frames() -> None:
    stack, length = 4, 7
    episodes = [_episode(length), _episode(length, offset=100)]
    stacker = FrameStacker(2, stack, 3)
    out = stacker.reset(np.stack([e[0] for e in episodes]))
    for i, ep in enumerate(episodes):
        np.testing.assert_array_equal(out[i], stack_frames(ep, np.array(0), stack))
    for t in range(1, length):
        new = np.stack([e[t] for e in episodes])
        peeked = stacker.peek(new).copy()
        out = stacker.push(new)
        np.testing.assert_array_equal(peeked, out)
        for i, ep in enumerate(episodes):
            np.testing.assert_array_equal(out[i], stack_frames(ep, np.array(t), stack))


def test_frame_stacker_peek_does_not_change_the_buffer() -> None:
    stacker = FrameStacker(1, 3, 3)
    stacker.reset(_episode(1))
    before = stacker.buffer.copy()
    stacker.peek(_episode(1, offset=9))
    np.testing.assert_array_equal(stacker.buffer, before)


def test_frame_stacker_masked_reset_restarts_only_masked_envs() -> None:
    stack = 3
    old = [_episode(5), _episode(5, offset=50)]
    stacker = FrameStacker(2, stack, 3)
    stacker.reset(np.stack([e[0] for e in old]))
    for t in range(1, 4):
        stacker.push(np.stack([e[t] for e in old]))
    new_episode = _episode(3, offset=200)
    frames = np.stack([old[0][4], new_episode[0]])
    stacker.push(frames)
    out = stacker.reset(frames, np.array([False, True]))
    np.testing.assert_array_equal(out[0], stack_frames(old[0], np.array(4), stack))
    np.testing.assert_array_equal(out[1], stack_frames(new_episode, np.array(0), stack))
    for t in (1, 2):
        out = stacker.push(np.stack([old[0][4], new_episode[t]]))
        np.testing.assert_array_equal(out[1], stack_frames(new_episode, np.array(t), stack))
