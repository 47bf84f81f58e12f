"""The iterative loop of Robine et al. (section 3.4) and SimPLe: collect real data with the
current policy, refit the world model, train the policy in the dream, evaluate it in the
real game; repeated within a budget of real interactions.

A run directory holds everything and is resumable at any point::

    RUN_DIR/data/            the episode store (grows by one collection per iteration)
    RUN_DIR/model/           the world-model checkpoint (fit continues every iteration)
    RUN_DIR/agent-K/         the agent after iteration K (1-based; dreamenv.sb3.save_agent)
    RUN_DIR/results.json     per finished iteration: real steps, evaluation returns, times
    RUN_DIR/results.csv      the same, one row per iteration
    RUN_DIR/run.json         game, seed, preprocessing spec and loop settings of the run

A resumed run must be the same experiment: every setting of ``run.json`` must match the
call's, except ``iterations`` (the budget), which may grow.

Each step continues from what was saved: the collection tops the store up to its target,
``fit`` continues to its cumulative epoch count, the dream phase starts again from the
previous iteration's agent, and an iteration counts only once its results are written.

Example:
    >>> train("pong", "runs/pong", LOOP_PRESETS["quick"])
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamenv.atomic_files import null_as_nan, write_atomic, write_json
from dreamenv.data.collect import Collector, HeldRandomPolicy, Policy, check_hold
from dreamenv.data.store import EpisodeStore
from dreamenv.envs.atari import AtariSpec
from dreamenv.envs.options import check_obs_type, check_reset_share
from dreamenv.errors import ConfigError
from dreamenv.models.base import check_holds_representation, get_family, holding_families
from dreamenv.precision import Precision, check_precision
from dreamenv.train.fit import FitConfig, fit

PAPER_EPOCHS = (140, 32, 24, 20, 16, 14, 12, 11, 10, 9, 8, 8, 7, 7, 6)
"""World-model epochs over the buffer per iteration, as in the paper's code."""
PAPER_ROLLOUTS = (1000,) * 7 + (2000,) + (1000,) * 3 + (2000,) + (1000,) * 2 + (3000,)
"""PPO rollouts (of 16 envs x 50 steps) per iteration: 2000 in 8 and 12, 3000 in 15."""


