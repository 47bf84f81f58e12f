"""Stable-Baselines3 integration: the VecEnv adapter, the latent feature extractor,
training in the dream, and evaluation in the real game.

- :func:`wrap` turns a gymnasium ``VectorEnv`` (``DreamVectorEnv``, ``RealVectorEnv``) into
  an SB3 ``VecEnv``: ended envs restart in the same step, their last observation goes to
  ``info["terminal_observation"]``, and ``info["TimeLimit.truncated"]`` is set for
  truncations (the dream horizon), so bootstrapping is right.
- :class:`LatentExtractor` is the paper's policy trunk: embeddings (or one-hot codes)
  through two convolutions with layer norm and a linear layer.
- :func:`train_in_dream` trains PPO/A2C/DQN in a dream env; :func:`evaluate` runs any
  policy in the real game over a vector env.

Example:
    >>> dream = gym.make_vec("dreamenv/Dream-v0", num_envs=16, checkpoint="runs/pong/model",
    ...                      vectorization_mode="vector_entry_point")
    >>> agent = PPO("MlpPolicy", dreamenv.sb3.wrap(dream)).learn(10_000)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from tqdm.auto import tqdm

from dreamenv.checkpoint import Checkpoint
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.real import LatentFilter, RealVectorEnv
from dreamenv.envs.vector import DreamVectorEnv
from dreamenv.errors import CheckpointError, ConfigError

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}

PAPER_PPO = {
    "n_steps": 50,
    "batch_size": 256,
    "n_epochs": 4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_range": 0.1,
    "ent_coef": 0.01,
    "learning_rate": 2.5e-4,
    "max_grad_norm": 0.5,
}
"""PPO settings of Robine et al. (with 16 dream envs: 800 steps per rollout)."""


class VectorEnvAdapter(VecEnv):
    """An SB3 ``VecEnv`` over a gymnasium ``VectorEnv`` (NextStep or SameStep autoreset)."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode == AutoresetMode.DISABLED:
            raise ConfigError(
                "wrap() needs a vector env that autoresets (NextStep or SameStep), got Disabled."
            )
        self.env = env
        self.same_step = mode == AutoresetMode.SAME_STEP
        self.render_mode = getattr(env, "render_mode", None)
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seeds = self._seeds
        seed = None if all(s is None for s in seeds) else seeds
        obs, _ = self.env.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(
            self.num_envs, *self.env.single_action_space.shape
        )

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        done = np.logical_or(terminated, truncated)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            if self.same_step:
                final = info["final_obs"]
            else:
                final = list(obs)
                obs, _ = self.env.reset(options={"reset_mask": done})
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.env.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.env, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(
        self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any
    ) -> list[Any]:
        return [getattr(self.env, method_name)(*args, **kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))


def wrap(env: gym.vector.VectorEnv) -> VectorEnvAdapter:
    """``env`` as an SB3 ``VecEnv`` that PPO, A2C and DQN take directly."""
    if not isinstance(env, gym.vector.VectorEnv):
        raise ConfigError(
            f"wrap() takes a gymnasium VectorEnv such as gym.make_vec('dreamenv/Dream-v0', ...), "
            f"got {type(env).__name__}. A single gym.Env can be passed to SB3 as it is."
        )
    return VectorEnvAdapter(env)


class LatentExtractor(BaseFeaturesExtractor):
    """The paper's policy trunk over a latent grid: two 3x3 convolutions with layer norm and
    leaky ReLU, then a linear layer. Takes embeddings ``(D, G, G)`` or code indices
    (one-hot, as SB3 preprocesses MultiDiscrete observations).

    Example:
        >>> PPO("MlpPolicy", env, policy_kwargs={"features_extractor_class": LatentExtractor})
    """

    def __init__(
        self, observation_space: gym.Space, features_dim: int = 256, channels: int = 64
    ) -> None:
        super().__init__(observation_space, features_dim)
        if isinstance(observation_space, gym.spaces.MultiDiscrete):
            cells = len(observation_space.nvec)
            grid = int(round(cells**0.5))
            in_channels = int(observation_space.nvec[0])
            if grid * grid != cells:
                raise ConfigError(
                    f"LatentExtractor needs a square grid of codes, got {cells} cells."
                )
            self.layout = (grid, in_channels)
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
        return self.net(observations)


def infer_obs_type(space: gym.Space, checkpoint: Checkpoint) -> str:
    """The ``obs_type`` of ``checkpoint`` whose observation space is ``space``."""
    for obs_type in checkpoint.model.obs_types:
        candidate = checkpoint.model.observation_space(obs_type)
        if (
            type(candidate) is type(space)
            and candidate.shape == space.shape
            and candidate.dtype == space.dtype
        ):
            return obs_type
    raise CheckpointError(
        f"The agent observes {space}, which matches no observation of the checkpoint "
        f"{str(checkpoint.path)!r} (game {checkpoint.spec.game!r}). Use the checkpoint the agent "
        "was trained with."
    )


