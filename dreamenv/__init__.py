"""dreamenv: learned world models as ordinary Gymnasium environments.

Example:
    >>> import gymnasium as gym, dreamenv
    >>> dream = gym.make("dreamenv/Dream-v0", checkpoint="runs/pong/model")
    >>> real = gym.make("dreamenv/Real-v0", checkpoint="runs/pong/model")  # same spaces
"""

from dreamenv.registration import register_envs

__version__ = "0.1.0"

register_envs()

from dreamenv.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from dreamenv.data import Collector, EpisodeStore, collect  # noqa: E402
from dreamenv.envs import (  # noqa: E402
    AtariSpec,
    DreamEnv,
    DreamOptions,
    DreamVectorEnv,
    RealEnv,
    RealVectorEnv,
)
from dreamenv.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DatasetError,
    DreamEnvError,
    InvalidActionError,
    StateError,
)
from dreamenv.train.fit import FitConfig, fit  # noqa: E402

__all__ = [
    "AtariSpec",
    "Checkpoint",
    "CheckpointError",
    "Collector",
    "ConfigError",
    "DatasetError",
    "DreamEnv",
    "DreamEnvError",
    "DreamOptions",
    "DreamVectorEnv",
    "EpisodeStore",
    "FitConfig",
    "InvalidActionError",
    "RealEnv",
    "RealVectorEnv",
    "StateError",
    "__version__",
    "collect",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]
