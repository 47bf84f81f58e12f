"""Building blocks of the state-space models of Buesing et al. (2018), appendix A.1.

The figures of the appendix (Figs. 6-14) define every module from three primitives: a
three-layer convolution stack (:class:`ConvStack`, Fig. 6), a residual convolution stack
(:class:`ResConv`, Fig. 7) and the pool-and-inject layer of Weber et al. (2017)
(:class:`PoolAndInject`, Fig. 8). Frames are ``(frame_stack * C, S, S)`` (``C = 1`` grey,
3 RGB) with ``S`` divisible by 8; states, latent variables and embeddings are feature maps
at ``G = S / 8``. All
channel sizes are arguments (defaults: the paper's), so small presets can shrink them.

Our reading of the figures, whose text the PDF extraction scrambled:

- Fig. 6, conv stack ``(k_i, c_i)``: ``h1 = conv1(x)``, ``h2 = conv2(relu(h1))``,
  ``out = conv3(relu(h1 + h2))``. The figure's "+" joins the first two convolutions; every
  stack of the paper has ``c1 == c2``, which is what such a skip needs, and never
  ``c1 == c3`` or ``c_in == c3``. The output has no ReLU (stacks end in log-odds, means).
- Fig. 7, res conv: the stack ``3x3,32 -> relu -> 5x5,32 -> relu -> 3x3,64`` plus its input
  ("+" after the last convolution). Its inputs are concatenations whose first channels are
  the state (``concat(s, a)``, ``concat(pool&inject(...), z)``), so the skip adds the first
  ``out_channels`` input channels (zero-padded if fewer): a residual state update without
  extra parameters.
- Fig. 8, pool & inject: ``3x3,32`` convolution, max-pool over the whole map, tile,
  concatenate to the input.
- Fig. 9, transition ``s_t = g(s_{t-1}, z_t, a_{t-1})``: ``concat(s_{t-1}, a_{t-1}) -> res
  conv -> relu -> pool & inject -> concat z_t -> res conv -> s_t`` (``z_t`` enters next to
  the second res conv, where the figure places it).
- Fig. 10, decoder from ``concat(s_t, z_t)``, two branches: the pixels follow ``conv stack
  (1,32),(5,32),(3,64) -> relu -> depth to space (2) -> conv stack (3,64),(3,64),(1,48) ->
  depth to space (4)`` (48 = 16 x 3 colour channels; here ``16 x`` the channels decoded);
  the reward bits follow ``3x3,24 -> reshape -> linear`` from the same input (the figure
  lists the ``3x3,24`` convolution level with the first conv stack, and no ReLU in that
  branch), so rewards need neither pixels nor the pixel branch's features.
- Fig. 11, encoder: ``space to depth (4) -> conv stack (3,16),(5,16),(3,64) -> relu ->
  space to depth (2) -> conv stack (3,32),(5,32),(3,64) -> relu`` (the figure lists a ReLU
  right below ``e(o_t)``; the one between the stacks keeps them from composing linearly).
- Figs. 12 and 13, prior and posterior: ``concat(...) -> conv stack (1,32),(3,32),(3,64)``
  whose 64 output channels are split into the mean and, through ``log(1 + exp(.))``, the
  standard deviation of a 32-channel ``z``; the posterior's input also holds ``e(o_t)``
  and the prior's mean and standard deviation.
- Fig. 14, initial state: ``concat(e(o_-2), e(o_-1), e(o_0)) -> conv stack (1,64),(3,64),
  (3,64) -> s_0``.

The families built from these blocks (:mod:`dreamenv.models.ssm`,
:mod:`dreamenv.models.pixel_ar`) share their sizes: their configs derive from
:class:`BuesingSizes`, and their presets from :data:`PRESET_SIZES` (:func:`sized_presets`).

Example:
    >>> enc = Encoder(frame_stack=4)
    >>> enc(torch.zeros(2, 4, 96, 96, dtype=torch.uint8)).shape
    torch.Size([2, 64, 12, 12])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from dreamenv.errors import ConfigError
from dreamenv.models.common import action_chunk_onehot, to_unit

STD_FLOOR = 1e-4
"""Added to ``softplus`` standard deviations so that KL terms stay finite."""


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C * factor^2, H / factor, W / factor)``, the channel order
    of :func:`torch.nn.functional.pixel_unshuffle` (a reshape and one copy: 1.5-2x faster
    than it on CPU)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // factor, factor, w // factor, factor).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * factor * factor, h // factor, w // factor)


def depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, C * factor^2, H, W)`` -> ``(B, C, H * factor, W * factor)``, the inverse of
    :func:`space_to_depth` (as :func:`torch.nn.functional.pixel_shuffle`, faster on CPU)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // (factor * factor), factor, factor, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // (factor * factor), h * factor, w * factor)


def tile_action(actions: torch.Tensor, num_actions: int, grid: int) -> torch.Tensor:
    """Action (chunk) features tiled over a ``grid x grid`` map.

    Args:
        actions: float action features (:meth:`~dreamenv.models.base.WorldModel.action_features`:
            one-hots of discrete actions, continuous ones in [-1, 1]) ``(B, c * n)`` or
            ``(B, c, n)``; or int64 discrete actions ``(B,)`` / chunks ``(B, c)``, one-hot
            encoded here.
        num_actions: size of the game's action set (for int64 actions).
        grid: side of the feature maps.

    Returns:
        ``(B, c * num_actions, grid, grid)`` float (an expanded view; concatenate it).

    Example:
        >>> tile_action(torch.tensor([[1, 0], [2, 2]]), 3, 4).shape
        torch.Size([2, 6, 4, 4])
        >>> tile_action(torch.tensor([[0.5, -1.0, 0.0]]), 3, 4).shape
        torch.Size([1, 3, 4, 4])
    """
    if actions.is_floating_point():
        features = actions.reshape(actions.shape[0], -1)
    else:
        features = action_chunk_onehot(actions, num_actions)
    return features[:, :, None, None].expand(-1, -1, grid, grid)


def _conv(in_channels: int, out_channels: int, kernel: int) -> nn.Conv2d:
    """A stride-1, size-preserving convolution (odd kernels)."""
    if kernel % 2 != 1:
        raise ConfigError(f"kernel sizes must be odd (size preserving), got {kernel}.")
    return nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2)


class ConvStack(nn.Module):
    """The three-layer convolution stack of Fig. 6: ``conv stack: (k_i, c_i)_{i=1,2,3}``.

    ``h1 = conv1(x)``, ``h2 = conv2(relu(h1))``, ``out = conv3(relu(h1 + h2))``; stride 1,
    size preserving, no ReLU on the output.

    Args:
        in_channels: channels of the input map.
        layers: three ``(kernel, channels)`` pairs; ``c1 == c2`` (the skip adds them).

    Example:
        >>> ConvStack(8, ((3, 16), (5, 16), (3, 64)))(torch.zeros(1, 8, 12, 12)).shape
        torch.Size([1, 64, 12, 12])
    """

    def __init__(self, in_channels: int, layers: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        if len(layers) != 3:
            raise ConfigError(f"a conv stack has 3 (kernel, channels) layers, got {layers!r}.")
        (k1, c1), (k2, c2), (k3, c3) = layers
        if c1 != c2:
            raise ConfigError(
                f"a conv stack's first two layers need equal channels for their skip, got "
                f"{layers!r}; use layers like ((3, 32), (5, 32), (3, 64))."
            )
        self.conv1 = _conv(in_channels, c1, k1)
        self.conv2 = _conv(c1, c2, k2)
        self.conv3 = _conv(c2, c3, k3)
        self.out_channels = c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.conv1(x)
        h2 = self.conv2(F.relu(h1))
        return self.conv3(F.relu(h1 + h2))


class ResConv(nn.Module):
    """The residual convolution stack ``res conv`` of Fig. 7.

    ``out = x[:, :out_channels] + conv3x3(relu(conv5x5(relu(conv3x3(x)))))``, where the
    skip zero-pads when the input has fewer channels (see the module docstring).

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output (the paper: 64, the state's).
        hidden: channels of the first two convolutions (the paper: 32).

    Example:
        >>> ResConv(70, 64)(torch.zeros(1, 70, 12, 12)).shape
        torch.Size([1, 64, 12, 12])
    """

    def __init__(self, in_channels: int, out_channels: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv(in_channels, hidden, 3),
            nn.ReLU(),
            _conv(hidden, hidden, 5),
            nn.ReLU(),
            _conv(hidden, out_channels, 3),
        )
        self.out_channels = out_channels
        self.pad = max(0, out_channels - in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x[:, : self.out_channels]
        if self.pad:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.pad))
        return skip + self.net(x)


class PoolAndInject(nn.Module):
    """The pool-and-inject layer of Fig. 8 (Weber et al., 2017): global spatial context.

    ``concat(x, tile(maxpool_{H,W}(conv3x3(x))))``: every position sees a summary of the
    whole map, so effects can travel across the screen in one step.

    Args:
        in_channels: channels of the input map.
        grid: side of the (square) maps it is used on.
        channels: channels of the pooled convolution (the paper: 32).

    Example:
        >>> PoolAndInject(64, 12)(torch.zeros(1, 64, 12, 12)).shape
        torch.Size([1, 96, 12, 12])
    """

    def __init__(self, in_channels: int, grid: int, channels: int = 32) -> None:
        super().__init__()
        self.conv = _conv(in_channels, channels, 3)
        self.grid = grid
        self.out_channels = in_channels + channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(x).amax(dim=(2, 3), keepdim=True)
        return torch.cat([x, pooled.expand(-1, -1, x.shape[2], x.shape[3])], 1)


class Encoder(nn.Module):
    """The observation encoder ``e(o_t)`` of Fig. 11: uint8 frames -> ``(B, C, S/8, S/8)``.

    ``space to depth (4) -> conv stack (3,h0),(5,h0),(3,C) -> relu -> space to depth (2) ->
    conv stack (3,h1),(5,h1),(3,C) -> relu``; the paper: ``h = (16, 32)``, ``C = 64``.

    Args:
        frame_stack: channels of an observation (``frame_stack * C``: stacked grey or RGB
            frames).
        channels: channels ``C`` of both stacks' outputs (the embedding's).
        hidden: ``(h0, h1)``, the first two layers' channels of each stack.

    Example:
        >>> Encoder(1, channels=8, hidden=(4, 4))(torch.zeros(3, 1, 80, 80).byte()).shape
        torch.Size([3, 8, 10, 10])
    """

    def __init__(
        self, frame_stack: int, channels: int = 64, hidden: tuple[int, int] = (16, 32)
    ) -> None:
        super().__init__()
        h0, h1 = hidden
        self.stack1 = ConvStack(16 * frame_stack, ((3, h0), (5, h0), (3, channels)))
        self.stack2 = ConvStack(4 * channels, ((3, h1), (5, h1), (3, channels)))
        self.out_channels = channels

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = space_to_depth(to_unit(frames), 4)
        x = space_to_depth(F.relu(self.stack1(x)), 2)
        return F.relu(self.stack2(x))


class PixelRewardDecoder(nn.Module):
    """The decoder of Fig. 10: pixel log-odds of ``o_t`` and logits of the reward bits.

    Two branches from the input ``x`` (``s_t`` and ``z_t``): ``features = relu(conv stack
    (1,h),(5,h),(3,C) of x)`` at the state's resolution, ``pixels = depth to space (4) of
    conv stack (3,C),(3,C),(1,16F) of depth to space (2) of features``; and ``head =
    linear(flatten(conv3x3,r(x)))``, which needs no pixel work (a rollout's rewards).

    Args:
        in_channels: channels of the input (``s_t`` and ``z_t`` concatenated).
        frame_stack: channels ``F`` of the decoded frame(s) (a stack's, or one RGB frame's).
        grid: side ``G`` of the input map (frames are ``8 G`` square).
        reward_bits: logits of the reward representation (``RewardBits(n).size``; for real
            rewards the reward coder's size: :class:`~dreamenv.models.common.BitsOrCoder`).
        extra_outputs: further logits of the same head (1: termination).
        hidden: channels ``h`` of the first stack's first two layers (the paper: 32).
        channels: channels ``C`` of the stacks (the paper: 64; divisible by 4).
        reward_channels: channels ``r`` of the reward head's convolution (the paper: 24).

    Example:
        >>> dec = PixelRewardDecoder(96, 4, 12, reward_bits=10)
        >>> pixels, head = dec(torch.zeros(2, 96, 12, 12))
        >>> pixels.shape, head.shape
        (torch.Size([2, 4, 96, 96]), torch.Size([2, 11]))
    """

    def __init__(
        self,
        in_channels: int,
        frame_stack: int,
        grid: int,
        reward_bits: int,
        extra_outputs: int = 1,
        hidden: int = 32,
        channels: int = 64,
        reward_channels: int = 24,
    ) -> None:
        super().__init__()
        if channels % 4:
            raise ConfigError(
                f"decoder channels must be divisible by 4 (depth to space (2)), got {channels}."
            )
        self.stack1 = ConvStack(in_channels, ((1, hidden), (5, hidden), (3, channels)))
        self.stack2 = ConvStack(
            channels // 4, ((3, channels), (3, channels), (1, 16 * frame_stack))
        )
        self.reward_conv = _conv(in_channels, reward_channels, 3)
        self.reward_linear = nn.Linear(reward_channels * grid * grid, reward_bits + extra_outputs)
        self.reward_bits = reward_bits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared features ``(B, C, G, G)`` of the decoder's input."""
        return F.relu(self.stack1(x))

    def pixels(self, features: torch.Tensor) -> torch.Tensor:
        """Pixel log-odds ``(B, F, 8G, 8G)`` from :meth:`features`."""
        return depth_to_space(self.stack2(depth_to_space(features, 2)), 4)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, reward_bits + extra_outputs)`` logits from the decoder's input ``x``."""
        return self.reward_linear(self.reward_conv(x).flatten(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel log-odds ``(B, F, 8G, 8G)`` and head logits of the input ``x``."""
        return self.pixels(self.features(x)), self.head(x)


class InitialStateModule(nn.Module):
    """The initial state module of Fig. 14: ``s_0`` from the embeddings of ``o_{-2:0}``.

    ``concat(e(o_-2), e(o_-1), e(o_0)) -> conv stack (1,h),(3,h),(3,S)``.

    Args:
        embed_channels: channels of one embedding.
        state_channels: channels ``S`` of the state (the paper: 64).
        hidden: channels ``h`` of the first two layers (the paper: 64).
        num_obs: observations of the context (the paper: 3).

    Example:
        >>> InitialStateModule(64, 64)(torch.zeros(2, 3, 64, 12, 12)).shape
        torch.Size([2, 64, 12, 12])
    """

    def __init__(
        self, embed_channels: int, state_channels: int = 64, hidden: int = 64, num_obs: int = 3
    ) -> None:
        super().__init__()
        self.num_obs = num_obs
        self.stack = ConvStack(
            num_obs * embed_channels, ((1, hidden), (3, hidden), (3, state_channels))
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, num_obs, E, G, G)`` embeddings, oldest first -> ``(B, S, G, G)``."""
        return self.stack(embeddings.flatten(1, 2))


class _Gaussian(nn.Module):
    """A conv stack whose output is split into a mean and a softplus standard deviation."""

    def __init__(self, in_channels: int, z_channels: int, hidden: int) -> None:
        super().__init__()
        self.stack = ConvStack(in_channels, ((1, hidden), (3, hidden), (3, 2 * z_channels)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, pre_std = self.stack(x).chunk(2, 1)
        return mean, F.softplus(pre_std) + STD_FLOOR


class PriorModule(_Gaussian):
    """The prior ``p(z_t | s_{t-1}, a_{t-1})`` of Fig. 12: a diagonal normal.

    ``concat(s, tiled a) -> conv stack (1,h),(3,h),(3,2Z)`` split into the mean and
    ``log(1 + exp(.))`` (plus :data:`STD_FLOOR`) the standard deviation.

    Args:
        state_channels: channels of ``s``.
        action_channels: channels of the tiled action (``jump * num_actions``).
        z_channels: channels ``Z`` of ``z`` (the paper's 64 outputs: ``Z = 32``).
        hidden: channels ``h`` of the first two layers (the paper: 32).

    Example:
        >>> prior = PriorModule(64, 6, 32)
        >>> mean, std = prior(torch.zeros(2, 64, 12, 12), torch.zeros(2, 6, 12, 12))
        >>> mean.shape, bool((std > 0).all())
        (torch.Size([2, 32, 12, 12]), True)
    """

    def __init__(
        self, state_channels: int, action_channels: int, z_channels: int = 32, hidden: int = 32
    ) -> None:
        super().__init__(state_channels + action_channels, z_channels, hidden)

    def forward(  # type: ignore[override]
        self, state: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``state`` ``(B, S, G, G)``, tiled ``action`` ``(B, A, G, G)`` -> mean, std."""
        return super().forward(torch.cat([state, action], 1))


class PosteriorModule(_Gaussian):
    """The filtering posterior ``q(z_t | s_{t-1}, a_{t-1}, o_t)`` of Fig. 13.

    As the prior, with ``e(o_t)`` and the prior's mean and standard deviation also in the
    concatenation.

    Args:
        state_channels: channels of ``s``.
        action_channels: channels of the tiled action.
        embed_channels: channels of ``e(o_t)``.
        z_channels: channels of ``z``.
        hidden: channels of the first two layers (the paper: 32).

    Example:
        >>> post = PosteriorModule(64, 6, 64, 32)
        >>> x = torch.zeros(2, 64, 12, 12)
        >>> z = torch.zeros(2, 32, 12, 12)
        >>> post(x, torch.zeros(2, 6, 12, 12), x, z, z + 1)[0].shape
        torch.Size([2, 32, 12, 12])
    """

    def __init__(
        self,
        state_channels: int,
        action_channels: int,
        embed_channels: int,
        z_channels: int = 32,
        hidden: int = 32,
    ) -> None:
        super().__init__(
            state_channels + action_channels + embed_channels + 2 * z_channels, z_channels, hidden
        )

    def forward(  # type: ignore[override]
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        embedding: torch.Tensor,
        prior_mean: torch.Tensor,
        prior_std: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of ``z_t``."""
        return super().forward(torch.cat([state, action, embedding, prior_mean, prior_std], 1))


class TransitionModule(nn.Module):
    """The state transition ``s_t = g(s_{t-1}, z_t, a_{t-1})`` of Fig. 9.

    ``concat(s, tiled a) -> res conv -> relu -> pool & inject -> concat z -> res conv``.

    Args:
        state_channels: channels ``S`` of the state (both res convs output ``S``).
        action_channels: channels of the tiled action.
        z_channels: channels of ``z`` (or of the prior mean the dSSMs feed instead).
        grid: side of the maps.
        hidden: channels of the res convs' first two layers (the paper: 32).
        pool_channels: channels of the pool-and-inject convolution (the paper: 32).

    Example:
        >>> g = TransitionModule(64, 6, 32, 12)
        >>> s = torch.zeros(2, 64, 12, 12)
        >>> g(s, torch.zeros(2, 32, 12, 12), torch.zeros(2, 6, 12, 12)).shape
        torch.Size([2, 64, 12, 12])
    """

    def __init__(
        self,
        state_channels: int,
        action_channels: int,
        z_channels: int,
        grid: int,
        hidden: int = 32,
        pool_channels: int = 32,
    ) -> None:
        super().__init__()
        self.res1 = ResConv(state_channels + action_channels, state_channels, hidden)
        self.pool = PoolAndInject(state_channels, grid, pool_channels)
        self.res2 = ResConv(self.pool.out_channels + z_channels, state_channels, hidden)

    def forward(self, state: torch.Tensor, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``state`` ``(B, S, G, G)``, ``z`` ``(B, Z, G, G)``, tiled ``action`` -> next state."""
        h = F.relu(self.res1(torch.cat([state, action], 1)))
        return self.res2(torch.cat([self.pool(h), z], 1))


# --- sizes shared by the families' configs --------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BuesingSizes:
    """Module sizes and loss weights shared by the families built from these blocks
    (defaults: the paper's); each family's config adds its own fields.

    Every field must be a positive int, except the ``*_scale`` weights (numbers >= 0),
    ``encoder_hidden`` (a pair of positive ints) and ``reward_bits`` (an int in [0, 30]);
    ``decoder_channels`` must be divisible by 4. A bad value is a :class:`ConfigError`
    naming the config class, the field and its default. (``SSMConfig`` keeps checks of its
    own.)
    """

    embed_channels: int = 64
    """Channels of the observation embedding ``e(o)`` (Fig. 11)."""
    encoder_hidden: tuple[int, int] = (16, 32)
    """First two layers' channels of the encoder's two conv stacks (Fig. 11)."""
    state_channels: int = 64
    """Channels of the state ``s_t`` (Figs. 9, 14; the AR: of the features the decoder reads)."""
    init_hidden: int = 64
    """First two layers' channels of the initial-state conv stack (Fig. 14)."""
    transition_hidden: int = 32
    """First two layers' channels of the transition's res convs (Figs. 7, 9)."""
    pool_channels: int = 32
    """Channels of the pool-and-inject convolution (Fig. 8)."""
    decoder_hidden: int = 32
    """First two layers' channels of the decoder's first conv stack (Fig. 10)."""
    decoder_channels: int = 64
    """Channels of the decoder's conv stacks (Fig. 10; divisible by 4)."""
    reward_channels: int = 24
    """Channels of the reward head's convolution (Fig. 10)."""
    reward_bits: int = 8
    """Bits of ``floor(|r|)`` in the reward representation (A.2; rewards clamp to 2^n - 1)."""
    reward_loss_scale: float = 1.0
    """Weight of the reward bits' NLL (nats per step) against the per-pixel image terms."""
    termination_loss_scale: float = 1.0
    """Weight of the termination NLL (nats per step)."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_scale"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
                need = "a number >= 0"
            elif field.name == "encoder_hidden":
                ok = (
                    isinstance(value, tuple)
                    and len(value) == 2
                    and all(_is_int(v) and v >= 1 for v in value)
                )
                need = "a pair of positive ints (one per encoder conv stack)"
            elif field.name == "reward_bits":
                ok = _is_int(value) and 0 <= value <= 30
                need = "an int in [0, 30]"
            else:
                ok = _is_int(value) and value >= 1
                need = "a positive int"
            if not ok:
                raise ConfigError(
                    f"{type(self).__name__}.{field.name} must be {need}, got {value!r} "
                    f"(the paper's: {field.default!r})."
                )
        if self.decoder_channels % 4:
            raise ConfigError(
                f"{type(self).__name__}.decoder_channels must be divisible by 4 (the decoder's "
                f"depth to space (2)), got {self.decoder_channels!r} (the paper's: 64)."
            )


PRESET_SIZES: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {
        "embed_channels": 32,
        "encoder_hidden": (8, 16),
        "state_channels": 32,
        "init_hidden": 32,
        "z_channels": 16,
        "prior_hidden": 16,
        "transition_hidden": 16,
        "pool_channels": 16,
        "decoder_hidden": 16,
        "decoder_channels": 32,
        "reward_channels": 8,
    },
    "tiny": {
        "embed_channels": 8,
        "encoder_hidden": (4, 4),
        "state_channels": 8,
        "init_hidden": 8,
        "z_channels": 4,
        "prior_hidden": 4,
        "transition_hidden": 4,
        "pool_channels": 4,
        "decoder_hidden": 4,
        "decoder_channels": 8,
        "reward_channels": 2,
    },
}
"""The sizes of each preset that differ from the paper's (the ``z_channels`` and
``prior_hidden`` of the families with a prior module included)."""

_SizesT = TypeVar("_SizesT", bound=BuesingSizes)


def sized_presets(config_class: type[_SizesT]) -> dict[str, _SizesT]:
    """``config_class``'s presets: :data:`PRESET_SIZES`, each with the fields it has.

    Example:
        >>> sized_presets(BuesingSizes)["tiny"].decoder_channels
        8
    """
    names = {field.name for field in dataclasses.fields(config_class)}
    return {
        preset: config_class(**{k: v for k, v in sizes.items() if k in names})
        for preset, sizes in PRESET_SIZES.items()
    }
