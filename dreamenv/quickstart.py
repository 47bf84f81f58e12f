"""``dreamenv quickstart``: the main job on a fresh machine. Runs the ``quick`` loop on one
game, then plays a random policy in the real game on the same episode seeds as the final
evaluation, and prints both returns with Welch's t-test, and the report PNG.

Example:
    >>> quickstart("runs/quickstart")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dreamenv.stats import AgainstRandom, mean_std
from dreamenv.train.loop import LOOP_PRESETS, LoopConfig, train

QUICKSTART_GAME = "seaquest"
"""The game of the quickstart. Random play in Seaquest scores often enough (a shark or a
sub shot now and then: 0.7% of random steps are rewarded) for a small 64x64 model to learn
what a shot earns, and a policy that dives and keeps firing beats random clearly. Chosen by
measurement at the quick budget: KungFuMaster's and RoadRunner's dream-trained policies
did not beat random on every seed (see the README)."""


def quickstart(
    run_dir: str | Path = "runs/quickstart",
    *,
    game: str = QUICKSTART_GAME,
    seed: int = 0,
    config: LoopConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train with the ``quick`` preset, then compare with a random policy; returns the table."""
    from dreamenv.checkpoint import load_checkpoint
    from dreamenv.evaluate import evaluate, random_policy
    from dreamenv.report import write_report

    config = config or LOOP_PRESETS["quick"]
    run_dir = Path(run_dir)
    rows = train(game, run_dir, config, seed=seed, progress=progress)
    final = rows[-1]
    ckpt = load_checkpoint(run_dir / "model", config.resolved_device())
    random_returns = evaluate(
        random_policy(ckpt.model.num_actions, seed),
        ckpt,
        episodes=config.eval_episodes,
        num_envs=config.eval_envs,
        seed=seed + 10_000 * final["iteration"],
        max_steps=config.eval_max_steps,
        device=config.resolved_device(),
    )
    agent_returns = np.array(final["returns"])
    compared = AgainstRandom.of(agent_returns, random_returns)
    png, _ = write_report([run_dir], run_dir / "report")
    result = {
        "game": ckpt.spec.game,
        "real_steps": final["real_steps"],
        "agent": agent_returns.tolist(),
        "random": random_returns.tolist(),
        "welch_t": compared.welch_t,
        "welch_df": compared.welch_df,
        "p_value": compared.p_value,
        "report": str(png),
    }
    print(format_table(result))
    return result


def format_table(result: dict[str, Any]) -> str:
    """The quickstart's closing table (Markdown)."""
    agent, random = np.array(result["agent"]), np.array(result["random"])
    lines = [
        f"{result['game']}: {result['real_steps']} real steps, evaluated in the real game",
        "",
        "| policy | episodes | mean ± std return |",
        "|---|---:|---:|",
        f"| trained in the dream | {len(agent)} | {mean_std(agent)} |",
        f"| random | {len(random)} | {mean_std(random)} |",
        "",
        AgainstRandom(
            agent, random, result["welch_t"], result["welch_df"], result["p_value"]
        ).test(),
        f"learning curve: {result['report']}",
    ]
    return "\n".join(lines)
