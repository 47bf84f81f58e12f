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
from dreamenv.models.ensemble import EnsembleConfig, EnsembleWorldModel
from dreamenv.models.mdnrnn import MDNRNNConfig, MDNRNNWorldModel
from dreamenv.models.pixel_ar import ARConfig, ARWorldModel, RARConfig, RARWorldModel
from dreamenv.models.rssm import RSSMConfig, RSSMWorldModel
from dreamenv.models.ssm import DSSMVAE, SSSM, DSSMDet, SSMConfig, SSSMJumpy, StateSpaceModel

__all__ = [
    "FAMILIES",
    "OBS_TYPES",
    "ARConfig",
    "ARWorldModel",
    "DSSMDet",
    "DSSMVAE",
    "DiscreteConfig",
    "DiscreteWorldModel",
    "EnsembleConfig",
    "EnsembleWorldModel",
    "MDNRNNConfig",
    "MDNRNNWorldModel",
    "Prediction",
    "RARConfig",
    "RARWorldModel",
    "RSSMConfig",
    "RSSMWorldModel",
    "SSMConfig",
    "SSSM",
    "SSSMJumpy",
    "State",
    "StateSpaceModel",
    "WorldModel",
    "build_model",
    "get_family",
    "register_family",
    "resolve_config",
]