def _algorithm_of(data: dict[str, Any]) -> type[BaseAlgorithm]:
    """The SB3 class a saved agent's data belongs to (PPO, A2C or DQN)."""
    if "target_update_interval" in data or "exploration_rate" in data:
        return DQN
    if "clip_range" in data:
        return PPO
    return A2C


def load_agent(path: str | Path, device: str = "cpu") -> BaseAlgorithm:
    """A saved SB3 agent; its algorithm (PPO, A2C or DQN) is read from the zip's data."""
    from stable_baselines3.common.save_util import load_from_zip_file

    path = Path(path)
    if not path.is_file() and path.with_suffix(".zip").is_file():
        path = path.with_suffix(".zip")
    if not path.is_file():
        raise CheckpointError(f"No agent at {str(path)!r}; train one with `dreamenv dream`.")
    try:
        data, _, _ = load_from_zip_file(path, device=device, load_data=True)
    except Exception as err:  # noqa: BLE001 - any unreadable zip means the same to the user
        raise CheckpointError(f"{str(path)!r} is not a saved SB3 agent ({err}).") from err
    cls = _algorithm_of(data or {})
    try:
        return cls.load(path, device=device)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"{str(path)!r} could not be loaded as {cls.__name__} ({err})."
        ) from err


def action_logits(agent: BaseAlgorithm, obs: np.ndarray) -> torch.Tensor:
    """Unnormalised action scores of ``agent`` for a batch of observations."""
    with torch.no_grad():
        tensor, _ = agent.policy.obs_to_tensor(obs)
        if isinstance(agent, DQN):
            return agent.policy.q_net(tensor)
        return agent.policy.get_distribution(tensor).distribution.logits


class AgentPolicy:
    """A saved SB3 agent acting on real frames through a checkpoint's model, sampling at
    ``temperature`` (a :data:`dreamenv.data.collect.Policy` for collection).

    It follows each env's game with the model (:class:`~dreamenv.envs.real.LatentFilter`),
    so families with memory see the same observations as in the dream; the collection
    tells it which games restarted (:meth:`restart`).
    """

    def __init__(
        self,
        agent: BaseAlgorithm | str | Path,
        checkpoint: str | Path | Checkpoint,
        temperature: float = 1.0,
        device: str = "cpu",
    ) -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature!r}.")
        self.agent = load_agent(agent, device) if isinstance(agent, (str, Path)) else agent
        self.checkpoint = resolve_checkpoint(checkpoint, device, None)
        if self.checkpoint.model.jump > 1:
            raise ConfigError(
                f"collecting with an agent of a jumpy model (jump={self.checkpoint.model.jump}) "
                "is not supported: collect with a random policy, or use a model with jump=1."
            )
        self.obs_type = infer_obs_type(self.agent.observation_space, self.checkpoint)
        self.device = device
        self.temperature = temperature
        self.filter: LatentFilter | None = None
        self.last_actions: np.ndarray | None = None

    def restart(self, frames: np.ndarray, mask: np.ndarray) -> None:
        """The games of ``mask`` restarted and now show the stacks ``frames[mask]``."""
        if self.filter is not None and mask.any():
            self.filter.reset(frames[mask], np.flatnonzero(mask))

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.filter is None or self.filter.num_envs != len(frames):
            self.filter = LatentFilter(self.checkpoint, self.obs_type, len(frames), self.device)
            self.filter.reset(frames)
        else:
            self.filter.step(frames, self.last_actions)
        logits = action_logits(self.agent, self.filter.observe(frames)) / self.temperature
        probs = torch.softmax(logits.double(), -1).cpu().numpy()
        u = rng.random((len(probs), 1))
        actions = np.minimum((probs.cumsum(-1) < u).sum(-1), probs.shape[1] - 1).astype(np.int64)
        self.last_actions = actions
        return actions


def make_agent(
    algo: str,
    env: VecEnv,
    *,
    extractor: bool = True,
    seed: int | None = None,
    device: str = "cpu",
    **kwargs: Any,
) -> BaseAlgorithm:
    """A new SB3 agent for ``env``; ``extractor`` uses :class:`LatentExtractor` (paper policy)."""
    if algo.lower() not in ALGORITHMS:
        raise ConfigError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}.")
    cls = ALGORITHMS[algo.lower()]
    params = dict(PAPER_PPO) if cls is PPO else {}
    params.update(kwargs)
    policy_kwargs = params.pop("policy_kwargs", {})
    if (
        extractor
        and not isinstance(env.observation_space, gym.spaces.Box)
        or (
            extractor
            and len(env.observation_space.shape) == 3
            and env.observation_space.dtype != np.uint8
        )
    ):
        policy_kwargs.setdefault("features_extractor_class", LatentExtractor)
    policy = (
        "CnnPolicy"
        if env.observation_space.dtype == np.uint8 and len(env.observation_space.shape) == 3
        else "MlpPolicy"
    )
    return cls(
        policy, env, seed=seed, device=device, policy_kwargs=policy_kwargs, verbose=0, **params
    )


