"""Pieces shared by the world-model families: pixel likelihoods, the binary reward
representation of Buesing et al. (appendix A.2), the reward head's targets of any reward
(:class:`RewardCoder`), action features and chunks of jumpy models, image-spec checks,
sampling.

Example:
    >>> logits = torch.zeros(2, 4, 96, 96)
    >>> pixel_kl(logits, torch.zeros(2, 4, 96, 96, dtype=torch.uint8)).shape
    torch.Size([2])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

NLL_CONTEXT = 3
"""Observations given as context before :meth:`WorldModel.test_nll` scores the rest (the
paper's ``o_{-2:0}``)."""


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames as floats in [0, 1]."""
    return frames.float() * (1.0 / 255.0)


def pixel_kl(logits: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over pixels of KL(target || Bernoulli(sigmoid(logits))), in nats.

    The pixels of ``frames`` (uint8) are read as pseudo-probabilities, as Buesing et al.
    (appendix A.2) do; the KL is the cross-entropy minus the targets' own entropy, so a
    perfect prediction scores 0. Shapes: ``(B, ...)`` -> ``(B,)``.
    """
    target = to_unit(frames)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    t = target.clamp(1e-6, 1 - 1e-6)
    entropy = -(t * t.log() + (1 - t) * (1 - t).log())
    return (bce - entropy).flatten(1).mean(1)


def pixel_mean(logits: torch.Tensor) -> torch.Tensor:
    """uint8 frames of the Bernoulli means of pixel ``logits``."""
    return (torch.sigmoid(logits) * 255.0).round().to(torch.uint8)


class RewardBits:
    """The binary reward representation of Buesing et al. (appendix A.2).

    A reward ``r`` becomes ``num_bits`` bits of ``floor(|r|)`` (least significant first),
    a sign bit (``r < 0``) and a zero indicator (``r == 0``): ``num_bits + 2`` independent
    Bernoulli variables. :meth:`sign_logits` turns their logits into scores over the dream
    env's reward support ``(-1, 0, +1)`` (agents train on clipped rewards, as in Robine et al.).
    """

    def __init__(self, num_bits: int = 8) -> None:
        self.num_bits = num_bits
        self.size = num_bits + 2

    def targets(self, rewards: torch.Tensor) -> torch.Tensor:
        """``(...)`` real rewards -> ``(..., num_bits + 2)`` float targets in {0, 1}."""
        magnitude = rewards.abs().floor().clamp(max=2**self.num_bits - 1).long()
        powers = 2 ** torch.arange(self.num_bits, device=rewards.device)
        bits = (magnitude[..., None] // powers) % 2
        sign = (rewards < 0).long()[..., None]
        zero = (rewards == 0).long()[..., None]
        return torch.cat([bits, sign, zero], -1).float()

    def loss(self, logits: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """Summed Bernoulli NLL of the bits, ``(...)`` per reward."""
        return F.binary_cross_entropy_with_logits(
            logits, self.targets(rewards), reduction="none"
        ).sum(-1)

    def sign_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., num_bits + 2)`` bit logits -> ``(..., 3)`` log-probabilities of -1, 0, +1."""
        sign, zero = logits[..., -2], logits[..., -1]
        log_zero = F.logsigmoid(zero)
        log_nonzero = F.logsigmoid(-zero)
        return torch.stack(
            [log_nonzero + F.logsigmoid(sign), log_zero, log_nonzero + F.logsigmoid(-sign)], -1
        )


def reward_classes(rewards: torch.Tensor) -> torch.Tensor:
    """Real rewards as classes of their sign (-1, 0, +1): 0, 1, 2 (the Atari protocol's
    clipping: any positive reward, however small, is +1)."""
    return torch.sign(rewards).long() + 1


REAL_REWARD_BINS = 41
"""Bins of the real-valued reward head: symlog-spaced over [-symexp(REAL_REWARD_LIMIT),
+symexp(REAL_REWARD_LIMIT)], zero among them."""
REAL_REWARD_LIMIT = 8.0
"""symlog of the largest reward magnitude the real-valued head represents (about 3000)."""


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class RewardCoder:
    """The reward head's targets: a categorical over :attr:`support`.

    ``"ternary"`` (the Atari protocol): the classes of the reward's sign, support (-1, 0, +1).
    ``"real"``: DreamerV3's two-hot encoding over a symlog-spaced support: a reward between
    two bins puts its weight on both, so the expectation over the support recovers it
    exactly; sampling, the mean and the mode of the dream's ``reward_mode`` keep their
    meaning.

    Example:
        >>> coder = RewardCoder("real")
        >>> probs = coder.targets(torch.tensor([0.3, -12.0]))
        >>> torch.allclose(probs @ torch.tensor(coder.support), torch.tensor([0.3, -12.0]))
        True
    """

    def __init__(self, kind: str = "ternary", limit: float = REAL_REWARD_LIMIT) -> None:
        if kind not in ("ternary", "real"):
            from dreamenv.errors import ConfigError

            raise ConfigError(f"reward kind must be 'ternary' or 'real', got {kind!r}.")
        self.kind = kind
        self.set_limit(limit)

    def set_limit(self, limit: float) -> None:
        """Span the real support over ``[-symexp(limit), +symexp(limit)]`` (symlog units;
        no effect on a ternary coder)."""
        if self.kind == "ternary":
            self.support: tuple[float, ...] = (-1.0, 0.0, 1.0)
        else:
            grid = torch.linspace(-limit, limit, REAL_REWARD_BINS, dtype=torch.float64)
            values = symexp(grid)
            values[REAL_REWARD_BINS // 2] = 0.0  # exactly zero, not a rounding error away
            self.support = tuple(float(v) for v in values)
        self.limit = float(limit)
        self._values = torch.tensor(self.support, dtype=torch.float32)

    @property
    def size(self) -> int:
        """Number of classes (the reward head's width)."""
        return len(self.support)

    def classes(self, rewards: torch.Tensor) -> torch.Tensor:
        """The nearest support class of each reward (its sign for ternary), int64 ``(...)``."""
        if self.kind == "ternary":
            return reward_classes(rewards)
        values = self._values.to(rewards.device)
        return (rewards.float()[..., None] - values).abs().argmin(-1)

    def targets(self, rewards: torch.Tensor) -> torch.Tensor:
        """``(...)`` rewards -> ``(..., size)`` target probabilities (one- or two-hot)."""
        if self.kind == "ternary":
            return F.one_hot(reward_classes(rewards), 3).float()
        values = self._values.to(rewards.device)
        r = rewards.float().clamp(values[0], values[-1])
        upper = torch.searchsorted(values, r.contiguous(), right=False).clamp(1, len(values) - 1)
        lower = upper - 1
        lo, hi = values[lower], values[upper]
        w_hi = ((r - lo) / (hi - lo)).clamp(0, 1)
        out = torch.zeros(*r.shape, len(values), device=r.device)
        out.scatter_(-1, lower[..., None], (1 - w_hi)[..., None])
        out.scatter_add_(-1, upper[..., None], w_hi[..., None])
        return out

    def loss(self, logits: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``logits`` ``(..., size)`` against the targets, ``(...)``."""
        return -(self.targets(rewards) * F.log_softmax(logits.float(), -1)).sum(-1)

    def accuracy(self, logits: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """1 where the most likely class is the reward's nearest class, ``(...)`` float."""
        return (logits.argmax(-1) == self.classes(rewards)).float()

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """The expected reward under ``logits``."""
        return torch.softmax(logits.float(), -1) @ self._values.to(logits.device)


class BitsOrCoder:
    """The reward outputs of the families of Buesing et al.: their binary reward bits
    (:class:`RewardBits`, scored over (-1, 0, +1)) for sign-clipped rewards, where the
    paper's representation serves, and the reward coder's categorical (:class:`RewardCoder`,
    a two-hot symlog grid) for real rewards, whose fractions the bits of ``floor(|r|)``
    would lose.

    Example:
        >>> readout = BitsOrCoder(RewardCoder("real"), num_bits=8)
        >>> readout.size, readout.bits is None
        (41, True)
    """

    def __init__(self, coder: RewardCoder, num_bits: int) -> None:
        self.coder = coder
        self.bits = RewardBits(num_bits) if coder.kind == "ternary" else None
        """The bits of sign-clipped rewards; None for real rewards."""
        self.size = self.bits.size if self.bits is not None else coder.size
        """Logits of the reward head."""

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., size)`` head logits -> ``(..., len(coder.support))`` scores over the
        support (the bits' log-probabilities of -1, 0, +1; the coder's logits as they are)."""
        return self.bits.sign_logits(logits) if self.bits is not None else logits

    def loss(self, logits: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """NLL per reward ``(...)``: the bits' summed Bernoulli NLL, or the coder's
        cross-entropy."""
        if self.bits is not None:
            return self.bits.loss(logits, rewards)
        return self.coder.loss(logits, rewards)

    def accuracy(self, logits: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """1 where the most likely support value is the reward's class, ``(...)`` float."""
        return self.coder.accuracy(self.scores(logits), rewards)


def action_features(
    actions: torch.Tensor, spec: Any, bounds: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """Actions as float network inputs (see :meth:`WorldModel.action_features`): one-hots of
    discrete actions, continuous ones rescaled from ``spec``'s bounds to [-1, 1]. Chunks of
    a jumpy model ``(B, c)`` / ``(B, c, n)`` flatten to ``(B, c * n)``."""
    if spec.kind == "discrete":
        return F.one_hot(actions.long(), spec.n).float()
    if bounds is None:
        bounds = (
            torch.tensor(spec.low, device=actions.device),
            torch.tensor(spec.high, device=actions.device),
        )
    low, high = bounds
    return ((actions.float() - low) * (2.0 / (high - low)) - 1.0).clamp(-1.0, 1.0)


def feature_input(actions: torch.Tensor, num_actions: int) -> torch.Tensor:
    """What a network block takes as its action input: float ``actions`` are already
    features (:meth:`WorldModel.action_features`) and pass unchanged; int64 actions
    ``(...)`` become one-hots ``(..., num_actions)`` (the blocks' callers of earlier
    versions pass discrete actions)."""
    if actions.is_floating_point():
        return actions
    return F.one_hot(actions.long(), num_actions).float()


def image_frames(spec: Any, family: str) -> tuple[int, int, int]:
    """``(channels, stack_channels, size)`` of an image spec: channels of one frame (1 grey,
    3 RGB), of a stacked observation (``frame_shape[0] = frame_stack * channels``) and the
    square side. A state-vector spec (``frame_shape`` ``(stack, D)``) raises a
    :class:`~dreamenv.errors.ConfigError` pointing to the ``"ensemble"`` family.

    Example:
        >>> from dreamenv.envs.atari import AtariSpec
        >>> image_frames(AtariSpec("pong"), "discrete")
        (1, 4, 96)
    """
    shape = tuple(spec.frame_shape)
    if len(shape) != 3:
        from dreamenv.errors import ConfigError

        raise ConfigError(
            f"the {family} family models image frames; for state vectors use family "
            f"'ensemble' (the spec's frame_shape is {shape}: (frame_stack, state_size))."
        )
    stack_channels, size, _ = shape
    return int(getattr(spec, "channels", 1)), stack_channels, size


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` is 1 (0 when nothing is masked in)."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def sample_categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF samples of categoricals over the last dim of ``probs``, given uniforms
    ``u`` of shape ``probs.shape[:-1]``."""
    cdf = probs.cumsum(-1)
    return (cdf < u[..., None]).sum(-1).clamp_(max=probs.shape[-1] - 1)


def normal_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard normal samples from uniforms in (0, 1) (inverse CDF)."""
    return math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)


def window_steps(seq_len: int, jump: int, context: int = NLL_CONTEXT) -> int:
    """Real transitions a training window needs for :func:`split_context`: the context,
    then ``seq_len`` model steps of ``jump`` real steps each."""
    return context - 1 + jump * seq_len


def split_context(
    batch: dict[str, torch.Tensor], jump: int = 1, context: int = NLL_CONTEXT
) -> dict[str, torch.Tensor]:
    """A window of real steps as a context and the model steps that follow it.

    The first ``context`` observations (consecutive real steps) form the context; from the
    last of them on, the model advances ``jump`` real steps per step (Buesing et al. 2.2):
    observations are sub-sampled every ``jump``, actions become chunks, rewards are summed
    over a chunk, a chunk is ``terminated`` if any of its steps is and counts (``mask``)
    if its first step does. With ``jump=1`` this is just a split.

    Args:
        batch: ``frames`` ``(B, T+1, ...)``, ``actions`` ``(B, T)`` (discrete) or ``(B, T,
            n)`` (continuous), ``rewards``, ``terminated``, ``mask`` ``(B, T)``, as
            :class:`~dreamenv.data.sequences.SequenceSampler` gives.

    Returns:
        ``context`` ``(B, context, ...)`` uint8; ``frames`` ``(B, L, ...)``: the
        observation after each model step; ``actions`` ``(B, L, jump)`` (continuous:
        ``(B, L, jump, n)``); ``rewards``, ``terminated``, ``mask`` ``(B, L)``; where
        ``L = (T - context + 1) // jump``.
    """
    b, steps = batch["actions"].shape[:2]
    first = context - 1
    n = (steps - first) // jump
    if n < 1:
        from dreamenv.errors import ConfigError

        raise ConfigError(
            f"a window of {steps} steps is too short for a context of {context} observations "
            f"and one step of {jump}; raise seq_len."
        )
    end = first + n * jump
    action_shape = batch["actions"].shape[2:]  # () discrete, (n,) continuous
    mask = batch["mask"][:, first:end].reshape(b, n, jump)
    rewards = (batch["rewards"][:, first:end] * batch["mask"][:, first:end]).reshape(b, n, jump)
    return {
        "context": batch["frames"][:, :context],
        "frames": batch["frames"][:, first + jump : end + 1 : jump],
        "actions": batch["actions"][:, first:end].reshape(b, n, jump, *action_shape),
        "rewards": rewards.sum(-1),
        "terminated": batch["terminated"][:, first:end].reshape(b, n, jump).any(-1),
        "mask": mask[..., 0],
    }


def action_chunk_onehot(actions: torch.Tensor, num_actions: int) -> torch.Tensor:
    """``(B, c)`` (or ``(B,)``) action chunks -> ``(B, c * num_actions)`` float one-hots."""
    if actions.dim() == 1:
        actions = actions[:, None]
    return F.one_hot(actions, num_actions).float().flatten(1)
