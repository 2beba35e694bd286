"""LivePortrait's SPADE decoder G: warped feature -> RGB image at twice the feature-volume's 4x resolution.

Dimension legend: b batch, c channels, h/w feature size (64 for the published weights; output 8h x 8w).

``SPADEDecoder(feature [b, 256, 64, 64]) -> image [b, 3, 512, 512]`` in (0, 1) (sigmoid):
conv 256 -> 512, six SPADE residual blocks at 64^2, upsample, SPADE block 512 -> 256 at 128^2, upsample,
SPADE block 256 -> 64 at 256^2, LeakyReLU(0.2), conv to 12 channels + PixelShuffle(2) (``upscale=2``).
Every SPADE block is modulated by the decoder's own input (the "segmap"). The residual blocks' convs use
spectral normalisation (``torch.nn.utils.spectral_norm``), so the state dict holds ``weight_orig``,
``weight_u``, ``weight_v`` exactly as LivePortrait's ``spade_generator.pth``. Any h, w runs. No masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from jam_flow.errors import InputError

__all__ = ["SPADE", "SPADEDecoder", "SPADEResnetBlock"]


class SPADE(nn.Module):
    """Spatially-adaptive norm: instance-norm ``x``, then scale/shift predicted from the segmap."""

    def __init__(self, channels: int, label_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, hidden, kernel_size=3, padding=1), nn.ReLU()
        )
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        normalized = F.instance_norm(x)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Residual block: (SPADE, LeakyReLU 0.2, spectral-norm conv3x3) x 2, learned 1x1 shortcut if widths differ."""

    def __init__(self, fin: int, fout: int, label_channels: int) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
        self.norm_0 = SPADE(fin, label_channels)
        self.norm_1 = SPADE(fmiddle, label_channels)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_channels)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        skip = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), 0.2))
        return skip + dx


class SPADEDecoder(nn.Module):
    """LivePortrait's G; defaults are ``spade_generator_params`` from LivePortrait's models.yaml."""

    def __init__(
        self,
        upscale: int = 2,
        max_features: int = 512,
        block_expansion: int = 64,
        out_channels: int = 64,
        num_down_blocks: int = 2,
    ) -> None:
        super().__init__()
        if upscale not in (1, 2):
            raise InputError(f"SPADEDecoder: upscale must be 1 or 2 (LivePortrait's choices), got {upscale}")
        width = min(max_features, block_expansion * 2**num_down_blocks)  # 256: the warped feature's channels
        self.in_channels = width
        self.upscale = upscale
        self.fc = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * width, 2 * width, width))
        self.up_0 = SPADEResnetBlock(2 * width, width, width)
        self.up_1 = SPADEResnetBlock(width, out_channels, width)
        if upscale == 2:
            self.conv_img: nn.Module = nn.Sequential(
                nn.Conv2d(out_channels, 3 * 4, kernel_size=3, padding=1), nn.PixelShuffle(2)
            )
        else:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)

    def forward(self, feature: Tensor) -> Tensor:
        """``feature [b, 256, h, w]`` -> image ``[b, 3, 4h * upscale, 4w * upscale]`` in (0, 1)."""
        if feature.ndim != 4 or feature.shape[1] != self.in_channels:
            raise InputError(
                f"SPADEDecoder: expected a feature [b, {self.in_channels}, h, w], got shape {tuple(feature.shape)}"
            )
        segmap = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, segmap)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), segmap)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), segmap)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))
