"""The env spec of every source: how real observations, actions and rewards are produced.

Two kinds of spec share one interface (``frame_shape``, ``frame_dtype``, ``action_spec``,
``reward_kind``, ``game``, ``to_dict``), so collection, fitting, the dream and the real env
read the same numbers and cannot drift:

- :class:`~dreamenv.envs.atari.AtariSpec`: an ALE game with the papers' defaults (grey
  96x96 frames, frame skip 4, sign-clipped rewards);
- :class:`GymSpec`: any registered gymnasium env, from its image observation, from its
  ``render()`` (PlaNet's pixels of a state-vector env) or from its state vector; discrete
  or continuous actions; real-valued or sign-clipped rewards.

Example:
    >>> spec = make_spec("CartPole-v1", observation="state")
    >>> spec.frame_shape, spec.action_spec.kind
    ((1, 4), 'discrete')
    >>> make_spec("pong").frame_shape
    (4, 96, 96)
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union, get_args

import gymnasium as gym
import numpy as np

from dreamenv.errors import ConfigError

if TYPE_CHECKING:
    from dreamenv.envs.atari import AtariSpec

ObservationSource = Literal["image", "render", "state"]
"""Where frames come from: the env's image observation, its ``render()``, or its state vector."""
RewardTransform = Literal["none", "sign"]
"""``"sign"`` clips rewards to {-1, 0, +1} (the Atari protocol); ``"none"`` keeps them."""
RewardKind = Literal["ternary", "real"]
"""What the reward head predicts: the sign of the reward, or any real reward."""
ActionKind = Literal["discrete", "continuous"]

GYM_SCREEN_SIZES = (32, 48, 64, 80, 96)
"""Frame sides of image specs (multiples of 16 the convolutional models take)."""


