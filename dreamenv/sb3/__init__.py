"""Stable-Baselines3 integration.

- :func:`wrap` (``vec_env``): a gymnasium ``VectorEnv`` as an SB3 ``VecEnv``;
- :class:`LatentExtractor` (``extractor``): the paper's policy trunk over latent grids;
- :class:`I2AExtractor` / :class:`DistillRolloutPolicy` (``imagination_extractor``): I2A;
- :func:`save_agent` / :func:`load_agent` (``agent_files``): agent files;
- :func:`train_in_dream` / :func:`make_agent` (``dream_training``): an agent trained in a dream;
- :class:`AgentPolicy` (``agent_policy``): a saved agent collecting real data.

Evaluation in the real game needs no SB3: :func:`dreamenv.evaluate.evaluate`.

Example:
    >>> dream = gym.make_vec("dreamenv/Dream-v0", num_envs=16, checkpoint="runs/pong/model",
    ...                      vectorization_mode="vector_entry_point")
    >>> agent = PPO("MlpPolicy", dreamenv.sb3.wrap(dream)).learn(10_000)
"""

from dreamenv.evaluate import evaluate, random_policy
from dreamenv.sb3.agent_files import load_agent, save_agent
from dreamenv.sb3.agent_policy import AgentPolicy, action_logits
from dreamenv.sb3.dream_training import (
    ALGORITHMS,
    PAPER_PPO,
    ProgressCallback,
    make_agent,
    train_in_dream,
)
from dreamenv.sb3.extractor import LatentExtractor
from dreamenv.sb3.imagination_extractor import DistillRolloutPolicy, I2AExtractor
from dreamenv.sb3.vec_env import VectorEnvAdapter, wrap

__all__ = [
    "ALGORITHMS",
    "PAPER_PPO",
    "AgentPolicy",
    "DistillRolloutPolicy",
    "I2AExtractor",
    "LatentExtractor",
    "ProgressCallback",
    "VectorEnvAdapter",
    "action_logits",
    "evaluate",
    "load_agent",
    "make_agent",
    "random_policy",
    "save_agent",
    "train_in_dream",
    "wrap",
]
