"""The env spec of any source (dreamenv.envs.spec) and its real envs (dreamenv.envs.sources)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dreamenv.data.collect import HeldRandomPolicy, RandomPolicy, collect
from dreamenv.data.store import EpisodeStore
from dreamenv.envs.atari import AtariSpec, stack_frames
from dreamenv.envs.sources import make_source_vector, preprocess_image
from dreamenv.envs.spec import ActionSpec, GymSpec, make_spec, spec_from_dict
from dreamenv.errors import ConfigError


class _DictNoImage(gym.Env):
    observation_space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,), np.float32)})
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class _MultiBinaryActions(_DictNoImage):
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.MultiBinary(3)


gym.register("dreamenv-test/DictNoImage-v0", entry_point=_DictNoImage)
gym.register("dreamenv-test/MultiBinary-v0", entry_point=_MultiBinaryActions)


def test_make_spec_reads_the_env() -> None:
    cart = make_spec("CartPole-v1")
    assert (cart.observation, cart.frame_shape, cart.frame_dtype) == ("state", (1, 4), np.float32)
    assert cart.action_spec == ActionSpec.discrete(2) and cart.reward_kind == "real"
    pend = make_spec("Pendulum-v1", observation="render", screen_size=48, grayscale=True)
    assert pend.frame_shape == (1, 48, 48) and pend.env_kwargs == {"render_mode": "rgb_array"}
    assert pend.action_spec.kind == "continuous" and pend.action_spec.low == (-2.0,)
    car = make_spec("CarRacing-v3", frame_stack=2)
    assert car.observation == "image" and car.frame_shape == (6, 64, 64)
    assert car.action_spec.n == 3 and car.action_spec.space().shape == (3,)


def test_make_spec_of_an_atari_game_is_the_atari_spec() -> None:
    assert make_spec("ALE/Pong-v5") == AtariSpec("pong")
    assert make_spec("pong", screen_size=64).frame_shape == (4, 64, 64)


def test_spec_round_trips_through_json() -> None:
    import json

    spec = make_spec("Pendulum-v1", observation="render", action_repeat=2, frame_stack=3)
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    atari = AtariSpec("pong")
    assert spec_from_dict(json.loads(json.dumps(atari.to_dict()))) == atari


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: make_spec("CartPol-v1"), r"'CartPol-v1' is neither .* Did you mean 'CartPole-v1'"),
        (
            lambda: make_spec("CartPole-v1", screensize=64),
            r"Unknown GymSpec option 'screensize'; did you mean 'screen_size'\?",
        ),
        (
            lambda: make_spec("CartPole-v1", noop_max=30),
            r"\['noop_max'\] are ALE options .* not an Atari game",
        ),
        (
            lambda: make_spec("dreamenv-test/DictNoImage-v0"),
            r"dreamenv learns from an image .* or the env's render\(\)",
        ),
        (
            lambda: make_spec("dreamenv-test/MultiBinary-v0"),
            r"MultiBinary\(3\); dreamenv supports Discrete\(n\) and a one-dimensional Box",
        ),
        (
            lambda: make_spec("CartPole-v1", observation="image"),
            r"hold no uint8 image .* use observation='render'",
        ),
        (
            lambda: make_spec("CartPole-v1", observation="pixels"),
            r"observation must be one of \['image', 'render', 'state'\], got 'pixels'",
        ),
        (lambda: make_spec("pong", observation="state"), r"'pong' is an Atari game"),
        (
            lambda: make_spec("Pendulum-v1", observation="render", screen_size=50),
            r"screen_size must be one of \(32, 48, 64, 80, 96\)",
        ),
        (
            lambda: GymSpec("CartPole-v1", observation="state"),
            r"a state spec needs state_size >= 1",
        ),
        (
            lambda: ActionSpec("continuous", 1, (-np.inf,), (np.inf,)),
            r"finite bounds with low < high.*wrappers.RescaleAction",
        ),
    ],
)
def test_bad_specs_say_what_is_supported(call, match) -> None:
    with pytest.raises(ConfigError, match=match):
        call()


def test_preprocess_image_resizes_and_converts() -> None:
    image = np.zeros((96, 96, 3), np.uint8)
    image[:, :48, 0] = 255
    rgb = preprocess_image(image, 64, grayscale=False)
    assert rgb.shape == (3, 64, 64) and rgb[0, 0, 0] == 255 and rgb[0, 0, 63] == 0
    grey = preprocess_image(image, 32, grayscale=True)
    assert grey.shape == (32, 32) and grey.dtype == np.uint8 and 70 < grey[0, 0] < 80


def test_stack_frames_merges_colour_channels() -> None:
    frames = np.arange(3 * 3 * 2 * 2).reshape(3, 3, 2, 2).astype(np.uint8)  # T=3 colour frames
    out = stack_frames(frames, np.array([0, 2]), 2)
    assert out.shape == (2, 6, 2, 2)
    np.testing.assert_array_equal(out[1, :3], frames[1])
    np.testing.assert_array_equal(out[1, 3:], frames[2])
    np.testing.assert_array_equal(out[0, :3], frames[0])  # before the reset: the reset frame
    states = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert stack_frames(states, np.array([3]), 3).shape == (1, 3, 2)


@pytest.mark.parametrize("mode", ["SameStep", "NextStep"])
def test_source_vector_speaks_ales_interface(mode: str) -> None:
    spec = make_spec("CartPole-v1")
    env = make_source_vector(spec, 3, autoreset_mode=mode)
    obs, info = env.reset(seed=[1, 2, 3])
    assert obs.shape == (3, 1, 4) and obs.dtype == np.float32 and info["lives"].shape == (3,)
    again, _ = make_source_vector(spec, 3).reset(seed=[1, 2, 3])
    np.testing.assert_array_equal(obs, again)
    for _ in range(60):
        obs, reward, terminated, truncated, info = env.step(np.ones(3, np.int64))
        assert reward.dtype == np.float64
        if (terminated | truncated).any():
            break
    done = terminated | truncated
    assert done.any()
    if mode == "SameStep":
        assert info["final_obs"].shape == (3, 1, 4)
        assert np.abs(info["final_obs"][done, 0, 2]).max() > 0.2  # the pole fell
    masked, _ = env.reset(seed=[7], options={"reset_mask": np.array([True, False, False])})
    assert masked.shape == (3, 1, 4)
    env.close()


def test_action_repeat_and_step_limit() -> None:
    spec = make_spec("CartPole-v1", action_repeat=3, max_episode_steps=4)
    env = make_source_vector(spec, 1)
    env.reset(seed=0)
    total = 0.0
    for t in range(4):
        _, reward, terminated, truncated, _ = env.step(np.array([t % 2]))
        total += float(reward[0])
    assert total == 12.0 and truncated[0] and not terminated[0]


@pytest.mark.parametrize(
    ("name", "options", "frame", "action_shape"),
    [
        ("CartPole-v1", {}, (4,), ()),
        ("Pendulum-v1", {"observation": "render", "screen_size": 32}, (3, 32, 32), (1,)),
        ("MiniGrid-Empty-5x5-v0", {"screen_size": 32, "grayscale": True}, (32, 32), ()),
    ],
)
def test_collect_any_env(tmp_path, name, options, frame, action_shape) -> None:
    spec = make_spec(name, **options)
    store = collect(tmp_path / "data", spec, 120, num_envs=2, progress=False)
    assert store.num_steps == 120
    reopened = EpisodeStore.open(tmp_path / "data")
    assert reopened.spec == spec
    episodes = reopened.episodes()
    ep = episodes[0]
    assert ep.frames.shape[1:] == frame and ep.frames.dtype == spec.frame_dtype
    assert ep.actions.shape[1:] == action_shape and ep.actions.dtype == spec.action_spec.dtype
    assert sum(len(e) for e in episodes) == 120
    # a second call continues the same store
    assert collect(tmp_path / "data", spec, 200, num_envs=2, progress=False).num_steps == 200


def test_random_policy_of_a_box_stays_in_bounds() -> None:
    policy = RandomPolicy(ActionSpec("continuous", 2, (-1.0, 0.0), (1.0, 0.5)))
    actions = policy(np.zeros((500, 1)), np.random.default_rng(0))
    assert actions.shape == (500, 2) and actions.dtype == np.float32
    assert actions[:, 0].min() >= -1 and actions[:, 1].max() <= 0.5 and actions[:, 1].min() >= 0


@pytest.mark.parametrize(
    "spec", [ActionSpec("continuous", 2, (-1.0, 0.0), (1.0, 0.5)), ActionSpec.discrete(6)]
)
def test_held_random_actions_repeat_for_the_mean_hold(spec) -> None:
    policy = HeldRandomPolicy(spec, hold=8)
    rng = np.random.default_rng(0)
    actions = np.stack([policy(np.zeros((64, 1)), rng) for _ in range(400)], 1)  # (env, t)
    changed = (actions[:, 1:] != actions[:, :-1]).reshape(64, 399, -1).any(-1)
    # a fresh draw every 8 steps on average (a discrete draw may repeat the action: 5/6 change)
    rate = changed.mean() / (5 / 6 if spec.kind == "discrete" else 1.0)
    assert 1 / 9 < rate < 1 / 7
    if spec.kind == "continuous":
        assert actions[..., 0].min() >= -1 and actions[..., 1].max() <= 0.5
    fresh = HeldRandomPolicy(spec, hold=1)
    steps = np.stack([fresh(np.zeros((64, 1)), rng) for _ in range(50)], 1)
    assert (steps[:, 1:] != steps[:, :-1]).reshape(64, 49, -1).any(-1).mean() > 0.8


def test_held_random_policy_rejects_a_hold_below_one() -> None:
    with pytest.raises(ConfigError, match=r"hold must be a number of steps >= 1.*got 0.5"):
        HeldRandomPolicy(ActionSpec.discrete(3), hold=0.5)
