"""The discrete world model of Robine et al. (2020): VQ-VAE + two-cell ConvLSTM.

- Encoder: strided convolutions with batch norm and leaky ReLU, from stacked frames (grey
  as the paper's, or RGB: ``frame_stack * C`` channels) to a ``G x G`` grid (6x6 for 96x96
  frames, 4x4 for 64x64) of 32-dim vectors, quantised against
  a 128 x 32 codebook updated by exponential moving averages, with a commitment cost.
- Decoder: transposed convolutions (no batch norm) to the logits of independent
  continuous Bernoulli distributions over every pixel of every stacked frame.
- Dynamics: two ConvLSTM cells with layer norm; the input is the codebook embedding of
  the current indices with the action features tiled over the grid (the paper's one-hot;
  a continuous action's vector rescaled to [-1, 1]), and they are concatenated again to
  each cell's output. Heads: next-index logits per grid cell, a reward over the reward
  coder's support ({-1, 0, +1} for Atari; a two-hot symlog grid for real rewards), and a
  termination logit (the paper's future work, done here).
  Not in the paper: a learned scalar ``keep_logit`` added to the logit of each cell's
  current index (a skip connection, :data:`KEEP_LOGIT_INIT`).

Example:
    >>> model = DiscreteWorldModel(DiscreteConfig(), AtariSpec("pong"), num_actions=6)
    >>> model.parameter_counts()["total"] > 9_000_000
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dreamenv.envs.atari import AtariSpec
from dreamenv.envs.spec import ActionSpec
from dreamenv.errors import ConfigError
from dreamenv.models.base import Prediction, State, WorldModel, register_family
from dreamenv.models.common import feature_input, image_frames, sample_categorical
from dreamenv.precision import Precision, autocast, check_precision, resolve_precision
from dreamenv.random_streams import BatchRandom


@dataclass(frozen=True)
class DiscreteConfig:
    """Hyperparameters of the discrete world model (defaults: the paper's sizes)."""

    encoder_channels: tuple[int, ...] = (64, 128, 256, 256)
    """Channels of the four stride-2 encoder convolutions (mirrored by the decoder)."""
    encoder_kernel: int = 4
    """Kernel size of the encoder's stride-2 convolutions (even). 4 (the paper's) lets each
    grid cell's code see its neighbours' pixels (a 46-pixel field with four layers); 2
    makes each code a function of its own cell's pixels alone, so a cell whose pixels do not
    change keeps its code whatever moves elsewhere. With ``moving_weight`` 300, codes of
    Pong's cells with no moving pixel changed at 24% of steps with 4 and never with 2, and
    the dynamics predicted cells with moving pixels open-loop far better (docs/results.md)."""
    num_codes: int = 128
    """Codebook size K: the categories of every latent grid cell."""
    code_dim: int = 32
    """Dimension of each codebook vector."""
    commitment_cost: float = 0.25
    """Weight of the commitment loss pulling encoder outputs to their codes."""
    ema_decay: float = 0.99
    """Decay of the exponential moving averages that update the codebook."""
    lstm_channels: int = 224
    """Hidden channels of each ConvLSTM cell."""
    head_channels: int = 64
    """Channels of the reward and termination heads' convolution."""
    head_hidden: int = 128
    """Width of the reward and termination heads' hidden linear layer."""
    reward_loss_scale: float = 0.1
    """Down-weighting of the reward cross-entropy (the paper's reward-loss trick)."""
    reward_lr_scale: float = 4.0
    """Learning-rate multiplier of the reward head, compensating the down-weighting."""
    termination_loss_scale: float = 0.1
    """Weight of the termination loss."""
    representation_every: int = 2
    """After warm-up, update the VQ-VAE only every this many steps (paper: 2)."""
    recon_frames: int = 0
    """Frames of a batch the VQ-VAE loss is computed on (a random subset; 0 = all)."""
    moving_weight: float = 0.0
    """Extra weight of the pixels that move in the reconstruction loss: a pixel that
    differs between any two consecutive frames of its stack counts ``1 + moving_weight``
    times (every frame and channel of the stack at that pixel). A ball or a player is a few
    pixels of a mostly static screen; 0 weighs every pixel alike (the paper's loss)."""
    moving_share: float = 0.0
    """Share of the reconstruction loss that the pixels that move carry, in [0, 1): each
    batch weighs its moving pixels (as ``moving_weight`` marks them) by
    :func:`share_weight`, so they carry this share whatever the game: a fixed weight of
    300 gives them 47% of the loss on Breakout's screens (0.3% of the pixels move) and 93%
    on Freeway's (4.8%: ten lanes of cars; docs/results.md). 0 leaves the weighting to
    ``moving_weight``; the two cannot both be set."""
    sampled_inputs: float = 0.0
    """Share of the dynamics' training inputs, after each window's first step, that are the
    model's own draw from its prediction of that step rather than the real codes (a whole
    grid at a time, detached; the targets stay real): scheduled sampling, as SimPLe trains
    its model, so the dynamics learn to go on from the drifting codes they meet open loop in
    the dream. 0: teacher forcing throughout (the paper's). The held-out metrics stay
    teacher forced."""
    heads_read_next: bool = False
    """The reward and termination heads also read the step's next codes: the real ones in
    training, the ones the dream draws in imagination (as Dreamer's heads read the state
    after the step). A reward or an end is most often seen in the next frame (a shark gone,
    the submarine exploding), so the heads then pay and end with what the dream draws
    instead of guessing it beforehand. False: the heads read the ConvLSTM before the draw
    (the paper's)."""
    precision: Precision = "float32"
    """Precision of encoding frames to codes wherever it happens (the dynamics' training
    targets, the start bank, the real env), so all of them see the same codes:
    ``"bfloat16"`` encodes 96x96 frames 1.7x faster than float32 on CPUs with AVX-512 BF16
    (both through :meth:`Encoder.infer`) and changes 0.18% of the codes against float32's
    (MsPacman frames, a ``cpu100k`` model). ``"auto"`` (the presets') resolves per machine
    (:func:`dreamenv.precision.resolve_precision`), so a checkpoint moved to a CPU without
    native bfloat16 encodes there in float32."""

    def __post_init__(self) -> None:
        check_precision(self.precision, "DiscreteConfig.precision")
        k = self.encoder_kernel
        if isinstance(k, bool) or not isinstance(k, int) or k < 2 or k % 2:
            raise ConfigError(
                f"DiscreteConfig.encoder_kernel must be an even int of at least 2 (4: the "
                f"paper's, 2: codes that see only their own cell), got {k!r}"
            )
        if not self.moving_weight >= 0:
            raise ConfigError(
                f"DiscreteConfig.moving_weight must be at least 0, got {self.moving_weight!r}"
            )
        if not 0 <= self.moving_share < 1:
            raise ConfigError(
                f"DiscreteConfig.moving_share must be in [0, 1) (0.5: the moving pixels "
                f"weigh as much as the rest of the screen), got {self.moving_share!r}"
            )
        if not 0 <= self.sampled_inputs < 1:
            raise ConfigError(
                f"DiscreteConfig.sampled_inputs must be in [0, 1) (0: the real codes at every "
                f"step; 0.25: a quarter of the steps go on from the model's own draw), got "
                f"{self.sampled_inputs!r}"
            )
        if self.moving_share and self.moving_weight:
            raise ConfigError(
                f"DiscreteConfig.moving_share ({self.moving_share!r}) and moving_weight "
                f"({self.moving_weight!r}) cannot both be set: the share chooses the weight; "
                f"set one of them to 0"
            )


PRESETS = {
    "paper": DiscreteConfig(),
    "small": DiscreteConfig(
        encoder_channels=(16, 32, 64, 64),
        lstm_channels=32,
        head_channels=16,
        head_hidden=64,
        recon_frames=64,
    ),
    "tiny": DiscreteConfig(
        encoder_channels=(8, 8, 16, 16),
        lstm_channels=8,
        head_channels=4,
        head_hidden=16,
        recon_frames=16,
    ),
}


KEEP_LOGIT_INIT = 6.0
"""Initial value of the dynamics' learned ``keep_logit``, a skip connection that adds it to
the logit of each cell's current index. Most cells of consecutive Atari frames keep their
index (88% on Seaquest), which the ConvLSTM otherwise learns slowly from codebook vectors:
in the quickstart's fit (Seaquest, ``small``, 900 updates) held-out next-index accuracy
went from 0.61 without it to 0.87 / 0.88 / 0.89 with an initial 2 / 4 / 6, and sampled
one-step accuracy from 0.31 to 0.59 / 0.79 / 0.84 (the value learned from 6: 5.8)."""

CB_MARGIN = 0.05
"""Pixel targets of the continuous Bernoulli are squashed into [margin, 1 - margin]: its
likelihood is unbounded at exactly 0 or 1, where logits would otherwise run off to
infinity (black borders of Atari frames)."""


def _to_unit(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() * (1.0 / 255.0)


def _to_target(frames: torch.Tensor) -> torch.Tensor:
    return CB_MARGIN + (1.0 - 2.0 * CB_MARGIN) * _to_unit(frames)


def continuous_bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-element negative log-likelihood of ``target`` in [0, 1] under CB(sigmoid(logits)).

    The normaliser ``log C(lambda)`` equals ``log(l / tanh(l / 2))`` for logit ``l``, which
    is stable everywhere (its limit at 0 is ``log 2``).
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    log_norm = torch.where(
        small, math.log(2.0) + logits.square() / 12.0, torch.log(safe / torch.tanh(safe / 2))
    )
    return bce - log_norm


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """Mean of CB(sigmoid(logits)): ``sigmoid(l) / tanh(l/2) - 1/l`` (1/2 at l = 0)."""
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    mean = torch.sigmoid(safe) / torch.tanh(safe / 2) - 1.0 / safe
    return torch.where(small, 0.5 + logits / 12.0, mean)


def moving_pixel_error(
    frames: torch.Tensor, error: torch.Tensor, channels: int = 1
) -> torch.Tensor:
    """Mean of ``error`` ``(B, stack * channels, S, S)`` over the pixels of each stack's
    newest frame that differ (in any channel) from the frame before (what moves: the
    player, a ball, enemies), where a mean over the whole screen is dominated by its static
    background; NaN for a stack of one frame or no moving pixel."""
    if frames.shape[1] < 2 * channels:
        return torch.tensor(float("nan"))
    moving = moving_pixels(frames[:, -2 * channels :], channels)
    if not bool(moving.any()):
        return torch.tensor(float("nan"))
    return (error[:, -channels:] * moving).sum() / (moving.sum() * channels)


def still_frame_error(frames: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """``(B, stack * channels, S, S)``: the squared error of taking each stack's newest
    frame to be the stack's per-pixel median frame (what stays still over the stack: the
    screen without most of what moves), zero on the older frames. Its
    :func:`moving_pixel_error` is a reference for a reconstruction: at or near it, the
    codes keep little of what moves.

    Example:
        >>> frames = torch.zeros(1, 3, 1, 2, dtype=torch.uint8); frames[0, 2, 0, 0] = 255
        >>> still_frame_error(frames)[0, 2].tolist()
        [[1.0, 0.0]]
    """
    stack = frames.reshape(frames.shape[0], -1, channels, *frames.shape[2:])
    still = _to_unit(stack).median(1).values  # the lower median for an even stack
    return newest_frame_error(frames, still, channels)


def newest_frame_error(
    frames: torch.Tensor, image: torch.Tensor, channels: int = 1
) -> torch.Tensor:
    """``(B, stack * channels, S, S)``: the squared error of ``image`` (``(B, channels, S,
    S)`` or broadcastable, in [0, 1]) against each stack's newest frame, zero on the older
    frames: the error :func:`moving_pixel_error` averages for one image per stack."""
    error = torch.zeros(frames.shape, dtype=torch.float32, device=frames.device)
    error[:, -channels:] = (_to_unit(frames[:, -channels:]) - image).square()
    return error


def moving_pixels(frames: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """``(B, 1, S, S)``: 1.0 where any two consecutive frames of the stack ``frames``
    ``(B, stack * channels, S, S)`` differ (in any channel), else 0 (all 0 for one frame).

    Example:
        >>> frames = torch.zeros(1, 2, 3, 3, dtype=torch.uint8); frames[0, 1, 0, 0] = 9
        >>> moving_pixels(frames)[0, 0, 0].tolist()
        [1.0, 0.0, 0.0]
    """
    stack = frames.reshape(frames.shape[0], -1, channels, *frames.shape[2:])
    moved = (stack[:, 1:] != stack[:, :-1]).flatten(1, 2).any(1, keepdim=True)
    return moved.float()


def share_weight(moving: torch.Tensor, share: float) -> float:
    """The extra weight ``w`` that makes the pixels marked in ``moving`` (a 0/1 mask, such
    as :func:`moving_pixels` returns) carry ``share`` of a loss weighted ``1 + w * moving``: with
    a fraction ``f`` of the pixels moving, ``(1 + w) f / (1 + w f) = share``. 0 where they
    already carry that share or more, or where nothing moves.

    Example:
        >>> moving = torch.zeros(100); moving[:1] = 1  # 1% of the pixels move
        >>> round(share_weight(moving, 0.5), 3)  # each counts 99 times as much as a still one
        98.0
    """
    f = float(moving.mean())
    if f <= 0.0 or f >= share:
        return 0.0
    return (share - f) / (f * (1.0 - share))


class VectorQuantizer(nn.Module):
    """Codebook with EMA updates (van den Oord et al.).

    The codebook starts from encoder outputs, and a code used less than ``dead_usage``
    times per update on average is restarted at the encoder outputs that its batch
    quantises worst: rare, small objects (a ball, a paddle) get codes of their own
    instead of collapsing into the background's. Restarts re-point a code at once, so the
    world model asks for them only while nothing has learned the codes' meaning yet (the
    warm-up): see :meth:`DiscreteWorldModel.loss`.
    """

    codebook: torch.Tensor
    cluster_size: torch.Tensor
    embed_sum: torch.Tensor
    initialized: torch.Tensor

    def __init__(self, num_codes: int, dim: int, decay: float, dead_usage: float = 1.0) -> None:
        super().__init__()
        self.decay = decay
        self.dead_usage = dead_usage
        embed = torch.randn(num_codes, dim)
        self.register_buffer("codebook", embed.clone())
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared distances ``(N, K)`` of vectors ``z`` ``(N, D)`` to every code, in
        float32 under autocast too (which code is nearest must not depend on precision)."""
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            return (
                z.square().sum(1, keepdim=True)
                - 2 * z @ self.codebook.t()
                + self.codebook.square().sum(1)[None]
            )

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code of each vector of ``z`` ``(N, D)``."""
        return self.distances(z).argmin(1)

    @torch.no_grad()
    def update(self, z: torch.Tensor, idx: torch.Tensor, restart: bool = True) -> None:
        """One EMA step of the codebook towards the vectors assigned to each code; with
        ``restart``, dead codes then move to the worst-quantised vectors of ``z``."""
        with torch.autocast(z.device.type, enabled=False):
            self._update(z.float(), idx, restart)

    def _update(self, z: torch.Tensor, idx: torch.Tensor, restart: bool) -> None:
        k = self.codebook.shape[0]
        if not bool(self.initialized):
            pick = torch.randint(0, z.shape[0], (k,), device=z.device)
            self.codebook.copy_(z[pick])
            self.embed_sum.copy_(z[pick])
            self.cluster_size.fill_(1.0)
            self.initialized.fill_(True)
            idx = self.indices(z)
        onehot = F.one_hot(idx, k).type_as(z)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ z, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + 1e-5) / (n + k * 1e-5) * n
        self.codebook.copy_(self.embed_sum / size[:, None])
        if not restart:
            return
        dead = torch.nonzero(self.cluster_size < self.dead_usage).squeeze(1)
        if len(dead):
            error = (z - self.codebook[idx]).square().sum(1)
            worst = error.topk(min(len(dead), len(error))).indices
            dead = dead[: len(worst)]
            self.codebook[dead] = z[worst]
            self.embed_sum[dead] = z[worst] * self.dead_usage
            self.cluster_size[dead] = self.dead_usage


class Encoder(nn.Module):
    def __init__(
        self, in_channels: int, channels: tuple[int, ...], code_dim: int, kernel: int = 4
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        pad = (kernel - 2) // 2  # every layer halves the side exactly
        for c in channels:
            layers += [nn.Conv2d(prev, c, kernel, 2, pad), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            prev = c
        layers.append(nn.Conv2d(prev, code_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def infer(self, frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The eval-mode ``forward(frames / 255)`` in fewer passes: each BatchNorm (running
        statistics) folded into the convolution before it and the ``1 / 255`` into the first,
        in ``dtype`` and channels-last order, without autocast's casts; float32 out. In
        float32 the same codes as ``forward``; in bfloat16 fewer codes differ from float32's
        than under autocast (0.18% against 0.33% on MsPacman frames of a ``cpu100k`` model).

        Example:
            >>> enc = Encoder(4, (8, 8), 4).eval()
            >>> x = torch.randint(0, 256, (2, 4, 16, 16), dtype=torch.uint8)
            >>> torch.allclose(enc.infer(x, torch.float32), enc(x / 255.0), atol=1e-5)
            True
        """
        if self.training:
            raise RuntimeError("Encoder.infer folds BatchNorm's running statistics: call .eval()")
        h = frames.to(dtype).contiguous(memory_format=torch.channels_last)
        scale = 1.0 / 255.0
        layers = list(self.net)
        for layer, after in zip(layers, layers[1:] + [None], strict=True):
            if isinstance(layer, nn.Conv2d):
                weight = layer.weight * scale
                bias = layer.bias if layer.bias is not None else weight.new_zeros(len(weight))
                scale = 1.0
                if isinstance(after, nn.BatchNorm2d):
                    assert after.running_var is not None and after.running_mean is not None
                    gain = after.weight / torch.sqrt(after.running_var + after.eps)
                    weight = weight * gain[:, None, None, None]
                    bias = (bias - after.running_mean) * gain + after.bias
                h = F.conv2d(h, weight.to(dtype), bias.to(dtype), layer.stride, layer.padding)
            elif isinstance(layer, nn.LeakyReLU):
                h = F.leaky_relu(h, layer.negative_slope, inplace=True)
            elif not isinstance(layer, nn.BatchNorm2d):
                raise TypeError(f"Encoder.infer cannot fold a {type(layer).__name__}")
        return h.float()


class Decoder(nn.Module):
    def __init__(self, out_channels: int, channels: tuple[int, ...], code_dim: int) -> None:
        super().__init__()
        rev = list(reversed(channels))
        layers: list[nn.Module] = [nn.Conv2d(code_dim, rev[0], 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(rev, rev[1:], strict=False):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
        layers.append(nn.ConvTranspose2d(rev[-1], out_channels, 4, 2, 1))  # pixel logits
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell with layer norm on the gates and the cell state."""

    def __init__(self, in_channels: int, hidden: int, grid: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, 3, 1, 1)
        self.norm_gates = nn.LayerNorm([4 * hidden, grid, grid])
        self.norm_cell = nn.LayerNorm([hidden, grid, grid])

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gates = self.norm_gates(self.gates(torch.cat([x, h], 1)))
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.norm_cell(c))
        return h, c


class ScalarHead(nn.Module):
    """Convolution + layer norm + two linear layers, to ``out`` scores (reward, termination)."""

    def __init__(self, in_channels: int, channels: int, hidden: int, grid: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, 1, 1),
            nn.LayerNorm([channels, grid, grid]),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(channels * grid * grid, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, out),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class Dynamics(nn.Module):
    """Two ConvLSTM cells, the action at every layer, and the three prediction heads: the
    next codes' (:meth:`forward`) and the reward's and termination's (:meth:`heads`)."""

    def __init__(
        self, config: DiscreteConfig, num_actions: int, grid: int, reward_size: int = 3
    ) -> None:
        super().__init__()
        a, h = num_actions, config.lstm_channels
        self.num_actions = num_actions
        self.reads_next = config.heads_read_next
        head_in = h + a + (config.code_dim if self.reads_next else 0)
        self.cell1 = ConvLSTMCell(config.code_dim + a, h, grid)
        self.cell2 = ConvLSTMCell(h + a, h, grid)
        self.latent_head = nn.Sequential(
            nn.Conv2d(h + a, h, 3, 1, 1),
            nn.LayerNorm([h, grid, grid]),
            nn.LeakyReLU(0.2),
            nn.Conv2d(h, config.num_codes, 1),
        )
        self.reward_head = ScalarHead(
            head_in, config.head_channels, config.head_hidden, grid, reward_size
        )
        self.termination_head = ScalarHead(
            head_in, config.head_channels, config.head_hidden, grid, 1
        )
        self.keep_logit = nn.Parameter(torch.tensor(KEEP_LOGIT_INIT))

    def forward(
        self,
        embedded: torch.Tensor,
        action: torch.Tensor,
        state: State,
        current: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """``embedded`` ``(B, D, G, G)`` codebook vectors of the ``current`` ``(B, G, G)``
        indices, ``action`` features ``(B, A)`` (or int64 actions ``(B,)``) -> the next
        codes' logits, the features the heads read, the new state; the latent logits of
        each cell's current index get the learned ``keep_logit`` added."""
        b, _, g, _ = embedded.shape
        features = feature_input(action, self.num_actions).to(embedded.dtype)
        tiled = features[:, :, None, None].expand(b, self.num_actions, g, g)
        h1, c1, h2, c2 = state
        h1, c1 = self.cell1(torch.cat([embedded, tiled], 1), h1, c1)
        h2, c2 = self.cell2(torch.cat([h1, tiled], 1), h2, c2)
        y = torch.cat([h2, tiled], 1)
        index = current.unsqueeze(1)
        logits = self.latent_head(y).float()  # float32 under autocast too
        latent_logits = logits.scatter_add(1, index, self.keep_logit.expand(index.shape))
        return latent_logits, y, (h1.float(), c1.float(), h2.float(), c2.float())

    def heads(
        self, y: torch.Tensor, next_embedded: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward and termination logits from :meth:`forward`'s features ``y`` and, when
        the heads read them (:attr:`DiscreteConfig.heads_read_next`), the codebook vectors
        ``next_embedded`` ``(B, D, G, G)`` of the step's next codes (ignored otherwise)."""
        if self.reads_next:
            if next_embedded is None:
                raise ValueError("these heads read the next codes; pass next_embedded")
            y = torch.cat([y, next_embedded.to(y.dtype)], 1)
        return self.reward_head(y).float(), self.termination_head(y).squeeze(1).float()


@register_family
class DiscreteWorldModel(WorldModel):
    """VQ-VAE + ConvLSTM world model; latents are ``(B, G, G)`` int64 code indices."""

    family = "discrete"
    config_class = DiscreteConfig
    holds_representation = True
    observes_state = False
    presets = PRESETS

    def __init__(
        self, config: DiscreteConfig, spec: AtariSpec, num_actions: int | ActionSpec
    ) -> None:
        super().__init__(config, spec, num_actions)
        self.channels, stack, size = image_frames(spec, "discrete")
        factor = 2 ** len(config.encoder_channels)
        if size % factor:
            raise ConfigError(
                f"the discrete family's {len(config.encoder_channels)} stride-2 convolutions "
                f"need a screen size divisible by {factor}, got {size}; use a multiple of "
                f"{factor} (32, 48, 64, 80 or 96 with the presets' four)."
            )
        self.grid = size // factor
        self.encoder = Encoder(
            stack, config.encoder_channels, config.code_dim, config.encoder_kernel
        )
        self.quantizer = VectorQuantizer(config.num_codes, config.code_dim, config.ema_decay)
        self.decoder = Decoder(stack, config.encoder_channels, config.code_dim)
        self.dynamics = Dynamics(config, self.num_actions, self.grid, self.reward_coder.size)

    # --- representation -----------------------------------------------------------------
    def _encode_continuous(self, frames: torch.Tensor) -> torch.Tensor:
        z = self.encoder(_to_unit(frames)).float()  # (B, D, G, G); float32 under autocast
        return self._cells(z)

    def _cells(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder outputs ``(B, D, G, G)`` as one ``D``-vector per grid cell ``(B*G*G, D)``."""
        return z.permute(0, 2, 3, 1).reshape(-1, self.config.code_dim)

    def _grid_indices(self, cells: torch.Tensor, batch: int) -> torch.Tensor:
        """The nearest codes of :meth:`_cells`' vectors, as ``(batch, G, G)`` index grids."""
        return self.quantizer.indices(cells).view(batch, self.grid, self.grid)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames to the grid of code indices, in the model's ``precision`` whatever autocast
        surrounds the call; in eval mode through :meth:`Encoder.infer` (the envs, the start
        bank and the dynamics' targets: 1.46x faster than the module in bfloat16 for a joint
        update's 544 stacks of 96x96 frames, ``benchmarks/precision.py``)."""
        if self.encoder.training:
            return self.module_indices(frames)
        dtype = getattr(torch, resolve_precision(self.config.precision, frames.device))
        with torch.autocast(frames.device.type, enabled=False):
            z = self.encoder.infer(frames, dtype)
        return self._grid_indices(self._cells(z), len(frames))

    @torch.no_grad()
    def module_indices(self, frames: torch.Tensor) -> torch.Tensor:
        """Codes through the encoder module under autocast in the model's ``precision``
        (BatchNorm in the encoder's own mode): :meth:`encode` in train mode, and in eval mode
        the reference its folding reproduces (``benchmarks/precision.py`` times both)."""
        with autocast(self.config.precision, frames.device):
            z = self._encode_continuous(frames)
        return self._grid_indices(z, len(frames))

    @torch.no_grad()
    def served_indices(self, frames: torch.Tensor) -> torch.Tensor:
        """The indices the envs see for ``frames``: :meth:`encode` with the encoder in eval
        mode (BatchNorm running statistics, left unchanged), whatever mode the model is in.
        The dynamics train on these, as inputs and as targets, in the model's own
        ``precision`` whatever autocast surrounds the call (as the envs encode)."""
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            return self.encode(frames)
        finally:
            self.encoder.train(was_training)

    def served_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """:meth:`served_indices` (the ``"dynamics"`` phase's ``latents``)."""
        return self.served_indices(frames)

    def embed(self, latent: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of index grids: ``(B, G, G)`` -> ``(B, D, G, G)`` float."""
        return self.quantizer.codebook[latent].permute(0, 3, 1, 2)

    def decode_logits(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.embed(latent))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        mean = continuous_bernoulli_mean(self.decode_logits(latent))
        unit = (mean - CB_MARGIN) / (1.0 - 2.0 * CB_MARGIN)
        return (unit * 255.0).round().clamp(0, 255).to(torch.uint8)

    # --- dynamics -----------------------------------------------------------------------
    def zero_state(self, batch: int) -> State:
        shape = (batch, self.config.lstm_channels, self.grid, self.grid)
        return tuple(torch.zeros(shape, device=self.device) for _ in range(4))

    def initial_state(
        self, embeddings: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        state = self.zero_state(embeddings.shape[0])
        features = self.action_features(actions)
        for t in range(actions.shape[1]):
            _, _, state = self.dynamics(
                self.embed(embeddings[:, t]), features[:, t], state, embeddings[:, t]
            )
        return embeddings[:, -1], state

    def step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float = 1.0,
    ) -> Prediction:
        return self._transition(state, latent, action, rng, temperature, None)

    def forced_step(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        next_embedding: torch.Tensor,
        rng: BatchRandom,
    ) -> Prediction:
        """:meth:`step` with heads that read the real next codes ``next_embedding`` where
        they read the next codes (:attr:`DiscreteConfig.heads_read_next`), as in training."""
        return self._transition(state, latent, action, rng, 1.0, next_embedding)

    def _transition(
        self,
        state: State,
        latent: torch.Tensor,
        action: torch.Tensor,
        rng: BatchRandom,
        temperature: float,
        real_next: torch.Tensor | None,
    ) -> Prediction:
        """:meth:`step`, whose heads read ``real_next`` instead of the drawn codes where it
        is given (and where they read the next codes at all)."""
        logits, y, state = self.dynamics(
            self.embed(latent), self.action_features(action), state, latent
        )
        probs = torch.softmax(logits / max(temperature, 1e-6), 1).permute(0, 2, 3, 1)
        u = rng.uniform((self.grid, self.grid)).to(probs.device)
        drawn = sample_categorical(probs, u)
        read = drawn if real_next is None else real_next
        reward_logits, term_logits = self.dynamics.heads(y, self._next_embedded(read))
        return Prediction(drawn, reward_logits, term_logits, state)

    def _next_embedded(self, indices: torch.Tensor) -> torch.Tensor | None:
        """The codebook vectors of ``indices`` where the heads read the next codes."""
        return self.embed(indices) if self.config.heads_read_next else None

    def filter(
        self, state: State, latent: torch.Tensor, action: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """Follow the real game: the ConvLSTM steps on the real codes it was at and the
        action taken (teacher forced, as in training and :meth:`initial_state`), and the
        latent becomes the new observation's codes. Deterministic. The observation is the
        codes alone, but a planner or a controller that reads the state (``Real-v0``'s
        :class:`~dreamenv.envs.real.LatentFilter`) needs the state the game led to. In the
        model's ``precision`` whatever autocast surrounds the call, as :meth:`encode`."""
        with autocast(self.config.precision, latent.device):
            _, _, state = self.dynamics(
                self.embed(latent), self.action_features(action), state, latent
            )
        return embedding, tuple(part.float() for part in state)

    # --- observations -------------------------------------------------------------------
    def observation(self, latent: torch.Tensor, obs_type: str) -> torch.Tensor:
        if obs_type == "indices":
            return latent.reshape(latent.shape[0], -1)
        if obs_type == "embeddings":
            return self.embed(latent)
        if obs_type == "pixels":
            return self.decode(latent)
        self.check_obs_type(obs_type)
        raise AssertionError("unreachable")

    def observation_space(self, obs_type: str) -> gym.Space:
        self.check_obs_type(obs_type)
        if obs_type == "indices":
            return gym.spaces.MultiDiscrete(
                np.full(self.grid * self.grid, self.config.num_codes, dtype=np.int64)
            )
        if obs_type == "embeddings":  # unbounded: a refit moves the codebook, not the space
            return gym.spaces.Box(
                -np.inf, np.inf, (self.config.code_dim, self.grid, self.grid), np.float32
            )
        return gym.spaces.Box(0, 255, self.spec.frame_shape, np.uint8)

    # --- training -----------------------------------------------------------------------
    def upgrade_weights(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoints saved before ``keep_logit`` get it at 0: exactly their model."""
        return {"dynamics.keep_logit": torch.zeros(()), **tensors}

    def param_groups(self, lr: float) -> list[dict]:
        reward = list(self.dynamics.reward_head.parameters())
        ids = {id(p) for p in reward}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [
            {"params": rest, "lr": lr},
            {"params": reward, "lr": lr * self.config.reward_lr_scale},
        ]

    def _representation_loss(
        self, frames: torch.Tensor, update: bool, restart: bool = False
    ) -> dict[str, torch.Tensor]:
        z = self._encode_continuous(frames)
        idx = self.quantizer.indices(z.detach())
        if update and self.training:
            self.quantizer.update(z.detach(), idx, restart=restart)
        q = self.quantizer.codebook[idx]
        commitment = F.mse_loss(z, q.detach())
        q = z + (q - z).detach()  # straight-through
        b = frames.shape[0]
        q = q.view(b, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        logits = self.decoder(q).float()
        nll = continuous_bernoulli_nll(logits, _to_target(frames))
        if self.config.moving_weight or self.config.moving_share:
            moving = moving_pixels(frames, self.channels)
            weight = self.config.moving_weight or share_weight(moving, self.config.moving_share)
            nll = nll * (1.0 + weight * moving)
        recon = nll.mean()
        error = (
            (continuous_bernoulli_mean(logits.detach()) - CB_MARGIN) / (1 - 2 * CB_MARGIN)
            - _to_unit(frames)
        ).square()
        return {
            "recon_loss": recon,
            "commitment_loss": commitment,
            "indices": idx.view(b, self.grid, self.grid),
            "recon_mse": error.mean(),
            "recon_moving_mse": moving_pixel_error(frames, error, self.channels),
        }

    def _dynamics_outputs(
        self, indices: torch.Tensor, actions: torch.Tensor, sampled: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predictions over a sequence: ``indices`` ``(B, L+1, G, G)``, ``actions`` ``(B, L)``
        (continuous: ``(B, L, n)``). Teacher forced, but for a ``sampled`` share of the steps
        after the first, drawn per sequence, whose input is the model's own draw from its
        previous prediction (:attr:`DiscreteConfig.sampled_inputs`)."""
        b, steps = actions.shape[:2]
        state = self.zero_state(b)
        features = self.action_features(actions)
        latent_logits, reward_logits, term_logits = [], [], []
        inputs = indices[:, 0]
        for t in range(steps):
            lg, y, state = self.dynamics(self.embed(inputs), features[:, t], state, inputs)
            rw, tm = self.dynamics.heads(y, self._next_embedded(indices[:, t + 1]))
            latent_logits.append(lg)
            reward_logits.append(rw)
            term_logits.append(tm)
            inputs = indices[:, t + 1]
            if sampled and t + 1 < steps:
                inputs = self._own_draw(lg, inputs, sampled)
        return (
            torch.stack(latent_logits, 1),
            torch.stack(reward_logits, 1),
            torch.stack(term_logits, 1),
        )

    @torch.no_grad()
    def _own_draw(self, logits: torch.Tensor, real: torch.Tensor, share: float) -> torch.Tensor:
        """``real`` ``(B, G, G)`` with a ``share`` of its sequences replaced by a draw from
        ``logits`` ``(B, K, G, G)`` (the global torch generator, which a fit seeds)."""
        probs = torch.softmax(logits.detach().float(), 1).permute(0, 2, 3, 1)
        drawn = sample_categorical(probs, torch.rand(real.shape, device=real.device))
        swap = torch.rand(real.shape[0], 1, 1, device=real.device) < share
        return torch.where(swap, drawn, real)

    def _init_termination_head(self, logit: float) -> None:
        last = self.dynamics.termination_head.net[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(logit)

    def _sequence_terms(
        self, batch: dict[str, torch.Tensor], indices: torch.Tensor, sampled: float = 0.0
    ) -> dict[str, torch.Tensor]:
        latent_logits, reward_logits, term_logits = self._dynamics_outputs(
            indices, batch["actions"], sampled
        )
        mask = batch["mask"].float()
        denom = mask.sum().clamp(min=1.0)
        target = indices[:, 1:]
        latent_ce = (
            F.cross_entropy(latent_logits.flatten(0, 1), target.flatten(0, 1), reduction="none")
            .mean((1, 2))
            .view_as(mask)
        )
        reward_ce = self.reward_coder.loss(reward_logits, batch["rewards"])
        reward_hit = self.reward_coder.accuracy(reward_logits, batch["rewards"])
        term = batch["terminated"].float()
        term_bce = F.binary_cross_entropy_with_logits(term_logits, term, reduction="none")
        return {
            "latent_loss": (latent_ce * mask).sum() / denom,
            "reward_loss": (reward_ce * mask).sum() / denom,
            "termination_loss": (term_bce * mask).sum() / denom,
            "latent_acc": ((latent_logits.argmax(2) == target).float().mean((2, 3)) * mask).sum()
            / denom,
            "reward_acc": (reward_hit * mask).sum() / denom,
            "termination_acc": (((term_logits > 0).float() == term).float() * mask).sum() / denom,
        }

    def _recon_subset(self, frames: torch.Tensor) -> torch.Tensor:
        n = self.config.recon_frames
        if not n or n >= len(frames):
            return frames
        return frames[torch.randperm(len(frames), device=frames.device)[:n]]

    def loss(
        self, batch: dict[str, torch.Tensor], phase: str, step: int
    ) -> dict[str, torch.Tensor]:
        """The VQ-VAE trains on its own batch statistics (BatchNorm's running statistics
        move once per representation update); the dynamics train on
        :meth:`served_indices`, the codes the envs will produce for the same frames.
        Dead-code restarts happen in the warm-up only: in the joint phase they would
        re-point codes the ConvLSTM has learned (the EMA still moves every code). The
        ``"dynamics"`` phase leaves the VQ-VAE as it is (encoder, codebook, decoder), so
        every code the envs serve stays the same; it takes the batch's ``latents`` (the
        codes, encoded once: :meth:`served_latents`) where the batch has them."""
        if phase == "dynamics" and "latents" in batch:
            terms = self._sequence_terms(batch, batch["latents"], self.config.sampled_inputs)
            out = {k: v.detach() for k, v in terms.items()}
            out["loss"] = self._prediction_loss(terms)
            return out
        frames = batch["frames"]
        b, steps1 = frames.shape[:2]
        flat = frames.flatten(0, 1)
        out = {}
        repr_loss = torch.zeros((), device=frames.device)
        if phase == "warmup" or (phase == "joint" and step % self.config.representation_every == 0):
            rep = self._representation_loss(
                self._recon_subset(flat), update=True, restart=phase == "warmup"
            )
            repr_loss = rep["recon_loss"] + self.config.commitment_cost * rep["commitment_loss"]
            out.update(
                recon_loss=rep["recon_loss"].detach(),
                commitment_loss=rep["commitment_loss"].detach(),
            )
        if phase == "warmup":
            out["loss"] = repr_loss
            return out
        indices = self.served_indices(flat).view(b, steps1, self.grid, self.grid)
        terms = self._sequence_terms(batch, indices, self.config.sampled_inputs)
        out.update({k: v.detach() for k, v in terms.items()})
        out["loss"] = repr_loss + self._prediction_loss(terms)
        return out

    def _prediction_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return (
            terms["latent_loss"]
            + self.config.reward_loss_scale * terms["reward_loss"]
            + self.config.termination_loss_scale * terms["termination_loss"]
        )

    @torch.no_grad()
    def metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        frames = batch["frames"]
        b, steps1 = frames.shape[:2]
        first = frames[:, 0]  # one frame stack per sequence
        rep = self._representation_loss(first, update=False)
        still = still_frame_error(first, self.channels)
        indices = self.served_indices(frames.flatten(0, 1)).view(b, steps1, self.grid, self.grid)
        terms = self._sequence_terms(batch, indices)
        return {
            "recon_loss": float(rep["recon_loss"]),
            "recon_mse": float(rep["recon_mse"]),
            "recon_moving_mse": float(rep["recon_moving_mse"]),
            # the stack's median frame there: a reconstruction near it keeps little that moves
            "recon_moving_still_mse": float(moving_pixel_error(first, still, self.channels)),
            "latent_loss": float(terms["latent_loss"]),
            "latent_acc": float(terms["latent_acc"]),
            "reward_acc": float(terms["reward_acc"]),
            "termination_acc": float(terms["termination_acc"]),
        }
