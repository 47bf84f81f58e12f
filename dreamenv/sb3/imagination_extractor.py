"""Imagination-augmented agents (I2A; Weber et al. 2017, as Buesing et al. 2018 use it with
their state-space models) as a Stable-Baselines3 features extractor.

:class:`I2AExtractor` reads the real stacked frames an agent observes (``Real-v0`` or
``Dream-v0`` with ``obs_type="pixels"``). For each frame stack it encodes the frames with
the world model, and for every action ``a`` rolls the model out ``rollout_steps`` steps
(``a`` first, then the rollout policy's actions); a rollout encoder reads the imagined
latents and rewards in reverse order with an LSTM, and its last outputs, one per action,
are concatenated with a model-free path (SB3's ``NatureCNN`` over the frames). The world
model is frozen and not part of the policy's parameters (its rollouts carry no gradient);
the rollout encoder, the model-free path and the head train with the agent's loss.

The rollout policy is a small network on the model's latent, distilled from the agent:
:class:`DistillRolloutPolicy` (an SB3 callback) fits it after every rollout of the agent to
the agent's action probabilities on the observations of that rollout (cross-entropy), as
I2A trains its rollout policy towards the imagination-augmented policy.

Example:
    >>> env = wrap(RealVectorEnv("runs/pong/sssm", 8, obs_type="pixels"))
    >>> agent = PPO("CnnPolicy", env, policy_kwargs={
    ...     "features_extractor_class": I2AExtractor,
    ...     "features_extractor_kwargs": {"checkpoint": "runs/pong/sssm"}})
    >>> agent.learn(100_000, callback=DistillRolloutPolicy())
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from dreamenv.agents.actor_critic import default_obs_type
from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.errors import ConfigError
from dreamenv.imagine import Imagination, ImagineConfig, Start
from dreamenv.models.base import WorldModel
from dreamenv.precision import Precision


def latent_obs_type(model: Any) -> str:
    """The float latent the rollout policy and encoder read (the actor-critic's choice,
    :func:`~dreamenv.agents.actor_critic.default_obs_type`), or a ConfigError for a model
    with none (the pixel AR baseline)."""
    obs_type = default_obs_type(model)
    space = model.observation_space(obs_type)
    if not (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)):
        raise ConfigError(
            f"I2A rolls out the model's latent, and the {model.family!r} family has none "
            f"(obs_types {list(model.obs_types)}); use sssm, dssm_det, dssm_vae, discrete, "
            "rssm or mdnrnn."
        )
    return obs_type


class _LatentNet(nn.Module):
    """A latent observation (a grid ``(C, G, G)`` or a vector) to ``out`` features."""

    def __init__(self, shape: tuple[int, ...], out: int, hidden: int) -> None:
        super().__init__()
        if len(shape) == 3:
            self.net: nn.Module = nn.Sequential(
                nn.Conv2d(shape[0], hidden, 3, padding=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(hidden * shape[1] * shape[2], out),
            )
        else:
            size = int(np.prod(shape))
            self.net = nn.Sequential(
                nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class _FrozenModel:
    """The world model and its imagination, held outside the policy's modules."""

    model: WorldModel
    imagination: Imagination