@dataclass(frozen=True)
class LoopConfig:
    """Settings of the iterative loop (defaults: the paper's ``atari100k`` protocol, 102,400
    real steps)."""

    iterations: int = 15
    """Iterations of collect, fit, dream, evaluate."""
    initial_steps: int = 12_800
    """Real steps collected with a random policy before the first fit."""
    random_hold: float = 1.0
    """Mean number of steps the first collection's random policy holds each uniformly random
    action (:class:`~dreamenv.data.collect.HeldRandomPolicy`: a fresh draw with probability
    ``1 / random_hold`` a step); 1: a fresh action every step, the paper's. Held actions
    reach farther: Freeway's first 12,800 steps cross the road 17-29 times at 16 and never
    at 1, and a ``cpu100k`` run ends at 19.9 crossings a game with 16 (the preset's) and
    1.5 with 1 (docs/results.md)."""
    steps_per_iteration: int = 6_400
    """Real steps collected with the current policy in every later iteration."""
    temperature: float = 1.5
    """Sampling temperature of the policy while collecting."""
    collect_envs: int = 16
    """Real envs stepped together while collecting."""
    continue_games: bool = False
    """Let the collection's games go on from one iteration to the next
    (:class:`~dreamenv.data.collect.Collector`): a game an iteration's collection cuts is
    played on by the next policy, and stored as a continued episode. False: every collection
    starts new games, so each holds only the first ``steps_per_iteration / collect_envs``
    steps of its games (400 in ``cpu100k``: 27-100% of the six development games' stored
    steps lie in games cut there, docs/results.md). A resumed run starts new games."""
    screen_size: int = 96
    """Side of the preprocessed frames (:class:`AtariSpec`): 96 (paper) or 64."""
    wm_epochs: tuple[int, ...] = PAPER_EPOCHS
    """World-model epochs per iteration (the last entry repeats if there are more iterations)."""
    warmup_epochs: int = 50
    """Epochs of VQ-VAE warm-up at the start of the first iteration."""
    representation_iterations: int | None = None
    """Iterations whose refits train the representation; the later ones hold it
    (``FitConfig.representation`` False): their updates train the dynamics, reward and
    termination, and every code the agent sees stays as it was. None: every refit trains
    everything (the paper's). Only families with ``holds_representation`` (the discrete
    family) take a number. Held from iteration 2 with ``encoder_kernel=2``, a ``cpu100k``
    Pong run's open-loop latent accuracy on new data ended at 0.86 (0.68 with every refit
    training everything) and its score at -19.5 (-20.5) (docs/results.md)."""
    family: str = "discrete"
    """World-model family (``dreamenv fit --family``)."""
    preset: str = "paper"
    """World-model size preset."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """World-model settings overriding the preset's (as ``dreamenv fit --set KEY=VALUE``);
    keys the family's config lacks are dropped with a warning (the presets' overrides are
    the discrete family's)."""
    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=1, warmup_epochs=0))
    """Other fit settings (batch, sequence length, learning rates); epochs come from above."""
    rollouts: tuple[int, ...] = PAPER_ROLLOUTS
    """PPO rollouts per iteration (the last entry repeats)."""
    dream_envs: int = 16
    """Dream envs per PPO rollout."""
    horizon: int = 50
    """Imagined episode length."""
    use_termination: bool = True
    """End dream episodes when the termination head says so; False ends them only at the
    horizon, as the paper does."""
    reset_share: float = 0.0
    """Share of dream episodes that start where real episodes start (``DreamOptions``'s
    option; 0: anywhere in the data, as the paper)."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """PPO settings overriding :data:`dreamenv.sb3.PAPER_PPO`."""
    eval_episodes: int = 32
    """Real episodes of each evaluation (stochastic policy, as the paper)."""
    eval_envs: int = 16
    """Real envs stepped together while evaluating."""
    eval_max_steps: int | None = None
    """Cap on an evaluation episode's agent steps (the game's own limit when None)."""
    device: str = "auto"
    """``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``."""
    precision: Precision = "float32"
    """``"bfloat16"``: the dream steps and a new agent's policy trunk run under bfloat16
    autocast (:mod:`dreamenv.precision`; ``"auto"``, the presets': where the machine
    computes bfloat16 natively, else float32); fitting has its own ``fit.precision``."""
    obs_type: str | None = None
    """What the agent observes, in the dream and in the real game (``DreamOptions.obs_type``):
    None for the family's first (the discrete family's ``"indices"``, one-hot codes).
    ``"embeddings"`` (the codebook vectors of the codes) changes little where a refit
    renames codes: one refit of a ``cpu100k`` Pong run with ``encoder_kernel=2`` renamed 61%
    of the cells while their vectors moved a quarter of the distance between two codes
    (docs/results.md)."""

    def __post_init__(self) -> None:
        check_precision(self.precision, "LoopConfig.precision")
        check_reset_share(self.reset_share, "LoopConfig.reset_share")
        check_hold(self.random_hold, "LoopConfig.random_hold")
        if self.obs_type is not None:
            check_obs_type(self.obs_type, get_family(self.family).obs_types, "LoopConfig.obs_type")
        self._check_representation_iterations()

    def _check_representation_iterations(self) -> None:
        value = self.representation_iterations
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                "LoopConfig.representation_iterations must be None (every refit trains the "
                f"representation) or an int of at least 1, got {value!r}."
            )
        families = ", ".join(repr(name) for name in holding_families())
        check_holds_representation(
            self.family,
            f"LoopConfig.representation_iterations={value}",
            f"use None, or family {families}.",
        )

    def trains_representation(self, iteration: int) -> bool:
        """Whether iteration ``iteration``'s refit (1-based) trains the representation."""
        limit = self.representation_iterations
        return limit is None or iteration <= limit

    @property
    def total_steps(self) -> int:
        """Real agent steps the whole run uses."""
        return self.steps_after(self.iterations)

    def steps_after(self, iteration: int) -> int:
        """Real agent steps collected once iteration ``iteration`` (1-based; 0: none) ran."""
        return self.initial_steps + (iteration - 1) * self.steps_per_iteration if iteration else 0

    def epochs_until(self, iteration: int) -> int:
        """Cumulative world-model epochs after ``iteration`` (1-based)."""
        return sum(self.wm_epochs[min(i, len(self.wm_epochs) - 1)] for i in range(iteration))

    def rollouts_of(self, iteration: int) -> int:
        return self.rollouts[min(iteration - 1, len(self.rollouts) - 1)]

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def with_budget(self, budget: int) -> LoopConfig:
        """The same settings with as many iterations as ``budget`` real steps allow."""
        if budget < self.initial_steps:
            raise ConfigError(
                f"budget={budget} is below the {self.initial_steps} random steps of the first "
                "iteration; raise the budget or lower initial_steps."
            )
        iterations = 1 + (budget - self.initial_steps) // self.steps_per_iteration
        return dataclasses.replace(self, iterations=iterations)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


