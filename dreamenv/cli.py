"""The ``dreamenv`` command: collect, fit, info, dream, evaluate (any gymnasium env).

Example:
    $ dreamenv collect pong --out runs/pong/data --steps 20000
    $ dreamenv fit runs/pong/data --out runs/pong/model --preset small --epochs 20
    $ dreamenv dream runs/pong/model --out runs/pong/agent --steps 200000
    $ dreamenv evaluate runs/pong/model runs/pong/agent --episodes 32
    $ dreamenv collect CartPole-v1 --out runs/cartpole/data --steps 5000
    $ dreamenv fit runs/cartpole/data --out runs/cartpole/model --family ensemble
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _spec_args(parser: argparse.ArgumentParser) -> None:
    atari = parser.add_argument_group("Atari games (ALE) only")
    atari.add_argument("--frame-skip", type=int, help="emulator frames per step (default 4)")
    atari.add_argument("--sticky", type=float, help="repeat_action_probability (default 0)")
    atari.add_argument("--noop-max", type=int, help="no-ops after a reset (default 30)")
    both = parser.add_argument_group("any env")
    both.add_argument(
        "--screen-size", type=int, help="frame side (default: 96 for Atari, 64 otherwise)"
    )
    both.add_argument(
        "--frame-stack", type=int, help="observations stacked (default: 4 Atari, 1 otherwise)"
    )
    _gym_spec_args(parser)


def _gym_spec_args(parser: argparse.ArgumentParser) -> None:
    gym_args = parser.add_argument_group("gymnasium envs other than Atari")
    gym_args.add_argument(
        "--observation",
        choices=("image", "render", "state"),
        help="the env's image observation, frames of its render(), or its state vector "
        "(default: image if the observation is one, else state for a flat vector)",
    )
    gym_args.add_argument("--grayscale", action="store_true", help="one grey channel, not RGB")
    gym_args.add_argument("--action-repeat", type=int, help="env steps per agent step")
    gym_args.add_argument("--max-episode-steps", type=int, help="agent steps per real episode")
    gym_args.add_argument(
        "--reward-transform",
        choices=("none", "sign"),
        help="sign: clip rewards to {-1, 0, +1} as the Atari protocol (default none)",
    )
    gym_args.add_argument(
        "--env-kwargs",
        default="{}",
        help="JSON keyword arguments of gym.make, e.g. '{\"continuous\": true}'",
    )


_ATARI_OPTIONS = {
    "frame_skip": "frame_skip",
    "sticky": "repeat_action_probability",
    "noop_max": "noop_max",
    "screen_size": "screen_size",
    "frame_stack": "frame_stack",
}
_GYM_OPTIONS = {
    "screen_size": "screen_size",
    "frame_stack": "frame_stack",
    "action_repeat": "action_repeat",
    "max_episode_steps": "max_episode_steps",
    "reward_transform": "reward_transform",
}


def spec_from_args(args: argparse.Namespace) -> Any:
    """The env spec of ``collect``'s arguments: an AtariSpec for an ALE game, a GymSpec for
    any other gymnasium id (ALE-only options given for another env are an error)."""
    from dreamenv.envs.spec import is_atari, make_spec
    from dreamenv.errors import ConfigError

    if is_atari(args.game):
        given = (
            [
                f"--{a.replace('_', '-')}"
                for a in ("observation", "action_repeat", "max_episode_steps", "reward_transform")
                if getattr(args, a) is not None
            ]
            + (["--grayscale"] if args.grayscale else [])
            + (["--env-kwargs"] if args.env_kwargs not in ("{}", "") else [])
        )
        if given:
            raise ConfigError(
                f"{given} are options of gymnasium envs; {args.game!r} is an Atari game "
                "(always grey frames; use --frame-skip for repeated actions)."
            )
        options = {
            f: getattr(args, a)
            for a, f in _ATARI_OPTIONS.items()
            if getattr(args, a, None) is not None
        }
        return make_spec(args.game, **options)
    given = [
        f"--{a.replace('_', '-')}"
        for a in ("frame_skip", "sticky", "noop_max")
        if getattr(args, a, None) is not None
    ]
    if given:
        raise ConfigError(
            f"{given} are ALE options (frame skip with max-pooling, sticky actions, no-op "
            f"starts); {args.game!r} is not an Atari game. Use --action-repeat."
        )
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"--env-kwargs must be a JSON object, got {args.env_kwargs!r} ({err})."
        ) from err
    if not isinstance(env_kwargs, dict):
        raise ConfigError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}.")
    options = {f: getattr(args, a) for a, f in _GYM_OPTIONS.items() if getattr(args, a) is not None}
    if args.grayscale:
        options["grayscale"] = True
    return make_spec(args.game, observation=args.observation, env_kwargs=env_kwargs, **options)


def _cmd_collect(args: argparse.Namespace) -> int:
    from dreamenv.data.collect import Policy, collect

    spec = spec_from_args(args)
    policy: Policy | None = None
    if args.agent and args.hold != 1:
        raise SystemExit("error: --hold sets the random policy; drop it with --agent.")
    if args.agent:
        from dreamenv.sb3 import AgentPolicy, load_agent

        if not args.checkpoint:
            raise SystemExit(
                "error: --agent needs --checkpoint (whose encoder the agent observes)."
            )
        agent = load_agent(args.agent, args.device, allow_pickle=args.allow_pickle)
        policy = AgentPolicy(agent, args.checkpoint, args.temperature, args.device)
    elif args.hold != 1:
        from dreamenv.data.collect import HeldRandomPolicy
        from dreamenv.errors import ConfigError

        try:
            policy = HeldRandomPolicy(spec.action_spec, args.hold)
        except ConfigError as err:
            raise SystemExit(f"error: --hold: {err}") from err
    store = collect(
        args.out,
        spec,
        args.steps,
        num_envs=args.envs,
        policy=policy,
        seed=args.seed,
        chunk_steps=args.chunk_steps,
        progress=not args.quiet,
    )
    eps = store.episodes()
    print(
        f"{store.path}: {store.num_steps} steps, {len(eps)} episodes, {len(store.chunk_paths)} chunks"
    )
    return 0


def parse_overrides(items: Sequence[str]) -> dict[str, object]:
    """``["jump=4", "stochastic=categorical"]`` -> ``{"jump": 4, "stochastic": "categorical"}``
    (values are read as JSON where they parse, else kept as strings)."""
    overrides: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --set takes KEY=VALUE (such as jump=4), got {item!r}.")
        parsed: Any
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        overrides[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    return overrides


def _cmd_fit(args: argparse.Namespace) -> int:
    from dreamenv.errors import ConfigError
    from dreamenv.train.fit import FitConfig, fit

    if args.epochs >= 1 and not 0 <= args.warmup_epochs <= args.epochs:
        raise ConfigError(
            f"--warmup-epochs {args.warmup_epochs} exceeds --epochs {args.epochs}; pass "
            f"--warmup-epochs 0 (or at most {args.epochs})."
            if args.warmup_epochs > args.epochs
            else f"--warmup-epochs must be at least 0, got {args.warmup_epochs}."
        )
    config = FitConfig(
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        warmup_lr=args.warmup_lr,
        updates_per_epoch=args.updates_per_epoch,
        reward_windows=args.reward_windows,
        termination_windows=args.termination_windows,
        life_loss=args.life_loss,
        checkpoint_every_minutes=args.checkpoint_minutes,
        start_bank_size=args.start_bank,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        representation=not args.hold_representation,
    )
    out = fit(
        args.store,
        args.out,
        family=args.family,
        preset=args.preset,
        model_overrides=parse_overrides(args.set),
        config=config,
        progress=not args.quiet,
    )
    print(f"checkpoint: {out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from dreamenv.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model
    print(f"checkpoint  {ckpt.path}")
    print(f"family      {model.family}")
    print(f"game        {ckpt.spec.game}  ({', '.join(ckpt.action_meanings)})")
    print(f"spec        {ckpt.spec}")
    bank = ckpt.start_bank
    print(
        f"start bank  {bank.size} starts x {bank.context} observations "
        f"({bank.resets} of them where a real episode starts)"
    )
    if "training" in ckpt.config:
        print(f"training    {ckpt.config['training']}")
    print("parameters:")
    counts = model.parameter_counts()
    for name, count in counts.items():
        print(f"  {name:<12}{count:>12,}")
    for name, child in model.named_children():
        for sub, module in child.named_children():
            n = sum(p.numel() for p in module.parameters())
            if n:
                print(f"    {name}.{sub:<20}{n:>12,}")
    return 0


def _cmd_dream(args: argparse.Namespace) -> int:
    from dreamenv.envs.options import DreamOptions
    from dreamenv.errors import ConfigError
    from dreamenv.sb3 import load_agent, save_agent, train_in_dream
    from dreamenv.sb3.agent_files import ALGORITHMS, is_agent

    out = Path(args.out)
    if out.suffix == ".zip":
        raise ConfigError(
            f"--out {out} ends in .zip, SB3's pickle format; a dreamenv agent is a directory: "
            f"pass --out {out.with_suffix('')}"
            + (f" (with --allow-pickle it continues from {out} once)." if out.is_file() else ".")
        )
    agent = None
    if is_agent(out) and not args.restart:
        agent = load_agent(out, args.device, allow_pickle=args.allow_pickle)
        algo = next(name for name, cls in ALGORITHMS.items() if type(agent) is cls)
        if args.algo is not None and args.algo != algo:
            raise ConfigError(
                f"--out {out} holds a {algo} agent, --algo asks for {args.algo}: pass "
                f"--algo {algo} to continue it, or --restart to start a new {args.algo} agent."
            )
        print(f"continuing the {algo} agent {out} ({agent.num_timesteps} imagined steps so far)")
    elif is_agent(out):
        print(f"--restart: a new agent replaces {out}")
    options = DreamOptions(
        horizon=args.horizon,
        obs_type=args.obs_type,
        reward_mode=args.reward_mode,
        use_termination=args.use_termination,
        burn_in=args.burn_in,
        reset_share=args.reset_share,
        temperature=args.temperature,
        device=args.device,
    )
    settings: dict[str, Any] = parse_overrides(args.set)
    if settings and agent is not None:
        raise ConfigError(
            f"--set {' '.join(args.set)} sets up a new agent; {out} holds one, which keeps its "
            "settings. Pass --restart to start a new agent with them."
        )
    agent = train_in_dream(
        args.checkpoint,
        args.steps,
        options=options,
        algo=args.algo or "ppo",
        num_envs=args.envs,
        seed=args.seed,
        agent=agent,
        progress=not args.quiet,
        verbose=args.verbose,
        tensorboard_log=args.tensorboard,
        **settings,
    )
    save_agent(agent, out)
    print(f"agent: {out} ({agent.num_timesteps} imagined steps)")
    return 0


def summarize(returns: np.ndarray) -> str:
    """``mean ± std (n=N)`` of episode returns."""
    from dreamenv.stats import mean_std

    return f"{mean_std(returns, 2)} (n={len(returns)})"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dreamenv.atomic_files import write_json
    from dreamenv.checkpoint import load_checkpoint
    from dreamenv.evaluate import against_random
    from dreamenv.sb3 import load_agent

    ckpt = load_checkpoint(args.checkpoint, args.device)
    agent = load_agent(args.agent, args.device, allow_pickle=args.allow_pickle)
    compared = against_random(
        agent,
        ckpt,
        episodes=args.episodes,
        num_envs=args.envs,
        seed=args.seed,
        deterministic=args.deterministic,
        max_steps=args.max_steps,
        device=args.device,
        progress=not args.quiet,
    )
    agent_returns, random_returns = compared.agent, compared.random
    print(f"game {ckpt.spec.game}, {args.episodes} real episodes each, seed {args.seed}")
    print("| policy | mean ± std return |\n|---|---|")
    print(f"| agent ({Path(args.agent).name}) | {summarize(agent_returns)} |")
    print(f"| random | {summarize(random_returns)} |")
    print(compared.test())
    if args.json:
        result = {
            "game": ckpt.spec.game,
            "episodes": args.episodes,
            "seed": args.seed,
            "agent": agent_returns.tolist(),
            "random": random_returns.tolist(),
            "welch_t": compared.welch_t,
            "welch_df": compared.welch_df,
            "p_value": compared.p_value,
        }
        write_json(Path(args.json), result)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from dreamenv.train.loop import LOOP_PRESETS, LoopConfig, train

    if args.preset not in LOOP_PRESETS:
        raise SystemExit(f"error: --preset must be one of {sorted(LOOP_PRESETS)}")
    config: LoopConfig = LOOP_PRESETS[args.preset]
    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("iterations", args.iterations),
            ("initial_steps", args.initial_steps),
            ("random_hold", args.random_hold),
            ("steps_per_iteration", args.steps_per_iteration),
            ("continue_games", args.continue_games),
            ("temperature", args.temperature),
            ("screen_size", args.screen_size),
            ("use_termination", {"on": True, "off": False, None: None}[args.dream_termination]),
            ("reset_share", args.reset_share),
            ("preset", args.model_preset),
            ("family", args.family),
            ("precision", args.precision),
            ("eval_episodes", args.eval_episodes),
            ("eval_max_steps", args.eval_max_steps),
            ("device", args.device),
            ("wm_epochs", tuple(args.wm_epochs) if args.wm_epochs else None),
            ("rollouts", tuple(args.rollouts) if args.rollouts else None),
            ("warmup_epochs", args.warmup_epochs),
            ("obs_type", args.obs_type),
            ("representation_iterations", args.representation_iterations),
        )
        if value is not None
    }
    if args.set:
        overrides["model_overrides"] = {**config.model_overrides, **parse_overrides(args.set)}
    if args.precision is not None:  # the refits' arithmetic too, not only the dream's
        overrides["fit"] = dataclasses.replace(config.fit, precision=args.precision)
    config = dataclasses.replace(config, **overrides)
    if args.budget is not None:
        config = config.with_budget(args.budget)
    run_dir = args.run_dir or f"runs/{args.game}-s{args.seed}"
    print(
        f"train {args.game} in {run_dir}: {config.iterations} iterations, "
        f"{config.total_steps} real steps, device {config.resolved_device()}"
    )
    from dreamenv.envs.spec import is_atari

    # the spec of the options; image frames at the loop's screen size unless given
    if args.screen_size is None and (
        is_atari(args.game) or spec_from_args(args).observation != "state"
    ):
        args.screen_size = config.screen_size
    spec = spec_from_args(args)
    rows = train(
        args.game,
        run_dir,
        config,
        seed=args.seed,
        spec=spec,
        progress=not args.quiet,
        tensorboard_log=args.tensorboard,
    )
    for row in rows:
        print(
            f"iteration {row['iteration']:>2}  real steps {row['real_steps']:>7}  "
            f"return {row['mean_return']:.2f} ± {row['std_return']:.2f}  ({row['seconds']} s)"
        )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dreamenv.report import write_report

    out = args.out or str(args.run_dirs[0]) + "/report"
    png, md = write_report(args.run_dirs, out)
    print(md.read_text())
    print(f"wrote {png} and {md}")
    return 0


def _cmd_video(args: argparse.Namespace) -> int:
    from dreamenv.video import record_video

    policy = None
    if args.agent:
        from dreamenv.sb3 import AgentPolicy, load_agent

        agent = load_agent(args.agent, allow_pickle=args.allow_pickle)
        policy = AgentPolicy(agent, args.checkpoint, args.temperature)
    out = record_video(
        args.checkpoint,
        args.out,
        steps=args.steps,
        burn_in=args.burn_in,
        seed=args.seed,
        policy=policy,
        fps=args.fps,
    )
    print(f"video: {out}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from dreamenv.inspection import inspect_checkpoint

    rows = inspect_checkpoint(
        args.checkpoint,
        args.store,
        horizon=args.horizon,
        count=args.count,
        burn_in=args.burn_in,
        seed=args.seed,
        out=args.out,
    )
    print(
        "| horizon | latent acc | changed-cell acc | reward acc | frame MAE | recon MAE |\n"
        "|---:|---:|---:|---:|---:|---:|"
    )
    for row in rows:
        if row["horizon"] in (1, 2, 5, 10, 20, 30, 40, 50) or row["horizon"] == len(rows):
            print(
                f"| {row['horizon']} | {row['latent_acc']:.3f} | {row['changed_acc']:.3f} | "
                f"{row['reward_acc']:.3f} | "
                f"{row['frame_mae']:.4f} | {row['recon_mae']:.4f} |"
            )
    print(f"wrote {args.out}/inspect.csv and {args.out}/inspect.png")
    return 0


def _cmd_play(args: argparse.Namespace) -> int:
    from dreamenv.play import check_fps, play

    out = play(args.checkpoint, fps=check_fps(args.fps), seed=args.seed, video=args.video)
    if out is not None:
        print(f"no display (or no pygame: pip install -e '.[play]'); recorded {out} instead")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from dreamenv.quickstart import QUICKSTART_GAME, quickstart

    quickstart(
        args.run_dir, game=args.game or QUICKSTART_GAME, seed=args.seed, progress=not args.quiet
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamenv", description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument(
        "--release-memory",
        action="store_true",
        help="hand freed memory back to the OS as glibc does by default (slower: by default "
        "dreamenv keeps it, see dreamenv.memory)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect real steps of any env into an episode store")
    p.add_argument(
        "game",
        help="ale-py game (pong, ms_pacman, ALE/Breakout-v5), the toy bouncing_ball, or any "
        "registered gymnasium id (CartPole-v1, CarRacing-v3, MiniGrid-Empty-5x5-v0, "
        "dm_control/cartpole-swingup-v0)",
    )
    p.add_argument("--out", required=True, help="episode store directory (continued if it exists)")
    p.add_argument(
        "--steps", type=int, required=True, help="total agent steps the store should hold"
    )
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-steps", type=int, default=4096)
    p.add_argument("--agent", help="an agent directory to act (default: random policy)")
    p.add_argument(
        "--hold",
        type=float,
        default=1.0,
        help="random policy: hold each random action for this many steps on average "
        "(temporally correlated exploration; default 1: a fresh action every step)",
    )
    p.add_argument("--checkpoint", help="the checkpoint whose observations the agent takes")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load an SB3 .zip agent, which unpickles it: this can execute code, so "
        "only for files you trust",
    )
    _spec_args(p)
    p.set_defaults(run=_cmd_collect)

    p = sub.add_parser("fit", help="train a world model on an episode store (resumable)")
    p.add_argument("store")
    p.add_argument("--out", required=True, help="checkpoint directory (continued if unfinished)")
    p.add_argument(
        "--family",
        default="discrete",
        help="world-model family: discrete, dssm_det, dssm_vae, sssm, sssm_jumpy, ar, rar, "
        "mdnrnn, rssm",
    )
    p.add_argument("--preset", default="small", help="size preset: paper, small or tiny")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model setting (repeatable), e.g. --set jump=4 --set stochastic=categorical",
    )
    from dreamenv.precision import PRECISIONS
    from dreamenv.train.fit import FitConfig

    fit_defaults = FitConfig()
    for flag, field, kind, note in (
        ("--epochs", "epochs", int, "total epochs, warm-up included"),
        ("--warmup-epochs", "warmup_epochs", int, "epochs of representation warm-up"),
        ("--batch-size", "batch_size", int, "sequences per update"),
        ("--seq-len", "seq_len", int, "model steps per sequence"),
        ("--lr", "lr", float, "learning rate"),
        ("--warmup-lr", "warmup_lr", float, "learning rate of the warm-up"),
        ("--updates-per-epoch", "updates_per_epoch", int, "0: one pass over the data"),
        (
            "--reward-windows",
            "reward_windows",
            float,
            "share of each batch holding a real reward (sparse-reward games)",
        ),
        (
            "--termination-windows",
            "termination_windows",
            float,
            "share of each batch holding a real end (a lost life too, with --life-loss)",
        ),
        ("--checkpoint-minutes", "checkpoint_every_minutes", float, "also save this often"),
        ("--start-bank", "start_bank_size", int, "real starts saved for dream episodes"),
        ("--seed", "seed", int, "seeds initialisation and sampling"),
        ("--device", "device", str, "torch device"),
    ):
        default = getattr(fit_defaults, field)
        p.add_argument(flag, type=kind, default=default, help=f"{note} (default {default})")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=fit_defaults.precision,
        help="bfloat16: the updates under bfloat16 autocast, faster on CPUs with AVX-512 "
        "BF16 or AMX and much slower on others; auto: bfloat16 only where native; a "
        f"continued fit may change it (default {fit_defaults.precision})",
    )
    p.add_argument(
        "--hold-representation",
        action="store_true",
        help="continue a trained model with its representation held (discrete family: "
        "encoder, codebook, decoder), so every code stays as it was and only the dynamics, "
        "reward and termination train",
    )
    p.add_argument(
        "--life-loss",
        action="store_true",
        help="train the termination head on lost lives as well as on the game's end (Atari: "
        "dream episodes then end when a life is lost; the train loop's cpu100k does so)",
    )
    p.set_defaults(run=_cmd_fit)

    p = sub.add_parser("info", help="describe a checkpoint (parameter counts per part)")
    p.add_argument("checkpoint")
    p.set_defaults(run=_cmd_info)

    from dreamenv.envs.options import REWARD_MODES, DreamOptions

    dream_defaults = DreamOptions()
    p = sub.add_parser("dream", help="train an SB3 agent inside the dream env")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="the agent directory (an agent there is continued)")
    p.add_argument("--steps", type=int, default=100_000, help="imagined steps to train")
    p.add_argument(
        "--algo",
        default=None,
        choices=("ppo", "a2c", "dqn", "sac", "td3"),
        help="new agents: default ppo (sac, td3: continuous actions only)",
    )
    p.add_argument(
        "--envs", type=int, default=None, help="dream envs (default: the agent's, new: 16)"
    )
    p.add_argument(
        "--obs-type",
        default=dream_defaults.obs_type,
        help="the family's observation type (default: its first)",
    )
    p.add_argument(
        "--horizon",
        type=int,
        default=dream_defaults.horizon,
        help=f"imagined episode length (default {dream_defaults.horizon})",
    )
    p.add_argument(
        "--no-termination",
        dest="use_termination",
        action="store_false",
        default=dream_defaults.use_termination,
        help="end dream episodes only at the horizon",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of a new agent's SB3 algorithm (repeatable; values read as JSON), "
        "e.g. --set gamma=0.9 --set use_sde=true",
    )
    p.add_argument(
        "--reward-mode",
        choices=REWARD_MODES,
        default=dream_defaults.reward_mode,
        help=f"rewards sampled from the reward head, or its mean or mode "
        f"(default {dream_defaults.reward_mode})",
    )
    p.add_argument(
        "--burn-in",
        type=int,
        default=dream_defaults.burn_in,
        help=f"real observations each dream episode starts from (default {dream_defaults.burn_in})",
    )
    p.add_argument(
        "--reset-share",
        type=float,
        default=dream_defaults.reset_share,
        help="share of dream episodes that start where real episodes start, after a reset "
        f"(1: as the real env; default {dream_defaults.reset_share}: anywhere in the data)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=dream_defaults.temperature,
        help="sampling temperature of the imagined transitions (0: the model's mode; "
        f"default {dream_defaults.temperature})",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=dream_defaults.device)
    p.add_argument("--restart", action="store_true", help="start a new agent even if --out exists")
    p.add_argument("--verbose", type=int, default=None, help="SB3's verbosity (0, 1, 2)")
    p.add_argument("--tensorboard", metavar="DIR", help="SB3's TensorBoard log directory")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load an SB3 .zip agent, which unpickles it: this can execute code, so "
        "only for files you trust",
    )
    p.set_defaults(run=_cmd_dream)

    p = sub.add_parser("evaluate", help="play an agent and a random policy in the real game")
    p.add_argument("checkpoint")
    p.add_argument("agent")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps per episode")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--json", help="also write the returns to this JSON file")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load an SB3 .zip agent, which unpickles it: this can execute code, so "
        "only for files you trust",
    )
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser(
        "train", help="the iterative loop: collect, fit, dream, evaluate (resumable)"
    )
    p.add_argument("game")
    p.add_argument(
        "--preset",
        default="quick",
        help="quick (the quickstart), cpu100k (the paper's real-step budget sized for one CPU core) "
        "or atari100k (the paper's, for a GPU)",
    )
    p.add_argument("--budget", type=int, help="real agent steps; sets the number of iterations")
    p.add_argument("--run-dir", help="default runs/GAME-sSEED; an existing run continues")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int)
    p.add_argument("--initial-steps", type=int)
    p.add_argument(
        "--random-hold",
        type=float,
        help="mean steps the first collection holds each random action (default: the "
        "preset's; 1 = a fresh action every step, the paper's)",
    )
    p.add_argument("--steps-per-iteration", type=int)
    p.add_argument(
        "--continue-games",
        action=argparse.BooleanOptionalAction,
        help="let each collection's games go on in the next iteration instead of starting "
        "new ones (default: the preset's)",
    )
    p.add_argument("--temperature", type=float)
    p.add_argument("--screen-size", type=int, help="frame side (default: the preset's)")
    p.add_argument(
        "--frame-stack", type=int, help="observations stacked (default: 4 Atari, 1 otherwise)"
    )
    _gym_spec_args(p)
    p.add_argument(
        "--dream-termination",
        choices=("on", "off"),
        help="end dream episodes when the termination head says so (default: the preset's)",
    )
    p.add_argument(
        "--reset-share",
        type=float,
        help="share of dream episodes that start where real episodes start (default: the "
        "preset's, 0)",
    )
    p.add_argument("--model-preset", help="world-model size: small, paper")
    p.add_argument("--family", help="world-model family (default: the preset's, discrete)")
    p.add_argument(
        "--obs-type",
        help="what the agent observes (default: the family's first; discrete: indices, its "
        "one-hot codes; embeddings: their codebook vectors)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a world-model setting over the preset's (repeatable; values read as JSON), "
        "e.g. --set moving_weight=20",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="of the world-model refits, the dream steps and the policy trunk; a resumed run "
        "may change it (default: the preset's, auto: bfloat16 where the CPU computes it "
        "natively, else float32; the model's own encoding: --set precision=...)",
    )
    p.add_argument("--wm-epochs", type=int, nargs="+", help="world-model epochs per iteration")
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument(
        "--representation-iterations",
        type=int,
        help="iterations whose refits train the representation; later refits hold it, so "
        "the codes the agent sees stay fixed (default: every iteration, the paper's)",
    )
    p.add_argument("--rollouts", type=int, nargs="+", help="PPO rollouts per iteration")
    p.add_argument("--eval-episodes", type=int)
    p.add_argument("--eval-max-steps", type=int)
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--tensorboard", metavar="DIR", help="TensorBoard logs of the dream PPO")
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("video", help="GIF of real | imagined | latent indices from one start")
    p.add_argument("checkpoint")
    p.add_argument("--out", default="video.gif")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--burn-in", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agent", help="an agent directory choosing the actions (default: random)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load an SB3 .zip agent, which unpickles it: this can execute code, so "
        "only for files you trust",
    )
    p.set_defaults(run=_cmd_video)

    p = sub.add_parser("inspect", help="open-loop quality against the horizon (CSV and PNG)")
    p.add_argument("checkpoint")
    p.add_argument("store", help="the episode store (its held-out episodes are used)")
    p.add_argument("--out", default="inspect")
    p.add_argument("--horizon", type=int, default=50)
    p.add_argument("--count", type=int, default=32, help="held-out segments")
    p.add_argument("--burn-in", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_cmd_inspect)

    p = sub.add_parser(
        "play", help="play the dream with the keyboard (TAB: switch to the real game)"
    )
    p.add_argument("checkpoint")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--video", default="play.gif", help="written instead when there is no display")
    p.set_defaults(run=_cmd_play)

    p = sub.add_parser("quickstart", help="the main job: quick loop, then dream agent vs random")
    p.add_argument("--run-dir", default="runs/quickstart")
    p.add_argument("--game", default=None, help="default: seaquest (see the README)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_cmd_quickstart)

    p = sub.add_parser("report", help="learning-curve PNG and Markdown table of runs of a game")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", help="output folder (default RUN_DIR/report)")
    p.set_defaults(run=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dreamenv`` console script."""
    from dreamenv.errors import DreamEnvError

    args = build_parser().parse_args(argv)
    if not args.release_memory:
        from dreamenv.memory import keep_freed_memory

        keep_freed_memory()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*mini-batch size.*")
    try:
        return args.run(args)
    except DreamEnvError as err:
        print(f"dreamenv {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