@dataclass(frozen=True)
class ActionSpec:
    """The real env's action space, as the models and envs need it."""

    kind: ActionKind
    """``"discrete"`` (``Discrete(n)``) or ``"continuous"`` (``Box`` of ``n`` floats)."""
    n: int
    """Number of actions (discrete) or of action dimensions (continuous)."""
    low: tuple[float, ...] = ()
    """Lower bounds of a continuous action (one per dimension; empty when discrete)."""
    high: tuple[float, ...] = ()
    """Upper bounds of a continuous action (one per dimension; empty when discrete)."""

    def __post_init__(self) -> None:
        if self.kind not in get_args(ActionKind):
            raise ConfigError(
                f"ActionSpec kind must be one of {get_args(ActionKind)}, got {self.kind!r}."
            )
        if not (isinstance(self.n, (int, np.integer)) and self.n >= 1):
            raise ConfigError(f"ActionSpec n must be an int >= 1, got {self.n!r}.")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "low", tuple(float(x) for x in self.low))
        object.__setattr__(self, "high", tuple(float(x) for x in self.high))
        if self.kind == "continuous":
            if len(self.low) != self.n or len(self.high) != self.n:
                raise ConfigError(
                    f"a continuous ActionSpec needs {self.n} low and high bounds, got "
                    f"{len(self.low)} and {len(self.high)}."
                )
            bad = [
                i for i, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)) if not lo < hi
            ]
            if bad or not all(np.isfinite(self.low + self.high)):
                raise ConfigError(
                    f"a continuous action needs finite bounds with low < high; got low="
                    f"{self.low}, high={self.high}. Wrap the env in gymnasium.wrappers."
                    "RescaleAction to give it finite bounds."
                )
        elif self.low or self.high:
            raise ConfigError("a discrete ActionSpec takes no low/high bounds.")

    @classmethod
    def discrete(cls, n: int) -> ActionSpec:
        return cls("discrete", n)

    @classmethod
    def from_space(cls, space: gym.Space, env_id: str = "the env") -> ActionSpec:
        """The spec of a gymnasium action space; :class:`ConfigError` for spaces dreamenv
        cannot model (``MultiBinary``, ``MultiDiscrete``, ``Dict``, a Box of several axes)."""
        if isinstance(space, gym.spaces.Discrete):
            if int(space.start) != 0:
                raise ConfigError(
                    f"{env_id} has actions Discrete({space.n}, start={space.start}); dreamenv "
                    "models Discrete spaces that start at 0."
                )
            return cls.discrete(int(space.n))
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            return cls("continuous", int(space.shape[0]), tuple(space.low), tuple(space.high))
        raise ConfigError(
            f"{env_id} has the action space {space}; dreamenv supports Discrete(n) and a "
            "one-dimensional Box of floats. Wrap the env (e.g. gymnasium.wrappers.FlattenObservation "
            "for observations, a custom ActionWrapper for actions) to give it one of these."
        )

    def space(self) -> gym.Space:
        """The gymnasium space: ``Discrete(n)`` or ``Box(low, high, (n,), float32)``."""
        if self.kind == "discrete":
            return gym.spaces.Discrete(self.n)
        return gym.spaces.Box(
            np.array(self.low, np.float32), np.array(self.high, np.float32), (self.n,), np.float32
        )

    @property
    def dtype(self) -> type:
        """numpy dtype of stored actions: int64 (discrete) or float32 (continuous)."""
        return np.int64 if self.kind == "discrete" else np.float32

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one action: ``()`` (discrete) or ``(n,)`` (continuous)."""
        return () if self.kind == "discrete" else (self.n,)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionSpec:
        return cls(data["kind"], data["n"], tuple(data.get("low", ())), tuple(data.get("high", ())))


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}.{hint}")


@dataclass(frozen=True)
class GymSpec:
    """How frames, actions and rewards of a gymnasium env are produced and preprocessed.

    Build one with :func:`make_spec` (which creates the env once to read its spaces)."""

    env_id: str
    """A registered gymnasium id (``"CarRacing-v3"``, ``"MiniGrid-Empty-5x5-v0"``)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``gym.make`` (JSON values only: they are stored)."""
    observation: ObservationSource = "image"
    """``"image"`` (the observation is an image), ``"render"`` (frames of ``render()``, for
    envs whose observation is a state vector or symbolic) or ``"state"`` (the vector)."""
    image_key: str | None = None
    """The key of the image in a ``Dict`` observation (``observation="image"``)."""
    screen_size: int = 64
    """Square side frames are resized to (image sources)."""
    grayscale: bool = False
    """One grey channel instead of three RGB channels (image sources)."""
    frame_stack: int = 1
    """Frames (or state vectors) stacked into one observation."""
    action_repeat: int = 1
    """Env steps per agent step, the same action each (rewards summed), as PlaNet's."""
    reward_transform: RewardTransform = "none"
    """``"none"``: real rewards, modelled as such; ``"sign"``: clipped to {-1, 0, +1}."""
    max_episode_steps: int | None = None
    """Agent steps after which a real episode is truncated (None: the env's own limit)."""
    state_size: int = 0
    """Length of the state vector (``observation="state"``; filled by :func:`make_spec`)."""
    actions: ActionSpec = ActionSpec.discrete(1)
    """The env's action space (filled by :func:`make_spec`)."""

    kind = "gym"

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ConfigError(
                f"env_id must be a gymnasium id such as 'CartPole-v1', got {self.env_id!r}."
            )
        _check_choice("observation", self.observation, get_args(ObservationSource))
        _check_choice("reward_transform", self.reward_transform, get_args(RewardTransform))
        if isinstance(self.actions, dict):
            object.__setattr__(self, "actions", ActionSpec.from_dict(self.actions))
        object.__setattr__(self, "env_kwargs", dict(self.env_kwargs))
        if self.observation != "state" and self.screen_size not in GYM_SCREEN_SIZES:
            raise ConfigError(
                f"screen_size must be one of {GYM_SCREEN_SIZES} (the models need a multiple "
                f"of 16), got {self.screen_size!r}."
            )
        for name, lo, hi in (("frame_stack", 1, 16), ("action_repeat", 1, 1000)):
            value = getattr(self, name)
            if not (isinstance(value, int) and lo <= value <= hi):
                raise ConfigError(f"{name} must be an int in [{lo}, {hi}], got {value!r}.")
        if self.max_episode_steps is not None and not (
            isinstance(self.max_episode_steps, int) and self.max_episode_steps >= 1
        ):
            raise ConfigError(
                f"max_episode_steps must be None or an int >= 1, got {self.max_episode_steps!r}."
            )
        if self.observation == "state" and self.state_size < 1:
            raise ConfigError(
                "a state spec needs state_size >= 1; build it with make_spec(env_id, "
                "observation='state'), which reads it from the env."
            )

    # --- the shared interface -----------------------------------------------------------
    @property
    def game(self) -> str:
        """The env's name (the gymnasium id), as an ALE spec's ROM id."""
        return self.env_id

    @property
    def channels(self) -> int:
        """Channels of one image frame (1 grey, 3 RGB); 0 for a state spec."""
        return 0 if self.observation == "state" else (1 if self.grayscale else 3)

    @property
    def single_frame_shape(self) -> tuple[int, ...]:
        """Shape of one stored frame: ``(S, S)`` grey, ``(3, S, S)`` RGB, ``(D,)`` state."""
        if self.observation == "state":
            return (self.state_size,)
        s = self.screen_size
        return (s, s) if self.grayscale else (3, s, s)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one stacked observation: ``(stack * C, S, S)`` or ``(stack, D)``."""
        if self.observation == "state":
            return (self.frame_stack, self.state_size)
        s = self.screen_size
        return (self.frame_stack * self.channels, s, s)

    @property
    def frame_dtype(self) -> type:
        """uint8 for images, float32 for state vectors."""
        return np.float32 if self.observation == "state" else np.uint8

    @property
    def action_spec(self) -> ActionSpec:
        return self.actions

    @property
    def reward_kind(self) -> RewardKind:
        return "ternary" if self.reward_transform == "sign" else "real"

    @property
    def action_meanings(self) -> tuple[str, ...]:
        """Names of the actions: the env's ``get_action_meanings()`` where it has one."""
        if self.actions.kind == "continuous":
            return tuple(f"dim{i}" for i in range(self.actions.n))
        return tuple(f"action{i}" for i in range(self.actions.n))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (with ``"kind": "gym"``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["actions"] = self.actions.to_dict()
        return {"kind": "gym"} | out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GymSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise a :class:`ConfigError`."""
        data = {k: v for k, v in data.items() if k != "kind"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"Unknown GymSpec fields {sorted(unknown)}; known: {sorted(names)}.")
        if "actions" in data:
            data["actions"] = ActionSpec.from_dict(data["actions"])
        return cls(**data)


EnvSpec = Union["AtariSpec", "GymSpec"]
"""Any env spec: an ALE game's or another gymnasium env's."""


def spec_from_dict(data: dict[str, Any]) -> EnvSpec:
    """The spec stored as ``data`` (a :class:`GymSpec` when ``data["kind"] == "gym"``, else
    an :class:`~dreamenv.envs.atari.AtariSpec`, as stores and checkpoints of earlier
    versions hold)."""
    if data.get("kind") == "gym":
        return GymSpec.from_dict(data)
    from dreamenv.envs.atari import AtariSpec

    return AtariSpec.from_dict({k: v for k, v in data.items() if k != "kind"})


def is_atari(name: str) -> bool:
    """Whether ``name`` names an ALE game (or a dreamenv toy game) rather than another
    gymnasium env."""
    from dreamenv.envs.atari import normalize_game

    if name.startswith("ALE/"):
        return True
    try:
        normalize_game(name)
    except ConfigError:
        return False
    return (
        name not in gym.registry
        or gym.registry[name].entry_point is None
        or "ale_py" in str(gym.registry[name].entry_point)
    )


def _import_env_packages(env_id: str) -> None:
    """Import the packages that register an id's namespace (minigrid, shimmy's dm_control)."""
    import importlib
    import os

    if env_id.startswith("dm_control/"):
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (osmesa also works)
    for prefix, module in (
        ("MiniGrid", "minigrid"),
        ("BabyAI", "minigrid"),
        ("dm_control/", "shimmy"),
    ):
        if env_id.startswith(prefix):
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise ConfigError(
                    f"{env_id!r} needs the {module!r} package: pip install {module}"
                    + (" dm_control 'mujoco<4'" if module == "shimmy" else "")
                ) from err


def check_env_id(env_id: str) -> None:
    """A :class:`ConfigError` with a "did you mean" when ``env_id`` is not registered."""
    _import_env_packages(env_id)
    if env_id in gym.registry:
        return
    from dreamenv.envs.atari import _rom_ids

    roms = difflib.get_close_matches(env_id.lower(), list(_rom_ids()), n=2)
    close = roms + difflib.get_close_matches(env_id, list(gym.registry), n=3 - len(roms))
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"{env_id!r} is neither an Atari ROM nor a registered gymnasium env.{hint} "
        "Import the package that registers it first, or pass a registered id."
    )


def _image_of(obs: Any, image_key: str | None, env_id: str) -> np.ndarray | None:
    """The image in an observation (or None if it has none)."""
    if isinstance(obs, dict):
        if image_key is None:
            return None
        if image_key not in obs:
            raise ConfigError(
                f"{env_id}'s observation has no key {image_key!r}; its keys are {sorted(obs)}."
            )
        obs = obs[image_key]
    arr = np.asarray(obs)
    if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4))):
        return arr
    return None


def make_spec(
    name: str,
    *,
    observation: ObservationSource | None = None,
    env_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Any:
    """The spec of an ALE game or of a registered gymnasium env, checked against the env.

    Args:
        name: an ALE ROM id (``"pong"``, ``"ALE/Pong-v5"``) or a gymnasium id.
        observation: for a gymnasium env, where frames come from; by default ``"image"``
            when the observation is an image (or a ``Dict`` with an ``"image"`` key holding
            one) and ``"state"`` when it is a flat vector.
        env_kwargs: keyword arguments of ``gym.make``.
        **options: further :class:`GymSpec` (or ``AtariSpec``) fields.

    Raises:
        ConfigError: the env does not exist, or its observations or actions are of a kind
            dreamenv cannot model (the message says which kinds it can).
    """
    if is_atari(name):
        from dreamenv.envs.atari import AtariSpec

        if env_kwargs or observation not in (None, "image"):
            raise ConfigError(
                f"{name!r} is an Atari game: it takes no env_kwargs and only image "
                "observations (AtariSpec fields are frame_skip, screen_size, frame_stack, ...)."
            )
        return AtariSpec(game=name, **options)
    ale_only = {"repeat_action_probability", "noop_max", "frame_skip", "max_episode_frames"}
    bad = ale_only & set(options)
    if bad:
        raise ConfigError(
            f"{sorted(bad)} are ALE options (sticky actions, no-op starts, frame skip with "
            f"max-pooling); {name!r} is not an Atari game. Use action_repeat for repeating "
            "actions in any env."
        )
    names = {f.name for f in dataclasses.fields(GymSpec)} - {"env_id", "env_kwargs", "observation"}
    for option in options:
        if option not in names:
            close = difflib.get_close_matches(option, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"Unknown GymSpec option {option!r}{hint} Known: {sorted(names)}.")
    check_env_id(name)
    kwargs = dict(env_kwargs or {})
    env = gym.make(name, **kwargs)
    try:
        actions = ActionSpec.from_space(env.action_space, name)
        obs_space = env.observation_space
        if observation is None:
            observation = _default_source(obs_space, name)
        _check_choice("observation", observation, get_args(ObservationSource))
        state_size = 0
        if observation == "state":
            if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
                raise ConfigError(
                    f"{name} has observations {obs_space}; observation='state' needs a flat "
                    "Box vector. Use observation='render' to learn from its frames, or wrap "
                    "it in gymnasium.wrappers.FlattenObservation."
                )
            state_size = int(obs_space.shape[0])
        elif observation == "image":
            key: str | None = options.get("image_key")
            if (
                isinstance(obs_space, gym.spaces.Dict)
                and key is None
                and "image" in obs_space.spaces
            ):
                options["image_key"] = key = "image"
            sample = _image_of(obs_space.sample(), key, name)
            if sample is None or (isinstance(obs_space, gym.spaces.Dict) and key is None):
                raise ConfigError(
                    f"{name} has observations {obs_space}, which hold no uint8 image "
                    "(H, W[, C]); use observation='render' (frames of env.render()) or "
                    "observation='state' (a flat vector)."
                )
            if sample.shape[0] < 16 or sample.shape[1] < 16:
                raise ConfigError(
                    f"{name}'s image observation is {sample.shape}, too small to be a picture "
                    "(a symbolic grid such as MiniGrid's?); use observation='render'."
                )
    finally:
        env.close()
    if observation == "render":
        kwargs.setdefault("render_mode", "rgb_array")
        if name.startswith("dm_control/"):  # render at the frame size, not dm_control's 480
            side = options.get("screen_size", 64)
            kwargs.setdefault("render_kwargs", {"width": side, "height": side})
    return GymSpec(
        env_id=name,
        env_kwargs=kwargs,
        observation=observation,
        state_size=state_size,
        actions=actions,
        **options,
    )


def _default_source(space: gym.Space, env_id: str) -> ObservationSource:
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return "state"
    if isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3):
        return "image"
    if isinstance(space, gym.spaces.Dict) and "image" in space.spaces:
        image = space.spaces["image"]
        if isinstance(image, gym.spaces.Box) and min(image.shape[:2]) >= 16:
            return "image"
        return "render"
    raise ConfigError(
        f"{env_id} has observations {space}; dreamenv learns from an image (uint8 (H, W[, C])), "
        "a flat Box state vector, or the env's render(): pass observation='render' if the env "
        "renders rgb_array frames, or wrap it so its observation is one of these."
    )
