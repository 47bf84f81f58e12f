"""The reality gap of one loop iteration: what the agent earns in the dream against what it
earns in the real game over the same number of steps, and how well the world model
predicts the real episodes the agent just played (open loop, under the real actions).

An agent that exploits the model shows as a high ``dream_return`` beside a low
``real_window_return`` (a large ``gap``); the open-loop scores say where the model is wrong:
its latents (``open_latent_acc``; ``open_changed_acc`` on the latent entries that change,
which a model that only copies the still background gets wrong), its rewards
(``reward_precision``/``reward_recall`` of the most likely reward; ``*_sampled``: expected
under rewards drawn as the dream draws them) or its terminations
(``termination_precision``/``termination_recall``; ``*_sampled``: ends drawn as the dream
draws them, counted within :data:`END_TOLERANCE` steps of a real end). The ``*_forced``
scores are the sampled ones of the reward and termination heads fed the real latents and
state instead (teacher forced): a head that is right there but wrong open loop is fine,
and the dream's drift is what misleads the agent.

Example:
    >>> stats = play_episodes(agent, "runs/pong/model", episodes=32)
    >>> newest = EpisodeStore.open("runs/pong/data").episodes()[before:]
    >>> gap = reality_gap("runs/pong/model", agent, newest, real=stats,
    ...                   options=DreamOptions(horizon=50))
    >>> gap["dream_return"], gap["real_window_return"], gap["reward_recall"]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dreamenv.checkpoint import Checkpoint
from dreamenv.data.store import Episode
from dreamenv.envs.core import resolve_checkpoint
from dreamenv.envs.options import DreamOptions
from dreamenv.envs.vector import DreamVectorEnv
from dreamenv.errors import ConfigError, DatasetError
from dreamenv.evaluate import EpisodeStats, PolicyLike, as_actor, play
from dreamenv.inspection import OpenLoop, changed_accuracy, open_loop, real_segments

FORCED_KEYS = (
    "reward_precision_forced",
    "reward_recall_forced",
    "termination_precision_forced",
    "termination_recall_forced",
)
"""The sampled reward and termination scores of the heads fed the real latents and state."""

OPEN_LOOP_KEYS = (
    "open_latent_acc",
    "open_changed_acc",
    "open_latent_mse",
    "reward_precision",
    "reward_recall",
    "reward_precision_sampled",
    "reward_recall_sampled",
    "reward_steps",
    "termination_precision",
    "termination_recall",
    "termination_precision_sampled",
    "termination_recall_sampled",
    "termination_steps",
    *FORCED_KEYS,
)
"""The open-loop scores of :func:`reality_gap` (NaN where they cannot be measured)."""

END_TOLERANCE = 4
"""Steps either side of a real end within which an imagined end counts as that end (the
sampled termination scores). A game's end or lost life is often the last frame of an
animation the head cannot time to the step (Seaquest's sinking submarine: about 20
steps; the head, teacher forced, spreads its probability over the six from four before the
lost life to one after), and an agent needs the dream to end near the real end, not on it."""

SEGMENT_BATCH = 16
"""Real segments imagined together (bounds the memory of encoding their frames)."""


def sign_precision_recall(predicted: np.ndarray, real: np.ndarray) -> tuple[float, float, int]:
    """Precision, recall and event count of predicted signs against real ones.

    An event is a step whose real sign is nonzero. Recall: the share of events whose
    predicted sign is the real one. Precision: among the steps predicted nonzero, the share
    whose real sign is the predicted one. Each is NaN when nothing defines it.

    Example:
        >>> sign_precision_recall(np.array([1, 0, -1, 1]), np.array([1, -1, -1, 0]))
        (0.6666666666666666, 0.6666666666666666, 3)
    """
    predicted, real = np.sign(np.ravel(predicted)), np.sign(np.ravel(real))
    if predicted.shape != real.shape:
        raise ConfigError(
            f"predicted and real signs must have the same size, got {predicted.size} and "
            f"{real.size}."
        )
    events, claims = real != 0, predicted != 0
    recall = float(np.mean(predicted[events] == real[events])) if events.any() else math.nan
    precision = float(np.mean(real[claims] == predicted[claims])) if claims.any() else math.nan
    return precision, recall, int(events.sum())


def sampled_sign_precision_recall(sign_probs: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """Precision and recall of :func:`sign_precision_recall`, expected when each step's
    sign is drawn from ``sign_probs`` ``(..., 3)`` (probabilities of -1, 0, +1), as the dream
    draws its rewards. A reward head that gives a rewarded step probability 0.4 is never
    right by its most likely class, but is in 40% of the dreams; each is NaN when nothing
    defines it.

    Example:
        >>> probs = np.array([[0.0, 0.6, 0.4], [0.0, 0.9, 0.1]])
        >>> sampled_sign_precision_recall(probs, np.array([1.0, 0.0]))
        (0.8, 0.4)
    """
    probs = np.asarray(sign_probs, dtype=np.float64).reshape(-1, 3)
    real = np.sign(np.ravel(real)).astype(np.int64)
    if len(probs) != real.size:
        raise ConfigError(
            f"sign probabilities and real signs must have the same size, got {len(probs)} and "
            f"{real.size}."
        )
    right = probs[np.arange(real.size), real + 1]  # P(the drawn sign is the real one)
    events = real != 0
    claimed = float(probs[:, [0, 2]].sum())
    recall = float(right[events].mean()) if events.any() else math.nan
    precision = float(right[events].sum()) / claimed if claimed > 0 else math.nan
    return precision, recall


def sampled_end_precision_recall(
    end_probs: np.ndarray, real: np.ndarray, tolerance: int = END_TOLERANCE
) -> tuple[float, float]:
    """Precision and recall of imagined ends against real ones ``(B, H)``, expected when
    each step ends with probability ``end_probs`` (as the dream draws its ends) and an end
    counts within ``tolerance`` steps of a real one. Recall: the mean over real ends of the
    probability that at least one step within ``tolerance`` of it ends. Precision: the
    share of the expected ends that fall within ``tolerance`` of a real end. Each is NaN
    when nothing defines it.

    Example:
        >>> p = np.array([[0.0, 0.5, 0.5, 0.0, 0.0, 0.25]])
        >>> sampled_end_precision_recall(p, np.array([[0, 0, 1, 0, 0, 0]]), tolerance=1)
        (0.8, 0.75)
    """
    probs = np.asarray(end_probs, dtype=np.float64)
    real = np.asarray(real).astype(bool)
    if probs.shape != real.shape or probs.ndim != 2:
        raise ConfigError(
            f"end probabilities and real ends must have the same (segments, steps) shape, got "
            f"{probs.shape} and {real.shape}."
        )
    near = np.zeros_like(real)
    misses = []
    for b, t in zip(*np.nonzero(real), strict=True):
        lo, hi = max(t - tolerance, 0), t + tolerance + 1
        near[b, lo:hi] = True
        misses.append(np.prod(1.0 - probs[b, lo:hi]))
    recall = 1.0 - float(np.mean(misses)) if misses else math.nan
    expected = float(probs.sum())
    precision = float(probs[near].sum()) / expected if expected > 0 else math.nan
    return precision, recall


def open_loop_scores(
    pred: OpenLoop, rewards: np.ndarray, terminated: np.ndarray, reward_values: torch.Tensor
) -> dict[str, float]:
    """The open-loop scores (:data:`OPEN_LOOP_KEYS`) of imagined steps against real ones.

    Args:
        pred: the imagined continuation of ``B`` real segments of ``H`` steps.
        rewards: ``(B, H)`` the real rewards of those steps (their signs are compared).
        terminated: ``(B, H)`` whether each real step ended the game.
        reward_values: the reward value of each reward class (the model's
            :meth:`~dreamenv.models.base.WorldModel.reward_values`).

    Example:
        >>> scores = open_loop_scores(pred, seg["rewards"][:, 3:], seg["terminated"][:, 3:],
        ...                           model.reward_values())
    """
    integer = not pred.latents.dtype.is_floating_point
    diff = pred.latents.float() - pred.real_latents.float()
    values = reward_values.detach().cpu().numpy()
    reward_sign = np.sign(values[pred.reward_logits.argmax(-1).cpu().numpy()])

    def sign_probs(logits: torch.Tensor) -> np.ndarray:
        probs = torch.softmax(logits.float(), -1).cpu().numpy()
        return np.stack([probs[..., np.sign(values) == s].sum(-1) for s in (-1, 0, 1)], -1)

    def end_probs(logits: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(logits.float()).cpu().numpy()

    imagined_ends = end_probs(pred.termination_logits)
    ends = imagined_ends > 0.5
    r_precision, r_recall, r_steps = sign_precision_recall(reward_sign, rewards)
    s_precision, s_recall = sampled_sign_precision_recall(sign_probs(pred.reward_logits), rewards)
    t_precision, t_recall, t_steps = sign_precision_recall(
        ends.astype(np.int64), np.asarray(terminated).astype(np.int64)
    )
    e_precision, e_recall = sampled_end_precision_recall(imagined_ends, terminated)
    forced = [math.nan] * 4
    if pred.forced_reward_logits is not None and pred.forced_termination_logits is not None:
        forced = [
            *sampled_sign_precision_recall(sign_probs(pred.forced_reward_logits), rewards),
            *sampled_end_precision_recall(end_probs(pred.forced_termination_logits), terminated),
        ]
    return {
        "open_latent_acc": float((diff == 0).float().mean()) if integer else math.nan,
        "open_changed_acc": changed_accuracy(pred.latents, pred.real_latents, pred.start_latents),
        "open_latent_mse": math.nan if integer else float(diff.pow(2).mean()),
        "reward_precision": r_precision,
        "reward_recall": r_recall,
        "reward_precision_sampled": s_precision,
        "reward_recall_sampled": s_recall,
        "reward_steps": float(r_steps),
        "termination_precision": t_precision,
        "termination_recall": t_recall,
        "termination_precision_sampled": e_precision,
        "termination_recall_sampled": e_recall,
        "termination_steps": float(t_steps),
        **dict(zip(FORCED_KEYS, forced, strict=True)),
    }


def concat_open_loops(parts: list[OpenLoop]) -> OpenLoop:
    """The open loops of several batches of segments as one batch."""

    def joined(name: str) -> torch.Tensor | None:
        kept = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        return torch.cat(kept) if len(kept) == len(parts) else None

    return OpenLoop(
        latents=torch.cat([p.latents for p in parts]),
        reward_logits=torch.cat([p.reward_logits for p in parts]),
        real_latents=torch.cat([p.real_latents for p in parts]),
        termination_logits=torch.cat([p.termination_logits for p in parts]),
        start_latents=joined("start_latents"),
        forced_reward_logits=joined("forced_reward_logits"),
        forced_termination_logits=joined("forced_termination_logits"),
    )


def nan_open_loop() -> dict[str, float]:
    """The open-loop scores when no segment can be scored: all NaN, no steps."""
    return {k: 0.0 if k.endswith("_steps") else math.nan for k in OPEN_LOOP_KEYS}


def real_window_return(stats: EpisodeStats, horizon: int) -> float:
    """The real return over ``horizon`` steps at the evaluation's clipped reward rate:
    ``horizon * sum(clipped_returns) / sum(lengths)`` (NaN without steps).

    Example:
        >>> real_window_return(EpisodeStats(np.ones(2), np.array([3., 1.]), np.array([100, 100])), 50)
        1.0
    """
    steps = int(np.sum(stats.lengths))
    return horizon * float(np.sum(stats.clipped_returns)) / steps if steps else math.nan


@torch.inference_mode()
def model_scores(
    checkpoint: Checkpoint,
    episodes: Sequence[Episode],
    *,
    horizon: int,
    burn_in: int,
    segments: int,
    seed: int = 0,
    life_loss: bool = False,
) -> dict[str, float]:
    """Open-loop scores (:data:`OPEN_LOOP_KEYS`) of ``checkpoint`` on ``segments`` random
    windows of ``episodes``: ``burn_in`` real observations, then ``horizon`` imagined steps
    under the real actions. All NaN (no steps) when no episode is long enough or the model
    is jumpy (it advances several real steps per step). Windows are drawn independently and
    may overlap, so ``reward_steps`` counts a rewarded step once per window holding it.

    Example:
        >>> model_scores(ckpt, episodes, horizon=50, burn_in=4, segments=64)["reward_recall"]
    """
    model = checkpoint.model
    if model.jump > 1 or segments < 1:
        return nan_open_loop()
    try:
        seg = real_segments(
            list(episodes),
            horizon,
            segments,
            burn_in,
            checkpoint.spec.frame_stack,
            seed,
            life_loss=life_loss,
        )
    except DatasetError:
        return nan_open_loop()
    parts = []
    for lo in range(0, segments, SEGMENT_BATCH):
        frames = torch.as_tensor(seg["frames"][lo : lo + SEGMENT_BATCH], device=model.device)
        actions = torch.as_tensor(seg["actions"][lo : lo + SEGMENT_BATCH], device=model.device)
        parts.append(open_loop(model, frames, actions, burn_in, seed + lo))
    return open_loop_scores(
        concat_open_loops(parts),
        seg["rewards"][:, burn_in - 1 :],
        seg["terminated"][:, burn_in - 1 :],
        model.reward_values(),
    )


def dream_stats(
    checkpoint: Checkpoint,
    agent: PolicyLike,
    *,
    options: DreamOptions,
    episodes: int,
    seed: int = 0,
) -> EpisodeStats:
    """``episodes`` dream episodes of ``agent`` (sampled, as in training), one per env, from
    real starts of the checkpoint's start bank.

    Example:
        >>> dream_stats(ckpt, agent, options=DreamOptions(horizon=50), episodes=64).returns
    """
    act, obs_type = as_actor(agent, checkpoint, options.obs_type, deterministic=False)
    if obs_type != options.obs_type:
        options = DreamOptions.from_kwargs(options, {"obs_type": obs_type})
    env = DreamVectorEnv(checkpoint, episodes, options=options)
    try:
        return play(env, act, episodes, seed=seed, desc="dream")
    finally:
        env.close()


def reality_gap(
    checkpoint: str | Path | Checkpoint,
    agent: PolicyLike,
    episodes: Sequence[Episode],
    *,
    real: EpisodeStats,
    options: DreamOptions | None = None,
    dream_episodes: int = 64,
    segments: int = 64,
    seed: int = 0,
    life_loss: bool = False,
) -> dict[str, float]:
    """The agent's return in the dream against the real game, and the model's open-loop
    scores on ``episodes``.

    Args:
        checkpoint: the world model the agent was trained in.
        agent: an SB3 agent (or any :data:`~dreamenv.evaluate.PolicyLike`).
        episodes: real episodes to score the model on (the newest: those the agent played).
        real: the agent's real evaluation (:func:`~dreamenv.evaluate.play_episodes`).
        options: the dream options of training (horizon ``H``, termination, burn-in, device).
        dream_episodes: dream episodes played (one batch).
        segments: real windows of ``burn_in - 1 + H`` steps scored open loop.
        seed: seeds the dream, the choice of windows and the model's sampling.
        life_loss: score terminations against lost lives too (the model was fitted with
            ``FitConfig.life_loss``).

    Returns:
        ``dream_return`` (mean over the dream episodes, in the dream's clipped units),
        ``dream_length`` (their mean length; below H only when episodes terminate),
        ``real_window_return`` (:func:`real_window_return` over H steps), ``gap`` (the
        first minus the second), and :data:`OPEN_LOOP_KEYS` from :func:`model_scores`, NaN
        where undefined: the latent accuracy for float latents (``open_latent_mse`` is
        given instead, and the other way round), precisions with no predicted event,
        recalls with no real event, and all of them when no episode has
        ``burn_in - 1 + H`` steps or the model is jumpy.

    Example:
        >>> gap = reality_gap(model, agent, newest, real=stats, options=DreamOptions())
    """
    options = options or DreamOptions()
    if not (isinstance(dream_episodes, int) and dream_episodes >= 1):
        raise ConfigError(
            f"dream_episodes must be a positive int (default 64), got {dream_episodes!r}."
        )
    if not (isinstance(segments, int) and segments >= 0):
        raise ConfigError(f"segments must be an int >= 0 (default 64), got {segments!r}.")
    ckpt = resolve_checkpoint(checkpoint, options.device, None)
    options = options.resolved(ckpt.start_bank.context, ckpt.model.obs_types)
    dream = dream_stats(ckpt, agent, options=options, episodes=dream_episodes, seed=seed)
    window = real_window_return(real, options.horizon)
    dream_return = float(np.mean(dream.returns))
    scores = model_scores(
        ckpt,
        episodes,
        horizon=options.horizon,
        burn_in=options.burn_in,
        segments=segments,
        seed=seed,
        life_loss=life_loss,
    )
    return {
        "dream_return": dream_return,
        "dream_length": float(np.mean(dream.lengths)),
        "real_window_return": window,
        "gap": dream_return - window,
        **scores,
    }
