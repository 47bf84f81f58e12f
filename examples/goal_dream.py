"""A goal-conditioned agent (SB3 SAC with HER) trained only in a goal-conditioned dream, then
asked to reach real goals in the real env, against a random policy in the same goals.

Goals are the latents of the checkpoint's real start frames (GoalDream-v0 and GoalReal-v0
draw from the same set, with the same threshold). An episode succeeds when the real latent
comes within the threshold of its goal within --horizon steps; the figures are the success
rates and the closest distance to the goal (mean ± std, Welch's t), 32 episodes each.

    python examples/goal_dream.py --checkpoint runs/pendulum/model --steps 30000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC, HerReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv

import dreamenv  # noqa: F401  (registers the envs)
from dreamenv.atomic_files import write_json
from dreamenv.stats import AgainstRandom


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a world-model checkpoint (Box actions)")
    p.add_argument("--obs-type", default=None, help="a float latent: state, embeddings, latent")
    p.add_argument("--steps", type=int, default=30000, help="imagined steps of SAC")
    p.add_argument("--horizon", type=int, default=50, help="steps per goal, dream and real")
    p.add_argument("--envs", type=int, default=8, help="dream envs stepped together")
    p.add_argument("--sampled-goals", type=int, default=4, help="HER goals relabelled per step")
    p.add_argument("--learning-starts", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--gradient-steps", type=int, default=-1, help="per env step (-1: one per transition)"
    )
    p.add_argument("--net", type=int, default=256, help="units per layer (two layers)")
    p.add_argument("--reward-mode", default="mean", help="the dream's reward mode")
    p.add_argument("--episodes", type=int, default=32, help="real goals of each policy")
    p.add_argument("--save", default=None, help="save the agent to this path")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def play(env: gym.Env, act, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per episode: 1.0 if the goal was reached within the env's horizon, and the closest
    distance to it."""
    distance = env.get_wrapper_attr("distance")
    reached, closest = np.zeros(episodes), np.zeros(episodes)
    for e in range(episodes):
        obs, info = env.reset(seed=seed + e)
        best = float(distance(obs["achieved_goal"], obs["desired_goal"]))
        hit = info["is_success"]
        done = False
        while not done and not hit:
            obs, _, terminated, truncated, info = env.step(act(obs))
            best = min(best, float(distance(obs["achieved_goal"], obs["desired_goal"])))
            hit, done = info["is_success"], terminated or truncated
        reached[e], closest[e] = hit, best
    return reached, closest


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    dream_kwargs = {
        "checkpoint": args.checkpoint,
        "horizon": args.horizon,
        "reward_mode": args.reward_mode,
    }
    if args.obs_type:
        dream_kwargs["obs_type"] = args.obs_type
    venv = DummyVecEnv(
        [lambda: gym.make("dreamenv/GoalDream-v0", **dream_kwargs) for _ in range(args.envs)]
    )
    venv.seed(args.seed)
    agent = SAC(
        "MultiInputPolicy",
        venv,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={
            "n_sampled_goal": args.sampled_goals,
            "goal_selection_strategy": "future",
        },
        learning_starts=args.learning_starts,
        batch_size=args.batch_size,
        gradient_steps=args.gradient_steps,
        policy_kwargs={"net_arch": [args.net, args.net]},
        seed=args.seed,
        verbose=0,
    )
    t0 = time.perf_counter()
    agent.learn(args.steps)
    seconds = time.perf_counter() - t0
    if args.save:
        agent.save(args.save)
    real_kwargs = {"checkpoint": args.checkpoint}
    if args.obs_type:
        real_kwargs["obs_type"] = args.obs_type
    real = gym.make("dreamenv/GoalReal-v0", max_episode_steps=args.horizon, **real_kwargs)
    real.action_space.seed(args.seed)
    trained, trained_d = play(
        real, lambda o: agent.predict(o, deterministic=True)[0], args.episodes, args.seed
    )
    random, random_d = play(real, lambda o: real.action_space.sample(), args.episodes, args.seed)
    real.close()
    success = AgainstRandom.of(trained, random)
    closest = AgainstRandom.of(trained_d, random_d)
    print(f"goals reached within {args.horizon} real steps:")
    label = f"SAC + HER trained in the dream ({args.steps} steps, {seconds:.0f} s)"
    for what, compared in (("success", success), ("closest distance", closest)):
        print(compared.lines(f"{label}, {what}", 3, "goals", f"random policy, {what}"))
    if args.json:
        write_json(
            Path(args.json),
            {
                "settings": vars(args),
                "trained_success": trained.tolist(),
                "random_success": random.tolist(),
                "trained_closest": trained_d.tolist(),
                "random_closest": random_d.tolist(),
                "welch_success": [success.welch_t, success.welch_df, success.p_value],
                "welch_closest": [closest.welch_t, closest.welch_df, closest.p_value],
                "train_seconds": seconds,
            },
        )


if __name__ == "__main__":
    main()
