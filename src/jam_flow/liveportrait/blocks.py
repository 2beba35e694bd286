"""Building blocks shared by LivePortrait's networks (parameter names follow the published checkpoints).

Dimension legend: b batch, c channels, d depth, h height, w width, k keypoints (21).

Every block here is plain torch. Attribute names (``conv``, ``norm``, ``conv1`` ...) are part of the
checkpoint format: LivePortrait's ``*.pth`` files address parameters through them, so they must not change.
No masks are used by these networks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ChannelsFirstLayerNorm",
    "ConvNormAct2d",
    "DownBlock2d",
    "Hourglass3d",
    "ResBlock3d",
    "coordinate_grid",
    "gaussian_heatmaps",
]


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a ``[b, c, h, w]`` tensor (ConvNeXt's "channels_first" norm)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).square().mean(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class ConvNormAct2d(nn.Module):
    """3x3 conv -> BatchNorm -> ReLU (or LeakyReLU 0.01); resolution kept ("SameBlock2d" upstream)."""

    def __init__(self, in_channels: int, out_channels: int, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.leaky = leaky

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.conv(x))
        return F.leaky_relu(x, 0.01) if self.leaky else F.relu(x)


class DownBlock2d(nn.Module):
    """3x3 conv -> BatchNorm -> ReLU -> 2x2 average pool (halves h and w)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class ResBlock3d(nn.Module):
    """Pre-activation residual block on a ``[b, c, d, h, w]`` volume: (BN, ReLU, conv3d) x 2 + skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return x + y


class _Down3d(nn.Module):
    """Hourglass encoder step: conv3d -> BN -> ReLU -> average pool over (h, w) only."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class _Up3d(nn.Module):
    """Hourglass decoder step: nearest upsample over (h, w) -> conv3d -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class _HourglassEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_channels: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        widths = [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        ins = [in_channels, *widths[:-1]]
        self.down_blocks = nn.ModuleList(_Down3d(i, o) for i, o in zip(ins, widths, strict=True))

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class _HourglassDecoder(nn.Module):
    def __init__(self, block_expansion: int, in_channels: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            width_in = min(max_features, block_expansion * 2 ** (i + 1))
            if i != num_blocks - 1:
                width_in *= 2  # the skip connection is concatenated before this block
            blocks.append(_Up3d(width_in, min(max_features, block_expansion * 2**i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels = block_expansion + in_channels
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels)

    def forward(self, skips: list[Tensor]) -> Tensor:
        x = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            x = torch.cat([block(x), skip], dim=1)
        return F.relu(self.norm(self.conv(x)))


class Hourglass3d(nn.Module):
    """3-D U-Net: ``num_blocks`` (h, w)-halving steps then as many doubling steps with skips.

    Input ``[b, in_channels, d, h, w]`` (h, w divisible by ``2**num_blocks``); output
    ``[b, block_expansion + in_channels, d, h, w]``.
    """

    def __init__(self, block_expansion: int, in_channels: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = _HourglassEncoder(block_expansion, in_channels, num_blocks, max_features)
        self.decoder = _HourglassDecoder(block_expansion, in_channels, num_blocks, max_features)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def coordinate_grid(depth: int, height: int, width: int, like: Tensor) -> Tensor:
    """Normalised sampling grid ``[d, h, w, 3]`` holding (x, y, z) in [-1, 1]: x right, y down, z inward.

    This is the space LivePortrait's keypoints live in (and ``grid_sample``'s coordinate order).
    """

    def axis(n: int) -> Tensor:
        return 2 * (torch.arange(n, device=like.device, dtype=like.dtype) / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def gaussian_heatmaps(kp: Tensor, depth: int, height: int, width: int, variance: float = 0.01) -> Tensor:
    """Isotropic Gaussians around keypoints: ``kp [b, k, 3]`` -> ``[b, k, d, h, w]``."""
    grid = coordinate_grid(depth, height, width, kp)  # [d, h, w, 3]
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.square().sum(-1) / variance)
