"""World-model families behind one contract (see :mod:`dreamenv.models.base`)."""

from dreamenv.models.base import (
    FAMILIES,
    OBS_TYPES,
    Prediction,
    State,
    WorldModel,
    build_model,
    get_family,
    register_family,
    resolve_config,
)
from dreamenv.models.discrete import DiscreteConfig, DiscreteWorldModel
from dreamenv.models.mdnrnn import MDNRNNConfig, MDNRNNWorldModel

__all__ = [
    "FAMILIES",
    "OBS_TYPES",
    "DiscreteConfig",
    "DiscreteWorldModel",
    "MDNRNNConfig",
    "MDNRNNWorldModel",
    "Prediction",
    "State",
    "WorldModel",
    "build_model",
    "get_family",
    "register_family",
    "resolve_config",
]