LOOP_PRESETS: dict[str, LoopConfig] = {
    "atari100k": LoopConfig(),
    "quick": LoopConfig(
        iterations=1,
        initial_steps=100_000,
        steps_per_iteration=10_000,
        screen_size=64,
        wm_epochs=(6, 3),
        warmup_epochs=2,
        preset="small",
        model_overrides={"precision": "auto"},
        fit=FitConfig(
            epochs=1,
            warmup_epochs=0,
            batch_size=32,
            seq_len=16,
            updates_per_epoch=150,
            reward_windows=0.25,
            precision="auto",
        ),
        rollouts=(250, 125),
        use_termination=False,
        eval_episodes=32,
        device="cpu",
        precision="auto",
    ),
    "cpu100k": LoopConfig(
        random_hold=16.0,
        screen_size=96,
        wm_epochs=(11, 2),
        warmup_epochs=3,
        preset="small",
        model_overrides={"precision": "auto"},
        fit=FitConfig(
            epochs=1,
            warmup_epochs=0,
            batch_size=32,
            seq_len=16,
            updates_per_epoch=100,
            reward_windows=0.25,
            life_loss=True,
            precision="auto",
        ),
        rollouts=(63, 32),
        dream_envs=64,
        ppo={"batch_size": 400},
        use_termination=True,
        eval_envs=32,
        device="cpu",
        precision="auto",
    ),
}
"""``atari100k``: the paper's protocol (meant for a GPU): 12,800 random real steps, then 14
iterations of 6,400 with the policy, 102,400 real steps in all, as the paper counts its
"100K" (``LoopConfig().total_steps``; ``with_budget(100_000)`` stops at 96,000). ``quick``: scaled down for 2 CPU
cores (the quickstart: 7 min 15 s on an AMD EPYC with AVX-512 BF16 beside a one-thread
run on its other core; 16 min 34 s there in float32 under a similar load, an older release): one iteration of 100K random real steps of 64x64 frames (a 4x4 latent grid),
bfloat16 autocast where the CPU has it natively (``"auto"``, float32 elsewhere), 6 world-model epochs of 150 updates (2 of VQ-VAE warm-up), windows holding rewards oversampled, 200K imagined PPO steps in dream episodes
that end only at the horizon (as in the paper); pass ``--iterations 2`` (or more) to go on
collecting with the policy. ``cpu100k``: the paper's real-interaction budget unchanged
(12,800 random steps, 14 iterations of 6,400 with the policy at temperature 1.5, 32
evaluation episodes after each), the random steps holding each uniformly random action
for a geometric number of steps of mean 16 (``random_hold``: without it Freeway's first
data never crosses the road), with budgets for one CPU core in at most 90 minutes:
96x96 frames (the paper's 6x6 grid), the ``small`` model, bfloat16 autocast in fitting,
encoding, the dream and the policy trunk where the CPU computes bfloat16 natively
(``"auto"``: float32 elsewhere, where emulated bfloat16 is 11-30x slower); 300 warm-up and 800 joint updates in the first
iteration, 200 in each later one; PPO for about 200K imagined steps in the first
iteration and 100K in each later one, in 64 dream envs whose episodes end at a lost life
or the game's end (the termination head learns both: ``FitConfig.life_loss``) or at the
50-step horizon (61 to 73 minutes a run beside a second run, the six games of the
development set; docs/results.md)."""


def family_overrides(config: LoopConfig) -> dict[str, Any]:
    """``config.model_overrides`` without the keys its family's config lacks (warned)."""
    names = {f.name for f in dataclasses.fields(get_family(config.family).config_class)}
    dropped = sorted(set(config.model_overrides) - names)
    if dropped:
        warnings.warn(
            f"the {config.family!r} family has no setting {', '.join(map(repr, dropped))}; "
            "the loop trains it without (these overrides are for another family).",
            stacklevel=3,
        )
    return {k: v for k, v in config.model_overrides.items() if k in names}