class ProgressCallback(BaseCallback):
    """A tqdm bar over the imagined steps of ``learn`` (SB3's own bar needs ``rich``)."""

    def __init__(self, total: int, desc: str = "dream") -> None:
        super().__init__()
        self.total = total
        self.desc = desc
        self.bar: Any = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, desc=self.desc, unit="step")
        self._start = self.num_timesteps

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self._start - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def train_in_dream(
    checkpoint: str | Path | Checkpoint,
    timesteps: int,
    *,
    algo: str = "ppo",
    num_envs: int = 16,
    obs_type: str | None = None,
    horizon: int = 50,
    use_termination: bool = True,
    seed: int = 0,
    device: str = "cpu",
    agent: BaseAlgorithm | None = None,
    progress: bool = True,
    **agent_kwargs: Any,
) -> BaseAlgorithm:
    """Train an SB3 agent for ``timesteps`` imagined steps in the checkpoint's dream env.

    ``use_termination=False`` ends dream episodes only at the horizon, as the paper does.
    Passing ``agent`` continues training it (its env is replaced by a fresh dream env).
    """
    dream = wrap(
        DreamVectorEnv(
            checkpoint,
            num_envs,
            obs_type=obs_type,
            horizon=horizon,
            use_termination=use_termination,
            device=device,
        )
    )
    dream.seed(seed)
    if agent is None:
        agent = make_agent(algo, dream, seed=seed, device=device, **agent_kwargs)
    else:
        agent.set_env(dream)
    if agent.verbose == 0 and not agent._custom_logger:
        # SB3's default logger makes an empty SB3-<time> folder in the temp dir per learn()
        agent.set_logger(Logger(None, []))
    callback = ProgressCallback(timesteps) if progress else None
    agent.learn(timesteps, callback=callback, reset_num_timesteps=False)
    return agent


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray] | BaseAlgorithm,
    checkpoint: str | Path | Checkpoint,
    *,
    episodes: int = 32,
    num_envs: int = 16,
    obs_type: str | None = None,
    seed: int = 0,
    deterministic: bool = False,
    max_steps: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Returns of ``episodes`` whole real episodes played by ``policy``.

    Args:
        policy: an SB3 agent (sampled unless ``deterministic``) or a function from a batch of
            observations to actions.
        checkpoint: whose preprocessing and encoder make the observations.
        episodes: episodes to play; each env plays its fixed share, so short episodes are not
            favoured.
        obs_type: inferred from the agent's observation space when None.
        max_steps: cap on an episode's agent steps (the game's own limit when None).
    """
    ckpt = resolve_checkpoint(checkpoint, device, None)
    if isinstance(policy, BaseAlgorithm):
        obs_type = obs_type or infer_obs_type(policy.observation_space, ckpt)
        agent = policy

        def policy(obs: np.ndarray) -> np.ndarray:
            return agent.predict(obs, deterministic=deterministic)[0]

    num_envs = max(1, min(num_envs, episodes))
    env = RealVectorEnv(ckpt, num_envs, obs_type=obs_type, device=device)
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    returns: list[float] = []
    running = np.zeros(num_envs)
    lengths = np.zeros(num_envs, dtype=np.int64)
    done_count = np.zeros(num_envs, dtype=np.int64)
    obs, _ = env.reset(seed=seed)
    bar = tqdm(total=episodes, desc="evaluate", unit="episode", disable=not progress)
    while (done_count < quota).any():
        obs, reward, terminated, truncated, _ = env.step(np.asarray(policy(obs)))
        running += reward
        lengths += 1
        ended = terminated | truncated | (lengths >= (max_steps or np.iinfo(np.int64).max))
        capped = ended & ~(terminated | truncated)
        for i in np.flatnonzero(ended):
            if done_count[i] < quota[i]:
                returns.append(float(running[i]))
                done_count[i] += 1
                bar.update(1)
        running[ended] = 0.0
        lengths[ended] = 0
        if capped.any():
            obs, _ = env.reset(options={"reset_mask": capped})
    bar.close()
    env.close()
    return np.array(returns)


def random_policy(actions: int | gym.Space, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Uniformly random actions for a batch of observations: ``actions`` is the number of
    actions, or a single env's action space (such as a jumpy model's ``MultiDiscrete``)."""
    space = gym.spaces.Discrete(actions) if isinstance(actions, (int, np.integer)) else actions
    high = space.n if isinstance(space, gym.spaces.Discrete) else space.nvec
    rng = np.random.default_rng(seed)
    return lambda obs: rng.integers(0, high, size=(len(obs), *space.shape))
