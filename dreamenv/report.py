"""Reports of iterative-loop runs: a learning-curve PNG and a Markdown table against the
published Atari-100k scores shipped in ``dreamenv/reference/atari100k_scores.csv``.

Several runs (seeds) of one game are aggregated as mean ± std over runs.

Example:
    >>> write_report(["runs/pong-s0", "runs/pong-s1"], "runs/pong-report")
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dreamenv.envs.atari import normalize_game
from dreamenv.errors import DatasetError

REFERENCE_COLUMNS = {
    "robine_4frames": "Robine et al. (4 frames)",
    "simple_sd_gamma099": "SimPLe (SD, γ=0.99)",
    "ppo_100k": "PPO 100k",
    "twm": "TWM",
    "iris": "IRIS",
    "storm": "STORM",
    "diamond": "DIAMOND",
}
"""Reference methods shown in reports, by column of the reference CSV."""


def reference_scores() -> dict[str, dict[str, float]]:
    """Published scores per game (keyed by ale-py ROM id), from the shipped CSV."""
    text = resources.files("dreamenv.reference").joinpath("atari100k_scores.csv").read_text()
    table: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(text.splitlines()):
        game = normalize_game(row.pop("game"))
        table[game] = {k: float(v) for k, v in row.items() if v not in ("", None)}
    return table


def human_normalized(score: float, game_scores: dict[str, float]) -> float | None:
    """(score - random) / (human - random), or None without reference scores."""
    if "random" not in game_scores or "human" not in game_scores:
        return None
    return (score - game_scores["random"]) / (game_scores["human"] - game_scores["random"])


def load_runs(run_dirs: list[str | Path]) -> tuple[str, list[list[dict[str, Any]]]]:
    """The game and the per-iteration results of every run (all of one game)."""
    games, runs = set(), []
    for run_dir in run_dirs:
        path = Path(run_dir)
        meta, results = path / "run.json", path / "results.json"
        if not meta.is_file() or not results.is_file():
            raise DatasetError(
                f"{str(path)!r} is not a finished `dreamenv train` run directory "
                "(run.json and results.json are missing)."
            )
        games.add(json.loads(meta.read_text())["game"])
        runs.append(json.loads(results.read_text()))
    if len(games) != 1:
        raise DatasetError(f"A report covers one game; these runs are of {sorted(games)}.")
    if not all(runs):
        raise DatasetError("Some runs have no finished iteration yet.")
    return games.pop(), runs


def _curve(runs: list[list[dict[str, Any]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = min(len(r) for r in runs)
    steps = np.array([runs[0][i]["real_steps"] for i in range(n)])
    scores = np.array([[r[i]["mean_return"] for i in range(n)] for r in runs])
    std = (
        scores.std(0, ddof=1) if len(runs) > 1 else np.array([r["std_return"] for r in runs[0][:n]])
    )
    return steps, scores.mean(0), std


def plot_learning_curve(game: str, runs: list[list[dict[str, Any]]], path: Path) -> Path:
    """PNG of real return against real interactions, with random and reference scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, mean, std = _curve(runs)
    refs = reference_scores().get(game, {})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    label = f"dreamenv ({len(runs)} run{'s' if len(runs) > 1 else ''})"
    ax.plot(steps, mean, "o-", color="C0", label=label)
    ax.fill_between(steps, mean - std, mean + std, color="C0", alpha=0.2)
    if "random" in refs:
        ax.axhline(refs["random"], color="k", ls="--", lw=1, label="random")
    for i, (column, name) in enumerate(REFERENCE_COLUMNS.items()):
        if column in refs:
            ax.axhline(refs[column], color=f"C{i + 1}", ls=":", lw=1, label=name)
    ax.set_xlim(0, 1.05 * float(np.max(steps)))  # from no interaction: one point is not a span
    ax.set_xlabel("real interactions (agent steps)")
    ax.set_ylabel("mean real episode return")
    ax.set_title(f"{game}: return in the real game against real interactions")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_table(game: str, runs: list[list[dict[str, Any]]]) -> str:
    """Final score (mean ± std over runs), human-normalised score, and reference methods."""
    finals = np.array([r[-1]["mean_return"] for r in runs])
    refs = reference_scores().get(game, {})
    spread = finals.std(ddof=1) if len(finals) > 1 else runs[0][-1]["std_return"]
    hns = human_normalized(float(finals.mean()), refs)
    lines = [
        f"### {game}",
        "",
        "| method | final score | human-normalised |",
        "|---|---:|---:|",
        f"| dreamenv ({len(runs)} run(s), {runs[0][-1]['real_steps']} real steps) | "
        f"{finals.mean():.1f} ± {spread:.1f} | {'n/a' if hns is None else f'{hns:.3f}'} |",
    ]
    for column, name in {"random": "random", **REFERENCE_COLUMNS}.items():
        if column in refs:
            ref_hns = human_normalized(refs[column], refs)
            lines.append(f"| {name} | {refs[column]:.1f} | {ref_hns:.3f} |")
    return "\n".join(lines) + "\n"


def write_report(run_dirs: list[str | Path], out: str | Path) -> tuple[Path, Path]:
    """Write ``OUT/learning_curve.png`` and ``OUT/report.md`` for runs of one game."""
    game, runs = load_runs(run_dirs)
    out = Path(out)
    png = plot_learning_curve(game, runs, out / "learning_curve.png")
    md = out / "report.md"
    md.write_text(markdown_table(game, runs) + f"\n![learning curve]({png.name})\n")
    return png, md