class PhaseTimer:
    """Wall-clock seconds of the phases of one iteration: ``mark(name)`` ends a phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[f"{name}_seconds"] = round(now - self._last, 1)
        self._last = now


def _write_results(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_json(run_dir / "results.json", rows)
    fields: list[str] = []  # the union in order: a resumed run may have gained columns
    for row in rows:
        fields += [k for k in row if k != "returns" and k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(run_dir / "results.csv", lambda p: p.write_text(buf.getvalue()))


def read_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """The finished iterations of a run (empty if none); a figure an iteration could not
    measure (written as ``null``, or ``NaN`` by older releases) reads as NaN."""
    path = Path(run_dir) / "results.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    return [null_as_nan(row) for row in rows]


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"loop": {"fit": {"lr": 1}}}`` -> ``{"loop.fit.lr": 1}``."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


FREE_ON_RESUME = (
    "loop.device",
    "loop.fit.device",
    "loop.fit.checkpoint_every_minutes",
    "loop.precision",
    "loop.fit.precision",
)
"""Settings a resumed run may change: where it runs, its arithmetic (the machine's, as a
continued fit's ``precision``) and how often it saves, not what it learns.
``loop.iterations`` (the budget) may grow."""


def check_resume(run_dir: Path, saved: dict[str, Any], meta: dict[str, Any]) -> None:
    """Raise a :class:`ConfigError` naming every setting of ``meta`` (this call's run.json)
    that differs from ``saved`` (the run's); ``loop.iterations`` may only grow, and the
    settings of :data:`FREE_ON_RESUME` may change."""
    if saved.get("game") != meta["game"] or saved.get("seed") != meta["seed"]:
        raise ConfigError(
            f"{str(run_dir)!r} holds a run of {saved.get('game')!r} with seed {saved.get('seed')}; "
            f"this call asks for {meta['game']!r} with seed {meta['seed']}. Use another run directory."
        )
    old, new = _flat(saved), _flat(json.loads(json.dumps(meta)))
    defaults = _flat(json.loads(json.dumps({"loop": LoopConfig().to_dict()})))

    def show(values: dict[str, Any], key: str) -> str:
        return repr(values[key]) if key in values else "(not set)"

    def differs(key: str) -> bool:
        if key in old or key not in defaults:
            return old.get(key) != new.get(key)
        return new[key] != defaults[key]  # a setting newer than the run: its default is the run's

    changed = [
        f"{key}: the run has {show(old, key)}, this call {show(new, key)}"
        for key in sorted(old.keys() | new.keys())
        if differs(key)
        and key not in FREE_ON_RESUME
        and not (key == "loop.iterations" and new[key] > old.get(key, new[key]))
    ]
    if changed:
        raise ConfigError(
            f"{str(run_dir)!r} is a run with other settings, and resuming must not change the "
            "experiment (only loop.iterations, the budget, may grow; the device may change):\n  "
            + "\n  ".join(changed)
            + "\nResume with the run's settings, or start a new run in another directory "
            "(--run-dir)."
        )


def train(
    game: str,
    run_dir: str | Path,
    config: LoopConfig | None = None,
    *,
    seed: int = 0,
    spec: AtariSpec | None = None,
    progress: bool = True,
    tensorboard_log: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Run (or continue) the iterative loop on ``game`` in ``run_dir``.

    ``spec`` sets the preprocessing; when None it is ``AtariSpec(game)`` with the config's
    ``screen_size``. A run continues only with the settings it was started with
    (:func:`check_resume`); ``tensorboard_log`` (a directory) logs the dream PPO there.

    Returns:
        One row per finished iteration: ``iteration``, ``real_steps``, ``mean_return``,
        ``std_return``, ``returns``, ``seconds`` (the iteration's wall-clock time), the
        seconds of each phase, the reality gap
        (:func:`~dreamenv.train.reality_gap.reality_gap`), ``action_agreement`` and
        ``policy_shift`` (how far the new agent moved from the previous iteration's:
        :func:`~dreamenv.train.policy_change.policy_change`; NaN in the first).

    Example:
        >>> rows = train("pong", "runs/pong-s0", LOOP_PRESETS["quick"], tensorboard_log="tb")
    """
    from dreamenv.envs.core import resolve_checkpoint
    from dreamenv.envs.options import DreamOptions
    from dreamenv.evaluate import play_episodes
    from dreamenv.sb3 import AgentPolicy, load_agent, save_agent, train_in_dream
    from dreamenv.train.policy_change import policy_change, unmeasured
    from dreamenv.train.reality_gap import reality_gap

    config = config or LoopConfig()
    run_dir = Path(run_dir)
    spec = spec or AtariSpec(game, screen_size=config.screen_size)
    meta = {"game": spec.game, "seed": seed, "spec": spec.to_dict(), "loop": config.to_dict()}
    meta_path = run_dir / "run.json"
    if meta_path.is_file():
        check_resume(run_dir, json.loads(meta_path.read_text()), meta)
    write_json(meta_path, meta)
    device = config.resolved_device()
    rows = read_results(run_dir)
    data, model = run_dir / "data", run_dir / "model"
    with Collector(spec, config.collect_envs) as games:  # one set of games for the run
        for iteration in range(len(rows) + 1, config.iterations + 1):
            start = time.monotonic()
            steps = config.steps_after(iteration)
            previous_agent = run_dir / f"agent-{iteration - 1}"
            timer = PhaseTimer()
            policy: Policy | None = None
            if iteration > 1:
                policy = AgentPolicy(previous_agent, model, config.temperature, device)
            elif config.random_hold != 1:
                policy = HeldRandomPolicy(spec.action_spec, config.random_hold)
            if not config.continue_games:
                games.close()  # new games for every collection
            games.collect(
                data, steps, policy=policy, seed=seed * 1000 + iteration, progress=progress
            )
            timer.mark("collect")
            fit_config = dataclasses.replace(
                config.fit,
                epochs=config.epochs_until(iteration),
                warmup_epochs=min(config.warmup_epochs, config.epochs_until(1)),
                seed=seed,
                device=device,
                representation=config.trains_representation(iteration),
            )
            fit(
                data,
                model,
                family=config.family,
                preset=config.preset,
                model_overrides=family_overrides(config) or None,
                config=fit_config,
                progress=progress,
            )
            timer.mark("fit")
            agent = load_agent(previous_agent, device) if iteration > 1 else None
            ppo = dict(config.ppo)
            n_steps = int(ppo.get("n_steps", 50))
            dream_options = DreamOptions(
                horizon=config.horizon,
                use_termination=config.use_termination,
                reset_share=config.reset_share,
                device=device,
                precision=config.precision,
                obs_type=config.obs_type,
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*mini-batch size.*")
                agent = train_in_dream(
                    model,
                    config.rollouts_of(iteration) * config.dream_envs * n_steps,
                    options=dream_options,
                    num_envs=config.dream_envs,
                    seed=seed + iteration,
                    agent=agent,
                    progress=progress,
                    tensorboard_log=tensorboard_log,
                    **ppo,
                )
            save_agent(agent, run_dir / f"agent-{iteration}")
            timer.mark("dream")
            stats = play_episodes(
                agent,
                model,
                episodes=config.eval_episodes,
                num_envs=config.eval_envs,
                seed=seed + 10_000 * iteration,
                max_steps=config.eval_max_steps,
                device=device,
            )
            timer.mark("evaluate")
            trained_in = resolve_checkpoint(model, device, None)  # one load for the gap phase
            gap = reality_gap(
                trained_in,
                agent,
                EpisodeStore.open(data).episodes(after_steps=config.steps_after(iteration - 1)),
                real=stats,
                options=dream_options,
                seed=seed + 20_000 * iteration,
                life_loss=config.fit.life_loss,
            )
            change = unmeasured()
            if iteration > 1:
                change = policy_change(
                    trained_in,
                    agent,
                    load_agent(previous_agent, device),
                    options=dream_options,
                    seed=seed + 30_000 * iteration,
                )
            timer.mark("gap")
            returns = stats.returns
            rows.append(
                {
                    "iteration": iteration,
                    "real_steps": steps,
                    "mean_return": float(np.mean(returns)),
                    "std_return": float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0,
                    "episodes": len(returns),
                    "mean_length": float(np.mean(stats.lengths)),
                    "seconds": round(time.monotonic() - start, 1),
                    **timer.seconds,
                    **gap,
                    **change,
                    "returns": returns.tolist(),
                }
            )
            _write_results(run_dir, rows)
            if progress:
                print(
                    f"iteration {iteration}/{config.iterations}: {steps} real steps, "
                    f"return {rows[-1]['mean_return']:.2f} ± {rows[-1]['std_return']:.2f}"
                )
    return rows