class I2AExtractor(BaseFeaturesExtractor):
    """The I2A trunk over real stacked frames; see the module docstring.

    Args:
        observation_space: the agent's observation space: the checkpoint's stacked frames
            (``obs_type="pixels"`` of ``Real-v0`` / ``Dream-v0``).
        checkpoint: the world model (a directory, reloaded when the agent is loaded).
        rollout_steps: imagined steps per action (the paper's rollout length).
        encoder_hidden: units of the rollout encoder's LSTM (per action).
        model_free_dim: features of the model-free path (NatureCNN).
        features_dim: features of the trunk's output.
        device: where the world model runs (the policy's device).
        precision: the imagined rollouts' precision (``"bfloat16"``: autocast, see
            :mod:`dreamenv.precision`); the trainable parts stay float32.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        checkpoint: str | Path | Checkpoint,
        rollout_steps: int = 3,
        encoder_hidden: int = 64,
        model_free_dim: int = 256,
        features_dim: int = 256,
        device: str = "cpu",
        precision: Precision = "float32",
    ) -> None:
        super().__init__(observation_space, features_dim)
        ckpt = resolve_checkpoint(checkpoint, device, None)
        model = ckpt.model
        if not isinstance(model.action_space, gym.spaces.Discrete):
            raise ConfigError(
                f"I2A imagines one rollout per action and needs Discrete actions; this model's "
                f"action space is {model.action_space}."
            )
        frame_shape = tuple(model.spec.frame_shape)
        shape = tuple(getattr(observation_space, "shape", None) or ())
        if not (isinstance(observation_space, gym.spaces.Box) and shape == frame_shape):
            raise ConfigError(
                f"I2AExtractor reads the model's stacked real frames {frame_shape} (Real-v0 or "
                f"Dream-v0 with obs_type='pixels'), got {observation_space}."
            )
        if not isinstance(rollout_steps, int) or rollout_steps < 1:
            raise ConfigError(f"rollout_steps must be a positive int, got {rollout_steps!r}.")
        self.rollout_steps = rollout_steps
        self.num_actions = int(model.action_space.n)
        self.obs_type = latent_obs_type(model)
        self.latent_shape = tuple(model.observation_space(self.obs_type).shape or ())
        # not a submodule: the model is frozen and its weights live in the checkpoint
        self._frozen = _FrozenModel(
            model,
            Imagination(
                ckpt,
                ImagineConfig(
                    obs_type=self.obs_type, reward_mode="mean", precision=precision, grad=False
                ),
            ),
        )
        self.checkpoint_path = str(ckpt.path)
        self._distill_optimizer: torch.optim.Optimizer | None = None
        self.images_scaled = is_image_space(observation_space, check_channels=False)
        self.rollout_policy = _LatentNet(self.latent_shape, self.num_actions, encoder_hidden)
        self.step_encoder = _LatentNet(self.latent_shape, encoder_hidden, encoder_hidden)
        self.lstm = nn.LSTM(encoder_hidden + 2, encoder_hidden, batch_first=True)
        self.model_free = NatureCNN(observation_space, model_free_dim)
        self.head = nn.Sequential(
            nn.Linear(model_free_dim + self.num_actions * encoder_hidden, features_dim), nn.ReLU()
        )

    @property
    def world_model(self) -> WorldModel:
        """The frozen world model (not among the extractor's parameters)."""
        return self._frozen.model

    @property
    def imagination(self) -> Imagination:
        """Rollouts of :attr:`world_model`."""
        return self._frozen.imagination

    # --- imagination ----------------------------------------------------------------------
    def frames(self, observations: torch.Tensor) -> torch.Tensor:
        """The raw uint8 frames SB3 scaled to [0, 1] (image spaces) or passed as they are."""
        x = observations * 255.0 if self.images_scaled else observations
        return x.round().clamp_(0, 255).to(torch.uint8)

    @torch.no_grad()
    def start(self, observations: torch.Tensor) -> Start:
        """The model's starts for a batch of (preprocessed) observations; row ``i`` draws from
        the stream of seed ``i``, so a batch imagines the same futures every time."""
        return self.imagination.from_observations(self.frames(observations), seed=0)

    @torch.no_grad()
    def latents(self, observations: torch.Tensor) -> torch.Tensor:
        """The model's latent observation of each (preprocessed) observation."""
        start = self.start(observations)
        return self.world_model.observation(start.latent, self.obs_type).float()

    @torch.no_grad()
    def imagine(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each row and action: latents ``(B * A, K, *latent)`` after each imagined step
        and rewards / alive ``(B * A, K, 2)`` (row ``b * A + a`` starts with action ``a``)."""
        a = self.num_actions
        branches = self.imagination.fan_out(self.start(observations), a)
        first = torch.arange(a, device=branches.latent.device).repeat(branches.batch // a)
        step = [0]
        generator = torch.Generator(first.device).manual_seed(0)  # the same draws every call

        def policy(obs: torch.Tensor) -> torch.Tensor:
            step[0] += 1
            if step[0] == 1:
                return first
            probs = torch.softmax(self.rollout_policy(obs.float()), -1)
            return torch.multinomial(probs, 1, generator=generator)[:, 0]

        rollout = self.imagination.rollout(branches, self.rollout_steps, policy=policy)
        latents = rollout.latents[:, 1:]
        obs = self.world_model.observation(latents.flatten(0, 1), self.obs_type).float()
        scalars = torch.stack([rollout.rewards, rollout.alive], -1).float()
        # clones outside inference mode: the encoder's autograd may save them for backward
        return obs.view(*latents.shape[:2], *self.latent_shape).clone(), scalars.clone()

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        b = observations.shape[0]
        latents, scalars = self.imagine(observations)
        k = latents.shape[1]
        steps = self.step_encoder(latents.flatten(0, 1)).view(b * self.num_actions, k, -1)
        sequence = torch.cat([steps, scalars], -1).flip(1)  # the last imagined step first
        _, (h, _) = self.lstm(sequence)
        imagined = h[-1].reshape(b, -1)
        return self.head(torch.cat([self.model_free(observations), imagined], -1))

    # --- the rollout policy ---------------------------------------------------------------
    def distill(
        self, observations: torch.Tensor, target_probs: torch.Tensor, epochs: int, lr: float
    ) -> float:
        """Fit the rollout policy to ``target_probs`` on the latents of ``observations`` by
        cross-entropy (full batch, ``epochs`` Adam steps); returns the KL divergence from
        the targets to the rollout policy before the last step (the cross-entropy less the
        targets' entropy, which bounds it from below)."""
        latents = self.latents(observations).clone()
        if self._distill_optimizer is None:
            self._distill_optimizer = torch.optim.Adam(self.rollout_policy.parameters(), lr=lr)
        optimizer = self._distill_optimizer
        loss = torch.zeros(())
        for _ in range(epochs):
            logp = F.log_softmax(self.rollout_policy(latents), -1)
            loss = -(target_probs * logp).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        entropy = -(target_probs * target_probs.clamp(min=1e-12).log()).sum(-1).mean()
        return float((loss - entropy).detach())


class DistillRolloutPolicy(BaseCallback):
    """Distils the agent's policy into its :class:`I2AExtractor`'s rollout policy after
    every rollout (PPO, A2C): ``max_samples`` observations of the rollout buffer, their
    action probabilities under the agent, ``epochs`` Adam steps of cross-entropy.

    Example:
        >>> agent.learn(100_000, callback=DistillRolloutPolicy(epochs=20))
    """

    def __init__(
        self, epochs: int = 10, lr: float = 1e-3, max_samples: int = 1024, verbose: int = 0
    ) -> None:
        super().__init__(verbose)
        self.epochs, self.lr, self.max_samples = epochs, lr, max_samples
        self.losses: list[float] = []
        """The KL divergence from the agent's policy to the rollout policy at the end of
        each distillation."""

    def _extractor(self) -> I2AExtractor:
        policy = self.model.policy
        extractor = getattr(policy, "features_extractor", None) or getattr(
            policy, "pi_features_extractor", None
        )
        if not isinstance(extractor, I2AExtractor):
            raise ConfigError(
                "DistillRolloutPolicy needs an agent whose features extractor is an "
                f"I2AExtractor (policy_kwargs features_extractor_class), got "
                f"{type(extractor).__name__}."
            )
        return extractor

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        extractor = self._extractor()
        buffer = getattr(self.model, "rollout_buffer", None)
        if buffer is None:
            raise ConfigError("DistillRolloutPolicy needs an on-policy agent (PPO, A2C).")
        obs = buffer.observations.reshape(-1, *buffer.obs_shape)
        if len(obs) > self.max_samples:
            pick = np.random.default_rng(self.num_timesteps).choice(
                len(obs), self.max_samples, replace=False
            )
            obs = obs[pick]
        policy: Any = self.model.policy
        tensor, _ = policy.obs_to_tensor(obs)
        with torch.no_grad():
            probs = policy.get_distribution(tensor).distribution.probs
        pre = preprocess_obs(tensor, policy.observation_space, policy.normalize_images)
        assert isinstance(pre, torch.Tensor)  # a Box of frames, not a Dict
        self.losses.append(extractor.distill(pre, probs, self.epochs, self.lr))
        self.logger.record("i2a/distill_kl", self.losses[-1])
