"""LivePortrait's appearance feature extractor F: source image -> 3-D appearance feature volume f_s.

Dimension legend: b batch, c channels (32), d depth (16), h/w feature size (64 for a 256 x 256 image).

``AppearanceFeatureExtractor(img [b, 3, 256, 256] in [0, 1]) -> f_s [b, 32, 16, 64, 64]``:
conv block at full resolution, ``num_down_blocks`` halving blocks, a 1x1 conv to ``max_features`` channels,
a reshape to ``reshape_channel x reshape_depth`` and ``num_resblocks`` 3-D residual blocks. Any input size
divisible by ``2**num_down_blocks`` runs (the published weights expect 256 x 256). No masks.
"""

from __future__ import annotations

from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.liveportrait.blocks import ConvNormAct2d, DownBlock2d, ResBlock3d

__all__ = ["AppearanceFeatureExtractor"]


class AppearanceFeatureExtractor(nn.Module):
    """LivePortrait's F; defaults are ``appearance_feature_extractor_params`` from LivePortrait's models.yaml."""

    def __init__(
        self,
        image_channel: int = 3,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        max_features: int = 512,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
    ) -> None:
        super().__init__()
        if reshape_channel * reshape_depth != max_features:
            raise InputError(
                f"AppearanceFeatureExtractor: reshape_channel * reshape_depth ({reshape_channel} * {reshape_depth})"
                f" must equal max_features ({max_features})"
            )
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.first = ConvNormAct2d(image_channel, block_expansion)
        widths = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))

    def forward(self, img: Tensor) -> Tensor:
        """``img [b, 3, h, w]`` in [0, 1] -> ``f_s [b, reshape_channel, reshape_depth, h/4, w/4]``."""
        if img.ndim != 4:
            raise InputError(
                f"AppearanceFeatureExtractor: expected [b, 3, h, w], got shape {tuple(img.shape)}"
            )
        x = self.first(img)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        return self.resblocks_3d(x.view(b, self.reshape_channel, self.reshape_depth, h, w))
