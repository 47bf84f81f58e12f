"""Reports of iterative-loop runs: a learning-curve PNG and a Markdown table against the
published Atari-100k scores shipped in ``dreamenv/reference/atari100k_scores.csv``.

Several runs (seeds) of one game are aggregated as mean ± std over runs.

Example:
    >>> write_report(["runs/pong-s0", "runs/pong-s1"], "runs/pong-report")
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
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


def load_runs(run_dirs: Sequence[str | Path]) -> tuple[str, list[list[dict[str, Any]]]]:
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


GAP_RETURN_KEYS = ("dream_return", "real_window_return")
"""Result keys of the reality-gap panel: the agent's return in the dream and in the real
game over the same number of steps (:func:`dreamenv.train.reality_gap.reality_gap`)."""

MODEL_SCORE_KEYS = (
    "open_latent_acc",
    "open_changed_acc",
    "reward_precision",
    "reward_recall",
    "reward_recall_sampled",
    "termination_recall",
    "termination_recall_sampled",
)
"""Result keys of the model-score panel: open-loop scores on the newest real episodes."""

POLICY_CHANGE_KEYS = ("action_agreement", "policy_shift")
"""How far each iteration's agent moved from the previous one
(:mod:`dreamenv.train.policy_change`); older runs lack the shift, or both."""

GAP_KEYS = (*GAP_RETURN_KEYS, "gap", *MODEL_SCORE_KEYS, "reward_steps", *POLICY_CHANGE_KEYS)
"""The reality-gap keys tabled for a run's last iteration, where its results have them
(n/a where an older run's lack them)."""


def has_gap(rows: list[dict[str, Any]]) -> bool:
    """Whether any iteration of a run's results has the reality-gap keys."""
    return any(k in r for r in rows for k in GAP_RETURN_KEYS)


def series(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    """``key`` of every iteration as floats, NaN where an iteration lacks it (or has None)."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])


def _reference_lines(ax: Any, refs: dict[str, float], top: float, bottom: float) -> None:
    """Random, human and the reference methods as horizontal lines; a human score far
    above the rest is named in the legend instead, so it does not flatten the curve."""
    if "random" in refs:
        ax.axhline(refs["random"], color="k", ls="--", lw=1, label="random")
    for i, (column, name) in enumerate(REFERENCE_COLUMNS.items()):
        if column in refs:
            ax.axhline(refs[column], color=f"C{i + 1}", ls=":", lw=1, label=name)
    if "human" in refs:
        if refs["human"] <= top + max(top - bottom, 1.0):
            ax.axhline(refs["human"], color="0.4", ls="-.", lw=1, label="human")
        else:
            ax.plot([], [], " ", label=f"human: {refs['human']:.1f} (above the plot)")


def _plot_gap(ax: Any, rows: list[dict[str, Any]], run: str) -> None:
    steps = series(rows, "real_steps")
    ax.plot(steps, series(rows, "dream_return"), "o-", color="C3", label="in the dream")
    ax.plot(steps, series(rows, "real_window_return"), "s-", color="C0", label="in the real game")
    ax.set_ylabel("return over H steps (clipped)")
    ax.set_title(f"{run}: dream against real", fontsize=9)
    ax.legend(fontsize=7)


def _plot_model_scores(ax: Any, rows: list[dict[str, Any]], run: str) -> None:
    steps = series(rows, "real_steps")
    names = {
        "open_latent_acc": "latent accuracy",
        "open_changed_acc": "latent accuracy where it changes",
        "reward_precision": "reward precision",
        "reward_recall": "reward recall",
        "reward_recall_sampled": "reward recall, sampled",
        "termination_recall": "termination recall",
        "termination_recall_sampled": "termination recall, sampled, within 4 steps",
        "termination_recall_forced": "the same, teacher forced",
    }
    for i, (key, name) in enumerate(names.items()):
        ax.plot(steps, series(rows, key), "o-", color=f"C{i + 4}", ms=3, label=name)
    for key, marker, name in (
        ("action_agreement", "^--", "agent: previous action kept"),
        ("policy_shift", "v:", "agent: policy shift (TV)"),
    ):
        values = series(rows, key)
        if not np.isnan(values).all():
            ax.plot(steps, values, marker, color="0.35", ms=3, label=name)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("open-loop score on new episodes")
    ax.set_title(f"{run}: world model over H imagined steps", fontsize=9)
    ax.legend(fontsize=7)


def plot_learning_curve(
    game: str,
    runs: list[list[dict[str, Any]]],
    path: Path,
    names: list[str] | None = None,
) -> Path:
    """PNG of real return against real interactions, with random, human and reference
    scores; below it, for every run whose results have the reality-gap keys, its dream
    against real return and its world model's open-loop scores per iteration.

    Example:
        >>> plot_learning_curve("pong", [read_results("runs/pong-s0")], Path("curve.png"))
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names or [f"run {i + 1}" for i in range(len(runs))]
    gapped = [(name, rows) for name, rows in zip(names, runs, strict=True) if has_gap(rows)]
    steps, mean, std = _curve(runs)
    refs = reference_scores().get(game, {})
    fig = plt.figure(figsize=(10, 4.5 + 3.2 * len(gapped)))
    grid = fig.add_gridspec(1 + len(gapped), 2, height_ratios=[1.4] + [1.0] * len(gapped))
    ax = fig.add_subplot(grid[0, :])
    label = f"dreamenv ({len(runs)} run{'s' if len(runs) > 1 else ''})"
    ax.plot(steps, mean, "o-", color="C0", label=label)
    ax.fill_between(steps, mean - std, mean + std, color="C0", alpha=0.2)
    shown = [*(mean + std), *(mean - std), *(v for k, v in refs.items() if k != "human")]
    _reference_lines(ax, refs, float(np.nanmax(shown)), float(np.nanmin(shown)))
    ax.set_xlim(0, 1.05 * float(np.max(steps)))  # from no interaction: one point is not a span
    ax.set_xlabel("real interactions (agent steps)")
    ax.set_ylabel("mean real episode return")
    ax.set_title(f"{game}: return in the real game against real interactions")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    for row, (name, rows) in enumerate(gapped, start=1):
        left, right = fig.add_subplot(grid[row, 0]), fig.add_subplot(grid[row, 1])
        _plot_gap(left, rows, name)
        _plot_model_scores(right, rows, name)
        for a in (left, right):
            a.set_xlim(0, 1.05 * float(np.max(steps)))
            a.set_xlabel("real interactions (agent steps)")
            a.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def gap_table(runs: list[list[dict[str, Any]]], names: list[str]) -> str:
    """Markdown table of every run's last-iteration reality gap (:data:`GAP_KEYS`); empty
    when no run has them.

    Example:
        >>> print(gap_table([read_results("runs/pong-s0")], ["pong-s0"]))
    """
    rows = [(name, r[-1]) for name, r in zip(names, runs, strict=True) if has_gap(r)]
    if not rows:
        return ""
    lines = [
        "| run | " + " | ".join(GAP_KEYS) + " |",
        "|---|" + "---:|" * len(GAP_KEYS),
    ]
    for name, last in rows:
        cells = [_cell(k, last.get(k)) for k in GAP_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(key: str, value: Any) -> str:
    if value is None or np.isnan(float(value)):
        return "n/a"
    return f"{int(value)}" if key.endswith("_steps") else f"{float(value):.3f}"


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


def write_report(run_dirs: Sequence[str | Path], out: str | Path) -> tuple[Path, Path]:
    """Write ``OUT/learning_curve.png`` and ``OUT/report.md`` for runs of one game (with the
    last iteration's reality gap of the runs that measured it)."""
    game, runs = load_runs(run_dirs)
    names = [Path(d).name for d in run_dirs]
    out = Path(out)
    png = plot_learning_curve(game, runs, out / "learning_curve.png", names)
    md = out / "report.md"
    gaps = gap_table(runs, names)
    gap_text = f"\n#### reality gap (last iteration)\n\n{gaps}" if gaps else ""
    md.write_text(markdown_table(game, runs) + gap_text + f"\n![learning curve]({png.name})\n")
    return png, md
