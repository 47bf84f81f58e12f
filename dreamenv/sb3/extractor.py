"""The paper's policy trunk over a latent grid, as an SB3 features extractor.

Example:
    >>> PPO("MlpPolicy", env, policy_kwargs={"features_extractor_class": LatentExtractor})
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from dreamenv.errors import ConfigError
from dreamenv.precision import Precision, autocast, check_precision


class LatentExtractor(BaseFeaturesExtractor):
    """The paper's policy trunk over a latent grid: two 3x3 convolutions with layer norm and
    leaky ReLU, then a linear layer. Takes embeddings ``(D, G, G)`` or code indices
    (one-hot, as SB3 preprocesses MultiDiscrete observations). ``precision="bfloat16"``
    runs the trunk under bfloat16 autocast (:mod:`dreamenv.precision`); its features and
    everything after them stay float32.

    Example:
        >>> PPO("MlpPolicy", env, policy_kwargs={"features_extractor_class": LatentExtractor,
        ...     "features_extractor_kwargs": {"precision": "bfloat16"}})
    """

    def __init__(
        self,
        observation_space: gym.Space,
        features_dim: int = 256,
        channels: int = 64,
        precision: Precision = "float32",
    ) -> None:
        super().__init__(observation_space, features_dim)
        self.precision = check_precision(precision, "LatentExtractor precision")
        if isinstance(observation_space, gym.spaces.MultiDiscrete):
            cells = len(observation_space.nvec)
            grid = int(round(cells**0.5))
            in_channels = int(observation_space.nvec[0])
            if grid * grid != cells:
                raise ConfigError(
                    f"LatentExtractor needs a square grid of codes, got {cells} cells."
                )
            self.layout: tuple[int, int] | None = (grid, in_channels)
        elif (
            isinstance(observation_space, gym.spaces.Box)
            and len(observation_space.shape) == 3
            and observation_space.dtype != np.uint8
        ):
            in_channels, grid, _ = observation_space.shape
            self.layout = None
        else:
            raise ConfigError(
                "LatentExtractor takes obs_type 'indices' or 'embeddings', got the space "
                f"{observation_space}. Use SB3's CnnPolicy for 'pixels'."
            )
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, 1, 1),
            nn.LayerNorm([channels, grid, grid]),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LayerNorm([channels, grid, grid]),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(channels * grid * grid, features_dim),
            nn.LeakyReLU(0.2),
        )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        if self.layout is not None:
            grid, codes = self.layout
            observations = observations.view(-1, grid, grid, codes).permute(0, 3, 1, 2)
        with autocast(self.precision, observations.device):
            return self.net(observations).float()
