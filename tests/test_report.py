"""Reports of loop runs, on fake run directories (no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dreamenv.report import gap_table, has_gap, plot_learning_curve, reference_scores, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(path: Path, game: str = "pong", gap: bool = False, iterations: int = 3) -> Path:
    """A run directory as `dreamenv train` writes it, with made-up results."""
    rows: list[dict[str, Any]] = []
    for i in range(1, iterations + 1):
        row: dict[str, Any] = {
            "iteration": i,
            "real_steps": 1000 * i,
            "mean_return": -21.0 + 2 * i,
            "std_return": 1.5,
            "episodes": 4,
            "seconds": 10.0,
            "returns": [-21.0 + 2 * i] * 4,
        }
        if gap:
            row |= {
                "dream_return": 3.0 * i,
                "real_window_return": -0.5 * i,
                "gap": 3.5 * i,
                "open_latent_acc": 0.9 - 0.1 * i,
                "open_changed_acc": 0.3,
                "reward_precision": math.nan if i == 1 else 0.5,
                "reward_recall": 0.25,
                "reward_recall_sampled": 0.375,
                "termination_recall": math.nan,
                "termination_recall_sampled": 0.625,
                "reward_steps": 4.0 * i,
                "action_agreement": math.nan if i == 1 else 0.8,
                "policy_shift": math.nan if i == 1 else 0.1,
            }
        rows.append(row)
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"game": game, "seed": 0}))
    (path / "results.json").write_text(json.dumps(rows))
    return path


def test_old_results_without_the_gap_keys_still_report(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "pong-s0")
    png, md = write_report([run], tmp_path / "report")
    assert png.read_bytes()[:8] == PNG
    assert "reality gap" not in md.read_text()


def test_gap_panels_and_table(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / "pong-s0", gap=True), fake_run(tmp_path / "pong-s1")]
    png, md = write_report(runs, tmp_path / "report")
    assert png.read_bytes()[:8] == PNG
    text = md.read_text()
    assert "#### reality gap (last iteration)" in text
    assert (
        "| pong-s0 | 9.000 | -1.500 | 10.500 | 0.600 | 0.300 | 0.500 | 0.250 | 0.375 | n/a "
        "| 0.625 | 12 | 0.800 |" in text
    )
    assert "pong-s1 |" not in text.split("reality gap")[1]  # the old run has no gap row


def test_gap_panels_make_the_figure_taller(tmp_path: Path) -> None:
    from PIL import Image

    plain = fake_run(tmp_path / "a", gap=False)
    gapped = fake_run(tmp_path / "b", gap=True)
    rows = [json.loads((d / "results.json").read_text()) for d in (plain, gapped)]
    one = plot_learning_curve("pong", [rows[0]], tmp_path / "one.png")
    two = plot_learning_curve("pong", rows, tmp_path / "two.png", ["a", "b"])
    assert Image.open(two).height > Image.open(one).height


def test_a_human_score_far_above_is_named_not_drawn(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dreamenv.report import _reference_lines

    for game, drawn in (("pong", True), ("alien", False)):
        refs = reference_scores()[game]
        fig, ax = plt.subplots()
        _reference_lines(ax, refs, top=refs["robine_4frames"], bottom=refs["random"])
        labels = [line.get_label() for line in ax.get_lines()]
        assert ("human" in labels) is drawn
        assert any(lab.startswith("human: ") for lab in labels) is not drawn
        plt.close(fig)


def test_gap_table_and_has_gap() -> None:
    assert not has_gap([{"iteration": 1}]) and gap_table([[{"iteration": 1}]], ["r"]) == ""
    last = {"dream_return": 1.0, "real_window_return": None, "reward_steps": 0.0}
    table = gap_table([[last]], ["r"])
    assert table.splitlines()[2].startswith("| r | 1.000 | n/a |")
    assert "n/a" in gap_table([[{"dream_return": float("nan")}]], ["r"])
    with_change = gap_table([[{**last, "action_agreement": 0.75, "policy_shift": 0.2}]], ["r"])
    assert with_change.splitlines()[0].endswith("| action_agreement | policy_shift |")
    assert with_change.splitlines()[2].endswith("| 0 | 0.750 | 0.200 |")
    assert table.splitlines()[2].endswith("| 0 | n/a | n/a |")  # a run from before the columns


def test_the_agents_policy_change_is_drawn_where_recorded(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dreamenv.report import _plot_model_scores

    rows = json.loads((fake_run(tmp_path / "a", gap=True) / "results.json").read_text())
    no_shift = [{k: v for k, v in r.items() if k != "policy_shift"} for r in rows]
    older = [{k: v for k, v in r.items() if k != "action_agreement"} for r in no_shift]
    for results, drawn in (
        (rows, (True, True)),
        (no_shift, (True, False)),
        (older, (False, False)),
    ):
        fig, ax = plt.subplots()
        _plot_model_scores(ax, results, "a")
        labels = [line.get_label() for line in ax.get_lines()]
        assert ("agent: previous action kept" in labels) is drawn[0]
        assert ("agent: policy shift (TV)" in labels) is drawn[1]
        plt.close(fig)
